"""The typed results of the use cases (:mod:`mll_registry.app`).

Each has a ``to_dict()`` giving the JSON the CLI's ``--json`` prints and the flows return: the
same keys, in the same order, as when the use cases returned dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mll_registry.evaluation.bench import BenchResult
    from mll_registry.graph.bundle import BuildReport, SemanticGraph
    from mll_registry.graph.lineage import GraphDelta
    from mll_registry.registry.discovery_state import DiscoveryState
    from mll_registry.registry.graph_store import PublishedGraph
    from mll_registry.registry.label_index import ConceptHit
    from mll_registry.selection.reuse import ReuseResult
    from mll_registry.selection.select import SelectionResult
    from mll_registry.task import Task


@dataclass
class GraphBuild:
    """A built graph bundle and how it was built."""

    graph: SemanticGraph
    report: BuildReport
    path: Path

    def to_dict(self) -> dict[str, Any]:
        rep = self.report
        return {**self.graph.summary(), "path": str(self.path), "seconds": rep.seconds,
                "skipped": {s.name: {"unknown_folders": s.unknown_folders,
                                     "unreadable_images": s.unreadable,
                                     "non_image_files": s.non_image_files} for s in rep.sources}}


@dataclass
class GraphPublish:
    """A graph version in the registry, and whether this call published it."""

    published: PublishedGraph
    created: bool

    def to_dict(self) -> dict[str, Any]:
        return {**self.published.to_dict(), "created": self.created}


@dataclass
class GraphExtension:
    """A child graph grown from ``parent`` (and published, when asked)."""

    graph: SemanticGraph
    parent: str
    path: Path
    seconds: float
    delta: GraphDelta
    published: GraphPublish | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.graph.summary(), "parent": self.parent,
                               "path": str(self.path), "seconds": self.seconds,
                               "delta": self.delta.to_dict(full=False)}
        if self.published is not None:
            out["published"] = self.published.to_dict()
        return out


@dataclass
class LabelOutcome:
    """One model's label: ``labelled`` (stored by this call) or ``skipped`` (the store had it).

    ``entry`` is the store's record of the label (the registry: its version entry), ``run`` the
    labelling run's summary (empty when skipped).
    """

    status: str
    label_hash: str
    label_settings: Mapping[str, Any]
    entry: Mapping[str, Any] = field(default_factory=dict)
    run: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.reason is not None:
            out["reason"] = self.reason
        return {**out, "label_hash": self.label_hash, "label_settings": self.label_settings,
                **self.entry, **self.run}


@dataclass
class DiscoveryProgress:
    """The discovery state after a recorded page, and the models given up on."""

    state: DiscoveryState
    given_up: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {**self.state.to_dict(), "given_up": self.given_up}


@dataclass
class Selection:
    """A task, the graph it was matched on, and the models chosen per class."""

    task: Task
    graph: SemanticGraph
    result: SelectionResult
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "mlflow_run_id": self.run_id}


@dataclass
class Reuse:
    """A selection, its ensemble measured on labelled images."""

    selection: Selection
    result: ReuseResult
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "selection": self.selection.result.to_dict(),
                "mlflow_run_id": self.run_id}


@dataclass
class ConceptQuery:
    """Models ranked by measured ability on one concept."""

    concept: str
    query: str
    ambiguous: list[str]
    graph_version: str
    models: list[ConceptHit]
    source: str | None = None  # measured on this sample source's images only

    def to_dict(self) -> dict[str, Any]:
        return {"concept": self.concept, "query": self.query, "ambiguous": self.ambiguous,
                "graph_version": self.graph_version, "source": self.source,
                "models": [h.to_dict() for h in self.models]}


@dataclass
class BenchReport:
    """MLL against the baselines, its Markdown table, plot and MLflow run."""

    result: BenchResult
    markdown: str
    plot: Path | None
    run_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "markdown": self.markdown,
                "plot": str(self.plot) if self.plot else None, "mlflow_run_id": self.run_id}


@dataclass
class DemoReport:
    """What the orchestrated demo made (``summary``: the orchestrator's), its time and store."""

    summary: Mapping[str, Any]
    seconds: float
    mlflow_tracking_uri: str  # redacted: shown, never connected to

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary, "seconds": self.seconds,
                "mlflow_tracking_uri": self.mlflow_tracking_uri}
