"""How the reuse settings were chosen: pseudo-tasks of the graph's own sample sources
(mll_registry.evaluation.tuning), never the demo tasks.

    apt-get install openclipart-svg   # as root, once (the sixth source; --no-clipart without it)
    uv run python benchmarks/bench_reuse_settings.py [--data-dir DIR] [--no-clipart]

Labels the demo hub on the demo graph if needed (with embeddings, as `mll bench` does). Drawings
from Debian's openclipart-svg (cleared for graph use; never training or tasks), mapped to the
demo graph's concepts (mll_registry.demo.clipart), join the demo graph as a sixth sample source
in a child graph (`extend`: the labels are reused, only the drawings are embedded): the one
source of art no demo model was trained on, as the target tasks' art is. Each source is held out
in turn: its pseudo-tasks (20-40 of its concepts; 8 per emoji source, 24 from the drawings) are
selected on counts from the other five sources, with each model's calibrated scale fitted
without it too, and scored on its images. The rule (the one of stop 34, over one more source
and one more setting): the (reuse mode, fall-back threshold, calibration) with the best mean
top-1 over the held-out sources, each source counting alike, is the default. Writes
benchmarks/results/reuse_settings.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
EMOJI_TASKS = 8  # pseudo-tasks per emoji source (as in stop 34)
CLIPART_TASKS = 24  # pseudo-tasks of the drawings (fewer concepts: more draws, same weight)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--no-clipart", action="store_true",
                    help="the five emoji sources of the demo graph only")
    ap.add_argument("--out", default=str(RESULTS / "reuse_settings.md"))
    args = ap.parse_args()

    from mll_registry.app.root import App
    from mll_registry.demo.hub import ensure_demo_labels
    from mll_registry.evaluation.baselines import pseudo_tasks
    from mll_registry.evaluation.tuning import choose_reuse_settings, pseudo_evidence
    from mll_registry.labels.embeddings import embeddings_path

    app = App.configured(data_dir=args.data_dir)
    s = app.settings
    t0 = time.perf_counter()
    g = app.graphs.get("demo")
    paths = ensure_demo_labels(g, app.label_config(), app.root, log=print)
    info: dict[str, object] = {"demo_graph": g.version}
    if not args.no_clipart:
        g, paths, more = with_clipart(app, g, paths)
        info.update(more)
    from mll_registry.labels.stores import load_labels

    labels = load_labels(paths, g.version)
    tasks = [t for t in pseudo_tasks(g, per_source=max(EMOJI_TASKS, CLIPART_TASKS))
             if int(t.name.rsplit("/", 1)[1]) < (CLIPART_TASKS if t.source == "openclipart"
                                                 else EMOJI_TASKS)]
    t1 = time.perf_counter()
    ev = pseudo_evidence(g, labels, {r: embeddings_path(p) for r, p in paths.items()},
                         alpha=s.alpha, metric=s.metric, tasks=tasks)
    choice = choose_reuse_settings(ev, weighting=s.weighting)
    t2 = time.perf_counter()
    only = {src: max(choice.per_source, key=lambda k: (choice.per_source[k][src],
                                                         -list(choice.table).index(k)))
            for src in sorted({t.source for t in tasks})}
    zname = {None: "never", 1e9: "always"}
    fmt = lambda k: f"{k[0]}, z={zname.get(k[1], k[1])}, {k[2]}"  # noqa: E731
    md = ("# Reuse settings chosen on the graph's own sources\n\n"
          f"`uv run python benchmarks/bench_reuse_settings.py`: {t2 - t0:.0f} s on 2 CPU cores "
          f"with the demo labels in place (evidence {t2 - t1:.0f} s); alpha {s.alpha}, metric "
          f"{s.metric}, k=1, {len(labels)} demo models, graph {g.version}"
          + (f" (the demo graph {info['demo_graph']} + {info['drawings']} openclipart drawings "
             f"of {info['concepts']} of its concepts, 3+ each, {info['failed']} SVGs failed to "
             f"draw; {info['label_seconds']:.0f} s to label the 10 models incrementally)"
             if "drawings" in info else "") +
          f". {choice.tasks} pseudo-tasks, each source held out in turn (counts and calibration "
          "from the other sources); the mean is over sources, each counting alike.\n\n"
          f"**Default: {fmt(choice.best)}** (mean top-1 {choice.table[choice.best]:.4f}).\n\n"
          "Best per held-out source alone: " +
          "; ".join(f"{src}: {fmt(k)} ({choice.per_source[k][src]:.3f})"
                    for src, k in only.items()) + ".\n\n" + choice.markdown())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(md)
    Path(args.out).with_suffix(".json").write_text(
        json.dumps({**choice.to_dict(), **info}, indent=1) + "\n")
    print(md)


def with_clipart(app, g, paths):  # type: ignore[no-untyped-def]
    """The demo graph grown by the openclipart drawings, its labels (incremental) and what went
    into it."""
    from mll_registry.demo import clipart as K
    from mll_registry.labels.embeddings import LabelEmbeddings, embeddings_path
    from mll_registry.labels.labeller import label_ref
    from mll_registry.labels.stores import LocalLabelStore

    own = g.members[g.members["own"].to_numpy(bool)]
    rendered = K.ensure_clipart_images(set(own["node_id"]), root=app.root)
    child = app.graphs.extend("demo", [f"{K.SOURCE}={rendered.path}"],
                              describe=[f"{K.SOURCE}={K.DESCRIPTION}"]).graph
    cfg = app.label_config()
    have = LocalLabelStore(app.root).list_labels(child.version, cfg.label_hash())
    t0 = time.perf_counter()
    for ref, parent in paths.items():
        if ref not in have:
            have[ref] = label_ref(ref, child, cfg, root=app.root,
                                  reuse=LabelEmbeddings.open(embeddings_path(parent)))[1]
    info = {"concepts": rendered.concepts, "drawings": rendered.images,
            "failed": rendered.failed, "label_seconds": round(time.perf_counter() - t0, 1)}
    return child, {r: have[r] for r in paths}, info


if __name__ == "__main__":
    main()
