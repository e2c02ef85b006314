"""Reuse (docs/method.md §4): the entropy-weighted ensemble of the models selected per class.

For each distinct selected model m and image x: p_m(y|x) = softmax_y(logit_scale * cos(I_m(x),
T_m(prompt(y)))) over the task's classes. Weight w_m(x) = 1 / (H(p_m(.|x)) + eps): confident
outputs weigh more (the authors' code; ``weighting="entropy"`` is the other direction, kept as an
ablation, and ``"uniform"`` drops the weights). score_y(x) = sum_{m in F_y} w_m(x) p_m(y|x);
prediction = argmax_y. Each distinct selected model encodes each image exactly once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mll_registry.graph.bundle import IMAGE_EXTENSIONS
from mll_registry.settings import DEFAULTS
from mll_registry.task import Task, data_folders

WEIGHTINGS = ("inverse_entropy", "entropy", "uniform")
EPS = 1e-8


@dataclass
class TaskImages:
    """A task's labelled images: paths and class positions (task class order)."""

    paths: list[Path]
    targets: np.ndarray
    classes: list[str]

    @classmethod
    def from_task(cls, task: Task, data: str | os.PathLike[str] | None = None) -> TaskImages:
        folders = data_folders(task, data)
        paths, targets = [], []
        for ci, c in enumerate(task.class_names):
            files = sorted(p for p in folders[c].rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            paths += files
            targets += [ci] * len(files)
        if not paths:
            from mll_registry.task import TaskError

            raise TaskError(f"no images under the data folder of task {task.name!r}")
        return cls(paths, np.asarray(targets, np.int64), task.class_names)


def entropy_weights(probs: np.ndarray, weighting: str = DEFAULTS.weighting,
                    eps: float = EPS) -> np.ndarray:
    """Per-image weight of one model's prediction (n,)."""
    if weighting == "uniform":
        return np.ones(len(probs))
    H = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(1)
    if weighting == "inverse_entropy":
        return 1.0 / (H + eps)
    if weighting == "entropy":
        return H
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


#: how the selected models vote (``reuse_mode``; :func:`routing_weights`)
REUSE_MODES = ("per_class", "pooled", "soft")


def routing_weights(chosen: np.ndarray, reuse: np.ndarray, mode: str = DEFAULTS.reuse_mode
                    ) -> np.ndarray:
    """(M, C) weight of model m's vote on class y.

    ``per_class`` (the paper): 1 where m is one of the models chosen for y, else 0: a class's
    score comes from its own models only, so classes routed to differently calibrated models
    are compared on different scales. ``pooled``: 1 for every distinct chosen model on every
    class: one entropy-weighted ensemble, every class scored by the same models. ``soft``: as
    pooled, weighted by (r_{m,y} / max_m' r_{m',y})^2 over the chosen models (r: ``reuse``), so
    a class leans on the models its labels favour.
    """
    M, C = reuse.shape
    W = np.zeros((M, C))
    used = np.unique(chosen)
    if mode == "per_class":
        W[chosen.T, np.arange(C)[None, :]] = 1.0
    elif mode == "pooled":
        W[used] = 1.0
    elif mode == "soft":
        r = np.clip(reuse[used], 0.0, None)
        W[used] = (r / np.maximum(r.max(axis=0, keepdims=True), EPS)) ** 2
    else:
        raise ValueError(f"reuse_mode must be one of {', '.join(REUSE_MODES)}, got {mode!r}")
    return W


def ensemble_scores(probs: Sequence[np.ndarray], chosen: np.ndarray,
                    weighting: str = DEFAULTS.weighting,
                    routing: np.ndarray | None = None) -> np.ndarray:
    """score (n, C): for class y, the entropy-weighted sum of the models' probabilities of y.

    Args:
        probs: per model, (n, C) class probabilities.
        chosen: (C, k) model positions (into ``probs``) per class: with no ``routing``, class y
            is scored by its chosen models alone (the paper's per-class reuse).
        routing: (len(probs), C) weight of each model's vote per class (:func:`routing_weights`).
    """
    w = [entropy_weights(p, weighting) for p in probs]
    n, C = probs[0].shape
    out = np.zeros((n, C))
    if routing is not None:
        for m in np.flatnonzero(routing.any(axis=1)).tolist():
            out += (w[m][:, None] * probs[m]) * routing[m][None, :]
        return out
    for y in range(C):
        for m in chosen[y]:
            out[:, y] += w[int(m)] * probs[int(m)][:, y]
    return out


def accuracy(scores: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """top-1, top-5 and per-class top-1."""
    top1 = scores.argmax(1) == targets
    k = min(5, scores.shape[1])
    top5 = (np.argsort(-scores, 1)[:, :k] == targets[:, None]).any(1)
    per = {int(c): float(top1[targets == c].mean()) for c in np.unique(targets)}
    return {"top1": float(top1.mean()), "top5": float(top5.mean()), "per_class": per}


class ProbCache:
    """Class probabilities per model on one task's images; pixels decoded once per preprocess,
    each model run once (its image-to-class similarities are kept, so probabilities at another
    logit scale, :mod:`mll_registry.labels.calibration`, cost no model run)."""

    def __init__(self, images: TaskImages, prompts: Sequence[str] = DEFAULTS.prompts,
                 batch_size: int = 256) -> None:
        self.images = images
        self.prompts = tuple(prompts)
        self.batch_size = batch_size
        self._pixels: dict[str, np.ndarray] = {}
        self.cos: dict[str, np.ndarray] = {}  # model -> (n, C) cosine similarities
        self.own_scale: dict[str, float] = {}  # model -> its own logit scale
        self._probs: dict[tuple[str, float], np.ndarray] = {}
        self.seconds: dict[str, float] = {}

    def pixels(self, pipe: Any) -> np.ndarray:
        if pipe.key not in self._pixels:
            self._pixels[pipe.key] = np.stack([pipe(p) for p in self.images.paths])
        return self._pixels[pipe.key]

    def get(self, ref: str, load: Callable[[str], Any], scale: float | None = None
            ) -> np.ndarray:
        """(n, C) probabilities of model ``ref`` (loaded with ``load`` on first use) at logit
        ``scale`` (None: the model's own)."""
        if ref not in self.cos:
            self._run(ref, load)
        s = self.own_scale[ref] if scale is None else float(scale)
        if (ref, s) not in self._probs:
            from mll_registry.labels.calibration import probabilities

            self._probs[(ref, s)] = probabilities(self.cos[ref], s)
        return self._probs[(ref, s)]

    def _run(self, ref: str, load: Callable[[str], Any]) -> None:
        import torch

        from mll_registry.labels.labeller import encode_pixels, encode_texts
        from mll_registry.models.image_stream import PixelPipeline

        lm = load(ref)
        pipe = PixelPipeline.from_preprocess(lm.preprocess)
        pix = self.pixels(pipe)
        t0 = time.perf_counter()
        txt = encode_texts(lm, [[t.format(c) for t in self.prompts] for c in self.images.classes])
        img = torch.from_numpy(encode_pixels(lm, pix, pipe, self.batch_size)).to(txt.device)
        with torch.no_grad():
            self.own_scale[ref] = float(lm.model.logit_scale.exp().float().item())
            self.cos[ref] = (img.float() @ txt.float().T).cpu().numpy().astype(np.float64)
        self.seconds[ref] = time.perf_counter() - t0


@dataclass
class ReuseResult:
    """Measured accuracy of the ensemble and of each selected model alone."""

    task: str
    n_images: int
    ensemble: dict[str, Any]
    per_model: dict[str, dict[str, Any]]
    weighting: str
    prompts: list[str]
    images_per_s: float
    models_used: list[str] = field(default_factory=list)
    calibration: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "images": self.n_images, "weighting": self.weighting,
                "calibration": self.calibration,
                "prompts": self.prompts, "images_per_s": round(self.images_per_s, 1),
                "ensemble": _round(self.ensemble), "models_used": self.models_used,
                "per_model": {m: _round(v) for m, v in self.per_model.items()}}

    def to_json(self) -> dict[str, Any]:
        """Exact JSON-able form (for persisted results: JSON, never pickle)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReuseResult:
        """Inverse of :meth:`to_json` (JSON turns the class-index keys into strings)."""
        def fix(d: dict[str, Any]) -> dict[str, Any]:
            return {**d, "per_class": {int(k): v for k, v in d.get("per_class", {}).items()}}

        return cls(**{**data, "ensemble": fix(data["ensemble"]),
                      "per_model": {m: fix(v) for m, v in data["per_model"].items()}})


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else
                {kk: round(vv, 4) for kk, vv in v.items()} if isinstance(v, dict) else v)
            for k, v in d.items()}


def evaluate(selection: Any, task: Task, data: str | os.PathLike[str] | None = None,
             load: Callable[[str], Any] | None = None, weighting: str = DEFAULTS.weighting,
             prompts: Sequence[str] = DEFAULTS.prompts, device: str = "auto",
             cache: ProbCache | None = None) -> ReuseResult:
    """Run the selected ensemble on the task's labelled images and measure it.

    Args:
        selection: a :class:`mll_registry.selection.select.SelectionResult` for ``task``.
        load: MODEL_REF -> loaded model (default :func:`mll_registry.models.loading.load` on ``device``).
        cache: reuse probabilities already computed for these images (benchmarks).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if list(selection.classes) != task.class_names:
        raise ValueError("the selection was made for other classes than this task's")
    if load is None:
        from mll_registry.models.loading import load as hub_load

        def load(ref: str) -> Any:
            return hub_load(ref, device=device)

    images = cache.images if cache else TaskImages.from_task(task, data)
    cache = cache or ProbCache(images, prompts)
    used = selection.selected_models()
    t0 = time.perf_counter()
    scale_of = getattr(selection, "scale_of", lambda ref: None)
    probs = [cache.get(ref, load, scale_of(ref)) for ref in used]
    elapsed = time.perf_counter() - t0
    pos = {ref: i for i, ref in enumerate(used)}
    chosen = np.vectorize(lambda m: pos[selection.models[int(m)]])(selection.chosen)
    mode = getattr(selection, "reuse_mode", "per_class")
    routing = None
    if mode != "per_class":  # the used models' rows of the routing weights, in ``used`` order
        routing = selection.routing()[[selection.models.index(r) for r in used]]
    scores = ensemble_scores(probs, chosen.reshape(selection.chosen.shape), weighting, routing)
    per_model = {ref: accuracy(p, images.targets) for ref, p in zip(used, probs, strict=True)}
    spent = sum(cache.seconds.get(r, 0.0) for r in used) or elapsed
    return ReuseResult(task=task.name, n_images=len(images.paths),
                       ensemble=accuracy(scores, images.targets), per_model=per_model,
                       weighting=weighting, prompts=list(cache.prompts),
                       images_per_s=len(images.paths) / max(spent, 1e-9), models_used=used,
                       calibration=str(getattr(selection, "calibration", "none")))
