"""Paired bootstrap intervals: exact where resampling cannot change the answer, and close to the
textbook standard error where it can."""

from __future__ import annotations

import numpy as np
import pytest

from mll_registry.evaluation.intervals import paired_bootstrap


def test_identical_methods_give_an_interval_of_zero() -> None:
    y = np.repeat(np.arange(5), 10)
    a = np.random.default_rng(0).random(50) > 0.5
    iv = paired_bootstrap([(a, a, y)])
    assert (iv.estimate, iv.low, iv.high) == (0.0, 0.0, 0.0) and not iv.above_zero


def test_a_method_right_everywhere_the_other_wrong_is_one() -> None:
    y = np.repeat(np.arange(4), 3)
    iv = paired_bootstrap([(np.ones(12, bool), np.zeros(12, bool), y)] * 2)
    assert (iv.estimate, iv.low, iv.high) == (1.0, 1.0, 1.0) and iv.above_zero


def test_the_interval_matches_the_standard_error_of_a_paired_difference() -> None:
    # one task, many classes of equal size: the two-level bootstrap's spread is close to the
    # standard error of the mean per-image difference (independent images, p = 0.6 vs 0.5)
    # times sqrt(2)
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(200), 20)
    a = rng.random(len(y)) < 0.6
    b = rng.random(len(y)) < 0.5
    d = a.astype(float) - b
    se = d.std(ddof=1) / np.sqrt(len(d))
    iv = paired_bootstrap([(a, b, y)], replicates=4000)
    assert iv.estimate == pytest.approx(d.mean())
    # resampling classes already carries the images' variance; resampling images again adds it
    # once more: with no class effect the interval is sqrt(2) wider (conservative by design)
    assert (iv.high - iv.low) / (2 * 1.96 * se) == pytest.approx(np.sqrt(2), abs=0.12)
    assert iv.low < d.mean() < iv.high and iv.above_zero


def test_the_estimate_is_the_mean_over_tasks_of_each_tasks_difference() -> None:
    y1, y2 = np.repeat(np.arange(2), 2), np.repeat(np.arange(3), 4)
    t1 = (np.array([1, 1, 1, 0], bool), np.array([0, 1, 0, 0], bool), y1)  # 0.75 - 0.25
    t2 = (np.ones(12, bool), np.ones(12, bool), y2)  # 0
    assert paired_bootstrap([t1, t2]).estimate == pytest.approx(0.25)
