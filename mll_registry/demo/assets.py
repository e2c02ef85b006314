"""Offline assets in one call: WordNet for nltk and the demo image sources and renders.

``mll setup`` runs :func:`setup`; commands that need an asset also provision it on demand.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from mll_registry.config import data_dir
from mll_registry.demo import sources as S
from mll_registry.graph.wordnet import ensure_wordnet


@dataclass
class SetupReport:
    """What is available, where, and what was done."""

    data_dir: str
    wordnet: dict[str, Any]
    missing_sources: list[str]
    renders: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def setup(root: str | os.PathLike[str] | None = None, demo: bool = True,
          styles: tuple[str, ...] = S.ALL_STYLES, force: bool = False) -> SetupReport:
    """Provision WordNet and (with ``demo``) render the demo image styles.

    Raises:
        WordNetUnavailable: no WordNet could be found or built (the message says how to fix it).
        SourceMissing: ``demo`` is set and an image source is not installed.
    """
    from mll_registry.demo.data import ensure_demo_images, render_summary

    wn = ensure_wordnet(root)
    rep = SetupReport(data_dir=str(data_dir(root)), wordnet=asdict(wn),
                      missing_sources=S.missing_sources())
    if demo:
        S.require_sources()
        rep.renders = render_summary(ensure_demo_images(styles, root=root, force=force))
        from mll_registry.demo.tasks import ensure_demo_tasks

        rep.tasks = [str(p) for p in ensure_demo_tasks(root)]
    return rep
