"""Benchmark: labelling a grown graph incrementally vs relabelling it in full.

Two graphs, each extended into a child (``mll_registry.graph.lineage.extend_graph``):

* **demo**: the demo graph + its 60 extension concepts (Noto and Symbola renders), labelled with
  the 10 trained demo models;
* **synthetic**: ``--images`` (20,000) synthetic 256 px JPEGs, 75 per node, + 5 % new images on
  new nodes, labelled with the demo ViT architecture with **random-init weights** (throughput
  only: the labels are not used for anything).

Per model, in one process, the parent label is computed first (untimed here: it keeps the fp16
embeddings), then on the child: ``App.label`` incrementally (only new images and node texts are
encoded) and in full (``full=True``, into another data dir). Reported: seconds of each, the
incremental share against the new images' share, whether the two labels agree (top-K sets,
per-node accuracies; largest score difference), and the embeddings file per model, measured and
extrapolated to the paper's 680,000 images.

    uv run python benchmarks/bench_graph_growth.py [--images 20000] [--work /tmp/mll-bench-growth]

Appends to benchmarks/results/graph_growth.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from _results import append_rows, stamp

PAPER_IMAGES = 680_000


def _agree(a_path: str, b_path: str) -> tuple[bool, float]:
    from mll_registry.labels.format import ModelLabel

    a, b = ModelLabel.load(a_path), ModelLabel.load(b_path)
    same = (np.array_equal(np.sort(a.topk_idx, 1), np.sort(b.topk_idx, 1))
            and np.array_equal(a.summary[["acc1", "acc5"]].to_numpy(),
                               b.summary[["acc1", "acc5"]].to_numpy()))
    diff = float(np.abs(a.member_score.astype(np.float32) - b.member_score.astype(np.float32))
                 .max(initial=0))
    return same, diff


def run(name: str, parent_spec: str, child_path: str, refs: list[str], work: Path) -> list[str]:
    from mll_registry.app.root import App
    from mll_registry.graph.bundle import SemanticGraph
    from mll_registry.labels.embeddings import embeddings_path
    from mll_registry.settings import Settings

    inc_app = App(Settings(label_store="local", device="cpu"))
    full_app = App(Settings(data_dir=str(work / f"full-{name}"), label_store="local",
                            device="cpu"))
    parent = inc_app.graphs.get(parent_spec)
    child = SemanticGraph.load(child_path)
    new_rows = int((~child.images["digest"].isin(set(parent.images["digest"]))).sum())
    share = new_rows / len(child.images)
    t_inc = t_full = c_inc = c_full = 0.0
    agree, worst, emb_bytes, dim = True, 0.0, [], 0
    for ref in refs:
        inc_app.labelling.label(ref, parent).to_dict()
        t = time.perf_counter()
        inc = inc_app.labelling.label(ref, child, force=True).to_dict()
        t_inc += time.perf_counter() - t
        assert inc["images_encoded"] == new_rows, inc["incremental"]
        t = time.perf_counter()
        full = full_app.labelling.label(ref, child, force=True, full=True).to_dict()
        t_full += time.perf_counter() - t
        c_inc += inc["seconds"]["total"]
        c_full += full["seconds"]["total"]
        ok, diff = _agree(inc["path"], full["path"])
        agree, worst = agree and ok, max(worst, diff)
        emb_bytes.append(embeddings_path(inc["path"]).stat().st_size)
        from mll_registry.labels.format import ModelLabel

        dim = int(ModelLabel.load(inc["path"]).meta["embed_dim"])
        print(f"{name} {ref}: incremental {inc['seconds']['total']:.2f} s, full "
              f"{full['seconds']['total']:.2f} s", flush=True)
    per_model = float(np.mean(emb_bytes))
    per_image = per_model / len(child.images)
    paper = {d: PAPER_IMAGES * (2 * d + 16) / 1e9 for d in (512, 768)}
    print(f"{name}: {len(refs)} models, incremental {t_inc:.1f} s vs full {t_full:.1f} s "
          f"({t_inc / t_full:.1%}; new images {share:.1%}); agree={agree}, max score diff {worst}")
    return [f"{stamp()} | {name} | {len(refs)} | {len(parent.images)} -> {len(child.images)} "
            f"(+{new_rows}) | {len(parent.nodes)} -> {len(child.nodes)} | {t_full:.1f} | "
            f"{t_inc:.1f} | {t_inc / t_full:.1%} | {c_full:.1f} | {c_inc:.1f} | "
            f"{c_inc / c_full:.1%} | {share:.1%} | "
            f"{'yes' if agree else 'NO'} ({worst:.1e}) | {per_model / 1e6:.2f} "
            f"({per_image:.0f} B/image, d={dim}) | {paper[512]:.2f} / {paper[768]:.2f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--growth", type=float, default=0.05, help="new images, share of --images")
    ap.add_argument("--work", default="/tmp/mll-bench-growth")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    os.environ.setdefault("MLL_DATA_DIR", str(work / "data"))

    from bench_labeling_scale import synthetic_images

    from mll_registry.app.root import App
    from mll_registry.demo.archs import build_tiny
    from mll_registry.demo.hub import demo_refs
    from mll_registry.graph.bundle import GraphConfig, SampleDataset, SemanticGraph, build_and_save
    from mll_registry.models.loading import save_open_clip_dir

    a = App.configured()
    rows: list[str] = []
    if not args.skip_demo:
        out = a.graphs.extend("demo", demo=True, out=work / "demo-child").to_dict()
        rows += run("demo", "demo", out["path"], demo_refs(), work)

    per_node = 75
    n_nodes = -(-args.images // per_node)
    base = synthetic_images(work / "images" / f"base-{args.images}", args.images)
    n_new = round(args.images * args.growth)
    more = synthetic_images(work / "images" / f"new-{n_new}", n_new, node_offset=n_nodes)
    gpath = work / "graphs" / f"synthetic-{args.images}"
    if (gpath / "manifest.json").is_file():
        parent = SemanticGraph.load(gpath)
    else:
        parent, _ = build_and_save([SampleDataset("synthetic", base)], gpath,
                                   GraphConfig(expand_hypernyms=False))
    out = a.graphs.extend(str(gpath), [f"synthetic-new={more}"],
                          out=work / "graphs" / f"synthetic-{args.images}-child").to_dict()
    mdir = work / "models" / "demo-vit-random"
    if not (mdir / "open_clip_config.json").is_file():
        model, cfg = build_tiny("tiny-vit", seed=0)  # random init: throughput only
        save_open_clip_dir(model, cfg, mdir)
    rows += run("synthetic", str(gpath), out["path"], [f"local-dir:{mdir}"], work)
    if args.no_record:
        return
    header = (
        "# Graph growth: incremental labels vs full relabelling\n\n"
        "Command: `uv run python benchmarks/bench_graph_growth.py` (2 CPU cores). *demo*: the "
        "demo graph + its 60 extension concepts, the 10 trained demo models. *synthetic*: 20,000 "
        "synthetic JPEGs (75 per node) + 5 % new images on new nodes, the demo ViT architecture "
        "with random-init weights (throughput only). Seconds, summed over the models: `App.label` "
        "on the child as a caller sees it (resolving and loading the model, labelling, writing "
        "the label and its embeddings), and the labelling alone (`label_model`: text and image "
        "towers, compact label); full = `full=True`. Agree: same top-K sets and per-node accuracies (largest member-score "
        "difference). Embeddings: the fp16 file kept per model (measured), and at the paper's "
        "680,000 images for d = 512 (ViT-B) / 768 (ViT-L).\n\n"
        "| date | machine | graph | models | images parent -> child | nodes | full s | "
        "incremental s | incremental / full | labelling full s | labelling incremental s | "
        "labelling incremental / full | new images | agree | embeddings MB per model | "
        "at 680k images GB (d=512 / 768) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    print(append_rows("graph_growth.md", header, rows))


if __name__ == "__main__":
    main()
