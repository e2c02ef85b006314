"""Choosing the reuse settings on the graph's own sources: leave-one-source-out pseudo-tasks.

A pseudo-task (:func:`~mll_registry.evaluation.baselines.pseudo_tasks`: C folder nodes of one
sample source S and their own images from S) stands for a task in a style the selection has
not seen: its models are selected on counts from every *other* source (S weighs 0), and each
model's class probabilities on S's images come from its label's stored fp16 embeddings (the
prompts the label was computed with; no model is run). The reuse mode and the fall-back rule
are then chosen by the mean top-1 over the pseudo-tasks, never on a target task's images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mll_registry.evaluation.baselines import PseudoTask, label_node_prompts, pseudo_tasks
from mll_registry.graph.bundle import SemanticGraph
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


@dataclass
class PseudoEvidence:
    """One pseudo-task as selection and reuse see it (models in sorted ref order)."""

    task: PseudoTask
    probs: list[np.ndarray] = field(repr=False)  # per model (n, C) class probabilities
    score: np.ndarray = field(repr=False)  # (M, C) class score, the task's source held out
    reuse: np.ndarray = field(repr=False)  # (M, C) reuse metric
    n: np.ndarray = field(repr=False)  # (C,) images behind each class's score

    def top1(self, mode: str, z: float | None, k: int = 1,
             weighting: str = DEFAULTS.weighting) -> float:
        """Top-1 of the ensemble that reuse ``mode`` and fall-back threshold ``z`` give."""
        margins = class_margins(self.score, self.reuse, self.n, z)
        chosen = choose(self.reuse, k, margins=margins)
        routing = None if mode == "per_class" else routing_weights(chosen, self.reuse, mode)
        scores = ensemble_scores(self.probs, chosen, weighting, routing)
        return float(np.mean(scores.argmax(1) == self.task.targets))


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


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
    per_model: list[list[np.ndarray]] = [[] for _ in tasks]
    for ref in refs:
        emb = LabelEmbeddings.open(Path(embeddings[ref]))
        t_rows = row_index(emb.text_key, text_keys(label_node_prompts(graph, labels[ref])))
        scale = float(labels[ref].meta.get("logit_scale", 100.0))
        for i, t in enumerate(tasks):
            i_rows = row_index(emb.image_digest, digest_bytes(digests[t.image_ids]))
            nodes = t_rows[[pos[n] for n in t.nodes]]
            if (i_rows < 0).any() or (nodes < 0).any():
                from mll_registry.labels.embeddings import EmbeddingsError

                raise EmbeddingsError(f"{emb.path}: images or node texts of pseudo-task "
                                      f"{t.name} are not in these embeddings; relabel {ref}")
            x = np.asarray(emb.image_emb[i_rows], np.float32)
            txt = np.asarray(emb.text_emb[nodes], np.float32)
            per_model[i].append(_softmax(scale * (x @ txt.T)))
    out = []
    for i, t in enumerate(tasks):
        cand = np.array([pos[n] for n in t.nodes], np.int64)
        held_out = (source != t.source).astype(np.float64)
        TP, FP, P = count_all(graph, [labels[r] for r in refs], cand, image_weight=held_out)
        Z = np.eye(len(t.nodes))
        s = class_scores(TP, FP, P, Z, metric)
        out.append(PseudoEvidence(t, per_model[i], s, reuse_metric(s, alpha), P @ Z))
    return out


@dataclass
class ReuseChoice:
    """Mean pseudo-task top-1 of every (reuse mode, threshold) and the best of them."""

    table: dict[tuple[str, float | None], float]
    per_source: dict[tuple[str, float | None], dict[str, float]]
    best: tuple[str, float | None]
    tasks: int

    def markdown(self) -> str:
        sources = sorted(next(iter(self.per_source.values())))
        zname = {None: "never", 1e9: "always"}
        head = ("| reuse mode | fall back below z | mean top-1 | " + " | ".join(sources) +
                " |\n|---|---:|---:|" + "---:|" * len(sources) + "\n")
        rows = []
        for (mode, z), v in sorted(self.table.items(), key=lambda kv: -kv[1]):
            mark = "**" if (mode, z) == self.best else ""
            rows.append(f"| {mark}{mode}{mark} | {zname.get(z, z)} | {mark}{v:.4f}{mark} | " +
                        " | ".join(f"{self.per_source[(mode, z)][s]:.3f}" for s in sources) +
                        " |")
        return head + "\n".join(rows) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"best": {"reuse_mode": self.best[0], "fallback_z": self.best[1]},
                "tasks": self.tasks,
                "table": [{"reuse_mode": m, "fallback_z": z, "mean_top1": round(v, 4),
                           "per_source": {k: round(x, 4) for k, x in
                                          self.per_source[(m, z)].items()}}
                          for (m, z), v in self.table.items()]}


def choose_reuse_settings(evidence: Sequence[PseudoEvidence],
                          modes: Sequence[str] = REUSE_MODES,
                          zs: Sequence[float | None] = Z_GRID, k: int = 1,
                          weighting: str = DEFAULTS.weighting) -> ReuseChoice:
    """The (reuse mode, fall-back threshold) with the best mean top-1 over the pseudo-tasks;
    ties go to the earlier mode and threshold of the grid (the paper's rule comes first)."""
    table: dict[tuple[str, float | None], float] = {}
    per_source: dict[tuple[str, float | None], dict[str, float]] = {}
    for mode in modes:
        for z in zs:
            accs = [ev.top1(mode, z, k, weighting) for ev in evidence]
            table[(mode, z)] = float(np.mean(accs))
            by: dict[str, list[float]] = {}
            for ev, a in zip(evidence, accs, strict=True):
                by.setdefault(ev.task.source, []).append(a)
            per_source[(mode, z)] = {s: float(np.mean(v)) for s, v in by.items()}
    best = max(table, key=lambda key: (table[key], -list(table).index(key)))
    return ReuseChoice(table, per_source, best, len(evidence))
