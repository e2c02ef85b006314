"""Choosing the reuse settings on the graph's own sources: leave-one-source-out pseudo-tasks.

A pseudo-task (:func:`~mll_registry.evaluation.baselines.pseudo_tasks`: C folder nodes of one
sample source S and their own images from S) stands for a task in a style the selection has
not seen: its models are selected on counts from every *other* source (S weighs 0), and each
model's class probabilities on S's images come from its label's stored fp16 embeddings (the
prompts the label was computed with; no model is run). Probabilities are taken at each model's
own logit scale and at its calibrated one (:mod:`mll_registry.labels.calibration`), fitted,
like the counts, without the task's source. The reuse mode, the fall-back rule and the
calibration are then chosen by the mean top-1 over the pseudo-tasks, never on a target task's
images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mll_registry.evaluation.baselines import PseudoTask, label_node_prompts, pseudo_tasks
from mll_registry.graph.bundle import SemanticGraph
from mll_registry.labels.calibration import (
    CALIBRATIONS,
    calibrate_on_graph,
    own_nodes,
    probabilities,
)
from mll_registry.labels.format import ModelLabel
from mll_registry.selection.reuse import REUSE_MODES, ensemble_scores, routing_weights
from mll_registry.selection.select import (
    choose,
    class_margins,
    class_scores,
    count_all,
    reuse_metric,
)
from mll_registry.settings import DEFAULTS

#: the fall-back thresholds tried (standard errors); None: never fall back; 1e9: always (the
#: task-level single model)
Z_GRID: tuple[float | None, ...] = (None, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 1e9)


#: a grid point: (reuse mode, fall-back threshold, calibration)
Setting = tuple[str, float | None, str]


@dataclass
class PseudoEvidence:
    """One pseudo-task as selection and reuse see it (models in sorted ref order)."""

    task: PseudoTask
    cos: list[np.ndarray] = field(repr=False)  # per model (n, C) image-to-class similarities
    scales: dict[str, list[float]] = field(repr=False)  # per calibration, each model's scale
    score: np.ndarray = field(repr=False)  # (M, C) class score, the task's source held out
    reuse: np.ndarray = field(repr=False)  # (M, C) reuse metric
    n: np.ndarray = field(repr=False)  # (C,) images behind each class's score
    _probs: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False)

    def probs(self, calibration: str = DEFAULTS.calibration) -> list[np.ndarray]:
        """Each model's (n, C) class probabilities at the ``calibration``'s scales (computed
        once per calibration: every grid point reuses them)."""
        if calibration not in self._probs:
            self._probs[calibration] = [probabilities(c, s) for c, s in
                                        zip(self.cos, self.scales[calibration], strict=True)]
        return self._probs[calibration]

    def top1(self, mode: str, z: float | None, k: int = 1,
             weighting: str = DEFAULTS.weighting, calibration: str = DEFAULTS.calibration,
             ) -> float:
        """Top-1 of the ensemble that reuse ``mode``, fall-back threshold ``z`` and
        ``calibration`` give."""
        margins = class_margins(self.score, self.reuse, self.n, z)
        chosen = choose(self.reuse, k, margins=margins)
        routing = None if mode == "per_class" else routing_weights(chosen, self.reuse, mode)
        scores = ensemble_scores(self.probs(calibration), chosen, weighting, routing)
        return float(np.mean(scores.argmax(1) == self.task.targets))


def pseudo_evidence(graph: SemanticGraph, labels: Mapping[str, ModelLabel],
                    embeddings: Mapping[str, Path | str],
                    alpha: float = DEFAULTS.alpha, metric: str = DEFAULTS.metric,
                    tasks: Sequence[PseudoTask] | None = None) -> list[PseudoEvidence]:
    """Every pseudo-task of ``graph`` (default: :func:`pseudo_tasks`) with its held-out counts
    and each model's probabilities from its label's embeddings.

    Raises:
        EmbeddingsError: a model has no embeddings, or they miss an image or node of a task.
    """
    from mll_registry.evaluation.baselines import check_embeddings
    from mll_registry.labels.embeddings import LabelEmbeddings, digest_bytes, row_index, text_keys

    refs = sorted(labels)
    check_embeddings(refs, embeddings)
    tasks = list(tasks) if tasks is not None else pseudo_tasks(graph)
    pos = graph.node_index()
    source = graph.images["source"].to_numpy()
    digests = graph.images["digest"].to_numpy()
    own = own_nodes(graph.members, len(graph.images), pos)
    folder = np.unique(own[own >= 0])
    sources = sorted({t.source for t in tasks})
    cos: list[list[np.ndarray]] = [[] for _ in tasks]
    scales: list[dict[str, list[float]]] = [{c: [] for c in CALIBRATIONS} for _ in tasks]
    for ref in refs:
        emb = LabelEmbeddings.open(Path(embeddings[ref]))
        t_rows = row_index(emb.text_key, text_keys(label_node_prompts(graph, labels[ref])))
        all_rows = row_index(emb.image_digest, digest_bytes(digests))
        if (t_rows < 0).any() or (all_rows[own >= 0] < 0).any():
            from mll_registry.labels.embeddings import EmbeddingsError

            raise EmbeddingsError(f"{emb.path}: images or node texts of graph {graph.version} "
                                  f"are not in these embeddings; relabel {ref}")
        txt_all = np.asarray(emb.text_emb[t_rows], np.float32)
        img_all = np.asarray(emb.image_emb[np.maximum(all_rows, 0)], np.float32)
        own_scale = float(labels[ref].meta.get("logit_scale", 100.0))
        fitted = {}  # the calibrated scale without each task source's images (own: no fit)
        for src in sources:
            cal = calibrate_on_graph(img_all, txt_all, own, folder,
                                     weight=(source != src).astype(np.float64))
            fitted[src] = cal.logit_scale if cal else own_scale
        for i, t in enumerate(tasks):
            x = img_all[t.image_ids]
            txt = txt_all[[pos[n] for n in t.nodes]]
            cos[i].append(x @ txt.T)
            scales[i]["none"].append(own_scale)
            scales[i]["graph"].append(fitted[t.source])
    out = []
    for i, t in enumerate(tasks):
        cand = np.array([pos[n] for n in t.nodes], np.int64)
        held_out = (source != t.source).astype(np.float64)
        TP, FP, P = count_all(graph, [labels[r] for r in refs], cand, image_weight=held_out)
        Z = np.eye(len(t.nodes))
        s = class_scores(TP, FP, P, Z, metric)
        out.append(PseudoEvidence(t, cos[i], scales[i], s, reuse_metric(s, alpha), P @ Z))
    return out


@dataclass
class ReuseChoice:
    """Mean pseudo-task top-1 of every (reuse mode, threshold, calibration) and the best."""

    table: dict[Setting, float]
    per_source: dict[Setting, dict[str, float]]
    best: Setting
    tasks: int

    def markdown(self, rows: int | None = None) -> str:
        """The table, best first (``rows``: the first that many)."""
        sources = sorted(next(iter(self.per_source.values())))
        zname = {None: "never", 1e9: "always"}
        head = ("| reuse mode | fall back below z | calibration | mean top-1 | " +
                " | ".join(sources) + " |\n|---|---:|---|---:|" + "---:|" * len(sources) + "\n")
        out = []
        for key, v in sorted(self.table.items(), key=lambda kv: -kv[1])[:rows]:
            mode, z, cal = key
            mark = "**" if key == self.best else ""
            out.append(f"| {mark}{mode}{mark} | {zname.get(z, z)} | {cal} | {mark}{v:.4f}{mark} | "
                       + " | ".join(f"{self.per_source[key][s]:.3f}" for s in sources) + " |")
        return head + "\n".join(out) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"best": {"reuse_mode": self.best[0], "fallback_z": self.best[1],
                         "calibration": self.best[2]},
                "tasks": self.tasks,
                "table": [{"reuse_mode": m, "fallback_z": z, "calibration": c,
                           "mean_top1": round(v, 4),
                           "per_source": {k: round(x, 4) for k, x in
                                          self.per_source[(m, z, c)].items()}}
                          for (m, z, c), v in self.table.items()]}


def choose_reuse_settings(evidence: Sequence[PseudoEvidence],
                          modes: Sequence[str] = REUSE_MODES,
                          zs: Sequence[float | None] = Z_GRID, k: int = 1,
                          weighting: str = DEFAULTS.weighting,
                          calibrations: Sequence[str] = CALIBRATIONS) -> ReuseChoice:
    """The (reuse mode, fall-back threshold, calibration) with the best mean top-1 over the
    held-out sources (each source's pseudo-tasks averaged, then the sources: every source
    counts alike, however many tasks it gives, as in leave-one-domain-out model selection);
    ties go to the earlier point of the grid (the paper's rule, uncalibrated, comes first)."""
    table: dict[Setting, float] = {}
    per_source: dict[Setting, dict[str, float]] = {}
    for cal in calibrations:
        for mode in modes:
            for z in zs:
                accs = [ev.top1(mode, z, k, weighting, cal) for ev in evidence]
                by: dict[str, list[float]] = {}
                for ev, a in zip(evidence, accs, strict=True):
                    by.setdefault(ev.task.source, []).append(a)
                per_source[(mode, z, cal)] = {s: float(np.mean(v)) for s, v in by.items()}
                table[(mode, z, cal)] = float(np.mean(list(per_source[(mode, z, cal)].values())))
    best = max(table, key=lambda key: (table[key], -list(table).index(key)))
    return ReuseChoice(table, per_source, best, len(evidence))
