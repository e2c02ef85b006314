"""Baselines for model selection (docs/method.md §5).

* **INB**: the single model best on a general benchmark. By default the benchmark is the model's
  label itself (mean accuracy@1 over all graph nodes); a user-given score table also works.
* **ModelGPT-style** (LOVM, Zohar et al.): text-only features of each model's *text encoder* on
  the task's class descriptions, plus its general benchmark score, fed to a linear (ridge) model
  fit on other tasks where accuracies were measured; the highest predicted accuracy wins.
* **Oracles**: the single model best on the task's labelled data (ceiling of single-model
  selection) and, per class, the model best on that class (ceiling of per-class selection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mll_registry.label_format import ModelLabel

FEATURES = ("general_score", "text_acc", "text_margin", "class_separation", "bias")


def inb_scores(labels: dict[str, ModelLabel]) -> dict[str, float]:
    """General benchmark score per model: mean accuracy@1 of its label over the graph."""
    return {ref: float(lab.summary["acc1"].mean()) for ref, lab in labels.items()}


def best_of(scores: dict[str, float]) -> str:
    """The highest-scoring model (ties: the first ref in sorted order)."""
    return max(sorted(scores), key=lambda r: scores[r])


def text_features(lm: Any, class_names: Sequence[str], descriptions: Sequence[Sequence[str]],
                  prompt: str = "a photo of a {}.") -> dict[str, float]:
    """LOVM-style text-only features of one model's text encoder on one task.

    * ``text_acc``: descriptions classified to their class by cosine to the class prompts;
    * ``text_margin``: mean (own-class cosine - best other-class cosine) of the descriptions;
    * ``class_separation``: 1 - mean max cosine between different class prompts (granularity).
    """
    from mll_registry.labeller import encode_texts

    P = encode_texts(lm, [[prompt.format(c)] for c in class_names]).cpu().numpy()
    flat = [d for ds in descriptions for d in ds]
    owner = np.repeat(np.arange(len(class_names)), [len(ds) for ds in descriptions])
    D = encode_texts(lm, [[d] for d in flat]).cpu().numpy()
    S = D @ P.T
    own = S[np.arange(len(flat)), owner]
    other = np.where(np.eye(len(class_names), dtype=bool)[owner], -np.inf, S).max(1)
    PP = P @ P.T
    np.fill_diagonal(PP, -np.inf)
    return {"text_acc": float((S.argmax(1) == owner).mean()),
            "text_margin": float(np.mean(own - other)) if len(class_names) > 1 else 0.0,
            "class_separation": float(1 - PP.max(1).mean()) if len(class_names) > 1 else 1.0}


def feature_vector(general_score: float, tf: dict[str, float]) -> np.ndarray:
    return np.array([general_score, tf["text_acc"], tf["text_margin"], tf["class_separation"],
                     1.0])


@dataclass
class ModelGPT:
    """Ridge regression from text-only features to measured task accuracy."""

    ridge: float = 1e-2
    coef: np.ndarray | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> ModelGPT:
        if len(X) < 2:
            raise ValueError("ModelGPT needs measured accuracies on other tasks to fit")
        reg = self.ridge * np.eye(X.shape[1])
        reg[-1, -1] = 0.0  # do not shrink the intercept
        self.coef = np.linalg.solve(X.T @ X + reg, X.T @ y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise ValueError("fit ModelGPT before predicting")
        return X @ self.coef


def oracle_single(top1: dict[str, float]) -> str:
    """The model with the best measured top-1 on the task."""
    return best_of(top1)


def oracle_per_class(per_class: np.ndarray) -> np.ndarray:
    """(C, 1) model position with the best measured accuracy per class. ``per_class`` is (M, C)."""
    return np.argmax(per_class, axis=0)[:, None]


def kendall_tau(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Kendall's tau-b between a predicted and a measured model ranking (nan if undefined)."""
    from scipy.stats import kendalltau

    if len(predicted) < 2:
        return float("nan")
    return float(kendalltau(predicted, measured).statistic)
