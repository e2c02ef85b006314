"""Selection (docs/method.md §3 steps 4-7): restricted per-node counts, transfer to classes, reuse metric.

Given the candidate set V_T (the union of every class's top-n nodes), each model classifies each
image of each candidate node by the argmax of its label over V_T only. Per candidate node v:

* ``P_v``  images of v;
* ``TP_v`` images of v predicted as v;
* ``FP_v`` images of other candidate nodes predicted as v, *excluding* images that are themselves
  members of v (in a hierarchy an image of ``dog`` is also an image of ``canine``: predicting
  ``canine`` for it is not a false positive). Each image counts once towards FP.

Class scores transfer through Z (nodes x classes): TP_y = sum_v z_vy TP_v (likewise FP, P), score
``precision`` = TP/(TP+FP) or ``f1`` = 2TP/(2TP+FP+P) (the authors' code), and the reuse metric
r_y = alpha s_y + (1 - alpha) mean_y' s_y'. Everything is vectorised over all models at once.

With the compact label (top-K + member scores) the argmax over V_T is exact whenever a candidate is
in the image's top-K. When none is, every candidate scores below the image's K-th node: the
image counts as a miss for its own node and as a false positive for nobody (``fallback="none"``,
the default). Guessing the best candidate the image belongs to (``fallback="members"``) would turn
those poorly recognised images into true positives and flatter weak models; measured against the
dense computation on the demo tasks it agrees less (benchmarks/results/label_compact.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mll_registry.errors import MLLError
from mll_registry.graph.bundle import SemanticGraph
from mll_registry.settings import DEFAULTS

if TYPE_CHECKING:
    from mll_registry.selection.matching import CaptionProvider, TextEmbedder
    from mll_registry.settings import Settings
    from mll_registry.task import Task

EPS = 1e-8
#: models whose counts are taken at once (bounds selection memory at hub scale)
MODEL_BLOCK = 32
#: threads reading and scanning labels: reads of cold labels overlap (4: 21 s cold, 7 s warm;
#: 2: 28 s, 6.4 s; 8 contend for the GIL: 11 s warm; benchmarks/results/selection_disk.md)
SELECT_WORKERS = 4
#: labels whose candidate rows are announced to the disk ahead of their scan (cold reads)
PREFETCH_AHEAD = 8


class LabelRows(Protocol):
    """What selection reads from a label: a :class:`~mll_registry.labels.format.ModelLabel`
    or a memory-mapped :class:`~mll_registry.labels.format.MappedLabel`."""

    topk_idx: np.ndarray
    member_score: np.ndarray

    @property
    def graph_version(self) -> str: ...

    @property
    def summary(self) -> Any: ...


class SelectionError(MLLError, ValueError):
    """Selection cannot run; the message says what to do."""


@dataclass
class CandidateRows:
    """The label rows a task needs: images of candidate nodes, for every model (gathered once).

    Attributes:
        cand_nodes: (V,) graph node positions of the candidate set.
        img_ids: (U,) graph image ids of the images of candidate nodes.
        row_img: (R,) position in ``img_ids`` of each (image, candidate node) membership row.
        row_cand: (R,) position in ``cand_nodes`` of that row's node.
        topk_idx: (M, U, K) node positions, best first, per model.
        member_score: (M, R) exact S[x, v] per row and model.
    """

    cand_nodes: np.ndarray
    img_ids: np.ndarray
    row_img: np.ndarray
    row_cand: np.ndarray
    topk_idx: np.ndarray
    member_score: np.ndarray
    member_keys: np.ndarray | None = None  # see CandidateSet (computed here when None)

    @property
    def n_models(self) -> int:
        return int(self.topk_idx.shape[0])


@dataclass
class CandidateSet:
    """The model-independent part of :class:`CandidateRows`: which rows a task needs."""

    cand_nodes: np.ndarray
    img_ids: np.ndarray
    rows: np.ndarray  # membership rows (graph.members positions) of candidate nodes
    row_img: np.ndarray
    row_cand: np.ndarray
    member_keys: np.ndarray  # sorted image * V + candidate of every membership row


def candidate_set(graph: SemanticGraph, cand_nodes: np.ndarray) -> CandidateSet:
    """The images and membership rows of ``cand_nodes`` (sorted: reads go forward on disk)."""
    cand_nodes = np.asarray(cand_nodes, np.int64)
    m_node, m_img = graph.member_arrays()
    cand_of = np.full(len(graph.nodes), -1, np.int64)
    cand_of[cand_nodes] = np.arange(len(cand_nodes))
    rows = np.flatnonzero(cand_of[m_node] >= 0)
    img_ids, row_img = np.unique(m_img[rows], return_inverse=True)
    row_img = row_img.astype(np.int64)
    row_cand = cand_of[m_node[rows]]
    keys = np.unique(row_img * len(cand_nodes) + row_cand)
    return CandidateSet(cand_nodes, img_ids, rows, row_img, row_cand, keys)


def gather(cs: CandidateSet, labels: Sequence[LabelRows], members: bool = True) -> CandidateRows:
    """Read the candidate rows of each label (``members``: the member scores too).

    A label on disk (:class:`~mll_registry.labels.format.MappedLabel`) is read with one
    positioned read per run of consecutive rows (a task's candidate images are mostly whole
    nodes: long runs); nothing else of the file is read.
    """
    k = labels[0].topk_idx.shape[1] if labels else 0
    dtype = labels[0].topk_idx.dtype if labels else np.uint16
    topk = np.empty((len(labels), len(cs.img_ids), k), dtype)
    member = np.empty((len(labels), len(cs.rows) if members else 0), np.float32)
    for i, lab in enumerate(labels):
        read = getattr(lab, "read_rows", None)
        if read is not None:  # a label on disk: read the rows
            if lab.topk_idx.dtype == dtype:
                read("topk_idx", cs.img_ids, topk[i])
            else:  # another index dtype than the first label's
                buf = np.empty((len(cs.img_ids), k), lab.topk_idx.dtype)
                read("topk_idx", cs.img_ids, buf)
                topk[i] = buf
            if members:
                ms = np.empty(len(cs.rows), lab.member_score.dtype)
                read("member_score", cs.rows, ms)
                member[i] = ms
        else:
            topk[i] = np.take(lab.topk_idx, cs.img_ids, axis=0)
            if members:
                member[i] = lab.member_score[cs.rows]
    return CandidateRows(cand_nodes=cs.cand_nodes, img_ids=cs.img_ids, row_img=cs.row_img,
                         row_cand=cs.row_cand, topk_idx=topk, member_score=member,
                         member_keys=cs.member_keys)


def candidate_rows(graph: SemanticGraph, labels: Sequence[LabelRows],
                   cand_nodes: np.ndarray) -> CandidateRows:
    """Gather, for all models, the label rows of the images of ``cand_nodes``."""
    return gather(candidate_set(graph, cand_nodes), labels)


def count_all(graph: SemanticGraph, labels: Sequence[LabelRows], cand_nodes: np.ndarray,
              fallback: str = "none", block: int = MODEL_BLOCK, workers: int = SELECT_WORKERS,
              image_weight: np.ndarray | None = None,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP (M, V), FP (M, V) and P (V,) for every model.

    ``image_weight`` (one per graph image; :mod:`mll_registry.selection.source_weights`) makes every count
    a weighted count: each image adds its weight instead of 1.

    Each model's candidate rows are read and reduced to its restricted predictions (U,) in one
    step (``workers`` threads: numpy releases the GIL): only ``workers`` labels' rows are in
    memory at a time, scanned while they are still in the CPU cache. The counts are then taken
    ``block`` models at a time.
    """
    from concurrent.futures import ThreadPoolExecutor

    if fallback not in ("none", "members"):
        raise ValueError(f"fallback must be 'none' or 'members', got {fallback!r}")
    cs = candidate_set(graph, cand_nodes)
    lookup, is_cand = _candidate_lookup(cs.cand_nodes, len(graph.nodes))
    pred = np.empty((len(labels), len(cs.img_ids)), lookup.dtype)

    def announce(i: int) -> None:  # a label on disk: its rows queued for the disk, if cold
        ahead = getattr(labels[i], "prefetch", None) if i < len(labels) else None
        if ahead is not None:
            ahead("topk_idx", cs.img_ids)

    def one(i: int) -> None:
        announce(i + PREFETCH_AHEAD)
        rows = gather(cs, [labels[i]], members=fallback == "members")
        pred[i] = (_first_candidates(rows.topk_idx[0], lookup, is_cand) if fallback == "none"
                   else restricted_predictions(rows, len(graph.nodes), fallback)[0])

    for i in range(min(PREFETCH_AHEAD, len(labels))):
        announce(i)
    if len(labels) > 1 and workers > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(labels))) as pool:
            list(pool.map(one, range(len(labels))))
    else:
        for i in range(len(labels)):
            one(i)
    V = len(cs.cand_nodes)
    img_w = None if image_weight is None else np.asarray(image_weight, np.float64)[cs.img_ids]
    P = np.bincount(cs.row_cand, weights=None if img_w is None else img_w[cs.row_img],
                    minlength=V).astype(np.float64)
    tps, fps = [np.zeros((0, V))], [np.zeros((0, V))]
    for i in range(0, len(labels), block):
        TP, FP, P = node_counts(cs, pred[i:i + block], img_w)
        tps.append(TP)
        fps.append(FP)
    return np.concatenate(tps), np.concatenate(fps), P


def _candidate_lookup(cand_nodes: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """node -> candidate position (-1: not a candidate), and its boolean mask; one extra
    entry is a sentinel for indices beyond the graph (a damaged label), never a candidate."""
    V = len(cand_nodes)
    lookup: np.ndarray = np.full(n_nodes + 1, -1, np.int32 if V < 2**31 else np.int64)
    lookup[cand_nodes] = np.arange(V)
    return lookup, np.greater_equal(lookup, 0)


def _first_candidates(idx: np.ndarray, lookup: np.ndarray, is_cand: np.ndarray) -> np.ndarray:
    """(U,) the first candidate in each image's top-K (U, K), as a candidate position, or -1."""
    if idx.dtype.kind == "i":  # signed indices read unsigned: negatives land on the sentinel
        idx = idx.view(np.dtype(f"u{idx.dtype.itemsize}"))
    pred = lookup.take(idx[:, 0], mode="clip")  # rank 0 settles most images
    miss = np.flatnonzero(pred < 0)
    if len(miss):
        T = idx[miss]  # (n, K)
        hit = is_cand.take(T, mode="clip")  # 1 byte per entry
        j = hit.argmax(1)
        ar = np.arange(len(j))
        found = hit[ar, j]
        pred[miss[found]] = lookup[T[ar, j][found]]
    return pred


def restricted_predictions(rows: CandidateRows, n_nodes: int,
                           fallback: str = "none") -> np.ndarray:
    """(M, U) predicted candidate position per model and image: argmax over V_T only.

    -1 where no candidate is in the image's top-K and ``fallback`` is ``"none"``; with
    ``"members"`` the best candidate among the image's own memberships is taken instead.
    """
    if fallback not in ("none", "members"):
        raise ValueError(f"fallback must be 'none' or 'members', got {fallback!r}")
    lookup, is_cand = _candidate_lookup(rows.cand_nodes, n_nodes)
    M, U, K = rows.topk_idx.shape
    pred = np.stack([_first_candidates(rows.topk_idx[m], lookup, is_cand) for m in range(M)]
                    ) if M else np.zeros((0, U), lookup.dtype)
    mm, uu = np.nonzero(pred < 0)
    if len(mm) and fallback == "members":
        pad = _rows_by_image(rows.row_img, U)  # (U, R_max) row indices, -1 = none
        r = pad[uu]  # (n, R_max)
        sc = np.where(r >= 0, rows.member_score[mm[:, None], np.maximum(r, 0)], -np.inf)
        best = r[np.arange(len(r)), np.argmax(sc, axis=1)]
        pred[mm, uu] = rows.row_cand[best]
    return pred


def _rows_by_image(row_img: np.ndarray, n_images: int) -> np.ndarray:
    """(U, R_max) membership-row indices of each image, padded with -1."""
    order = np.argsort(row_img, kind="stable")
    counts = np.bincount(row_img, minlength=n_images)
    width = max(1, int(counts.max()) if len(counts) else 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(order)) - np.repeat(starts, counts)
    pad = np.full((n_images, width), -1, np.int64)
    pad[row_img[order], slot] = order
    return pad


def dense_predictions(dense: Sequence[np.ndarray], rows: CandidateRows) -> np.ndarray:
    """(M, U) exact restricted argmax from dense (images x nodes) similarity matrices."""
    return np.stack([np.argmax(S[np.ix_(rows.img_ids, rows.cand_nodes)], axis=1) for S in dense])


def node_counts(rows: CandidateRows | CandidateSet, pred: np.ndarray,
                img_weight: np.ndarray | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per model and candidate node: TP (M, V), FP (M, V), P (V,); with ``img_weight`` (U,)
    each image counts its weight instead of 1."""
    M, U = pred.shape
    V = len(rows.cand_nodes)
    w_row = None if img_weight is None else img_weight[rows.row_img]
    P = np.bincount(rows.row_cand, weights=w_row, minlength=V).astype(np.float64)
    row_pred = pred[:, rows.row_img]  # (M, R)
    tp_hits = row_pred == rows.row_cand[None, :]
    m_idx = np.broadcast_to(np.arange(M)[:, None], row_pred.shape)
    TP = np.bincount((m_idx * V + rows.row_cand[None, :])[tp_hits], minlength=M * V,
                     weights=None if w_row is None else np.broadcast_to(w_row, tp_hits.shape)[
                         tp_hits])
    # FP: an image predicted as a candidate it is not a member of (counted once per image);
    # pred -1 (no candidate in the top-K) is a false positive for nobody
    member_keys = (rows.member_keys if rows.member_keys is not None
                   else np.unique(rows.row_img * V + rows.row_cand))
    if img_weight is None and len(member_keys) == len(rows.row_img):
        # each (image, node) row once and integer counts: FP = predictions of v - TP (exact)
        ok = pred >= 0
        n_pred = np.bincount((np.broadcast_to(np.arange(M)[:, None], pred.shape) * V + pred)[ok],
                             minlength=M * V)
        FP = n_pred - TP
        return TP.reshape(M, V).astype(np.float64), FP.reshape(M, V).astype(np.float64), P
    keys = np.arange(U)[None, :] * V + pred
    at = np.minimum(np.searchsorted(member_keys, keys), max(len(member_keys) - 1, 0))
    is_member = (member_keys[at] == keys) if len(member_keys) else np.zeros(keys.shape, bool)
    wrong = ~is_member & (pred >= 0)
    fp_m = np.broadcast_to(np.arange(M)[:, None], pred.shape)[wrong]
    FP = np.bincount(fp_m * V + pred[wrong], minlength=M * V, weights=None if img_weight is None
                     else np.broadcast_to(img_weight, pred.shape)[wrong])
    return TP.reshape(M, V).astype(np.float64), FP.reshape(M, V).astype(np.float64), P


def class_scores(TP: np.ndarray, FP: np.ndarray, P: np.ndarray, Z: np.ndarray,
                 metric: str = DEFAULTS.metric, eps: float = EPS) -> np.ndarray:
    """Transfer node counts to classes through Z (V x C) and score: (M, C).

    ``precision`` = TP/(TP+FP); ``f1`` = 2TP/(2TP+FP+P).
    """
    tp, fp, p = TP @ Z, FP @ Z, P @ Z
    if metric == "precision":
        return tp / (tp + fp + eps)
    if metric == "f1":
        return 2 * tp / (2 * tp + fp + p[None, :] + eps)
    raise ValueError(f"metric must be 'precision' or 'f1', got {metric!r}")


def reuse_metric(scores: np.ndarray, alpha: float = DEFAULTS.alpha) -> np.ndarray:
    """r_{m,y} = alpha s_{m,y} + (1 - alpha) mean_y' s_{m,y'}  (M, C)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha * scores + (1 - alpha) * scores.mean(axis=1, keepdims=True)


def top_models(r: np.ndarray, k: int = DEFAULTS.k) -> np.ndarray:
    """(C, k) model positions per class, best first; ties broken by model position (stable)."""
    k = max(1, min(k, r.shape[0]))
    return np.argsort(-r, axis=0, kind="stable")[:k].T


# -- the user-facing selection -------------------------------------------------------------------
@dataclass
class SelectionResult:
    """Per class: ranked models with scores and the graph nodes it was matched to."""

    task: str
    classes: list[str]
    models: list[str]  # model refs, sorted (the order never changes the outcome)
    chosen: np.ndarray  # (C, k) model positions per class, best first
    reuse: np.ndarray  # (M, C) reuse metric r
    score: np.ndarray  # (M, C) class score s (precision or F1)
    matched: dict[str, list[dict[str, object]]]
    weak: list[str]  # unmatched classes: no good match in the graph
    params: dict[str, object]
    general: np.ndarray | None = None  # model positions by general score (fallback order)
    matched_by: dict[str, str] = dataclasses.field(default_factory=dict)
    dropped: list[str] = dataclasses.field(default_factory=list)
    #: how sure each class's own choice is (:func:`class_margins`); None: not computed
    margins: Margins | None = None
    reuse_mode: str = DEFAULTS.reuse_mode
    #: the logit scale reuse takes each model's probabilities at (``calibration``: ``graph``:
    #: fitted on the graph, :mod:`mll_registry.labels.calibration`); empty: the models' own
    logit_scales: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def calibration(self) -> str:
        """``graph`` when reuse takes the labels' calibrated scales, else ``none``."""
        return "graph" if self.logit_scales else "none"

    def scale_of(self, ref: str) -> float | None:
        """The logit scale reuse takes for model ``ref`` (None: the model's own)."""
        return self.logit_scales.get(ref)

    def with_k(self, k: int) -> SelectionResult:
        """The same selection keeping the top ``k`` models per class (reuse does not depend on k;
        a class that fell back keeps the task-level order)."""
        chosen = choose(self.reuse, k, [self.classes.index(c) for c in self.weak], self.general,
                        self.margins)
        return dataclasses.replace(self, chosen=chosen,
                                   params={**self.params, "k": int(chosen.shape[1])})

    def with_models(self, keep: Sequence[int]) -> SelectionResult:
        """The selection a hub of only the models at positions ``keep`` gives (same task, same
        rule): every per-model quantity is the model's own, so nothing is recomputed from
        labels. Used for sub-hub benchmarks."""
        pos = np.asarray(sorted(keep), np.int64)
        reuse, score = self.reuse[pos], self.score[pos]
        general = None
        if self.general is not None:
            general = np.array([int(np.flatnonzero(pos == g)[0]) for g in self.general
                                if g in pos], np.int64)
        margins = None
        if self.margins is not None:
            margins = class_margins(score, reuse, self.margins.n, self.margins.z)
        chosen = choose(reuse, self.chosen.shape[1], [self.classes.index(c) for c in self.weak],
                        general, margins)
        return dataclasses.replace(self, models=[self.models[i] for i in pos], chosen=chosen,
                                   reuse=reuse, score=score, general=general, margins=margins)

    def routing(self) -> np.ndarray:
        """(M, C) weight of each model's vote on each class in the ensemble (``reuse_mode``)."""
        from mll_registry.selection.reuse import routing_weights

        return routing_weights(self.chosen, self.reuse, self.reuse_mode)

    def vote_weights(self) -> np.ndarray | None:
        """:meth:`routing` for :func:`~mll_registry.selection.reuse.ensemble_scores`, or None for
        per-class votes (scored class by class, exactly as the paper's reuse)."""
        return None if self.reuse_mode == "per_class" else self.routing()

    def per_class(self) -> list[dict[str, object]]:
        out = []
        mg = self.margins
        for c, cls in enumerate(self.classes):
            row: dict[str, object] = {
                "class": cls,
                "models": [{"model": self.models[m], "reuse": round(float(self.reuse[m, c]), 4),
                            "score": round(float(self.score[m, c]), 4)} for m in self.chosen[c]],
                "nodes": self.matched[cls],
                "weak_match": cls in self.weak,
                "matched_by": self.matched_by.get(cls, ""),
                "fallback": cls in self.weak and self.general is not None,
            }
            if mg is not None:
                row.update({"own_model": self.models[int(mg.best[c])],
                            "task_model": self.models[int(mg.task[c])],
                            "margin": round(float(mg.margin[c]), 4),
                            "margin_se": round(float(mg.se[c]), 4),
                            "fell_back": bool(mg.fell_back[c]) and cls not in self.weak})
            out.append(row)
        return out

    def selected_models(self) -> list[str]:
        """Distinct models used by the ensemble, by first use."""
        seen: dict[str, None] = {}
        for row in self.chosen:
            for m in row:
                seen.setdefault(self.models[int(m)], None)
        return list(seen)

    def to_dict(self) -> dict[str, object]:
        return {"task": self.task, "params": self.params, "models_considered": len(self.models),
                "selected_models": self.selected_models(), "weak_matches": self.weak,
                "unmatched": self.weak, "dropped": self.dropped, "classes": self.per_class()}

    def table(self) -> object:
        """A rich Table (rendered by the CLI); class names are text, never markup."""
        from rich.table import Table
        from rich.text import Text

        from mll_registry.terminal import controls

        t = Table(title=f"selection for {self.task} (k={self.chosen.shape[1]}, reuse "
                        f"{self.reuse_mode.replace('_', '-')}, calibration {self.calibration})")
        t.add_column("class")
        t.add_column("models (reuse score)")
        if self.margins is not None:
            t.add_column("margin (+- se)", justify="right")
            t.add_column("choice")
        t.add_column("matched nodes (similarity)")
        for row in self.per_class():
            models = ", ".join(f"{m['model'].split('/')[-1]} ({m['reuse']:.3f})"  # type: ignore[index]
                               for m in row["models"])  # type: ignore[attr-defined]
            nodes = ", ".join(f"{n['node']} ({n['similarity']:.2f})"  # type: ignore[index]
                              for n in row["nodes"][:3])  # type: ignore[index]
            flag = (" (no good match: best general model)" if row["fallback"] else
                    " (no good match)" if row["weak_match"] else "")
            cells: list[Any] = [Text.assemble(controls(row["class"]), (flag, "yellow")), models]
            if self.margins is not None:
                same = row["own_model"] == row["task_model"]
                cells += ["-" if same else f"{row['margin']:+.3f} (+-{row['margin_se']:.3f})",
                          "task's model" if same else
                          Text("fell back to the task's model", "yellow") if row["fell_back"]
                          else "own"]
            t.add_row(*cells, nodes)
        return t


@dataclass(frozen=True)
class Margins:
    """How far each class's own best model is ahead of the task-level choice, and whether the
    class falls back to it (:func:`class_margins`). All arrays are per class (C,)."""

    best: np.ndarray  # the class's own best model by the reuse metric
    task: np.ndarray  # the task-level model (best mean class score over the task)
    task_order: np.ndarray  # (M,) all models by task-level score, best first
    margin: np.ndarray  # class score of ``best`` minus that of ``task``
    se: np.ndarray  # its standard error from the counts behind the scores
    n: np.ndarray  # images behind each class's scores (similarity-weighted)
    z: float | None  # the rule's threshold; None: per-class choice never falls back
    fell_back: np.ndarray  # bool: the class uses the task-level order


def class_margins(score: np.ndarray, reuse: np.ndarray, n: np.ndarray,
                  z: float | None) -> Margins:
    """The fall-back rule, stated once: a class keeps its own best model only where that
    model's class score is ahead of the task-level model's by more than ``z`` standard errors.

    The task-level model is the one with the best mean class score over all the task's classes
    (what a single-model choice from the labels would take; the reuse metric's mean over classes
    is the same mean). A class score is a proportion over the ``n`` images of the class's matched
    nodes, so each model's score has binomial variance s(1-s)/n and the margin's standard error
    is sqrt((s_b (1-s_b) + s_t (1-s_t)) / n) (the two scores' covariance, positive on shared
    images, is left out: the rule errs toward falling back). ``z=None`` never falls back (the
    paper's per-class choice); a very large ``z`` always does (a single-model choice).
    """
    M, C = score.shape
    cols = np.arange(C)
    task_order = np.argsort(-score.mean(axis=1), kind="stable")
    best = top_models(reuse, 1)[:, 0]
    task = np.full(C, task_order[0])
    sb, st = score[best, cols], score[task, cols]
    margin = sb - st
    nn = np.maximum(np.asarray(n, np.float64), 1.0)
    se = np.sqrt((sb * (1 - sb) + st * (1 - st)) / nn)
    differs = best != task
    fell = (differs & (margin <= z * se)) if z is not None else np.zeros(C, bool)
    return Margins(best, task, task_order, margin, se, np.asarray(n, np.float64), z, fell)


def choose(r: np.ndarray, k: int, unmatched: Sequence[int] = (),
           general: np.ndarray | None = None, margins: Margins | None = None) -> np.ndarray:
    """Top-k models per class by the reuse metric; a class that falls back (``margins``) takes
    the task-level order; unmatched classes get the ``general`` order."""
    chosen = top_models(r, k)
    if margins is not None:
        for fc in np.flatnonzero(margins.fell_back):
            chosen[fc] = margins.task_order[:chosen.shape[1]]
    if general is not None:
        for c in unmatched:
            chosen[c] = general[:chosen.shape[1]]
    return chosen


def task_source_weights(task: object, graph: SemanticGraph, embedder: object = None,
                        mode: str = DEFAULTS.source_weighting,
                        temperature: float = DEFAULTS.source_temperature) -> Any:
    """The :class:`~mll_registry.selection.source_weights.SourceWeights` of ``task`` on ``graph``."""
    from mll_registry.selection.source_weights import source_weights

    given = getattr(task, "domain_given", True)
    domain = str(getattr(task, "domain", "") or "") if given else None
    return source_weights(domain, graph.source_descriptions, embedder,  # type: ignore[arg-type]
                          mode, temperature)


def general_score(label: LabelRows) -> float:
    """A label's general score: its mean accuracy@1 over the graph's nodes, from meta.json
    where the label records it (``mean_acc1``, written since mll-label/2: no summary read),
    else from its summary."""
    got = (getattr(label, "meta", None) or {}).get("mean_acc1")
    if isinstance(got, float):
        return got
    return float(label.summary["acc1"].mean())


def general_order(labels: Sequence[LabelRows]) -> np.ndarray:
    """Model positions by general score (:func:`general_score`), best first."""
    score = np.array([general_score(lab) for lab in labels])
    return np.argsort(-score, kind="stable")


@dataclass(frozen=True)
class SelectOptions:
    """How :func:`select` chooses: k models per class by the reuse metric (``alpha``,
    ``metric``) over each class's ``top_n`` graph nodes; classes matched below
    ``match_similarity`` are handled by ``unmatched``; sample sources weighted by
    ``source_weighting`` at ``source_temperature``."""

    k: int = DEFAULTS.k
    alpha: float = DEFAULTS.alpha
    metric: str = DEFAULTS.metric
    top_n: int = DEFAULTS.top_n
    unmatched: str = DEFAULTS.unmatched
    match_similarity: float = DEFAULTS.weak_similarity
    source_weighting: str = DEFAULTS.source_weighting
    source_temperature: float = DEFAULTS.source_temperature
    reuse_mode: str = DEFAULTS.reuse_mode
    fallback_z: float | None = DEFAULTS.fallback_z_or_none()
    calibration: str = DEFAULTS.calibration

    def __post_init__(self) -> None:
        from mll_registry.labels.calibration import CALIBRATIONS
        from mll_registry.selection.reuse import REUSE_MODES

        if self.unmatched not in ("fallback", "drop", "fail"):
            raise ValueError(f"unmatched must be fallback, drop or fail, got {self.unmatched!r}")
        if self.reuse_mode not in REUSE_MODES:
            raise ValueError(f"reuse_mode must be one of {', '.join(REUSE_MODES)}, got "
                             f"{self.reuse_mode!r}")
        if self.fallback_z is not None and not self.fallback_z >= 0:
            raise ValueError(f"fallback_z must be >= 0 (or None: never), got {self.fallback_z}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got "
                             f"{self.calibration!r}")

    @classmethod
    def from_settings(cls, s: Settings) -> SelectOptions:
        """The options the settings ``s`` configure."""
        return cls(k=s.k, alpha=s.alpha, metric=s.metric, top_n=s.top_n, unmatched=s.unmatched,
                   match_similarity=s.weak_similarity, source_weighting=s.source_weighting,
                   source_temperature=s.source_temperature, reuse_mode=s.reuse_mode,
                   fallback_z=s.fallback_z_or_none(), calibration=s.calibration)


def select(task: Task, graph: SemanticGraph, labels: Mapping[str, LabelRows],
           options: SelectOptions = SelectOptions(), *, embedder: TextEmbedder | None = None,
           provider: CaptionProvider | None = None,
           root: str | os.PathLike[str] | None = None) -> SelectionResult:
    """Select the top-k models per class of ``task`` from their labels (no model is run).

    The counts of each sample source of the graph are weighted by ``options.source_weighting``
    (:mod:`mll_registry.selection.source_weights`: ``domain`` by the task's domain, ``uniform`` as the
    paper); the weights used are in ``params["source_weights"]``.

    Classes with no good match in the graph (:mod:`mll_registry.selection.matching`) are handled by
    ``options.unmatched``: ``fallback`` gives them the best general models, ``drop`` leaves them
    out of the selection (``dropped``), ``fail`` raises. ``embedder`` (default: the sentence
    model, loaded on first use) and ``provider`` (default: WordNet captions) describe and embed
    the classes; ``root`` is the data dir of their caches.

    Raises:
        SelectionError: no labels, labels for another graph version, unmatched classes with
            ``unmatched="fail"``, or every class dropped.
    """
    from mll_registry.selection.matching import Embedder, match, node_similarity_report

    o = options
    k, alpha, metric, top_n, unmatched = o.k, o.alpha, o.metric, o.top_n, o.unmatched

    embedder = embedder or Embedder()  # loads on first use: one model for matching and weights
    if not labels:
        raise SelectionError("no labelled models: label some first (`mll label MODEL_REF`)")
    wrong = [r for r, lab in labels.items() if lab.graph_version != graph.version]
    if wrong:
        raise SelectionError(f"labels of {wrong[:3]} are for another graph version than "
                             f"{graph.version}; relabel them on this graph")
    refs = sorted(labels)
    m = match(task, graph, embedder=embedder, provider=provider, top_n=top_n,
              low_similarity=o.match_similarity, root=root)
    dropped: list[str] = []
    if m.weak and unmatched == "fail":
        raise SelectionError(
            f"no good match in graph {graph.version} for {m.weak}: their names resolve to no "
            "graph concept and their descriptions are far from every node. Describe them "
            "(classes: {name: description}), rename them, or choose --unmatched fallback/drop")
    if m.weak and unmatched == "drop":
        keep = [c for c in task.classes if c.name not in m.weak]
        if not keep:
            raise SelectionError(f"every class of the task has no good match in the graph: "
                                 f"{m.weak}; nothing is left to select for")
        dropped = list(m.weak)
        task = dataclasses.replace(task, classes=keep)
        m = match(task, graph, embedder=embedder, provider=provider, top_n=top_n,
                  low_similarity=o.match_similarity, root=root)
        m.weak = []
    sw = task_source_weights(task, graph, embedder, o.source_weighting, o.source_temperature)
    img_w = None if sw.uniform else sw.image_weights(graph.images["source"].to_numpy())
    TP, FP, P = count_all(graph, [labels[r] for r in refs], m.cand_nodes, image_weight=img_w)
    s = class_scores(TP, FP, P, m.Z, metric)
    r = reuse_metric(s, alpha)
    margins = class_margins(s, r, P @ m.Z, o.fallback_z)
    # the general order reads every label's summary: only when a class needs the fallback
    general = (general_order([labels[r] for r in refs])
               if unmatched == "fallback" and m.weak else None)
    chosen = choose(r, k, [m.classes.index(c) for c in m.weak], general, margins)
    scales, uncalibrated = label_scales(labels, refs, o.calibration)
    return SelectionResult(
        task=task.name, classes=m.classes, models=refs, chosen=chosen,
        reuse=r, score=s, matched=node_similarity_report(m, graph), weak=m.weak,
        params={"k": int(chosen.shape[1]), "alpha": alpha, "metric": metric, **m.params,
                "unmatched": unmatched, "graph_version": graph.version,
                "source_weighting": o.source_weighting, "source_weights": sw.to_dict(),
                "reuse_mode": o.reuse_mode, "fallback_z": o.fallback_z,
                "fell_back": int(margins.fell_back.sum()),
                "calibration": "graph" if scales else "none",
                **({"uncalibrated_labels": uncalibrated} if uncalibrated else {})},
        general=general, matched_by=m.matched_by, dropped=dropped, margins=margins,
        reuse_mode=o.reuse_mode, logit_scales=scales)


def label_scales(labels: Mapping[str, LabelRows], refs: Sequence[str], calibration: str
                 ) -> tuple[dict[str, float], list[str]]:
    """Each model's calibrated logit scale from its label (``calibration="graph"``), and the
    models whose labels carry none (labelled before calibration existed, or by another rule).

    One such label turns calibration off for the whole selection (every model at its own
    scale, so all are compared alike), logged with its fix: relabel them (`mll label --force`).
    """
    from mll_registry.labels.calibration import label_scale

    if calibration == "none":
        return {}, []
    got = {r: label_scale(getattr(labels[r], "meta", {}) or {}, calibration) for r in refs}
    missing = [r for r, v in got.items() if v is None]
    if missing:
        import logging

        logging.getLogger(__name__).warning(
            "calibration %s is off for this selection: the labels of %s carry no calibrated "
            "scale; relabel them (`mll label --force`)", calibration, missing[:3])
        return {}, missing
    return {r: float(v) for r, v in got.items() if v is not None}, []
