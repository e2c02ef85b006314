"""Benchmark: wall time of the user-facing commands from the shell, against the import baseline.

Each command runs as a user runs it (a new process through the ``mll`` entry point) on a data
directory holding the demo registry (10 labelled models; `mll demo` makes one): cold = the
tool's caches for the command removed first (label index, node-text embeddings), warm = run
again; the figure is the median of ``--repeat`` warm runs. The baseline is ``python -c "import
mll_registry"`` in the same run (interpreter start + the package), so ratios are comparable
across machines; ``import mll_registry.cli.main`` (the CLI's own imports: Typer, Rich) is shown too.

    uv run python benchmarks/bench_cli.py --data-dir DIR [--repeat 5]

Appends to benchmarks/results/cli.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _results import append_rows, stamp


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    data = Path(args.data_dir).resolve()
    env = {**os.environ, "MLL_DATA_DIR": str(data)}
    env.pop("MLFLOW_TRACKING_URI", None)
    mll = str(Path(sys.executable).parent / "mll")
    tools = next((data / "demo" / "tasks").glob("tools*.yaml"), None)
    if tools is None:
        raise SystemExit(f"no demo task 'tools' under {data}/demo/tasks: run `mll demo` first")
    q = subprocess.run([mll, "query", "best", "--concept", "dog.n.01", "--json"], env=env,
                       capture_output=True, text=True, check=True)
    model = json.loads(q.stdout)["models"][0]["name"]
    commands = {
        "import mll_registry": ([sys.executable, "-c", "import mll_registry"], []),
        "import mll_registry.cli.main": ([sys.executable, "-c", "import mll_registry.cli.main"], []),
        "mll query best --concept dog.n.01": (
            [mll, "query", "best", "--concept", "dog.n.01", "--json"], ["label-index"]),
        "mll query label MODEL": ([mll, "query", "label", model, "--json"], ["label-index"]),
        "mll select --task tools (30 classes)": (
            [mll, "select", "--task", str(tools), "--no-log", "--json"], ["label-index", "text"]),
        "mll select --task tools (30 classes), logged to MLflow": (
            [mll, "select", "--task", str(tools), "--json"], []),
    }
    rows = {}
    for name, (cmd, caches) in commands.items():
        for c in caches:
            shutil.rmtree(data / "cache" / c, ignore_errors=True)
        cold = timed(cmd, env)
        warm = statistics.median(timed(cmd, env) for _ in range(args.repeat))
        rows[name] = {"cold_s": round(cold, 2), "warm_s": round(warm, 2)}
        print(name, rows[name], flush=True)
    base = rows["import mll_registry"]["warm_s"]
    for r in rows.values():
        r["warm_ratio"] = round(r["warm_s"] / base, 2)
        r["cold_ratio"] = round(r["cold_s"] / base, 2)
    print(json.dumps(rows, indent=2))
    append_rows(
        "cli.md",
        "# Command wall times from the shell\n\nCommand: `uv run python benchmarks/bench_cli.py "
        "--data-dir DIR` on a data dir with the demo registry (10 models). Cold: the command's "
        "caches removed first (label index; node-text embeddings for select); warm: median of 5 "
        "runs. Ratio: to `python -c \"import mll_registry\"` (warm) in the same run. Select "
        "runs with `--no-log` except the last row (which starts MLflow to log the run).\n\n"
        "| date | machine | command | cold s | warm s | warm / import | cold / import |\n"
        "|---|---|---|---|---|---|---|\n",
        [f"{stamp()} | `{name}` | {r['cold_s']} | {r['warm_s']} | {r['warm_ratio']} | "
         f"{r['cold_ratio']}" for name, r in rows.items()])


if __name__ == "__main__":
    main()
