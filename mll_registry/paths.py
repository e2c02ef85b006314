"""Where one App's files live: the data directory and its folders, as one value.

The app layer passes a :class:`Paths` around instead of a ``root`` string; the deeper layers
still take their ``root`` (``Paths.root``) for now.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mll_registry.config import data_dir, demo_dir, graphs_dir


@dataclass(frozen=True)
class Paths:
    """The data directory (resolved, created) and the folders the tool keeps in it."""

    data: Path

    @classmethod
    def of(cls, override: str | os.PathLike[str] | None = None) -> Paths:
        """The data dir ``override``, else ``MLL_DATA_DIR``, else the XDG default
        (:func:`mll_registry.config.data_dir`)."""
        return cls(data_dir(override))

    @property
    def root(self) -> str:
        """The data dir as the ``root`` argument the deeper layers take."""
        return str(self.data)

    @property
    def demo(self) -> Path:
        """Rendered demo sample and target images."""
        return demo_dir(self.data)

    @property
    def graphs(self) -> Path:
        """Graph bundles written by default."""
        return graphs_dir(self.data)

    @property
    def labels(self) -> Path:
        """The local label store."""
        return self.data / "labels"

    @property
    def cache(self) -> Path:
        """Downloads and derived files, safe to delete."""
        return self.data / "cache"
