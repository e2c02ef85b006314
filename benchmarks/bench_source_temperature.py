"""Choosing the source-weight temperature on the demo graph's sample sources alone.

Each sample source is left out in turn: the models' accuracy@1 on its images (own images of
folder nodes, from the labels) is predicted by the other sources' accuracies, weighted by
softmax(cos(E(its description), E(their descriptions)) / T); the score is the Kendall tau between
predicted and measured model order, averaged over the left-out sources; the best T is the one
with the best mean tau (ties: the larger T, the smoother weights). No task image and no task
accuracy is used: the rule sees only the graph, the labels and the source descriptions.

    uv run python benchmarks/bench_source_temperature.py      # the demo graph and its 10 models
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import RESULTS, stamp  # noqa: E402


def main() -> None:
    from mll_registry.app.root import App
    from mll_registry.demo.hub import ensure_demo_labels
    from mll_registry.labels.stores import load_labels
    from mll_registry.selection.matching import Embedder
    from mll_registry.selection.source_weights import calibrate_temperature, source_accuracy

    a = App.configured()
    g = a.graphs.get("demo")
    labels = load_labels(ensure_demo_labels(g, a.label_config(), a.root, log=print), g.version)
    refs = sorted(labels)
    names, acc = source_accuracy(g, [labels[r] for r in refs])
    descr = g.source_descriptions
    rows = calibrate_temperature(acc, names, descr, Embedder())
    best = max(rows, key=lambda r: (r["tau_mean"], r["temperature"]))
    lines = [f"# Source-weight temperature on the sample sources alone ({stamp()})", "",
             "Command: `uv run python benchmarks/bench_source_temperature.py` "
             f"(graph {g.version}, {len(refs)} demo models). Leave one source out: the other "
             "sources' accuracy@1, weighted by softmax(description similarity / T), predicts the "
             "models' order on the left-out source (Kendall tau). No task data is used.", "",
             "Per-model accuracy@1 on each source's own images:", "",
             "| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for r, row in zip(refs, acc, strict=True):
        lines.append(f"| {r.rsplit('/', 1)[-1]} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    lines += ["", "| T | mean tau | " + " | ".join(f"tau {n}" for n in names) + " |",
              "|---:|---:|" + "---:|" * len(names)]
    for row in rows:
        t = "uniform" if row["temperature"] == float("inf") else f"{row['temperature']:g}"
        lines.append(f"| {t} | {row['tau_mean']:.3f} | " +
                     " | ".join(f"{row['tau_per_source'][n]:.3f}" for n in names) + " |")
    from mll_registry.settings import DEFAULTS

    lines += ["", f"Best by this rule: T = {best['temperature']:g} (mean tau "
              f"{best['tau_mean']:.3f}); uniform weights are the worst predictor. The setting "
              f"`source_temperature` = {DEFAULTS.source_temperature:g} was fixed before this "
              "measurement and is kept (domain weighting is opt-in; README \"Benchmarks\").", ""]
    out = RESULTS / "source_temperature.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
