"""Graphs: resolve a graph spec, build, publish, extend and compare graph bundles.

A spec names a published graph version or ``default`` (fetched from the registry once, then
cached by version), a named graph of :data:`GRAPHS` (``demo``: the demo's, registered by
:mod:`mll_registry.demo` through the ``mll_registry.graphs`` entry point), or a bundle
directory (``./PATH``, ``/PATH``, ``~/PATH``, an existing bare relative one, or any ``Path``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mll_registry.app.results import GraphBuild, GraphExtension, GraphPublish
from mll_registry.plugins import Plugins

if TYPE_CHECKING:
    from mll_registry.app.parts import Parts
    from mll_registry.graph.bundle import GraphConfig, SemanticGraph
    from mll_registry.graph.lineage import GraphDelta
    from mll_registry.registry.graph_store import PublishedGraph

#: named graphs: name -> factory(root=DATA_DIR) -> SemanticGraph (built or loaded on first use).
#: ``demo`` comes from the ``mll_registry.graphs`` entry point in pyproject.toml.
GRAPHS: Plugins[Callable[..., SemanticGraph]] = Plugins("graphs")

GraphSpec = str | os.PathLike[str]


class GraphService:
    """The graph use cases over an App's :class:`~mll_registry.app.parts.Parts`."""

    def __init__(self, parts: Parts) -> None:
        self.app = parts

    def get(self, spec: GraphSpec) -> SemanticGraph:
        """The graph ``spec`` names (see the module docstring). Names are never folders of the
        working directory."""
        from mll_registry.demo.graph import load_graph
        from mll_registry.graph.bundle import bundle_path
        from mll_registry.registry.graph_store import is_graph_version

        root = self.app.root
        if isinstance(spec, os.PathLike):
            return load_graph(Path(spec).expanduser(), root)
        if spec in GRAPHS:
            return GRAPHS.get(spec)(root=root)
        if is_graph_version(spec):
            return self.app.graph_store.fetch(spec)[0]
        return load_graph(bundle_path(spec), root)

    def of(self, graph: SemanticGraph | GraphSpec) -> SemanticGraph:
        """``graph`` itself if loaded, else the graph its spec names."""
        from mll_registry.graph.bundle import SemanticGraph

        return graph if isinstance(graph, SemanticGraph) else self.get(graph)

    def build(self, sources: Sequence[str] = (), *, demo: bool = False,
              out: str | os.PathLike[str] | None = None, config: GraphConfig | None = None,
              progress: Callable[[int, int], None] | None = None,
              describe: Sequence[str] = ()) -> GraphBuild:
        """Build a graph bundle from ``NAME=PATH`` sample folders (or the demo's); ``describe``
        gives sources their domain descriptions as ``NAME=TEXT``."""
        from mll_registry.graph.bundle import SampleDataset, build_and_save, describe_sources

        sets = describe_sources([SampleDataset.parse(s) for s in sources], describe)
        if demo:
            from mll_registry.demo.graph import build_demo_graph

            g, rep, path = build_demo_graph(self.app.root, out=out, config=config, extra=sets)
            return GraphBuild(g, rep, path)
        if not sets:
            raise ValueError("give at least one sample source NAME=PATH, or demo=True")
        path = Path(out) if out else self.app.paths.graphs / "-".join(s.name for s in sets)
        g, rep = build_and_save(sets, path, config, progress=progress)
        return GraphBuild(g, rep, path)

    def _bundle_of(self, spec: GraphSpec) -> tuple[SemanticGraph, Path]:
        """A local graph and its bundle directory; a named graph is written to the cache as a
        bundle (the same tables, so the same version) unless its factory's bundle is there."""
        if isinstance(spec, str) and spec in GRAPHS:
            g = self.get(spec)
            path = self.app.paths.cache / "named-graphs" / spec / g.version
            if not (path / "manifest.json").is_file():
                g.save(path)
            return g, path
        path = Path(spec).expanduser()
        return self.get(path), path

    def publish(self, bundle: GraphSpec = "demo", *, default: bool = False,
                progress: Callable[[int, int], None] | None = None) -> GraphPublish:
        """Publish a graph bundle (a directory, or a named graph such as ``demo``) and its sample
        images to the registry's artifact store, so any worker can fetch it by version."""
        g, path = self._bundle_of(bundle)
        pub, created = self.app.graph_store.publish(g, path, default=default, progress=progress)
        return GraphPublish(pub, created)

    def extend(self, base: GraphSpec, sources: Sequence[str] = (), *, demo: bool = False,
               out: str | os.PathLike[str] | None = None, publish: bool = False,
               default: bool = False, progress: Callable[[int, int], None] | None = None,
               describe: Sequence[str] = ()) -> GraphExtension:
        """Grow graph ``base`` (a bundle, version, ``default`` or a named graph) with new sample
        sources ``NAME=PATH`` (``demo``: the demo's 60 extension concepts) into a child bundle;
        with ``publish`` it is published too (``default``: as the default graph)."""
        from mll_registry.graph.bundle import SampleDataset, describe_sources
        from mll_registry.graph.lineage import extend_and_save

        sets = describe_sources([SampleDataset.parse(s) for s in sources], describe)
        if demo:
            from mll_registry.demo.graph import demo_extension_sources

            sets += demo_extension_sources(self.app.root)
        parent = self.get(base)
        path = Path(out) if out else self.app.paths.graphs / (
            f"{parent.version}+" + "-".join(s.name for s in sets))
        child, report, delta = extend_and_save(parent, sets, path, progress)
        ext = GraphExtension(child, parent.version, path, report.seconds, delta)
        if publish:
            ext.published = self.publish(path, default=default)
        return ext

    def diff(self, a: GraphSpec, b: GraphSpec) -> GraphDelta:
        """What changed from graph ``a`` to graph ``b`` (nodes by id, images by content)."""
        from mll_registry.graph.lineage import diff_graphs

        return diff_graphs(self.get(a), self.get(b))

    def list(self) -> list[PublishedGraph]:
        """The published graphs, newest first (``default`` marks the default graph)."""
        return self.app.graph_store.list()

    def set_default(self, graph_version: str) -> PublishedGraph:
        """Make a published graph version the one the flows use when given none."""
        return self.app.graph_store.set_default(graph_version)
