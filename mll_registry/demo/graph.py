"""The demo semantic graph: emoji concepts in the five sample styles (``demo.sources``), each
with its domain description."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from mll_registry.config import graphs_dir
from mll_registry.demo import sources as S
from mll_registry.demo.data import ensure_demo_images
from mll_registry.graph.bundle import (
    BuildReport,
    GraphConfig,
    GraphError,
    SampleDataset,
    SemanticGraph,
    build_and_save,
)

log = logging.getLogger(__name__)


def demo_graph_path(root: str | os.PathLike[str] | None = None) -> Path:
    """Default bundle location of the demo graph."""
    return graphs_dir(root) / "demo"


def build_demo_graph(root: str | os.PathLike[str] | None = None,
                     out: str | os.PathLike[str] | None = None,
                     config: GraphConfig | None = None,
                     extra: Sequence[SampleDataset] = ()) -> tuple[SemanticGraph, BuildReport, Path]:
    """Render the sample styles if needed and build the demo graph bundle.

    Only ``SAMPLE_STYLES`` go into the graph: target styles stay unseen by labelling.
    """
    renders = ensure_demo_images(S.SAMPLE_STYLES, root=root)
    sets = [SampleDataset(r.style, Path(r.path), S.SOURCE_DESCRIPTIONS[r.style])
            for r in renders] + list(extra)
    path = Path(out) if out else demo_graph_path(root)
    g, rep = build_and_save(sets, path, config)
    return g, rep, path


def load_graph(path: str | os.PathLike[str] | None = None,
               root: str | os.PathLike[str] | None = None) -> SemanticGraph:
    """Load the graph bundle at ``path``, or the demo graph (built on first use)."""
    if path:
        return SemanticGraph.load(path, root=root)
    demo = demo_graph_path(root)
    if (demo / "manifest.json").is_file():
        try:
            return SemanticGraph.load(demo, root=root)
        except GraphError as exc:  # an older bundle format or a damaged bundle: the demo's own
            log.warning("rebuilding the demo graph: %s", exc)  # graph is rebuilt, not an error
    return build_demo_graph(root)[0]


def demo_extension_sources(root: str | os.PathLike[str] | None = None) -> list[SampleDataset]:
    """The demo graph's growth: 60 further concepts rendered from the Noto and Symbola glyphs
    (sources ``noto-extension``, ``symbola-extension``), for ``mll graph extend demo --demo``."""
    from mll_registry.demo.data import ensure_extension_images

    return [SampleDataset(f"{r.style}-extension", Path(r.path), S.SOURCE_DESCRIPTIONS[r.style])
            for r in ensure_extension_images(root)]
