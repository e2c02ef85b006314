"""The served ensemble (issue #28): latency and throughput of `mlflow models serve` answering
/invocations for a registered MLL ensemble, beside the single best model (INB) served the same
way (an ensemble of one), in one run.

    uv run python benchmarks/bench_serving.py [--data-dir DIR] [--task mixed]

The demo hub's labels on the demo graph (labelled if missing), the default selection for a demo
task, saved with bundled weights; each model is served on a loopback port by `mlflow models
serve --env-manager local` (one worker) and sent the task's PNGs as base64: 40 single-image
requests and 12 batches of 32, after 3 warm-up requests. Writes
benchmarks/results/serving.md (and .json).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def serve(path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(path),
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
                             "--workers", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def measure(url: str, b64: list[str]) -> dict[str, float]:
    import httpx

    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.5)

    def post(batch: list[str]) -> float:
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/invocations", timeout=300, json={
            "dataframe_split": {"columns": ["image"], "data": [[x] for x in batch]}})
        r.raise_for_status()
        return time.perf_counter() - t0

    for i in range(3):
        post(b64[i:i + 1])
    one = [post(b64[i % len(b64):i % len(b64) + 1]) for i in range(40)]
    rng = np.random.default_rng(0)
    batches = [post([b64[j] for j in rng.choice(len(b64), 32)]) for _ in range(12)]
    return {"p50_1_ms": 1000 * float(np.percentile(one, 50)),
            "p95_1_ms": 1000 * float(np.percentile(one, 95)),
            "p50_32_ms": 1000 * float(np.percentile(batches, 50)),
            "p95_32_ms": 1000 * float(np.percentile(batches, 95)),
            "images_per_s_1": 1 / float(np.mean(one)),
            "images_per_s_32": 32 / float(np.mean(batches))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--task", default="mixed")
    args = ap.parse_args()

    from mll_registry.app.root import App
    from mll_registry.demo.hub import ensure_demo_labels
    from mll_registry.demo.tasks import ensure_demo_tasks
    from mll_registry.evaluation.baselines import best_of, inb_scores
    from mll_registry.labels.stores import load_labels
    from mll_registry.selection.reuse import TaskImages
    from mll_registry.task import Task

    app = App.configured(data_dir=args.data_dir, label_store="local")
    g = app.graphs.get("demo")
    paths = ensure_demo_labels(g, app.label_config(), app.root, log=print)
    task = Task.from_yaml(ensure_demo_tasks(app.root, names=[args.task])[0])
    sel = app.selection.select(task, g)
    inb = best_of(inb_scores(load_labels(paths, g.version)))
    single = dataclasses.replace(sel, result=dataclasses.replace(
        sel.result, chosen=np.full((len(sel.result.classes), 1),
                                   sel.result.models.index(inb))), run_id=None)
    images = TaskImages.from_task(task).paths
    b64 = [base64.b64encode(p.read_bytes()).decode() for p in images]
    import socket

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, s in (("MLL ensemble", sel), ("INB (single model)", single)):
            path = app.selection.save_ensemble(s, Path(tmp) / name.split()[0], bundle=True)
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            server = serve(path, port)
            try:
                out[name] = {**measure(f"http://127.0.0.1:{port}", b64),
                             "models": float(len(s.result.selected_models()))}
            finally:
                server.terminate()
                server.wait(timeout=30)
    e, one = out["MLL ensemble"], out["INB (single model)"]
    md = ("# Serving the selection: `mlflow models serve` of a registered MLL ensemble\n\n"
          f"`uv run python benchmarks/bench_serving.py --task {args.task}` (2-core CPU, no GPU; "
          f"demo task {args.task}: {len(task.classes)} classes, {len(images)} PNGs of 96 px sent "
          "as base64; one server worker; 40 single-image requests and 12 batches of 32 after 3 "
          "warm-up requests; whole HTTP round trips from a client process).\n\n"
          "| served model | models | p50 1 image (ms) | p95 1 image (ms) | images/s, 1 per "
          "request | p50 32 images (ms) | p95 32 images (ms) | images/s, 32 per request |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|\n" +
          "".join(f"| {n} | {v['models']:.0f} | {v['p50_1_ms']:.1f} | {v['p95_1_ms']:.1f} | "
                  f"{v['images_per_s_1']:.1f} | {v['p50_32_ms']:.1f} | {v['p95_32_ms']:.1f} | "
                  f"{v['images_per_s_32']:.1f} |\n" for n, v in out.items()) +
          f"\nRatio ensemble / single model, images/s at 32 per request: "
          f"{e['images_per_s_32'] / one['images_per_s_32']:.2f} "
          f"(the ensemble runs {e['models']:.0f} models per image).\n")
    (RESULTS / "serving.md").write_text(md)
    (RESULTS / "serving.json").write_text(json.dumps(out, indent=1) + "\n")
    print(md)


if __name__ == "__main__":
    main()
