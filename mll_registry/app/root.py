"""The composition root: the parts (settings, paths, label stores, registry, graph store, caption
provider, embedder) put together once, and one service per concern over them.

The CLI (:mod:`mll_registry.cli`) and the Prefect flows (``flows/``) are thin callers: they parse
their input, call one service (``app.graphs.build(...)``, ``app.labelling.label(...)``,
``app.selection.select(...)``, ...) and render its typed result (:mod:`mll_registry.app.results`).
Nothing here prints, touches the environment or imports Prefect; progress is reported through
callbacks. :class:`App` builds each part from the settings on first use; a test or a notebook
passes its own instead. Plug points are looked up by name in their port tables
(:data:`~mll_registry.models.refs.SCHEMES`, :data:`~mll_registry.hub.discovery.HUB_SOURCES`,
:data:`~mll_registry.labels.stores.LABEL_STORES`, :data:`~mll_registry.app.graphs.GRAPHS`,
:data:`~mll_registry.selection.matching.CAPTION_PROVIDERS`,
:data:`~mll_registry.selection.matching.EMBEDDERS`, :data:`~mll_registry.app.demo.ORCHESTRATORS`).
See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mll_registry.app.demo import DemoService
from mll_registry.app.discovery import DiscoveryService
from mll_registry.app.graphs import GraphService
from mll_registry.app.labelling import LabellingService
from mll_registry.app.queries import QueryService
from mll_registry.app.selection import SelectionService
from mll_registry.paths import Paths
from mll_registry.settings import Settings, load_settings

if TYPE_CHECKING:
    from mll_registry.labels.labeller import LabelConfig
    from mll_registry.labels.stores import LabelStore
    from mll_registry.registry.graph_store import GraphStore
    from mll_registry.registry.labels import Registry
    from mll_registry.selection.matching import CaptionProvider, TextEmbedder


class App:
    """The tool's use cases over one set of parts.

    Args:
        settings: default: :func:`~mll_registry.settings.load_settings` (file < ``MLL_*``).
        paths: the data dir's folders; default: those of ``settings.data_dir``.
        registry: the MLflow tracking server (label versions, selection and bench runs, graphs,
            discovery state); default: ``MLFLOW_TRACKING_URI``, else embedded in the data dir.
        label_stores: label stores by name; the others come from
            :data:`~mll_registry.labels.stores.LABEL_STORES`, made once per name.
        graph_store, caption_provider, embedder: default: from the settings.

    Each default part is made on first use: a warm ``mll select`` makes no MLflow client.
    """

    def __init__(self, settings: Settings | None = None, *, paths: Paths | None = None,
                 registry: Registry | None = None,
                 label_stores: Mapping[str, LabelStore] | None = None,
                 graph_store: GraphStore | None = None,
                 caption_provider: CaptionProvider | None = None,
                 embedder: TextEmbedder | None = None) -> None:
        self.settings = settings if settings is not None else load_settings()
        self._parts: dict[str, Any] = {k: v for k, v in {
            "paths": paths, "registry": registry, "graph_store": graph_store,
            "caption_provider": caption_provider, "embedder": embedder}.items() if v is not None}
        self._stores: dict[str, LabelStore] = dict(label_stores or {})
        self.graphs = GraphService(self)
        self.labelling = LabellingService(self, self.graphs)
        self.discovery = DiscoveryService(self, self.graphs)
        self.selection = SelectionService(self, self.graphs)
        self.queries = QueryService(self, self.graphs)
        self.demo = DemoService(self, self.graphs)

    @classmethod
    def configured(cls, **overrides: Any) -> App:
        """Settings from defaults < config file < ``MLL_*`` < ``overrides`` (None = unset)."""
        return cls(load_settings(overrides))

    def with_settings(self, settings: Settings) -> App:
        """An App over ``settings`` sharing this one's paths, registry and label stores."""
        return App(settings, paths=self.paths, registry=self._parts.get("registry"),
                   label_stores=self._stores)

    # -- parts ---------------------------------------------------------------------------------
    @cached_property
    def paths(self) -> Paths:
        """The data dir's folders (resolved on first use: ``MLL_DATA_DIR`` is read then)."""
        return self._parts.get("paths") or Paths.of(self.settings.data_dir)

    @property
    def root(self) -> str:
        """The data dir, as the ``root`` argument of the deeper layers."""
        return self.paths.root

    @property
    def registry(self) -> Registry:
        """The MLflow tracking server (made on first use)."""
        if "registry" not in self._parts:
            from mll_registry.registry.labels import Registry

            self._parts["registry"] = Registry(root=self.root)
        reg: Registry = self._parts["registry"]
        return reg

    def registry_factory(self) -> Registry | Callable[[], Registry]:
        """The registry if made, else a callable making it: for the label index, which needs
        MLflow only when its disk cache is stale."""
        return self._parts.get("registry") or (lambda: self.registry)

    @property
    def graph_store(self) -> GraphStore:
        """Published graphs in the tracking server's artifact store (a version's cache first)."""
        if "graph_store" not in self._parts:
            from mll_registry.registry.graph_store import GraphStore

            self._parts["graph_store"] = GraphStore(self.registry_factory(), self.root)
        store: GraphStore = self._parts["graph_store"]
        return store

    def label_store(self, name: str | None = None) -> LabelStore:
        """The label store ``name`` (default: the ``label_store`` setting), made once per name."""
        name = name or self.settings.label_store
        if name not in self._stores:
            from mll_registry.labels.stores import LABEL_STORES

            self._stores[name] = LABEL_STORES.get(name)(root=self.root)
        return self._stores[name]

    @property
    def caption_provider(self) -> CaptionProvider:
        if "caption_provider" not in self._parts:
            from mll_registry.selection.matching import CAPTION_PROVIDERS

            self._parts["caption_provider"] = CAPTION_PROVIDERS.get(
                self.settings.caption_provider)(self.settings)
        provider: CaptionProvider = self._parts["caption_provider"]
        return provider

    @property
    def embedder(self) -> TextEmbedder:
        if "embedder" not in self._parts:
            from mll_registry.selection.matching import make_embedder

            self._parts["embedder"] = make_embedder(self.settings.embedder)
        embedder: TextEmbedder = self._parts["embedder"]
        return embedder

    def label_config(self) -> LabelConfig:
        """The labeller's settings (templates, top-K, batch sizes, device, pixel cache)."""
        from mll_registry.labels.labeller import LabelConfig

        return LabelConfig.from_settings(self.settings)

    def setup(self, demo: bool = True, force: bool = False) -> Any:
        """Provision the offline assets: WordNet for nltk and (``demo``) the demo images."""
        from mll_registry.demo.assets import setup

        return setup(self.root, demo=demo, force=force)
