"""The reuse modes, the per-class fall-back rule and the sub-hub restriction, checked against
values computed by hand (never the code's own output)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mll_registry.selection.reuse import ensemble_scores, entropy_weights, routing_weights
from mll_registry.selection.select import SelectionResult, choose, class_margins

# 3 models x 4 classes: class scores and the reuse metric (alpha 0.7) computed from them
SCORE = np.array([[0.9, 0.2, 0.5, 0.40],
                  [0.3, 0.8, 0.5, 0.62],
                  [0.6, 0.6, 0.6, 0.50]])
REUSE = 0.7 * SCORE + 0.3 * SCORE.mean(axis=1, keepdims=True)


def test_routing_weights_by_hand() -> None:
    chosen = np.array([[0], [1], [2], [1]])  # class -> its model
    per = routing_weights(chosen, REUSE, "per_class")
    assert per.tolist() == [[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]
    pooled = routing_weights(chosen, REUSE, "pooled")
    assert pooled.tolist() == [[1] * 4] * 3  # every distinct chosen model votes on every class
    two = routing_weights(np.array([[0], [0], [2], [2]]), REUSE, "pooled")
    assert two.tolist() == [[1] * 4, [0] * 4, [1] * 4]  # an unchosen model never votes
    soft = routing_weights(chosen, REUSE, "soft")
    for y in range(4):
        top = max(REUSE[m, y] for m in range(3))
        for m in range(3):
            assert soft[m, y] == pytest.approx((REUSE[m, y] / top) ** 2)


def test_routed_ensemble_is_the_weighted_vote_by_hand() -> None:
    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(4), size=6) for _ in range(3)]
    chosen = np.array([[0], [1], [2], [1]])
    W = routing_weights(chosen, REUSE, "soft")
    got = ensemble_scores(probs, chosen, "inverse_entropy", W)
    for i in range(6):
        for y in range(4):
            want = sum(W[m, y] * entropy_weights(probs[m])[i] * probs[m][i, y] for m in range(3))
            assert got[i, y] == pytest.approx(want)
    # per-class routing weights give the paper's per-class scores exactly
    per = ensemble_scores(probs, chosen, "inverse_entropy",
                          routing_weights(chosen, REUSE, "per_class"))
    assert np.allclose(per, ensemble_scores(probs, chosen, "inverse_entropy"))


def test_class_margins_fall_back_only_without_a_clear_lead() -> None:
    n = np.array([100.0, 100.0, 100.0, 4.0])
    never = class_margins(SCORE, REUSE, n, None)
    task = int(np.argmax(SCORE.mean(axis=1)))  # model 2: mean 0.575
    assert task == 2 and never.task.tolist() == [2] * 4 and not never.fell_back.any()
    assert never.best.tolist() == [0, 1, 2, 1]
    # class 0: 0.9 vs 0.6 over 100 images: se = sqrt((.09 + .24) / 100) = 0.0574, margin 5.2 se
    se0 = math.sqrt((0.9 * 0.1 + 0.6 * 0.4) / 100)
    assert never.margin[0] == pytest.approx(0.3) and never.se[0] == pytest.approx(se0)
    # class 3: 0.62 vs 0.50 over only 4 images: se = sqrt((.2356 + .25) / 4) = 0.348, 0.34 se
    rule = class_margins(SCORE, REUSE, n, 2.0)
    assert rule.fell_back.tolist() == [False, False, False, True]
    assert class_margins(SCORE, REUSE, n, 0.0).fell_back.tolist() == [False] * 4  # all ahead
    # class 1: 0.8 vs 0.6, se 0.0632 (3.2 se): kept at z=2, falls back at z=4 (class 0: 5.2 se)
    assert class_margins(SCORE, REUSE, n, 4.0).fell_back.tolist() == [False, True, False, True]
    assert class_margins(SCORE, REUSE, n, 1e9).fell_back.tolist() == [True, True, False, True]
    chosen = choose(REUSE, 1, margins=rule)
    assert chosen[:, 0].tolist() == [0, 1, 2, 2]  # the fallen-back class takes the task's model
    assert choose(REUSE, 2, margins=rule)[3].tolist() == [2, 1]  # the task-level order, top 2


def _selection(z: float | None) -> SelectionResult:
    n = np.array([100.0, 100.0, 100.0, 4.0])
    margins = class_margins(SCORE, REUSE, n, z)
    return SelectionResult(task="t", classes=list("abcd"), models=["m0", "m1", "m2"],
                           chosen=choose(REUSE, 1, margins=margins), reuse=REUSE, score=SCORE,
                           matched={c: [] for c in "abcd"}, weak=[], params={},
                           margins=margins, reuse_mode="pooled")


def test_a_sub_hub_selection_is_the_selection_of_that_hub() -> None:
    sel = _selection(2.0)
    assert sel.with_models([0, 1, 2]).chosen.tolist() == sel.chosen.tolist()
    sub = sel.with_models([0, 1])  # without model 2 the task-level model is m1 (mean 0.555)
    assert sub.models == ["m0", "m1"] and sub.margins is not None
    assert sub.margins.task.tolist() == [1] * 4
    # class a keeps m0 (0.9 vs 0.3); c: m0 and m1 tie on score 0.5, the reuse metric favours m1
    assert sub.chosen[:, 0].tolist() == [0, 1, 1, 1]
    rows = sel.per_class()
    assert [r["fell_back"] for r in rows] == [False, False, False, True]
    assert rows[3]["own_model"] == "m1" and rows[3]["task_model"] == "m2"
    assert rows[0]["margin"] == pytest.approx(0.3) and rows[0]["margin_se"] == pytest.approx(
        math.sqrt((0.9 * 0.1 + 0.6 * 0.4) / 100), abs=1e-4)
