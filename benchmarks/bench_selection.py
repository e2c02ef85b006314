"""Benchmark: selection time over synthetic labels (1,000 models x 10,000 nodes, 100 classes).

Synthetic labels have the real format (top-K node indices per image, K=64, uint16; exact member
scores): each image's top-1 is its own node with a per-model probability, the rest random. The
task's transfer matrix has top-5 nodes per class. "Selection" is everything after the labels are in
memory and the transfer matrix is known: gathering the candidate images' rows from every label,
the restricted argmax, per-node TP/FP/P, transfer to classes, F1, reuse metric and top-k. Matching
(text embeddings) is model-independent and measured separately in the real-task benchmarks.

    uv run python benchmarks/bench_selection.py

Appends to benchmarks/results/selection.md.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
from _results import append_rows, stamp

from mll_registry.graph.bundle import SemanticGraph
from mll_registry.labels.format import ModelLabel
from mll_registry.selection.select import (
    candidate_rows,
    class_scores,
    node_counts,
    restricted_predictions,
    reuse_metric,
    top_models,
)

K = 64  # the default label top-K
IMAGES_PER_NODE = 5


def synthetic(n_models: int, n_nodes: int, seed: int = 0) -> tuple[SemanticGraph, list[ModelLabel]]:
    rng = np.random.default_rng(seed)
    n_img = n_nodes * IMAGES_PER_NODE
    own = np.repeat(np.arange(n_nodes), IMAGES_PER_NODE)
    nodes = pd.DataFrame({"node_id": [f"n{i}" for i in range(n_nodes)],
                          "caption": [f"node {i}" for i in range(n_nodes)]})
    images = pd.DataFrame({"image_id": np.arange(n_img), "source": "s", "relpath": "",
                           "node_id": "", "digest": ""})
    members = pd.DataFrame({"node_id": nodes["node_id"].to_numpy()[own],
                            "image_id": np.arange(n_img), "own": True})
    g = SemanticGraph(nodes, pd.DataFrame({"parent": [], "child": []}), images, members,
                      {"version": "synthetic", "sources": {"s": "/"}, "config": {"cap": 75}})
    summary = pd.DataFrame({"node_id": nodes["node_id"]})
    score = np.broadcast_to(np.float16(0), (n_img, K))  # unused by selection; no memory
    labels = []
    for _ in range(n_models):
        idx = rng.integers(0, n_nodes, size=(n_img, K), dtype=np.uint16)
        hit = rng.random(n_img) < rng.uniform(0.2, 0.8)
        idx[hit, 0] = own[hit]
        labels.append(ModelLabel(idx, score, rng.random(n_img).astype(np.float16), summary,
                                 {"graph_version": "synthetic"}))
    return g, labels


def task_matrix(n_nodes: int, n_classes: int, top_n: int = 5, seed: int = 1):
    rng = np.random.default_rng(seed)
    top = np.stack([rng.choice(n_nodes, top_n, replace=False) for _ in range(n_classes)])
    cand = np.unique(top)
    pos = {v: i for i, v in enumerate(cand)}
    Z = np.zeros((len(cand), n_classes))
    for c in range(n_classes):
        for v in top[c]:
            Z[pos[v], c] = rng.uniform(0.3, 0.9)
    return cand, Z


def time_selection(g, labels, cand, Z, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = candidate_rows(g, labels, cand)
        pred = restricted_predictions(rows, len(g.nodes))
        r = reuse_metric(class_scores(*node_counts(rows, pred), Z, "f1"), 0.7)
        top_models(r, 3)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    results = []
    g, labels = synthetic(1000, 10_000)
    for n_models in (100, 300, 1000):
        cand, Z = task_matrix(10_000, 100)
        results.append({"models": n_models, "nodes": 10_000, "classes": 100,
                        "seconds": time_selection(g, labels[:n_models], cand, Z)})
        print(json.dumps(results[-1]), flush=True)
    for n_classes in (10, 30):
        cand, Z = task_matrix(10_000, n_classes)
        results.append({"models": 1000, "nodes": 10_000, "classes": n_classes,
                        "seconds": time_selection(g, labels, cand, Z)})
        print(json.dumps(results[-1]), flush=True)
    del g, labels
    for n_nodes in (1000, 3000):
        g, labels = synthetic(1000, n_nodes)
        cand, Z = task_matrix(n_nodes, 100)
        results.append({"models": 1000, "nodes": n_nodes, "classes": 100,
                        "seconds": time_selection(g, labels, cand, Z)})
        print(json.dumps(results[-1]), flush=True)
        del g, labels
    append_rows(
        "selection.md",
        "# Selection benchmark\n\nCommand: `uv run python benchmarks/bench_selection.py`. "
        "Synthetic labels (K=64, 5 images per node), top-5 nodes per class, k=3; best of 3 "
        "runs; labels in memory (loading excluded).\n\n"
        "| date | machine | models | nodes | classes | seconds |\n|---|---|---|---|---|---|\n",
        [f"{stamp()} | {r['models']} | {r['nodes']} | {r['classes']} | {r['seconds']:.3f}"
         for r in sorted(results, key=lambda r: (r["models"], r["nodes"], r["classes"]))])

if __name__ == "__main__":
    main()
