"""Benchmark: how close the compact label comes to the dense computation.

For every demo model the dense (images x nodes) similarity matrix is computed; compact labels with
K in {8, 16, 32, 64, 128} are derived from it (top-K nodes per image + exact member scores, as
``labeling.compact_label`` stores them). On every demo task, selection runs once on dense
similarities (the exact restricted argmax) and once on each compact label. Reported: the share of
(task, class) pairs whose top-1 model is the same, the share of restricted predictions that agree,
and bytes per image.

    uv run python benchmarks/bench_label_compact.py

Appends to benchmarks/results/label_compact.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

KS = (8, 16, 32, 64, 128)
FALLBACKS = ("none", "members")


def main() -> None:
    from mll_registry.demo.graph import build_demo_graph, demo_graph_path
    from mll_registry.demo.hub import demo_refs
    from mll_registry.demo.tasks import ensure_demo_tasks
    from mll_registry.graph.bundle import SemanticGraph
    from mll_registry.labels.format import ModelLabel
    from mll_registry.labels.labeller import (
        LabelConfig,
        PixelPipeline,
        encode_pixels,
        encode_texts,
        node_texts,
        prepare_pixels,
    )
    from mll_registry.models.loading import load
    from mll_registry.selection.matching import match
    from mll_registry.selection.select import (
        candidate_rows,
        class_scores,
        dense_predictions,
        node_counts,
        restricted_predictions,
        reuse_metric,
        top_models,
    )
    from mll_registry.task import Task

    path = demo_graph_path()
    g = SemanticGraph.load(path) if (path / "manifest.json").is_file() else build_demo_graph()[0]
    refs = demo_refs()
    dense = []
    for ref in refs:
        lm = load(ref, device="cpu")
        pipe = PixelPipeline.from_preprocess(lm.preprocess)
        pix, _ = prepare_pixels(g, pipe)
        img = encode_pixels(lm, pix, pipe, 256)
        txt = encode_texts(lm, node_texts(g, LabelConfig())).numpy()
        dense.append(img @ txt.T)
    m_node, m_img = g.member_arrays()
    tasks = [Task.from_yaml(p) for p in ensure_demo_tasks()]
    matchings = [match(t, g) for t in tasks]
    order = [np.argsort(-S, axis=1, kind="stable") for S in dense]

    def labels_at(k: int) -> list[ModelLabel]:
        out = []
        for S, o in zip(dense, order, strict=True):
            idx = o[:, :k].astype(np.uint16)
            out.append(ModelLabel(idx, np.take_along_axis(S, idx.astype(np.int64), 1).astype(
                np.float16), S[m_img, m_node].astype(np.float16),
                pd.DataFrame({"node_id": g.node_ids}), {"graph_version": g.version}))
        return out

    def choose(rows, pred, Z) -> np.ndarray:
        return top_models(reuse_metric(class_scores(*node_counts(rows, pred), Z)), 1)[:, 0]

    exact = []
    for m in matchings:
        rows = candidate_rows(g, labels_at(1), m.cand_nodes)
        pred = dense_predictions(dense, rows)
        exact.append((pred, choose(rows, pred, m.Z)))
    results = []
    for k, fb in ((k, fb) for k in KS for fb in FALLBACKS):
        labs = labels_at(k)
        same_cls = total_cls = same_pred = total_pred = 0
        for m, (dpred, dchoice) in zip(matchings, exact, strict=True):
            rows = candidate_rows(g, labs, m.cand_nodes)
            pred = restricted_predictions(rows, len(g.nodes), fallback=fb)
            same_pred += int((pred == dpred).sum())
            total_pred += pred.size
            c = choose(rows, pred, m.Z)
            same_cls += int((c == dchoice).sum())
            total_cls += len(c)
        bpi = labs[0].bytes_per_image()
        results.append({"K": k, "fallback": fb, "same_top1_model": round(same_cls / total_cls, 4),
                        "pairs": total_cls, "same_restricted_prediction": round(
                            same_pred / total_pred, 5), "bytes_per_image": round(bpi, 1),
                        "dense_bytes_per_image_fp16": len(g.nodes) * 2})
        print(json.dumps(results[-1]), flush=True)
    out = Path(__file__).parent / "results" / "label_compact.md"
    with out.open("w") as f:
        f.write("# Compact label vs dense\n\nCommand: `uv run python benchmarks/bench_label_"
                f"compact.py` ({time.strftime('%Y-%m-%d')}; {len(refs)} demo models, "
                f"{len(tasks)} demo tasks, {len(g.nodes)} nodes, {len(g.images)} images)\n\n"
                "same top-1 model = share of (task, class) pairs where selection on the compact "
                "label picks the same k=1 model as on the dense similarities. fallback = what an image "
                "with no candidate in its top-K counts as: `none` (the default: a miss, a false "
                "positive for nobody) or `members` (its best own candidate).\n\n"
                "| K | fallback | same top-1 model | (task, class) pairs | same restricted "
                "prediction | bytes/image | dense fp16 bytes/image |\n"
                "|---|---|---|---|---|---|---|\n")
        for r in results:
            f.write(f"| {r['K']} | {r['fallback']} | {r['same_top1_model']:.2%} | {r['pairs']} | "
                    f"{r['same_restricted_prediction']:.3%} | {r['bytes_per_image']} | "
                    f"{r['dense_bytes_per_image_fp16']} |\n")


if __name__ == "__main__":
    main()
