"""Discovery glue for the labelling flows: new models as refs + revisions, and the watermark.

Sources (:mod:`mll_registry.hubsource`): ``hf`` lists open_clip models on the Hugging Face Hub (or
``HF_ENDPOINT``), ``local`` scans a directory laid out as ``ORG/NAME/`` (the demo hub). Only models
published after the watermark are returned; the watermark advances after a successful run.
"""

from __future__ import annotations

import os
from typing import Any


def source_for(kind: str, local_root: str | None = None) -> Any:
    from mll_registry.hubsource import HfHubSource, LocalDirHubSource

    if kind == "hf":
        return HfHubSource()
    if kind == "local":
        if not local_root:
            raise ValueError("source 'local' needs local_root (a folder of ORG/NAME model dirs)")
        return LocalDirHubSource(local_root)
    raise ValueError(f"unknown source {kind!r}: use 'hf' or 'local'")


def discover_refs(kind: str, local_root: str | None = None, limit: int = 100,
                  watermark_path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """New models as plain dicts: ref, revision, repo_id, created_at (ISO)."""
    from mll_registry.hubsource import Watermark

    src = source_for(kind, local_root)
    since = Watermark(watermark_path).get() if watermark_path else None
    return [{"ref": m.ref, "revision": m.sha, "repo_id": m.repo_id,
             "created_at": m.created_at.isoformat()} for m in src.list_new(since=since, limit=limit)]


def advance_watermark(watermark_path: str | os.PathLike[str], found: list[dict[str, Any]]) -> None:
    """Move the watermark to the newest ``created_at`` among ``found``."""
    from datetime import datetime

    from mll_registry.hubsource import Watermark

    stamps = [datetime.fromisoformat(m["created_at"]) for m in found if m.get("created_at")]
    if stamps:
        Watermark(watermark_path).set(max(stamps), [m["repo_id"] for m in found])
