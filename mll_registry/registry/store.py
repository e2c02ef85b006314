"""The registry as a label store (``LABEL_STORES["registry"]``, an entry point in pyproject.toml).

:class:`RegistryLabelStore` is the :class:`~mll_registry.labels.stores.LabelStore` port over the
MLflow :class:`~mll_registry.registry.labels.Registry`, connected on first need: selection lists
its label directories through the label index and the download cache, so a warm ``mll select``
makes no MLflow client (nor imports MLflow).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from mll_registry.labels.format import ModelLabel, selection_ready
from mll_registry.labels.stores import LabelKey, StoredLabel
from mll_registry.models.refs import ResolvedModel
from mll_registry.registry.labels import Registry, cached_label_dir, run_cache_dir


class RegistryLabelStore:
    """Labels as registered model versions in MLflow (``registry``: the one to use, else one
    for the data dir ``root``, made on first need)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *,
                 registry: Registry | None = None) -> None:
        self.root = root
        if registry is not None:
            self.__dict__["registry"] = registry

    @cached_property
    def registry(self) -> Registry:
        return Registry(root=self.root)

    def has(self, key: LabelKey) -> bool:
        return self.registry.has(key)

    def get(self, key: LabelKey) -> Path | None:
        return self.registry.get(key)

    def put(self, key: LabelKey, res: ResolvedModel, label: ModelLabel, label_dir: Path,
            force: bool = False) -> StoredLabel:
        return self.registry.put(key, res, label, label_dir, force=force)

    def list_labels(self, graph_version: str, label_hash: str | None = None) -> dict[str, Path]:
        return self.registry.list_labels(graph_version, label_hash)

    def embeddings(self, key: LabelKey) -> Path | None:
        return self.registry.embeddings(key)

    def find(self, key: LabelKey, model_ref: str) -> dict[str, Any] | None:
        return self.registry.find(key, model_ref)

    def describe(self, stored: StoredLabel) -> dict[str, Any]:
        return self.registry.describe(stored)

    def labelled_models(self, graph_version: str, label_hash: str | None = None) -> list[str]:
        return self.registry.labelled_models(graph_version, label_hash)

    def label_dirs(self, graph_version: str, label_hash: str) -> dict[str, Path]:
        """Model ref -> label dir of the newest label per model, listed through the label
        index and read from the download cache: no MLflow client while both are fresh."""
        from mll_registry.registry.label_index import LabelIndex

        made = self.__dict__.get("registry")
        idx = LabelIndex(made if made is not None else (lambda: self.registry), graph_version,
                         label_hash=label_hash, root=self.root).refresh()
        return {v.model_ref: self._selection_dir(v) for v in idx.versions}

    def _selection_dir(self, v: Any) -> Path:
        """The cached label dir of ``v`` when a selection can read it (no MLflow client),
        else :meth:`Registry.selection_label_dir`."""
        dest = run_cache_dir("registry-labels", v.run_id, self.root) / "label"
        if selection_ready(dest):
            return dest
        return cached_label_dir(v, self.root) or self.registry.selection_label_dir(v)

    def fetch_label_file(self, label_dir: Path, name: str) -> None:
        """Fetch one file of a remote label into its selection dir
        (:meth:`Registry.fetch_label_file`)."""
        self.registry.fetch_label_file(label_dir, name)

    def latest_ref(self, model: str) -> str | None:
        return self.registry.latest_ref(model)

    def latest_label_dir(self, model: str) -> Path | None:
        return self.registry.latest_label_dir(model)
