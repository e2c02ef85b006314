"""Benchmark: where in its top-K ranking an image meets the first of a task's candidate nodes.

Decides whether a label layout that reads a short rank prefix first (then the rest only for the
images the prefix does not settle) would read fewer bytes. Real labels: the demo's 10 models on
the demo graph (run `mll demo` first); tasks: 5 pseudo-tasks of 20 classes named by random node
lemmas of the graph (as bench_selection_disk.py builds its task; no evaluation task is used).
For every candidate image and model: the rank of its first candidate (0 .. K-1, or none).

    uv run python benchmarks/bench_rank_prefix.py [--data-dir DIR] [--graph G] [--tasks 5]
        [--classes 20]

Appends to benchmarks/results/rank_prefix.md.
"""

from __future__ import annotations

import argparse

import numpy as np
from _results import append_rows, stamp

BINS = [0, 1, 2, 4, 16, 64, 65]
NAMES = ["rank 0", "rank 1", "ranks 2-3", "ranks 4-15", "ranks 16-63", "none"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--graph", default=None, help="graph bundle (default: the demo's)")
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--classes", type=int, default=20)
    args = ap.parse_args()
    from mll_registry.app.root import App
    from mll_registry.selection.matching import match
    from mll_registry.selection.select import _candidate_lookup, candidate_set
    from mll_registry.settings import DEFAULTS
    from mll_registry.task import Task

    a = App.configured(data_dir=args.data_dir)
    from pathlib import Path

    g = a.graphs.of(args.graph or str(Path(a.root) / "graphs" / "demo"))
    labels = a.selection.mapped_labels(g)
    rng = np.random.default_rng(0)
    lemmas = g.nodes["lemma"].drop_duplicates(keep=False).to_numpy()
    hist = np.zeros(len(NAMES))
    for t in range(args.tasks):
        task = Task.from_dict({"name": f"pseudo{t}", "classes": sorted(
            rng.choice(lemmas, args.classes, replace=False).tolist())})
        m = match(task, g, embedder=a.embedder, provider=a.caption_provider,
                  top_n=DEFAULTS.top_n, root=a.root)
        cs = candidate_set(g, m.cand_nodes)
        _, is_cand = _candidate_lookup(cs.cand_nodes, len(g.nodes))
        for lab in labels.values():
            idx = np.empty((len(cs.img_ids), lab.topk_idx.shape[1]), lab.topk_idx.dtype)
            lab.read_rows("topk_idx", cs.img_ids, idx)
            hit = is_cand[idx.astype(np.int64)]
            first = np.where(hit.any(1), hit.argmax(1), 64)
            hist += np.histogram(first, bins=BINS)[0]
    share = hist / hist.sum()
    print(", ".join(f"{n}: {v:.3f}" for n, v in zip(NAMES, share, strict=True)))
    append_rows(
        "rank_prefix.md",
        "# Rank of the first candidate node\n\nCommand: `uv run python "
        "benchmarks/bench_rank_prefix.py` (after `mll demo`). The demo's models on the demo "
        "graph; pseudo-tasks of random node lemmas; share of (candidate image, model) pairs "
        "whose first candidate node is at each rank of the K=64 ranking.\n\n"
        f"| date | machine | models | nodes | tasks x classes | {' | '.join(NAMES)} |\n"
        f"|---|---|---|---|---|{'---|' * len(NAMES)}\n",
        [f"{stamp()} | {len(labels)} | {len(g.nodes)} | {args.tasks} x {args.classes} | "
         + " | ".join(f"{v:.3f}" for v in share)])


if __name__ == "__main__":
    main()
