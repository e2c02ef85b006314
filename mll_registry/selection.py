"""Selection (method.md §3 steps 4-7): restricted per-node counts, transfer to classes, reuse metric.

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
in the image's top-K; otherwise it falls back to the best candidate the image is a member of.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mll_registry.graph import SemanticGraph
from mll_registry.labels import ModelLabel

EPS = 1e-8


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

    @property
    def n_models(self) -> int:
        return int(self.topk_idx.shape[0])


def candidate_rows(graph: SemanticGraph, labels: Sequence[ModelLabel],
                   cand_nodes: np.ndarray) -> CandidateRows:
    """Gather, for all models, the label rows of the images of ``cand_nodes``."""
    cand_nodes = np.asarray(cand_nodes, np.int64)
    pos = graph.node_index()
    m_node = graph.members["node_id"].map(pos).to_numpy(np.int64)
    m_img = graph.members["image_id"].to_numpy(np.int64)
    cand_of = np.full(len(graph.nodes), -1, np.int64)
    cand_of[cand_nodes] = np.arange(len(cand_nodes))
    rows = np.flatnonzero(cand_of[m_node] >= 0)
    img_ids, row_img = np.unique(m_img[rows], return_inverse=True)
    return CandidateRows(
        cand_nodes=cand_nodes,
        img_ids=img_ids,
        row_img=row_img.astype(np.int64),
        row_cand=cand_of[m_node[rows]],
        topk_idx=np.stack([lab.topk_idx[img_ids] for lab in labels]),
        member_score=np.stack([lab.member_score[rows].astype(np.float32) for lab in labels]),
    )


def restricted_predictions(rows: CandidateRows, n_nodes: int) -> np.ndarray:
    """(M, U) predicted candidate position per model and image: argmax over V_T only."""
    lookup = np.full(n_nodes, -1, np.int64)
    lookup[rows.cand_nodes] = np.arange(len(rows.cand_nodes))
    M, U, K = rows.topk_idx.shape
    pred = np.full((M, U), -1, np.int64)
    mm, uu = np.divmod(np.arange(M * U, dtype=np.int64), U)
    for j in range(K):  # rank by rank; most images resolve at rank 0 or 1
        c = lookup[rows.topk_idx[mm, uu, j]]
        hit = c >= 0
        pred[mm[hit], uu[hit]] = c[hit]
        mm, uu = mm[~hit], uu[~hit]
        if len(mm) == 0:
            break
    if len(mm):  # no candidate in the top-K: best candidate among the image's own memberships
        by_img = np.argsort(rows.row_img, kind="stable")
        starts = np.searchsorted(rows.row_img[by_img], np.arange(U))
        ends = np.searchsorted(rows.row_img[by_img], np.arange(U), side="right")
        for m, u in zip(mm.tolist(), uu.tolist(), strict=True):
            r = by_img[starts[u]:ends[u]]
            pred[m, u] = rows.row_cand[r[np.argmax(rows.member_score[m, r])]]
    return pred


def dense_predictions(dense: Sequence[np.ndarray], rows: CandidateRows) -> np.ndarray:
    """(M, U) exact restricted argmax from dense (images x nodes) similarity matrices."""
    return np.stack([np.argmax(S[np.ix_(rows.img_ids, rows.cand_nodes)], axis=1) for S in dense])


def node_counts(rows: CandidateRows, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per model and candidate node: TP (M, V), FP (M, V), P (V,)."""
    M, U = pred.shape
    V = len(rows.cand_nodes)
    P = np.bincount(rows.row_cand, minlength=V).astype(np.float64)
    row_pred = pred[:, rows.row_img]  # (M, R)
    tp_hits = row_pred == rows.row_cand[None, :]
    m_idx = np.broadcast_to(np.arange(M)[:, None], row_pred.shape)
    TP = np.bincount((m_idx * V + rows.row_cand[None, :])[tp_hits], minlength=M * V)
    # FP: an image predicted as a candidate it is not a member of (counted once per image)
    member_keys = np.unique(rows.row_img * V + rows.row_cand)
    keys = np.arange(U)[None, :] * V + pred
    is_member = np.isin(keys, member_keys)
    fp_m = np.broadcast_to(np.arange(M)[:, None], pred.shape)[~is_member]
    FP = np.bincount(fp_m * V + pred[~is_member], minlength=M * V)
    return TP.reshape(M, V).astype(np.float64), FP.reshape(M, V).astype(np.float64), P


def class_scores(TP: np.ndarray, FP: np.ndarray, P: np.ndarray, Z: np.ndarray,
                 metric: str = "f1", eps: float = EPS) -> np.ndarray:
    """Transfer node counts to classes through Z (V x C) and score: (M, C).

    ``precision`` = TP/(TP+FP); ``f1`` = 2TP/(2TP+FP+P).
    """
    tp, fp, p = TP @ Z, FP @ Z, P @ Z
    if metric == "precision":
        return tp / (tp + fp + eps)
    if metric == "f1":
        return 2 * tp / (2 * tp + fp + p[None, :] + eps)
    raise ValueError(f"metric must be 'precision' or 'f1', got {metric!r}")


def reuse_metric(scores: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """r_{m,y} = alpha s_{m,y} + (1 - alpha) mean_y' s_{m,y'}  (M, C)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha * scores + (1 - alpha) * scores.mean(axis=1, keepdims=True)


def top_models(r: np.ndarray, k: int = 1) -> np.ndarray:
    """(C, k) model positions per class, best first; ties broken by model position (stable)."""
    k = max(1, min(k, r.shape[0]))
    return np.argsort(-r, axis=0, kind="stable")[:k].T
