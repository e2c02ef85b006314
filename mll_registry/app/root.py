"""The assembly layer: the one place where graphs, label stores, caption providers, embedders and
settings are put together into the tool's use cases.

The CLI (:mod:`mll_registry.cli.main`) and the Prefect flows (``flows/``) are thin callers of
:class:`App`: they parse their input, call one method, and render the typed result. Nothing here
prints or imports Prefect; progress is reported through callbacks. Plug points are looked up by
name in their port tables (:data:`~mll_registry.models.refs.SCHEMES`,
:data:`~mll_registry.hub.discovery.HUB_SOURCES`, :data:`~mll_registry.labels.stores.LABEL_STORES`,
:data:`~mll_registry.selection.matching.CAPTION_PROVIDERS`, :data:`~mll_registry.selection.matching.EMBEDDERS`,
:data:`ORCHESTRATORS`). See docs/architecture.md.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mll_registry.plugins import Plugins
from mll_registry.settings import Settings, load_settings

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mll_registry.graph.bundle import BuildReport, GraphConfig, SemanticGraph
    from mll_registry.graph.lineage import GraphDelta
    from mll_registry.labels.embeddings import LabelEmbeddings
    from mll_registry.labels.labeller import LabelConfig, LabelRun
    from mll_registry.labels.stores import LabelStore
    from mll_registry.registry.graph_store import GraphStore, PublishedGraph
    from mll_registry.registry.label_index import ConceptHit, LabelIndex
    from mll_registry.registry.labels import LabelledVersion, Registry
    from mll_registry.selection.matching import CaptionProvider, TextEmbedder
    from mll_registry.selection.reuse import ReuseResult
    from mll_registry.selection.select import SelectionResult
    from mll_registry.task import Task

Progress = Callable[[str, int, int], None]

#: how ``mll demo`` runs its steps: name -> callable(app, tasks) -> dict. ``prefect`` runs them as
#: Prefect flows (``flows/``, declared as an entry point in pyproject.toml): the library never
#: imports Prefect itself, it asks for the orchestrator by name.
ORCHESTRATORS: Plugins[Callable[..., dict[str, Any]]] = Plugins("orchestrators")

#: the demo's 10 models share one preprocess on an 8,704-image graph (107 MB of decoded pixels):
#: ``mll demo`` and ``mll bench`` turn the raw-pixel cache on unless the user set a budget
DEMO_PIXEL_CACHE_GB = 1.0


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
class App:
    """The tool's use cases over one set of :class:`~mll_registry.settings.Settings`."""

    settings: Settings = field(default_factory=load_settings)
    mlflow: Registry | None = field(default=None, repr=False)  # default: made on first use

    @classmethod
    def configured(cls, **overrides: Any) -> App:
        """Settings from defaults < config file < ``MLL_*`` < ``overrides`` (None = unset)."""
        return cls(load_settings(overrides))

    # -- components ----------------------------------------------------------------------------
    @property
    def root(self) -> str | None:
        return self.settings.data_dir

    def graph(self, spec: str | os.PathLike[str] | None = None) -> SemanticGraph:
        """The graph ``spec`` names: a published graph version or ``default`` (fetched from the
        registry once, then cached by version), ``demo``, or a bundle directory (``./PATH``,
        ``/PATH``, ``~/PATH``, an existing bare relative one, or any ``Path`` object). The names
        are never folders of the working directory. None is the demo graph (built on first use):
        the flows never pass None."""
        from mll_registry.demo.graph import load_graph
        from mll_registry.graph.bundle import bundle_path
        from mll_registry.registry.graph_store import is_graph_version

        if isinstance(spec, os.PathLike):
            return load_graph(Path(spec).expanduser(), self.root)
        if spec in (None, "demo"):
            return load_graph(None, self.root)
        assert spec is not None
        if is_graph_version(spec):
            return self.graph_store().fetch(spec)[0]
        return load_graph(bundle_path(spec), self.root)

    def graph_store(self) -> GraphStore:
        """Published graphs in the registry's tracking server (a version's cache first)."""
        from mll_registry.registry.graph_store import GraphStore

        return GraphStore(self.mlflow or self.registry, self.root)

    def _graph_of(self, graph: SemanticGraph | str | os.PathLike[str] | None) -> SemanticGraph:
        from mll_registry.graph.bundle import SemanticGraph

        return graph if isinstance(graph, SemanticGraph) else self.graph(graph)

    def registry(self) -> Registry:
        """The MLflow label registry (``MLFLOW_TRACKING_URI``, else embedded in the data dir)."""
        if self.mlflow is None:
            from mll_registry.registry.labels import Registry

            self.mlflow = Registry(root=self.root)
        return self.mlflow

    def label_store(self, name: str | None = None) -> LabelStore:
        """The label store ``name`` (default: the ``label_store`` setting)."""
        name = name or self.settings.label_store
        if name == "registry":
            return self.registry()
        from mll_registry.labels.stores import LABEL_STORES

        return LABEL_STORES.get(name)(self.root)  # type: ignore[no-any-return]

    def caption_provider(self) -> CaptionProvider:
        from mll_registry.selection.matching import CAPTION_PROVIDERS

        return CAPTION_PROVIDERS.get(self.settings.caption_provider)(self.settings)

    def embedder(self) -> TextEmbedder:
        from mll_registry.selection.matching import make_embedder

        return make_embedder(self.settings.embedder)

    def label_config(self) -> LabelConfig:
        from mll_registry.labels.labeller import LabelConfig

        return LabelConfig.from_settings(self.settings)

    def setup(self, demo: bool = True, force: bool = False) -> Any:
        """Provision the offline assets: WordNet for nltk and (``demo``) the demo images."""
        from mll_registry.demo.assets import setup

        return setup(self.root, demo=demo, force=force)

    # -- graphs --------------------------------------------------------------------------------
    def build_graph(self, sources: Sequence[str] = (), *, demo: bool = False,
                    out: str | os.PathLike[str] | None = None, config: GraphConfig | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    describe: Sequence[str] = ()) -> GraphBuild:
        """Build a graph bundle from ``NAME=PATH`` sample folders (or the demo's); ``describe``
        gives sources their domain descriptions as ``NAME=TEXT``."""
        from mll_registry.graph.bundle import SampleDataset, build_and_save, describe_sources

        sets = describe_sources([SampleDataset.parse(s) for s in sources], describe)
        if demo:
            from mll_registry.demo.graph import build_demo_graph

            g, rep, path = build_demo_graph(self.root, out=out, config=config, extra=sets)
            return GraphBuild(g, rep, path)
        if not sets:
            raise ValueError("give at least one sample source NAME=PATH, or demo=True")
        from mll_registry.config import graphs_dir

        path = Path(out) if out else graphs_dir(self.root) / "-".join(s.name for s in sets)
        g, rep = build_and_save(sets, path, config, progress=progress)
        return GraphBuild(g, rep, path)

    def publish_graph(self, bundle: str | os.PathLike[str] | None = None, *,
                      default: bool = False,
                      progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Publish a graph bundle (default: the demo graph) and its sample images to the
        registry's artifact store, so any worker can fetch it by version."""
        from mll_registry.demo.graph import demo_graph_path

        path = Path(bundle) if bundle is not None and str(bundle) != "demo" else None
        g = self.graph(path)
        pub, created = self.graph_store().publish(g, path or demo_graph_path(self.root),
                                                  default=default, progress=progress)
        return {**pub.to_dict(), "created": created}

    def extend_graph(self, base: str | os.PathLike[str], sources: Sequence[str] = (), *,
                     demo: bool = False, out: str | os.PathLike[str] | None = None,
                     publish: bool = False, default: bool = False,
                     progress: Callable[[int, int], None] | None = None,
                     describe: Sequence[str] = ()) -> dict[str, Any]:
        """Grow graph ``base`` (a bundle, version, ``default`` or ``demo``) with new sample
        sources ``NAME=PATH`` (``demo``: the demo's 60 extension concepts) into a child bundle;
        with ``publish`` it is published too (``default``: as the default graph)."""
        from mll_registry.config import graphs_dir
        from mll_registry.graph.bundle import SampleDataset, describe_sources
        from mll_registry.graph.lineage import extend_and_save

        sets = describe_sources([SampleDataset.parse(s) for s in sources], describe)
        if demo:
            from mll_registry.demo.graph import demo_extension_sources

            sets += demo_extension_sources(self.root)
        parent = self.graph(base)
        path = Path(out) if out else graphs_dir(self.root) / (
            f"{parent.version}+" + "-".join(s.name for s in sets))
        child, report, delta = extend_and_save(parent, sets, path, progress)
        out_d: dict[str, Any] = {**child.summary(), "parent": parent.version, "path": str(path),
                                 "seconds": report.seconds, "delta": delta.to_dict(full=False)}
        if publish:
            out_d["published"] = self.publish_graph(path, default=default)
        return out_d

    def labelled_models(self, graph_version: str, store: str | None = None) -> list[str]:
        """Model refs the label store holds a label of on ``graph_version`` (current settings)."""
        from mll_registry.registry.labels import Registry

        st = self.label_store(store)
        label_hash = self.label_config().label_hash()
        if isinstance(st, Registry):  # the registry's tags: no label is downloaded
            return sorted({v.model_ref for v in st.latest_per_model(graph_version, label_hash)})
        return sorted(st.list_labels(graph_version, label_hash))

    def graph_diff(self, a: str | os.PathLike[str], b: str | os.PathLike[str]) -> GraphDelta:
        """What changed from graph ``a`` to graph ``b`` (nodes by id, images by content)."""
        from mll_registry.graph.lineage import diff_graphs

        return diff_graphs(self.graph(a), self.graph(b))

    def graphs(self) -> list[PublishedGraph]:
        """The published graphs, newest first (``default`` marks the default graph)."""
        return self.graph_store().list()

    def set_default_graph(self, graph_version: str) -> PublishedGraph:
        """Make a published graph version the one the flows use when given none."""
        return self.graph_store().set_default(graph_version)

    # -- labelling -----------------------------------------------------------------------------
    def label(self, ref: str, graph: SemanticGraph | str | os.PathLike[str] | None = None, *,
              force: bool = False, allow_pickle: bool = False, same_as: str | None = None,
              store: str | None = None, out: str | os.PathLike[str] | None = None,
              progress: Progress | None = None, full: bool = False) -> dict[str, Any]:
        """Resolve, label (unless the store has this label key) and store one model.

        ``same_as`` registers a local copy under a Hub model after checking its bytes. ``out``
        writes the label files there and stores nothing. On a graph extended from one the model
        is labelled on, the label is computed incrementally from that label's embeddings (the
        ``incremental`` setting; ``full`` labels in full).

        Returns a summary with ``status`` = ``labelled`` (stored by this call) or ``skipped``
        (the store had it); the version reported is ready and selectable.
        """
        from mll_registry.labels.labeller import label_ref
        from mll_registry.labels.stores import LabelKey
        from mll_registry.models.refs import link_copy, resolve

        g = self._graph_of(graph)
        cfg = self.label_config()
        if ":" not in ref:  # a registered model name: its MODEL_REF (as every command accepts)
            ref = self.registered_ref(ref) or ref
        res = resolve(ref, allow_pickle=allow_pickle)
        if same_as:
            res = link_copy(res, same_as)
        key = LabelKey.of(res, g.version, cfg.label_hash())
        settings = {"label_hash": key.label_hash, "label_settings": self.settings.label_identity()}
        grown = self.settings.incremental and not full and bool(g.manifest.get("lineage"))

        def labelled(to: str | os.PathLike[str] | None) -> tuple[LabelRun, Path]:
            # the store is asked for an ancestor's embeddings only on a grown graph
            reuse = self.parent_embeddings(self.label_store(store), key, g) if grown else None
            return label_ref(res, g, cfg, out=to, root=self.root, allow_pickle=allow_pickle,
                             progress=progress, reuse=reuse,
                             keep_embeddings=self.settings.keep_embeddings)

        if out is not None:
            run, path = labelled(out)
            return {"status": "labelled", **settings, **run.summary(path)}
        st = self.label_store(store)
        if not force:
            old = self._stored(st, key, str(res.ref))
            if old is not None:
                return {"status": "skipped", "reason": "already labelled with these settings",
                        **settings, **old}
        run, path = labelled(None)
        stored = st.put(key, res, run.label, path, force=force)
        entry = stored.to_dict()
        if stored.name and stored.version is not None:  # the registry: its version entry
            from mll_registry.registry.labels import Registry, version_entry

            assert isinstance(st, Registry)
            entry = version_entry(st.client.get_model_version(stored.name, str(stored.version))
                                   ).to_dict()
        return {"status": "labelled" if stored.created else "skipped", **settings, **entry,
                **run.summary(path)}

    def parent_embeddings(self, store: LabelStore, key: Any,
                          graph: SemanticGraph) -> LabelEmbeddings | None:
        """The stored embeddings of this model's label on the nearest ancestor of ``graph``
        (its parent first) that has them, or None (the label is then computed in full)."""
        from dataclasses import replace

        from mll_registry.labels.embeddings import EmbeddingsError, LabelEmbeddings

        lineage = graph.manifest.get("lineage") or {}
        versions = lineage.get("ancestors") or ([lineage["parent"]] if lineage.get("parent") else [])
        for version in versions:
            find = getattr(store, "embeddings", None)  # a plug-in store may not keep them
            path = find(replace(key, graph_version=version)) if find else None
            if path is None:
                continue
            try:
                return LabelEmbeddings.open(path)
            except EmbeddingsError as exc:
                log.warning("not reusing %s: %s", path, exc)
        return None

    def _stored(self, store: LabelStore, key: Any, model_ref: str) -> dict[str, Any] | None:
        """What ``mll label`` reports about a stored label (registry: the version entry)."""
        from dataclasses import asdict

        from mll_registry.models.refs import registered_name
        from mll_registry.registry.labels import Registry, version_entry

        if isinstance(store, Registry):
            v = store.find_labelled(registered_name(key.source), key.revision, key.graph_version,
                                    key.label_hash)
            return version_entry(v).to_dict() if v is not None else None
        path = store.get(key)
        return ({**asdict(key), "model_ref": model_ref, "path": str(path)}
                if path is not None else None)

    def _hub_source(self, source: str, local_root: str | None) -> Any:
        from mll_registry.hub.discovery import HUB_SOURCES

        return HUB_SOURCES.get(source)(local_root=local_root)

    def discovery_state(self, source: str, local_root: str | None = None,
                        graph_version: str = "") -> dict[str, Any]:
        """Where discovery of ``source`` for a graph version stands (watermark, failed models),
        read from the tracking server: every worker sees the same state. A new graph version
        starts its own watermark (its labels are new work)."""
        from mll_registry.registry.discovery_state import DiscoveryLog

        key = self._hub_source(source, local_root).key + (f"@{graph_version}" if graph_version
                                                          else "")
        return DiscoveryLog(self.registry()).load(key).to_dict()

    def discover(self, source: str, local_root: str | None = None, page_size: int | None = None,
                 state: dict[str, Any] | None = None, *,
                 retry_failed: bool = False) -> list[dict[str, Any]]:
        """The next page of new models after the state's watermark (oldest first, at most
        ``page_size`` plus ties), and with ``retry_failed`` the failed models still to retry.
        Without a state: the newest ``page_size`` models (a first look)."""
        from mll_registry.registry.discovery_state import DiscoveryState

        st = DiscoveryState.from_dict(state) if state else None
        src = self._hub_source(source, local_root)
        retries = st.retries(self.settings.discovery_attempts) if st and retry_failed else []
        seen = {m["ref"] for m in retries}
        page = [{"ref": m.ref, "revision": m.sha, "repo_id": m.repo_id,
                 "created_at": m.created_at.isoformat()}
                for m in src.list_new(since=st.since() if st else None,
                                      limit=page_size or self.settings.discovery_page_size)]
        return retries + [m for m in page if m["ref"] not in seen]

    def record_discovery(self, state: dict[str, Any], page: Sequence[dict[str, Any]],
                         errors: dict[str, str], labelled: int) -> dict[str, Any]:
        """Record a processed page in the tracking server: the watermark moves past it, failed
        models are kept for the next runs. Returns the new state."""
        from mll_registry.registry.discovery_state import DiscoveryLog, DiscoveryState

        st = DiscoveryState.from_dict(state)
        st.record(page, errors)
        DiscoveryLog(self.registry()).save(st, page, errors, labelled,
                                           self.settings.discovery_attempts)
        return {**st.to_dict(), "given_up": st.given_up(self.settings.discovery_attempts)}

    def unlabelled(self, models: Sequence[dict[str, Any]],
                   graph: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
        """The discovered models whose label key is not in the registry yet."""
        from mll_registry.models.refs import registered_name, source_of

        g = self.graph(graph)
        reg = self.registry()
        reg.migrate()  # legacy names and keys -> the current scheme (no-op once done)
        h = self.settings.label_hash()
        return [m for m in models if reg.find_labelled(
            registered_name(source_of(m["ref"])), m["revision"], g.version, h) is None]

    # -- selection and reuse -------------------------------------------------------------------
    def labels(self, graph: SemanticGraph, store: str | None = None, *,
               mapped: bool = False) -> dict[str, Any]:
        """The labels selection uses: the newest per model for this graph and label settings.

        ``mapped`` opens them by their headers (selection reads only its candidate rows) instead
        of reading and validating every array.
        """
        from mll_registry.labels.stores import load_labels, open_labels
        from mll_registry.selection.select import SelectionError

        h = self.settings.label_hash()
        if (store or self.settings.label_store) == "registry":
            paths = self._registry_label_dirs(graph.version, h)
        else:
            paths = self.label_store(store).list_labels(graph.version, h)
        if not paths and self.label_store(store).list_labels(graph.version, None):
            raise SelectionError(
                f"no labels with the configured label settings (hash {h}) for graph "
                f"{graph.version}, but labels with other settings exist: label the models with "
                "these settings, set the same templates/top_k, or run `mll registry migrate` "
                "for a registry written by mll-registry 0.1")
        if mapped:
            return open_labels(paths, graph.version, len(graph.images), len(graph.members))
        return load_labels(paths, graph.version)

    def _registry_label_dirs(self, graph_version: str, label_hash: str) -> dict[str, Path]:
        """Model ref -> label dir of the registry's newest label per model, listed through the
        label index and read from the download cache: no MLflow client while both are fresh."""
        from mll_registry.registry.labels import cached_label_dir

        idx = self.label_index(graph_version, label_hash)
        return {v.model_ref: cached_label_dir(v, self.root) or self.registry().download_label(v)
                for v in idx.versions}

    def select(self, task: Task | str | os.PathLike[str],
               graph: SemanticGraph | str | os.PathLike[str] | None = None, *,
               store: str | None = None, log: bool = False) -> Selection:
        """Match the task's classes to the graph by text and choose models per class."""
        from mll_registry.selection.select import select
        from mll_registry.task import Task

        t = task if isinstance(task, Task) else Task.from_yaml(task)
        g = self._graph_of(graph)
        s = self.settings
        res = select(t, g, self.labels(g, store, mapped=True), k=s.k, alpha=s.alpha, metric=s.metric,
                     top_n=s.top_n, embedder=self.embedder(), provider=self.caption_provider(),
                     root=self.root, unmatched=s.unmatched, match_similarity=s.weak_similarity,
                     source_weighting=s.source_weighting, source_temperature=s.source_temperature)
        if res.dropped:  # the selection is for the classes left
            import dataclasses

            t = dataclasses.replace(t, classes=[c for c in t.classes if c.name not in res.dropped])
        sel = Selection(t, g, res)
        if log:
            sel.run_id = self.log_selection(sel)
        return sel

    def log_selection(self, sel: Selection, reuse: ReuseResult | None = None) -> str:
        """One MLflow run for a selection (and its measured reuse), linked to the versions used."""
        reg = self.registry()
        links, model_ids = reg.selection_links(sel.result.selected_models(), sel.graph.version,
                                               self.settings.label_hash())
        return reg.log_selection(sel.task, sel.result, reuse, links=links,
                                 settings=self.settings.recorded(), model_ids=model_ids)

    def reuse(self, task: Task | str | os.PathLike[str], data: str | os.PathLike[str] | None = None,
              graph: SemanticGraph | str | os.PathLike[str] | None = None, *,
              store: str | None = None, log: bool = False) -> Reuse:
        """Select, run the entropy-weighted ensemble on labelled images, measure it."""
        from mll_registry.selection.reuse import evaluate

        sel = self.select(task, graph, store=store)
        s = self.settings
        out = evaluate(sel.result, sel.task, data, weighting=s.weighting, prompts=s.prompts,
                       device=s.device)
        r = Reuse(sel, out)
        if log:
            r.run_id = self.log_selection(sel, out)
        return r

    # -- queries -------------------------------------------------------------------------------
    def query_best(self, concept: str, n: int = 5,
                   graph: SemanticGraph | str | os.PathLike[str] | None = None,
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

        g = self._graph_of(graph)
        if source is not None and source not in graph_sources(g):
            raise KeyError(f"no sample source {source!r} in graph {g.version}; its sources: "
                           f"{', '.join(graph_sources(g))}")
        node, others = resolve_concept(concept, g.node_ids, g.nodes)
        idx = self.label_index(g.version, refresh=refresh)
        return ConceptQuery(node, concept, others, g.version, idx.best(node, n, source), source)

    def label_index(self, graph_version: str, label_hash: str | None = None,
                    refresh: bool = False) -> LabelIndex:
        """The label index of a graph version (default: the configured label settings), fresh:
        the registry (MLflow) is made only when its disk cache is stale or ``refresh``."""
        from mll_registry.registry.label_index import LabelIndex

        return LabelIndex(self.mlflow or self.registry, graph_version,
                          label_hash=label_hash or self.settings.label_hash(),
                          root=self.root).refresh(force_check=refresh)

    def query_label(self, model: str,
                    graph: SemanticGraph | str | os.PathLike[str] | None = None,
                    refresh: bool = False) -> tuple[LabelledVersion, Any] | None:
        """A model's newest registered label for the graph: (version, per-node summary).

        Answered from the label index (no MLflow client while its disk cache is fresh); a model
        labelled only with other label settings is looked up in the registry itself.
        """
        from mll_registry.registry.labels import version_entry

        g = self._graph_of(graph)
        found = self.label_index(g.version, refresh=refresh).summary_of(model)
        if found is not None:
            return found
        reg = self.registry()
        v = reg.latest_for(model, g.version)
        if v is None:
            return None
        # the single-version read carries the aliases (searches do not), as the UI shows them
        v = version_entry(reg.client.get_model_version(v.name, str(v.version)))
        return v, reg.download_summary(v)

    def registered_ref(self, name: str) -> str | None:
        """The MODEL_REF behind a registered model name (its newest labelled version)."""
        v = self.registry().latest_for(name)
        return v.model_ref if v is not None else None

    def latest_label_dir(self, model: str) -> Path | None:
        """The label directory of the newest registered version of ``model`` (any graph)."""
        reg = self.registry()
        v = reg.latest_for(model)
        return reg.download_label(v) if v is not None else None

    # -- benchmark and demo --------------------------------------------------------------------
    def bench(self, tasks: Sequence[str | os.PathLike[str]] = (),
              graph: str | os.PathLike[str] | None = None, *, growth_orders: int = 10,
              plot: str | os.PathLike[str] | None = None,
              markdown: str | os.PathLike[str] | None = None, log: bool = True,
              say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
        """MLL against INB, ModelGPT and the oracles on task files (default: the demo tasks)."""
        from mll_registry.evaluation.bench import BenchConfig, run_bench
        from mll_registry.evaluation.bench import plot as draw
        from mll_registry.labels.embeddings import embeddings_path
        from mll_registry.labels.stores import LocalLabelStore, load_labels
        from mll_registry.models.loading import load
        from mll_registry.task import Task

        g = self.graph(graph)
        if tasks:
            task_list = [Task.from_yaml(t) for t in tasks]
        else:
            from mll_registry.demo.tasks import ensure_demo_tasks

            task_list = [Task.from_yaml(p) for p in ensure_demo_tasks(self.root)]
        if graph is None:
            import dataclasses

            from mll_registry.demo.hub import ensure_demo_labels

            lcfg = self.label_config()
            if "pixel_cache_gb" not in self.settings.sources:
                lcfg = dataclasses.replace(lcfg, pixel_cache_gb=DEMO_PIXEL_CACHE_GB)
            paths = ensure_demo_labels(g, lcfg, self.root, log=say)
        else:
            paths = LocalLabelStore(self.root).list_labels(g.version, self.settings.label_hash())
        labels = load_labels(paths, g.version)
        if not labels:
            raise ValueError(f"no labelled models for graph {g.version}: label some with "
                             "`mll label`")
        s = self.settings
        cfg = BenchConfig(alpha=s.alpha, metric=s.metric, top_n=s.top_n, weighting=s.weighting,
                          source_weighting=s.source_weighting,
                          source_temperature=s.source_temperature, growth_orders=growth_orders)
        res = run_bench(task_list, g, labels, lambda r: load(r, device=s.device), cfg, log=say,
                        embeddings={r: embeddings_path(p) for r, p in paths.items()})
        md = res.markdown()
        if markdown:
            from mll_registry.fsutil import write_text

            write_text(markdown, md)
        plot_path = draw(res, plot) if plot else None
        out = res.to_dict()
        out["markdown"] = md
        out["plot"] = str(plot_path) if plot_path else None
        out["mlflow_run_id"] = (self.registry().log_bench(res, md, plot_path, s.recorded())
                                if log else None)
        return out

    def demo(self, tasks: Sequence[str] | None = None, orchestrator: str = "prefect"
             ) -> dict[str, Any]:
        """The embedded-default demo end to end, run by ``orchestrator`` (see ORCHESTRATORS)."""
        t0 = time.perf_counter()
        env = "MLL_PIXEL_CACHE_GB"  # the flows read their settings from the environment
        unset = "pixel_cache_gb" not in self.settings.sources and env not in os.environ
        if unset:
            os.environ[env] = str(DEMO_PIXEL_CACHE_GB)
        try:
            out = ORCHESTRATORS.get(orchestrator)(self, list(tasks) if tasks else None)
        finally:
            if unset:
                os.environ.pop(env, None)
        from mll_registry.registry.tracking import tracking_uri

        out["seconds"] = round(time.perf_counter() - t0, 1)
        from mll_registry.redaction import redact

        out["mlflow_tracking_uri"] = redact(tracking_uri(self.root))  # shown, never connected to
        out["links"] = self.demo_links(out)
        return out

    def demo_links(self, out: dict[str, Any], mlflow_ui: str = "http://127.0.0.1:5000",
                   prefect_ui: str = "http://127.0.0.1:4200") -> dict[str, dict[str, str]]:
        """Deep links into the MLflow and Prefect UIs for what the demo made."""
        from mll_registry.registry.tracking import LABEL_EXPERIMENT, SELECTION_EXPERIMENT

        reg = self.registry()
        from mll_registry.redaction import redact

        base = redact(reg.uri.rstrip("/")) if reg.uri.startswith("http") else mlflow_ui
        sel_exp = reg.experiment(SELECTION_EXPERIMENT)
        mlflow = {"label runs": f"{base}/#/experiments/{reg.experiment(LABEL_EXPERIMENT)}/runs",
                  "selection runs": f"{base}/#/experiments/{sel_exp}/runs"}
        for t in out.get("tasks", []):
            mlflow[f"selection run {t['task']}"] = (
                f"{base}/#/experiments/{sel_exp}/runs/{t['mlflow_run_id']}")
        versions = reg.labelled_versions(out.get("graph", {}).get("version"))
        if versions:
            v = versions[0]
            mlflow[f"model version {v.name}"] = f"{base}/#/models/{v.name}/versions/{v.version}"
        prefect = {"flow runs": f"{prefect_ui}/runs"}
        if out.get("prefect_flow_run_id"):
            prefect["this demo run"] = f"{prefect_ui}/runs/flow-run/{out['prefect_flow_run_id']}"
        return {"mlflow": mlflow, "prefect": prefect}
