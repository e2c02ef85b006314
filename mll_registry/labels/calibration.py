"""Per-model temperature from the labels: reuse that compares like with like (issue #27).

Every reuse mode adds or compares class probabilities p_m(y|x) = softmax(s_m cos(I_m(x), T_m(y)))
of different models, and a model's own logit scale s_m says how sure it was trained to be, not how
sure it is right to be: a specialist trained on a few concepts is as peaked on the concepts it
never saw. Its *calibrated* scale is the one that best predicts the graph's own images: the s
minimising the mean negative log-likelihood of each image's own node among the graph's folder
nodes (the nodes with images of their own), a convex problem in s solved on a seeded sample of
at most :data:`MAX_IMAGES` images. The labeller fits it once per label (``meta["calibration"]``);
reuse with ``calibration="graph"`` uses it instead of the model's own scale, so a model that is
unsure on the graph speaks softly in an ensemble (and its entropy weight falls with it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: how reuse turns similarities into probabilities (``calibration`` setting)
CALIBRATIONS: tuple[str, ...] = ("none", "graph")
RULE = "graph-folder-nll/1"  # recorded with every fitted scale; a new rule changes the name
MAX_IMAGES = 4096  # the fit's image sample (seeded): enough for one scalar, cheap at any scale
SCALE_BOUNDS = (0.05, 1000.0)


@dataclass(frozen=True)
class Calibration:
    """A model's calibrated logit scale and what it was fitted on."""

    logit_scale: float
    nll: float
    images: int
    nodes: int
    rule: str = RULE

    def to_dict(self) -> dict[str, Any]:
        return {"logit_scale": round(self.logit_scale, 6), "nll": round(self.nll, 6),
                "images": self.images, "nodes": self.nodes, "rule": self.rule}


def _nll(scale: float, cos: np.ndarray, y: np.ndarray) -> float:
    z = scale * cos
    top = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def fit_logit_scale(cos: np.ndarray, targets: np.ndarray) -> Calibration:
    """The scale s minimising the mean NLL of ``targets`` under softmax(s * ``cos``).

    Args:
        cos: (n, V) image-to-node similarities (normalised embeddings).
        targets: (n,) each image's own node position in ``cos``'s columns.

    Raises:
        ValueError: no images, or fewer than two nodes.
    """
    from scipy.optimize import minimize_scalar

    cos = np.asarray(cos, np.float64)
    y = np.asarray(targets, np.int64)
    if cos.ndim != 2 or len(cos) == 0 or cos.shape[1] < 2 or len(y) != len(cos):
        raise ValueError(f"calibration needs images and two or more nodes, got {cos.shape}")
    # NLL is convex in s; search log s (bounded) for scale-free precision
    res = minimize_scalar(lambda t: _nll(float(np.exp(t)), cos, y),
                          bounds=tuple(np.log(SCALE_BOUNDS)), method="bounded",
                          options={"xatol": 1e-4})
    s = float(np.exp(res.x))
    return Calibration(s, _nll(s, cos, y), len(y), int(cos.shape[1]))


def calibrate_on_graph(image_emb: Sequence[np.ndarray] | np.ndarray, node_emb: np.ndarray,
                       own_node: np.ndarray, folder_nodes: np.ndarray,
                       weight: np.ndarray | None = None, seed: int = 0,
                       max_images: int = MAX_IMAGES) -> Calibration | None:
    """Fit a model's scale on graph images (module docstring).

    Args:
        image_emb: (n, d) image embeddings, or consecutive row blocks of them.
        node_emb: (N, d) node text embeddings (every graph node).
        own_node: (n,) each image's own node position (-1: none).
        folder_nodes: node positions with images of their own: the classes of the fit.
        weight: (n,) images to use (> 0); e.g. a held-out source's images set to 0.
    Returns:
        None when fewer than two folder nodes or no image qualify.
    """
    if isinstance(image_emb, np.ndarray):
        blocks: Sequence[np.ndarray] = [image_emb]
    else:
        blocks = image_emb
    n = int(sum(len(b) for b in blocks))
    col = np.full(node_emb.shape[0], -1, np.int64)
    col[np.asarray(folder_nodes, np.int64)] = np.arange(len(folder_nodes))
    own = np.asarray(own_node, np.int64)
    ok = own >= 0
    ok[ok] = col[own[ok]] >= 0
    if weight is not None:
        ok &= np.asarray(weight) > 0
    idx = np.flatnonzero(ok)
    if len(folder_nodes) < 2 or len(idx) == 0:
        return None
    if len(idx) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_images, replace=False))
    starts = np.cumsum([0] + [len(b) for b in blocks])
    rows = []
    for b, lo in zip(blocks, starts[:-1], strict=True):
        sel = idx[(idx >= lo) & (idx < lo + len(b))] - lo
        if len(sel):
            rows.append(np.asarray(b[sel], np.float32))
    X = np.concatenate(rows) if rows else np.zeros((0, node_emb.shape[1]), np.float32)
    assert len(X) == len(idx) <= n
    T = np.asarray(node_emb, np.float32)[np.asarray(folder_nodes, np.int64)]
    return fit_logit_scale(X @ T.T, col[own[idx]])


def own_nodes(members: Any, n_images: int, node_pos: Mapping[str, int]) -> np.ndarray:
    """(n_images,) each image's own node position (-1: none) from a graph's members table."""
    out = np.full(n_images, -1, np.int64)
    own = members[members["own"].to_numpy(bool)]
    out[own["image_id"].to_numpy(np.int64)] = [node_pos[v] for v in own["node_id"]]
    return out


def probabilities(cos: np.ndarray, scale: float) -> np.ndarray:
    """(n, C) softmax(scale * cos) over the columns, in float64."""
    z = float(scale) * np.asarray(cos, np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def label_scale(meta: Mapping[str, Any], calibration: str) -> float | None:
    """The scale reuse takes for a label: its fitted one (``graph``) or its model's own
    (``none``); None when ``graph`` is asked of a label fitted by no (or another) rule."""
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    if calibration == "none":
        return float(meta.get("logit_scale", 100.0))
    cal = meta.get("calibration") or {}
    return float(cal["logit_scale"]) if cal.get("rule") == RULE else None
