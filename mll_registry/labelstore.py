"""Where labels are found: a small interface, with a local-directory implementation.

The MLflow registry (:mod:`mll_registry.registry`) implements the same interface; selection only
needs ``labels_for(graph_version)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from mll_registry.config import data_dir
from mll_registry.labels import ModelLabel


class LabelStore(Protocol):
    """Finds the labels computed on a graph version: model ref -> label directory."""

    def labels_for(self, graph_version: str) -> dict[str, Path]: ...


class LocalLabelStore:
    """Labels written by ``mll label`` under ``<data>/labels/<model key>/<graph version>/``."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.base = data_dir(root) / "labels"

    def labels_for(self, graph_version: str) -> dict[str, Path]:
        out: dict[str, Path] = {}
        if not self.base.is_dir():
            return out
        for meta in sorted(self.base.glob(f"*/{graph_version}/meta.json")):
            ref = json.loads(meta.read_text(encoding="utf-8")).get("model_ref")
            if ref:
                out[str(ref)] = meta.parent
        return out


def load_labels(paths: dict[str, Path], graph_version: str) -> dict[str, ModelLabel]:
    """Load and validate labels (each must be for ``graph_version``)."""
    return {ref: ModelLabel.load(p, graph_version=graph_version) for ref, p in paths.items()}
