"""Benchmark: the production stack under load (PostgreSQL + S3 + `mlflow server`, deploy/).

Against a stack brought up by the deploy/ scripts: 8 concurrent registrations of different models
plus 4 concurrent registrations of one more model (each an `mll label --graph VERSION` process
from its own empty home, as workers run it), then 50 concurrent best-per-concept queries (threads,
each asking the server for the current version list: ``refresh``), after one cold query that
builds the data dir's label index from the server.
Checks: every command succeeds (transient server errors are retried by the tool; none is left
unretried), exactly one registered version per label key, nothing lost (every model's label is
in the registry and its artifact in the bucket); reports p50/p95 query latency.

    uv run python benchmarks/bench_production_load.py   # starts and stops its own stack

Appends to benchmarks/results/production_load.md. ``tests/production/test_production.py`` runs
:func:`run_load` on its stack and asserts the same checks.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DIFFERENT, SAME = 8, 4
QUERIES = 50


def status_counts(access_log: Path) -> dict[str, int]:
    """HTTP status classes in the MLflow server's access log (uvicorn lines)."""
    import re

    out: dict[str, int] = {}
    for m in re.finditer(r'HTTP/1\.[01]" (\d)\d\d', access_log.read_text(errors="replace")):
        k = f"{m.group(1)}xx"
        out[k] = out.get(k, 0) + 1
    return out


def make_models(out: Path, n: int) -> list[Path]:
    """``n`` small real open_clip models (seeded random init: this measures bookkeeping)."""
    from mll_registry.demo.archs import build_tiny
    from mll_registry.models.loading import save_open_clip_dir

    return [save_open_clip_dir(*build_tiny("tiny-vit", seed=500 + i), out / f"load-{i}")
            for i in range(n)]


def _env(mlflow_uri: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLL_", "MLFLOW_", "AWS_", "HF_", "PREFECT_"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "share"), MLFLOW_TRACKING_URI=mlflow_uri,
               HF_HUB_OFFLINE="1", MLL_DEVICE="cpu", MLL_DECODE_WORKERS="0")
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # the caller's MLflow user
        if k in os.environ:
            env[k] = os.environ[k]
    return env


def run_load(mlflow_uri: str, graph_version: str, work: Path, different: int = DIFFERENT,
             same: int = SAME, queries: int = QUERIES) -> dict[str, Any]:
    """Run the load (``different`` models registered at once beside ``same`` registrations of
    one more model, then ``queries`` concurrent queries); returns what happened (the caller
    checks it)."""
    from mlflow import MlflowClient

    from mll_registry.app.root import App
    from mll_registry.registry.labels import Registry
    from mll_registry.settings import Settings

    models = make_models(work / "models", different + 1)
    refs = [f"local-dir:{m}" for m in models[:different]] + [f"local-dir:{models[-1]}"] * same
    t0 = time.perf_counter()
    procs = []
    for i, ref in enumerate(refs):
        home = work / f"home-{i}"
        home.mkdir(parents=True)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "mll_registry.cli.main", "label", ref, "--graph", graph_version,
             "--json"], env=_env(mlflow_uri, home), cwd=home, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    results = []
    for p, ref in zip(procs, refs, strict=True):
        out, err = p.communicate(timeout=900)
        results.append({"ref": ref, "rc": p.returncode,
                        "out": json.loads(out) if p.returncode == 0 else None,
                        "err": err[-1500:] if p.returncode else ""})
    register_s = time.perf_counter() - t0

    client = MlflowClient(mlflow_uri)
    keys: dict[tuple[str, str, str, str], int] = {}
    for v in client.search_model_versions("tag.`mll.status` = 'ready'", max_results=10_000):
        t = v.tags
        if t.get("mll.graph_version") == graph_version and t.get("mll.model_ref", "") in refs:
            k = (t["mll.model_ref"], t["mll.revision"], graph_version, t["mll.label_hash"])
            keys[k] = keys.get(k, 0) + 1
    # 50 concurrent queries through the server (a fresh label-index check each)
    qroot = work / "query"

    def app() -> App:  # one client per thread, as separate users have
        return App(Settings(data_dir=str(qroot)), registry=Registry(mlflow_uri, root=qroot))

    app().graphs.get(graph_version)  # the graph, fetched once
    t = time.perf_counter()
    app().queries.best("dog.n.01", graph_version, 5, refresh=True)  # builds the index
    cold_s = time.perf_counter() - t

    def query(_: int) -> float:
        t = time.perf_counter()
        q = app().queries.best("dog.n.01", graph_version, 5, refresh=True)
        if not q.models:
            raise AssertionError("a query found no models")
        return time.perf_counter() - t

    t1 = time.perf_counter()
    with ThreadPoolExecutor(queries) as pool:
        lat = sorted(pool.map(query, range(queries)))
    query_s = time.perf_counter() - t1
    return {"results": results, "versions_per_key": keys, "register_s": register_s,
            "statuses": sorted(r["out"]["status"] for r in results if r["out"]),
            "latency_s": lat, "cold_query_s": cold_s, "p50_s": statistics.median(lat),
            "p95_s": lat[int(0.95 * (len(lat) - 1))], "query_wall_s": query_s,
            "distinct_models": len(set(refs))}


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from _results import append_rows, stamp
    from production_stack import ProductionStack

    from mll_registry.app.root import App
    from mll_registry.graph.bundle import SampleDataset, build_and_save
    from mll_registry.settings import Settings

    with tempfile.TemporaryDirectory(prefix="mll-load-") as tmp:
        work = Path(tmp)
        (work / "stack").mkdir()
        from PIL import Image

        for node, value in (("dog.n.01", 10), ("n02121808", 60), ("car.n.01", 120)):
            for i in range(3):
                p = work / "src" / node / f"{i}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (24, 24), (value + i, value, 255 - value)).save(p)
        g, _ = build_and_save([SampleDataset("toy", work / "src")], work / "bundle")
        with ProductionStack(work / "stack") as stack, stack.client_credentials():
            os.environ["MLFLOW_TRACKING_URI"] = stack.mlflow_uri
            App(Settings(data_dir=str(work / "pub"))).graphs.publish(work / "bundle",
                                                                    default=True)
            out = run_load(stack.mlflow_uri, g.version, work / "load")
            out["server_answers"] = status_counts(stack.root / "mlflow.log")
    failed = [r for r in out["results"] if r["rc"] != 0]
    one = all(n == 1 for n in out["versions_per_key"].values())
    print(json.dumps({k: v for k, v in out.items() if k not in ("results", "latency_s",
                                                                 "versions_per_key")}, indent=2))
    print(f"failed commands: {len(failed)}; label keys {len(out['versions_per_key'])}, one "
          f"version each: {one}")
    append_rows("production_load.md",
                "# Production stack under load\n\n`uv run python benchmarks/"
                "bench_production_load.py` (PostgreSQL 15 + moto S3 + `mlflow server`, 1 "
                "worker, deploy/ scripts). Registrations: 8 different models + 4 of one model, "
                "concurrent `mll label` processes; queries: 50 concurrent "
                "`app.queries.best(refresh=True)` threads.\n\n"
                "| date | machine | registrations ok | label keys / versions | 12 registrations "
                "wall s | cold query s | query p50 s | query p95 s | 50 queries wall s | "
                "MLflow server answers |\n"
                "|---|---|---|---|---|---|---|---|---|---|\n",
                [f"{stamp()} | {len(out['results']) - len(failed)}/{len(out['results'])} | "
                 f"{len(out['versions_per_key'])} / {sum(out['versions_per_key'].values())} | "
                 f"{out['register_s']:.1f} | {out['cold_query_s']:.2f} | {out['p50_s']:.2f} | "
                 f"{out['p95_s']:.2f} | {out['query_wall_s']:.1f} | "
                 + ", ".join(f"{k} {v}" for k, v in sorted(out["server_answers"].items()))])


if __name__ == "__main__":
    main()
