"""Baselines (INB, ModelGPT-style, oracles, Kendall tau) against numbers computed independently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mll_registry.baselines import (
    ModelGPT,
    best_of,
    feature_vector,
    inb_scores,
    kendall_tau,
    oracle_per_class,
    oracle_single,
    text_features,
)
from mll_registry.label_format import ModelLabel


def _label(acc1: list[float]) -> ModelLabel:
    idx = np.zeros((1, 1), np.uint16)
    return ModelLabel(idx, np.zeros((1, 1), np.float16), np.zeros(1, np.float16),
                      pd.DataFrame({"node_id": [f"n{i}" for i in range(len(acc1))],
                                    "acc1": acc1}), {"graph_version": "v"})


def test_inb_is_the_best_mean_label_accuracy_and_ties_go_to_the_first_ref() -> None:
    scores = inb_scores({"b": _label([0.2, 0.6]), "a": _label([0.4, 0.4]), "c": _label([0.1, 0.2])})
    assert scores == pytest.approx({"a": 0.4, "b": 0.4, "c": 0.15})
    assert best_of(scores) == "a"  # a tie: sorted order decides, never dict order
    assert oracle_single({"x": 0.3, "y": 0.9}) == "y"


def test_oracle_per_class_and_kendall_tau_by_hand() -> None:
    per_class = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.6]])  # models x classes
    assert oracle_per_class(per_class).tolist() == [[0], [1], [1]]
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # one discordant pair of three: (2 - 1) / 3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert np.isnan(kendall_tau([1], [1]))


def test_modelgpt_recovers_a_linear_relation_and_does_not_shrink_the_intercept() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.random((40, 4)), np.ones(40)])
    true = np.array([0.5, -0.2, 0.1, 0.3, 0.25])
    y = X @ true
    m = ModelGPT(ridge=1e-9).fit(X, y)
    np.testing.assert_allclose(m.coef, true, atol=1e-6)
    # heavy ridge: slopes shrink to zero, the intercept stays free and becomes the mean
    big = ModelGPT(ridge=1e9).fit(X, y)
    assert np.abs(big.coef[:4]).max() < 1e-6
    assert big.coef[4] == pytest.approx(y.mean(), abs=1e-6)
    np.testing.assert_allclose(m.predict(X[:3]), y[:3], atol=1e-6)
    with pytest.raises(ValueError, match="other tasks"):
        ModelGPT().fit(X[:1], y[:1])
    with pytest.raises(ValueError, match="fit ModelGPT"):
        ModelGPT().predict(X)


def test_text_features_match_a_direct_computation(tmp_path: Path) -> None:
    from mll_registry.demo.archs import build_tiny
    from mll_registry.model_loading import load, save_open_clip_dir

    model, cfg = build_tiny("tiny-vit", seed=4)
    lm = load(f"local-dir:{save_open_clip_dir(model, cfg, tmp_path / 'm')}", device="cpu")
    classes = ["dog", "cat", "car"]
    desc = [["a dog barking", "a puppy"], ["a kitten"], ["a red car", "a truck", "a sedan"]]
    tf = text_features(lm, classes, desc)

    def enc(texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return lm.model.encode_text(lm.tokenizer(texts), normalize=True).numpy()

    P = enc([f"a photo of a {c}." for c in classes])
    flat = [d for ds in desc for d in ds]
    owner = np.array([0, 0, 1, 2, 2, 2])
    S = enc(flat) @ P.T
    own = S[np.arange(6), owner]
    other = np.array([max(S[i, j] for j in range(3) if j != owner[i]) for i in range(6)])
    PP = P @ P.T
    np.fill_diagonal(PP, -np.inf)
    assert tf["text_acc"] == pytest.approx(float(np.mean(S.argmax(1) == owner)))
    assert tf["text_margin"] == pytest.approx(float(np.mean(own - other)), abs=1e-5)
    assert tf["class_separation"] == pytest.approx(float(1 - PP.max(1).mean()), abs=1e-5)
    v = feature_vector(0.3, tf)
    assert v.tolist() == pytest.approx([0.3, tf["text_acc"], tf["text_margin"],
                                        tf["class_separation"], 1.0])
