"""Domain-aware source weights: how much each sample source's counts count for a task.

A graph's images come from several sample sources of different domains (the paper's ImageNet,
-Sketch, -R, ...; the demo's colour emoji, line drawings, silhouettes, ...). A model's measured
ability on a line drawing says more about a line-drawing task than its ability on colour photos.
Selection therefore pools the per-source counts (TP, FP, P) with weights

    w_s = softmax_s( cos(E(task domain), E(description of s)) / T )

from text alone (the sentence embedder of matching; no task image), with temperature ``T``
(``Settings.source_temperature``). Pooled counts with weights w are sum_s w_s * count_s, so
precision and F1 are ratios of weighted counts; uniform weights give back the paper's pooled
counts exactly (each image weighs 1).

Weights fall back to uniform, and say why, when the task names no domain, when the graph has a
single source, or when a source has no description. :func:`calibrate_temperature` measures a
temperature on the sample sources alone (leave one source out: how well do the other sources,
weighted by their descriptions' similarity to its description, predict the models' accuracy on
it?), never on task accuracies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mll_registry.settings import DEFAULTS

MODES = ("domain", "uniform")


class TextEmbedder(Protocol):
    """Normalised sentence embeddings (matching's :class:`~mll_registry.selection.matching.Embedder`)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class SourceWeights:
    """The weight of each sample source for one task (they sum to 1), and how it was set."""

    mode: str  # what was asked: domain | uniform
    weights: dict[str, float]
    temperature: float
    domain: str | None = None
    similarity: dict[str, float] = field(default_factory=dict)  # cos(domain, description)
    reason: str = ""  # why the weights are uniform although ``domain`` was asked

    @property
    def uniform(self) -> bool:
        return len(set(self.weights.values())) <= 1

    def image_weights(self, sources: Sequence[str] | np.ndarray) -> np.ndarray:
        """(n,) weight of each image given its source name, scaled so that uniform weights are
        all 1.0 (the paper's counts, exactly)."""
        names = sorted(self.weights)
        per = np.array([self.weights[n] for n in names], np.float64) * len(names)
        codes = np.searchsorted(names, np.asarray(sources, dtype=object).astype(str))
        return per[np.minimum(codes, len(names) - 1)]

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "temperature": self.temperature, "domain": self.domain,
                "weights": {k: round(v, 4) for k, v in self.weights.items()},
                "similarity": {k: round(v, 4) for k, v in self.similarity.items()},
                "uniform": self.uniform, "reason": self.reason}


def softmax_weights(similarity: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(similarity / temperature), computed stably."""
    if temperature <= 0:
        raise ValueError(f"the source temperature must be > 0, got {temperature}")
    z = np.asarray(similarity, np.float64) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def source_weights(domain: str | None, descriptions: Mapping[str, str],
                   embedder: TextEmbedder | None, mode: str = DEFAULTS.source_weighting,
                   temperature: float = DEFAULTS.source_temperature) -> SourceWeights:
    """Weights of the sources ``descriptions`` (name -> domain description) for a task whose
    domain is ``domain`` (None: the task names none)."""
    if mode not in MODES:
        raise ValueError(f"source weighting must be one of {MODES}, got {mode!r}")
    names = sorted(descriptions)
    if not names:
        raise ValueError("the graph records no sample source")
    uniform = {n: 1.0 / len(names) for n in names}
    reason = ""
    if mode == "uniform":
        pass
    elif len(names) == 1:
        reason = "the graph has one sample source"
    elif not domain:
        reason = "the task names no domain"
    elif not all(descriptions[n] for n in names):
        missing = [n for n in names if not descriptions[n]]
        reason = (f"sources {missing} have no description (describe them: "
                  "`mll graph build --describe NAME=TEXT`)")
    if mode == "uniform" or reason or embedder is None:
        return SourceWeights(mode, uniform, temperature, domain,
                             reason=reason or ("" if mode == "uniform" else "no text embedder"))
    emb = embedder.encode([str(domain)] + [descriptions[n] for n in names])
    sim = emb[1:] @ emb[0]
    w = softmax_weights(sim, temperature)
    return SourceWeights(mode, dict(zip(names, w.tolist(), strict=True)), temperature, domain,
                         dict(zip(names, sim.astype(float).tolist(), strict=True)))


def source_accuracy(graph: Any, labels: Sequence[Any]) -> tuple[list[str], np.ndarray]:
    """(sources, (M, S) accuracy@1) of each model over the images of the graph's folder nodes,
    per source: the measured ability that calibration predicts, read from the per-source counts
    each label's summary keeps (nothing is recomputed).

    Raises:
        LabelError: a label predates per-source counts (the message names the relabelling).
    """
    from mll_registry.labels.format import no_source_counts, source_column, summary_sources

    folder = graph.nodes["n_own"].to_numpy() > 0
    names = sorted(summary_sources(labels[0].summary)) if labels else []
    acc = np.zeros((len(labels), len(names)))
    for i, lab in enumerate(labels):
        if not names or not summary_sources(lab.summary):
            raise no_source_counts([str(lab.meta.get("model_ref", "MODEL_REF"))])
        for j, src in enumerate(names):
            n = lab.summary[source_column("n_images", src)].to_numpy()[folder].sum()
            hits = lab.summary[source_column("hits1", src)].to_numpy()[folder].sum()
            acc[i, j] = hits / max(n, 1)
    return names, acc


def calibrate_temperature(acc: np.ndarray, names: Sequence[str], descriptions: Mapping[str, str],
                          embedder: TextEmbedder,
                          grid: Sequence[float] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
                          ) -> list[dict[str, Any]]:
    """Leave-one-source-out agreement per temperature, on the sample sources alone.

    For each source s, the models' accuracy on s (``acc[:, s]``, from :func:`source_accuracy`)
    is predicted by the other sources' accuracies weighted by softmax(cos(E(desc s),
    E(desc s')) / T); the score is the Kendall tau between predicted and measured model order,
    averaged over s. ``uniform`` (T = inf) is reported too. Rows sorted as ``grid``, then uniform.
    """
    from scipy.stats import kendalltau

    emb = embedder.encode([descriptions[n] for n in names])
    S = len(names)
    rows = []
    for T in [*grid, float("inf")]:
        taus = []
        for s in range(S):
            others = [o for o in range(S) if o != s]
            sim = emb[others] @ emb[s]
            w = (np.full(len(others), 1 / len(others)) if np.isinf(T)
                 else softmax_weights(sim, T))
            pred = acc[:, others] @ w
            taus.append(float(kendalltau(pred, acc[:, s]).statistic))
        rows.append({"temperature": T, "tau_mean": round(float(np.nanmean(taus)), 4),
                     "tau_per_source": dict(zip(names, np.round(taus, 4).tolist(),
                                                strict=True))})
    return rows
