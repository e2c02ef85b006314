"""Where this data dir's label indexes keep their cache, and how a registration from here makes
them stale: the one thing the registration side needs to know about the index."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mll_registry.config import data_dir
from mll_registry.fsutil import write_json


def index_cache_dir(root: str | os.PathLike[str] | None) -> Path:
    """The folder of the label indexes' caches (one sub-folder per index)."""
    return data_dir(root) / "cache" / "label-index"


def mark_stale(root: str | os.PathLike[str] | None, graph_version: str) -> None:
    """Make this data dir's label indexes of ``graph_version`` check the registry on their next
    use (called when a version is registered from here; other machines' registrations are seen
    within ``max_age``)."""
    for meta in index_cache_dir(root).glob(f"*-{graph_version}-*/versions.json"):
        try:
            d = json.loads(meta.read_text(encoding="utf-8"))
            if isinstance(d, dict) and d.get("checked_at"):
                write_json(meta, {**d, "checked_at": 0.0})
        except (OSError, ValueError):
            meta.unlink(missing_ok=True)  # unreadable: the index rebuilds it
