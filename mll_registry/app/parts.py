"""What the services are built from: the :class:`Parts` an App puts together.

The services (:mod:`mll_registry.app.graphs`, ``labelling``, ``discovery``, ``selection``,
``queries``, ``demo``) are typed against this protocol, not against the App, so a service
never depends on the composition root that builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mll_registry.labels.labeller import LabelConfig
    from mll_registry.labels.stores import LabelStore
    from mll_registry.paths import Paths
    from mll_registry.registry.graph_store import GraphStore
    from mll_registry.registry.labels import Registry
    from mll_registry.selection.matching import CaptionProvider, TextEmbedder
    from mll_registry.settings import Settings


class Parts(Protocol):
    """Settings, paths, stores and text models, each made on first use."""

    settings: Settings

    @property
    def paths(self) -> Paths: ...

    @property
    def root(self) -> str:
        """The data dir, as the ``root`` argument of the deeper layers."""
        ...

    @property
    def registry(self) -> Registry: ...

    def registry_factory(self) -> Registry | Callable[[], Registry]:
        """The registry if made, else a callable making it (MLflow only when needed)."""
        ...

    @property
    def graph_store(self) -> GraphStore: ...

    def label_store(self, name: str | None = None) -> LabelStore: ...

    @property
    def caption_provider(self) -> CaptionProvider: ...

    @property
    def embedder(self) -> TextEmbedder: ...

    def label_config(self) -> LabelConfig: ...

    def with_settings(self, settings: Settings) -> Parts:
        """The same paths, registry and label stores under other settings."""
        ...
