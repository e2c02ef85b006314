"""Benchmark: best-models-per-concept queries over 1,000 registered models.

1,000 models are registered in a fresh embedded MLflow (sqlite + local artifacts) the way
``Registry.register_label`` leaves them (a label run with ``label/summary.parquet``, a ready
model version with the mll.* tags); their per-node summaries are synthetic (1,158 nodes, the
demo graph's size). Measured: registration time, the cold label-index build (list versions +
fetch every summary), a version check, the warm query in process, and the warm query as a new
process sees it (index loaded from the disk cache, then queried).

    uv run python benchmarks/bench_registry.py [--models 1000]

Appends to benchmarks/results/registry.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _results import append_rows, stamp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=1158)
    args = ap.parse_args()
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    tmp = Path(tempfile.mkdtemp(prefix="mll-bench-registry-"))
    os.environ["MLL_DATA_DIR"] = str(tmp / "data")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from mll_registry.registry.label_index import LabelIndex
    from mll_registry.registry.labels import Registry
    from mll_registry.registry.tracking import LABEL_EXPERIMENT

    reg = Registry()
    exp = reg.experiment(LABEL_EXPERIMENT)
    c = reg.client
    rng = np.random.default_rng(0)
    nodes = [f"node{i:05d}.n.01" for i in range(args.nodes)]
    gv = "benchgraph000000"
    t0 = time.perf_counter()
    for m in range(args.models):
        name = f"bench--model{m:04d}"
        acc1 = rng.beta(2, 5, args.nodes)
        s = pd.DataFrame({"node_id": nodes, "n_images": 75, "acc1": acc1,
                          "acc5": np.minimum(1, acc1 + 0.2), "mean_own": rng.random(args.nodes)})
        run = c.create_run(exp, tags={"mll.kind": "label"})
        d = tmp / "labels" / name
        d.mkdir(parents=True)
        s.to_parquet(d / "summary.parquet", index=False)
        c.log_artifacts(run.info.run_id, str(d), "label")
        c.set_terminated(run.info.run_id)
        c.create_registered_model(name)
        v = c.create_model_version(name, f"hf://bench/model{m:04d}@{m:040x}",
                                   run_id=run.info.run_id, tags={
                                       "mll.status": "ready", "mll.graph_version": gv,
                                       "mll.revision": f"{m:040x}",
                                       "mll.model_ref": f"hf-hub:bench/model{m:04d}",
                                       "mll.label_hash": "bench",
                                       "mll.mean_acc1": f"{acc1.mean():.4f}"})
        c.set_registered_model_alias(name, "labeled", v.version)
    register_s = time.perf_counter() - t0
    print(f"registered {args.models} models in {register_s:.1f} s", flush=True)

    t0 = time.perf_counter()
    idx = LabelIndex(reg, gv, max_age=30).refresh(force_check=True)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    LabelIndex(reg, gv, max_age=0).refresh(force_check=True)
    check_s = time.perf_counter() - t0
    q = [nodes[i] for i in rng.integers(0, args.nodes, 200)]
    t0 = time.perf_counter()
    for nd in q:
        hits = idx.best(nd, 5)
    warm_q_ms = (time.perf_counter() - t0) / len(q) * 1000
    t0 = time.perf_counter()
    fresh = LabelIndex(reg, gv, max_age=3600).refresh()  # a new process: disk cache, no check
    fresh.best(q[0], 5)
    warm_new_ms = (time.perf_counter() - t0) * 1000
    want = int(np.argmax(idx.acc1[:, idx._node_pos[q[-1]]]))
    assert hits[0].name == idx.versions[want].name
    res = {"models": args.models, "nodes": args.nodes, "register_s": round(register_s, 1),
           "cold_index_build_s": round(cold_s, 2), "version_check_s": round(check_s, 3),
           "warm_query_in_process_ms": round(warm_q_ms, 3),
           "warm_query_new_process_ms": round(warm_new_ms, 1)}
    print(json.dumps(res, indent=2))
    append_rows(
        "registry.md",
        "# Registry benchmark\n\nCommand: `uv run python benchmarks/bench_registry.py`. "
        "Embedded MLflow (sqlite + local artifacts), synthetic per-node summaries.\n\n"
        "- cold index build = list every ready version + fetch every summary + build the "
        "models x nodes matrix;\n- version check = list versions and compare with the cache "
        "(done at most every `max_age` s, 30 by default);\n- warm query = `best(concept, 5)`"
        " on a loaded index; new process = load the disk cache, then query.\n\n"
        "| date | machine | models | nodes | register s | cold build s | version check s |"
        " warm query ms | warm query, new process ms |\n|---|---|---|---|---|---|---|---|---|\n",
        [f"{stamp()} | {args.models} | {args.nodes} | {register_s:.0f} | {cold_s:.1f} | "
         f"{check_s:.2f} | {warm_q_ms:.3f} | {warm_new_ms:.1f}"])

if __name__ == "__main__":
    main()
