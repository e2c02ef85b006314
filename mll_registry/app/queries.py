"""Queries over the registered labels: models ranked on a concept, a model's label summary.

Answered from the label index (:mod:`mll_registry.registry.label_index`): no MLflow client
while its disk cache is fresh."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mll_registry.app.results import ConceptQuery

if TYPE_CHECKING:
    from mll_registry.app.graphs import GraphService, GraphSpec
    from mll_registry.app.parts import Parts
    from mll_registry.graph.bundle import SemanticGraph
    from mll_registry.registry.label_index import LabelIndex
    from mll_registry.registry.labels import LabelledVersion


class QueryService:
    """The query use cases over an App's :class:`~mll_registry.app.parts.Parts` and its
    graphs."""

    def __init__(self, parts: Parts, graphs: GraphService) -> None:
        self.app = parts
        self.graphs = graphs

    def best(self, concept: str, graph: SemanticGraph | GraphSpec, n: int = 5,
             refresh: bool = False, source: str | None = None) -> ConceptQuery:
        """Models ranked by measured accuracy on a concept (synset id, wnid or word): over all
        its images, or (``source``) over those of one of the graph's sample sources only.

        Raises:
            KeyError: the concept is not in the graph (the message says what was tried), or
                ``source`` is not one of its sample sources (the message lists them).
            LabelError: ``source`` given and a model's label predates per-source counts.
        """
        from mll_registry.graph.concepts import resolve_concept
        from mll_registry.labels.format import graph_sources

        g = self.graphs.of(graph)
        if source is not None and source not in graph_sources(g):
            raise KeyError(f"no sample source {source!r} in graph {g.version}; its sources: "
                           f"{', '.join(graph_sources(g))}")
        node, others = resolve_concept(concept, g.node_ids, g.nodes)
        idx = self.index(g.version, refresh=refresh)
        return ConceptQuery(node, concept, others, g.version, idx.best(node, n, source), source)

    def index(self, graph_version: str, label_hash: str | None = None,
              refresh: bool = False) -> LabelIndex:
        """The label index of a graph version (default: the configured label settings), fresh:
        the registry (MLflow) is made only when its disk cache is stale or ``refresh``."""
        from mll_registry.registry.label_index import LabelIndex

        a = self.app
        return LabelIndex(a.registry_factory(), graph_version,
                          label_hash=label_hash or a.settings.label_hash(),
                          root=a.root).refresh(force_check=refresh)

    def label(self, model: str, graph: SemanticGraph | GraphSpec,
              refresh: bool = False) -> tuple[LabelledVersion, Any] | None:
        """A model's newest registered label for the graph: (version, per-node summary).

        Answered from the label index; a model labelled only with other label settings is
        looked up in the registry itself.
        """
        from mll_registry.registry.labels import version_entry

        g = self.graphs.of(graph)
        found = self.index(g.version, refresh=refresh).summary_of(model)
        if found is not None:
            return found
        reg = self.app.registry
        v = reg.latest_for(model, g.version)
        if v is None:
            return None
        # the single-version read carries the aliases (searches do not), as the UI shows them
        v = version_entry(reg.client.get_model_version(v.name, str(v.version)))
        return v, reg.download_summary(v)
