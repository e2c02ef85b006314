"""How the reuse mode and the fall-back rule were chosen: leave-one-source-out pseudo-tasks of
the demo graph's own sample sources (mll_registry.evaluation.tuning), never the demo tasks.

    uv run python benchmarks/bench_reuse_settings.py [--data-dir DIR]

Labels the demo hub on the demo graph if needed (with embeddings, as `mll bench` does), builds
the pseudo-tasks (8 per source, 20-40 classes), and writes the table of mean top-1 per (mode,
threshold) to benchmarks/results/reuse_settings.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(RESULTS / "reuse_settings.md"))
    args = ap.parse_args()

    from mll_registry.app.root import App
    from mll_registry.demo.hub import ensure_demo_labels
    from mll_registry.evaluation.tuning import choose_reuse_settings, pseudo_evidence
    from mll_registry.labels.embeddings import embeddings_path
    from mll_registry.labels.stores import load_labels

    app = App.configured(data_dir=args.data_dir)
    t0 = time.perf_counter()
    g = app.graphs.get("demo")
    paths = ensure_demo_labels(g, app.label_config(), app.root, log=print)
    labels = load_labels(paths, g.version)
    s = app.settings
    ev = pseudo_evidence(g, labels, {r: embeddings_path(p) for r, p in paths.items()},
                         alpha=s.alpha, metric=s.metric)
    t1 = time.perf_counter()
    choice = choose_reuse_settings(ev, weighting=s.weighting)
    t2 = time.perf_counter()
    md = (f"# Reuse settings chosen on the graph's own sources\n\n"
          f"`uv run python benchmarks/bench_reuse_settings.py` on the demo graph {g.version} "
          f"({len(labels)} demo models, {choice.tasks} leave-one-source-out pseudo-tasks: "
          f"selection counts without the task's source, probabilities from the labels' "
          f"embeddings; alpha {s.alpha}, metric {s.metric}, k=1). Evidence {t1 - t0:.1f} s, "
          f"grid {t2 - t1:.1f} s on 2 CPU cores.\n\n"
          f"Best: reuse mode **{choice.best[0]}**, fall back below z = **{choice.best[1]}** "
          "(None: never; 1e9: always, the task-level single model).\n\n" + choice.markdown())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(md)
    Path(args.out).with_suffix(".json").write_text(json.dumps(choice.to_dict(), indent=2) + "\n")
    print(md)


if __name__ == "__main__":
    main()
