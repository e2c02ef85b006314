"""Benchmark: selection on a fresh worker against the server stack, labels in each format.

The stack is the production one (tests/production_stack.py): PostgreSQL, an S3 server (moto)
and ``mlflow server`` proxying the artifacts. 50 synthetic labels (K=64, seeded, the owner node at
rank 0 for 20-80 % of images as in bench_selection_disk.py) of a graph of 2,000 real WordNet noun
synsets x 75 images (150,000 images, 38.7 MB per label) are registered twice, each set on its own
copy of the graph (the copies differ in one image digest, so each has its own version): as
``mll-label/1`` (one file) and as ``mll-label/2`` (ranks in chunks of ``CHUNK_ROWS`` images). Registration
is what ``Registry.register_label`` leaves for a selection: a label run with the ``label/``
artifact and a ready model version with the mll.* tags.

Then, for each format, a worker with an empty data dir (only the node-text embedding cache
copied in: the same for both, and not what is measured) runs ``mll select --task T --graph G
--labels registry --no-log --json`` in a fresh process against the stack. Reported: wall time,
the bytes the worker downloaded (its data dir's caches after the run: label files, summaries,
content-addressed chunks counted once) and that both choose the same models for every class.

    uv run python benchmarks/bench_selection_remote.py [--models 50] [--nodes 2000]
        [--classes 20] [--work /tmp/mll-bench-remote]

Appends to benchmarks/results/selection_remote.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _results import append_rows, stamp

ROOT = Path(__file__).resolve().parent.parent
K = 64


def synthetic_label(g, acc1: np.ndarray, ref: str, rng: np.random.Generator):
    from mll_registry.labels.format import ModelLabel
    from mll_registry.settings import DEFAULTS

    n_img, n_nodes = len(g.images), len(g.nodes)
    owner = g.member_arrays()[0]
    idx = rng.integers(0, n_nodes, size=(n_img, K), dtype=np.uint16)
    hit = rng.random(n_img) < rng.uniform(0.2, 0.8)
    idx[hit, 0] = owner[hit]
    summary = pd.DataFrame({"node_id": g.nodes["node_id"], "n_images": 75, "acc1": acc1,
                            "acc5": np.minimum(1, acc1 + 0.2), "mean_own": rng.random(n_nodes)})
    import hashlib

    meta = {"graph_version": g.version, "model_ref": ref,
            "revision": hashlib.sha256(ref.encode()).hexdigest(),
            "source": ref, "label_hash": DEFAULTS.label_hash(), "top_k": K}
    return ModelLabel(idx, rng.random((n_img, K)).astype(np.float16),
                      rng.random(len(g.members)).astype(np.float16), summary, meta)


def register(client, exp: str, label_dir: Path, name: str, meta: dict, mean_acc1: float) -> None:
    from mll_registry.registry.labels import stored_label

    run = client.create_run(exp, tags={"mll.kind": "label"})
    with stored_label(label_dir) as stored:  # as Registry.register_label uploads it
        client.log_artifacts(run.info.run_id, str(stored), "label")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    v = client.create_model_version(name, f"runs:/{run.info.run_id}/label",
                                    run_id=run.info.run_id, tags={
                                        "mll.status": "ready",
                                        "mll.graph_version": meta["graph_version"],
                                        "mll.revision": meta["revision"],
                                        "mll.model_ref": meta["model_ref"],
                                        "mll.source": meta["source"],
                                        "mll.label_hash": meta["label_hash"],
                                        "mll.mean_acc1": f"{mean_acc1:.4f}"})
    client.set_registered_model_alias(name, "labeled", v.version)


def downloaded_bytes(data: Path) -> int:
    """Bytes of the files a selection fetched into ``data``'s caches (hard links once)."""
    seen, total = set(), 0
    for sub in ("registry-labels", "label-blobs", "registry-summaries", "registry-index"):
        for f in (data / "cache" / sub).rglob("*"):
            st = f.stat()
            if f.is_file() and st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=50)
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--work", default="/tmp/mll-bench-remote")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_selection_disk import graph_bundle
    from label_files import save_v1
    from production_stack import ProductionStack

    from mll_registry.app.root import App
    from mll_registry.graph.bundle import SemanticGraph, content_version
    from mll_registry.labels.format import CHUNK_ROWS
    from mll_registry.registry.tracking import LABEL_EXPERIMENT, Tracking
    from mll_registry.selection.matching import match
    from mll_registry.settings import DEFAULTS
    from mll_registry.task import Task

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["MLL_DATA_DIR"] = str(work / "seed")
    g1 = SemanticGraph.load(graph_bundle(work / "graph-v1", args.nodes))
    images = g1.images.copy()
    images.loc[len(images) - 1, "digest"] = "f" * 32  # another version, the same rows
    manifest = {**g1.manifest, "version": content_version(g1.nodes, g1.edges, images,
                                                            g1.members)}
    SemanticGraph(g1.nodes, g1.edges, images, g1.members, manifest).save(work / "graph-v2")
    graphs = {1: (work / "graph-v1", g1), 2: (work / "graph-v2",
                                                SemanticGraph.load(work / "graph-v2"))}
    rng = np.random.default_rng(0)
    lemmas = g1.nodes["lemma"].drop_duplicates(keep=False).to_numpy()
    names = sorted(rng.choice(lemmas, args.classes, replace=False).tolist())
    task = work / "task.yaml"
    task.write_text(json.dumps({"name": "remote", "classes": names}))
    a = App.configured(data_dir=str(work / "seed"), label_store="local")
    for _, g in graphs.values():  # the node-text caches (per graph version), to copy
        m = match(Task.from_yaml(task), g, embedder=a.embedder, provider=a.caption_provider,
                  top_n=DEFAULTS.top_n, root=str(work / "seed"))
    print(f"graph: {len(g1.nodes)} nodes, {len(g1.images)} images; task: {args.classes} "
          f"classes, {len(m.cand_nodes)} candidate nodes", flush=True)
    out: dict[int, dict] = {}
    (work / "stack").mkdir()
    with ProductionStack(work / "stack", prefect=False) as stack, stack.client_credentials():
        os.environ["MLFLOW_TRACKING_URI"] = stack.mlflow_uri
        tr = Tracking(stack.mlflow_uri, root=work / "seed")
        exp = tr.experiment(LABEL_EXPERIMENT)
        t0 = time.perf_counter()
        label_bytes = {1: 0, 2: 0}
        for i in range(args.models):
            ref = f"local-dir:/models/synthetic-{i:03d}"
            acc1 = np.random.default_rng(1000 + i).beta(2, 5, len(g1.nodes))
            for fmt, (_, g) in graphs.items():
                lab = synthetic_label(g, acc1, ref, np.random.default_rng(i))
                d = work / "labels" / f"v{fmt}" / f"{i:03d}"
                save_v1(lab, d) if fmt == 1 else lab.save(d)
                label_bytes[fmt] += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                register(tr.client, exp, d, f"local--synthetic-{i:03d}-v{fmt}", lab.meta,
                         float(acc1.mean()))
                shutil.rmtree(d)
            if i % 10 == 9:
                print(f"{i + 1} models registered ({time.perf_counter() - t0:.0f} s)", flush=True)
        for fmt, (gpath, _) in graphs.items():
            data = work / f"worker-v{fmt}"
            shutil.copytree(work / "seed" / "cache" / "text", data / "cache" / "text")
            env = {**stack.env, "MLL_DATA_DIR": str(data)}
            cmd = [str(Path(sys.executable).parent / "mll"), "select", "--task", str(task),
                   "--graph", str(gpath), "--labels", "registry", "--no-log", "--json"]
            t = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t
            if p.returncode != 0:
                raise SystemExit(p.stderr[-3000:])
            sel = json.loads(p.stdout)
            out[fmt] = {"wall_s": round(wall, 2), "downloaded_mb": downloaded_bytes(data) / 1e6,
                        "labels_mb": label_bytes[fmt] / 1e6,
                        "chosen": [[x["model"] for x in c["models"]] for c in sel["classes"]]}
            print(json.dumps({k: v for k, v in out[fmt].items() if k != "chosen"} |
                             {"format": fmt}), flush=True)
    same = out[1]["chosen"] == out[2]["chosen"]
    print(f"identical selections: {same}")
    append_rows(
        "selection_remote.md",
        "# Selection on a fresh worker against the server stack\n\nCommand: `uv run python "
        "benchmarks/bench_selection_remote.py`. PostgreSQL + S3 (moto) + `mlflow server` "
        "proxying artifacts; synthetic labels (K=64) of 2,000 WordNet nodes x 75 images; a "
        "worker with an empty data dir (node-text embedding cache copied in) runs `mll select "
        "--labels registry --no-log --json` in a fresh process. Downloaded MB: what the "
        "worker's caches hold after the run (labels, summaries, chunks).\n\n"
        "| date | machine | format | chunk rows | labels | images | classes | labels MB (whole) | "
        "downloaded MB | wall s | same selection |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        [f"{stamp()} | mll-label/{fmt} | {CHUNK_ROWS if fmt == 2 else '-'} | {args.models} | "
         f"{len(g1.images)} | {args.classes} | "
         f"{r['labels_mb']:.0f} | {r['downloaded_mb']:.1f} | {r['wall_s']} | "
         f"{'yes' if same else 'NO'}" for fmt, r in out.items()])


if __name__ == "__main__":
    main()
