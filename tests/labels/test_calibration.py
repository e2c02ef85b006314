"""Per-model temperature from the labels (issue #27): the fitted scale, its use in selection and
reuse, checked against values computed independently (a brute-force NLL search, hand-made
similarities), never the code's own output."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from mll_registry.labels.calibration import (
    RULE,
    calibrate_on_graph,
    fit_logit_scale,
    label_scale,
    own_nodes,
    probabilities,
)
from mll_registry.selection.select import label_scales


def _brute_nll_argmin(cos: np.ndarray, y: np.ndarray) -> float:
    best = (math.inf, 0.0)
    for s in np.exp(np.linspace(np.log(0.05), np.log(1000), 4001)):
        z = s * cos
        lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
        nll = float(np.mean(lse - z[np.arange(len(y)), y]))
        best = min(best, (nll, float(s)))
    return best[1]


def _sample(scale: float, n: int = 3000, V: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Similarities drawn so that softmax(scale * cos) is the true class distribution: the NLL
    minimiser is then ``scale`` (up to sampling noise)."""
    rng = np.random.default_rng(seed)
    cos = rng.uniform(-0.2, 0.4, (n, V))
    p = probabilities(cos, scale)
    y = np.array([rng.choice(V, p=row) for row in p])
    return cos, y


@pytest.mark.parametrize("true", [3.0, 20.0])
def test_the_fitted_scale_minimises_the_nll_and_recovers_the_true_one(true: float) -> None:
    cos, y = _sample(true)
    fit = fit_logit_scale(cos, y)
    assert fit.logit_scale == pytest.approx(_brute_nll_argmin(cos, y), rel=0.01)
    assert fit.logit_scale == pytest.approx(true, rel=0.25)
    assert fit.images == len(y) and fit.nodes == 6 and fit.rule == RULE


def test_an_overconfident_model_is_cooled_and_a_shy_one_warmed() -> None:
    """Same similarities, right 1 time in 2 on 4 classes: whatever a model's own scale, the
    calibrated one is the scale that makes its top class about 1/2 likely."""
    cos = np.tile([0.5, 0.3, 0.3, 0.3], (400, 1))
    y = np.where(np.arange(400) % 2 == 0, 0, 1 + np.arange(400) % 3)
    s = fit_logit_scale(cos, y).logit_scale
    # p(top) = e^{0.5s} / (e^{0.5s} + 3 e^{0.3s}) = 1/2  =>  e^{0.2s} = 3  =>  s = ln 3 / 0.2
    assert s == pytest.approx(math.log(3) / 0.2, rel=1e-3)


def test_calibration_on_a_graph_uses_own_images_of_folder_nodes_and_honours_the_weight() -> None:
    rng = np.random.default_rng(1)
    V, d = 5, 8
    T = rng.normal(size=(V + 2, d))  # 2 hypernym nodes without images of their own
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    own = np.repeat(np.arange(V), 40)  # node positions 0..4 own 40 images each
    X = T[own] * 3 + rng.normal(size=(len(own), d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    own_with_orphans = np.concatenate([own, [-1, -1]])
    X2 = np.concatenate([X, X[:2]])
    cal = calibrate_on_graph([X2[:77], X2[77:]], T, own_with_orphans, np.arange(V))
    want = fit_logit_scale(X @ T[:V].T, own)  # every own image, folder nodes only
    assert cal is not None and cal.logit_scale == pytest.approx(want.logit_scale, rel=1e-6)
    half = (np.arange(len(own_with_orphans)) < 100).astype(float)
    held = calibrate_on_graph(X2, T, own_with_orphans, np.arange(V), weight=half)
    assert held is not None and held.images == 100
    assert held.logit_scale == pytest.approx(
        fit_logit_scale(X[:100] @ T[:V].T, own[:100]).logit_scale, rel=1e-6)
    assert calibrate_on_graph(X, T, own, np.arange(1)) is None  # one folder node: no fit


def test_own_nodes_reads_the_members_table() -> None:
    members = pd.DataFrame({"node_id": ["a", "b", "a", "r"], "image_id": [0, 1, 1, 2],
                            "own": [True, True, False, False]})
    assert own_nodes(members, 4, {"a": 3, "b": 1, "r": 0}).tolist() == [3, 1, -1, -1]


class _Label:
    def __init__(self, meta: dict) -> None:
        self.meta = meta


def test_selection_takes_the_labels_scales_or_none_at_all() -> None:
    cal = {"logit_scale": 4.5, "rule": RULE}
    labels = {"a": _Label({"logit_scale": 30.0, "calibration": cal}),
              "b": _Label({"logit_scale": 50.0, "calibration": {**cal, "logit_scale": 9.0}})}
    assert label_scales(labels, ["a", "b"], "graph") == ({"a": 4.5, "b": 9.0}, [])
    assert label_scales(labels, ["a", "b"], "none") == ({}, [])
    assert label_scale(labels["a"].meta, "none") == 30.0
    old = {**labels, "c": _Label({"logit_scale": 20.0})}  # labelled before calibration
    assert label_scales(old, ["a", "b", "c"], "graph") == ({}, ["c"])  # all alike, or none
    other = {"a": _Label({"calibration": {**cal, "rule": "another/9"}})}
    assert label_scales(other, ["a"], "graph") == ({}, ["a"])
    with pytest.raises(ValueError, match="calibration must be one of"):
        label_scale({}, "temperature")


def test_reuse_probabilities_follow_the_selection_scales() -> None:
    """A ProbCache holding a model's similarities gives softmax(scale * cos) at the scale the
    selection names, its own scale otherwise."""
    from mll_registry.selection.reuse import ProbCache, TaskImages

    cache = ProbCache(TaskImages([], np.zeros(0, np.int64), ["x", "y"]))
    cos = np.array([[0.3, 0.1], [0.0, 0.2]])
    cache.cos["m"], cache.own_scale["m"] = cos, 100.0
    never = lambda ref: pytest.fail("a model was loaded")  # noqa: E731
    own = cache.get("m", never)
    assert own[0, 0] == pytest.approx(1 / (1 + math.exp(-100 * 0.2)))
    cold = cache.get("m", never, 5.0)
    assert cold[0, 0] == pytest.approx(1 / (1 + math.exp(-5 * 0.2)))
    assert cold[1, 1] == pytest.approx(1 / (1 + math.exp(-5 * 0.2)))


def test_evaluate_reuses_each_model_at_the_selections_scale() -> None:
    """Two models pooled on 2 classes. A is sure and wrong on image 0, B mildly right; at the
    models' own scales A's confident vote wins, at the calibrated scales (A cooled to 1, B kept)
    B's does. Scores computed by hand from the entropy-weighted sum."""
    from mll_registry.selection.reuse import ProbCache, TaskImages, evaluate
    from mll_registry.selection.select import SelectionResult
    from mll_registry.task import Task, TaskClass

    images = TaskImages([], np.array([1]), ["x", "y"])
    cache = ProbCache(images)
    cache.cos = {"A": np.array([[0.30, 0.10]]), "B": np.array([[0.10, 0.14]])}
    cache.own_scale = {"A": 50.0, "B": 50.0}
    reuse = np.array([[0.9, 0.1], [0.1, 0.9]])
    sel = SelectionResult(task="t", classes=["x", "y"], models=["A", "B"],
                          chosen=np.array([[0], [1]]), reuse=reuse, score=reuse,
                          matched={"x": [], "y": []}, weak=[], params={}, reuse_mode="pooled")
    task = Task("t", [TaskClass("x"), TaskClass("y")])

    def by_hand(sa: float, sb: float) -> int:
        score = np.zeros(2)
        for c, s in ((cache.cos["A"][0], sa), (cache.cos["B"][0], sb)):
            p = np.exp(s * c) / np.exp(s * c).sum()
            score += p / (-(p * np.log(p)).sum() + 1e-8)
        return int(np.argmax(score))

    never = lambda ref: pytest.fail("a model was loaded")  # noqa: E731
    own = evaluate(sel, task, load=never, cache=cache)
    assert own.calibration == "none"
    assert own.ensemble["top1"] == float(by_hand(50.0, 50.0) == 1) == 0.0
    cal = dataclasses.replace(sel, logit_scales={"A": 1.0, "B": 50.0})
    got = evaluate(cal, task, load=never, cache=cache)
    assert got.calibration == "graph"
    assert got.ensemble["top1"] == float(by_hand(1.0, 50.0) == 1) == 1.0
