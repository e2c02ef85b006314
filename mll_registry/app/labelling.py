"""Labelling: resolve a model, label it on a graph (incrementally on a grown one), store it, and
find what a label store holds. Every store is reached through the
:class:`~mll_registry.labels.stores.LabelStore` port."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mll_registry.app.results import LabelOutcome

if TYPE_CHECKING:
    from mll_registry.app.graphs import GraphService, GraphSpec
    from mll_registry.app.parts import Parts
    from mll_registry.graph.bundle import SemanticGraph
    from mll_registry.labels.embeddings import LabelEmbeddings
    from mll_registry.labels.labeller import LabelRun
    from mll_registry.labels.stores import LabelKey, LabelStore

log = logging.getLogger(__name__)

#: labelling progress: (stage, done, total)
Progress = Callable[[str, int, int], None]


class LabellingService:
    """The labelling use cases over an App's :class:`~mll_registry.app.parts.Parts` and its
    graphs."""

    def __init__(self, parts: Parts, graphs: GraphService) -> None:
        self.app = parts
        self.graphs = graphs

    def label(self, ref: str, graph: SemanticGraph | GraphSpec, *, force: bool = False,
              allow_pickle: bool = False, same_as: str | None = None, store: str | None = None,
              out: str | os.PathLike[str] | None = None, progress: Progress | None = None,
              full: bool = False) -> LabelOutcome:
        """Resolve, label (unless the store has this label key) and store one model.

        ``same_as`` registers a local copy under a Hub model after checking its bytes. ``out``
        writes the label files there and stores nothing. On a graph extended from one the model
        is labelled on, the label is computed incrementally from that label's embeddings (the
        ``incremental`` setting; ``full`` labels in full).

        The outcome's status is ``labelled`` (stored by this call) or ``skipped`` (the store had
        it); the version reported is ready and selectable.
        """
        from mll_registry.labels.labeller import label_ref
        from mll_registry.labels.stores import LabelKey
        from mll_registry.models.refs import ModelRef, link_copy, local_content_id, resolve

        a = self.app
        if ":" not in ref:  # a registered model name: its MODEL_REF (as every command accepts)
            ref = self.registered_ref(ref, store) or ref
        parsed = ModelRef.parse(ref)  # a malformed ref fails before any graph is built
        g = self.graphs.of(graph)
        cfg = a.label_config()
        res = resolve(parsed, allow_pickle=allow_pickle)
        if same_as:
            res = link_copy(res, same_as)
        key = LabelKey.of(res, g.version, cfg.label_hash(),
                          local_content_id(res, cfg.max_model_gb))
        h, identity = key.label_hash, a.settings.label_identity()
        grown = a.settings.incremental and not full and bool(g.manifest.get("lineage"))

        def labelled(to: str | os.PathLike[str] | None) -> tuple[LabelRun, Path]:
            # the store is asked for an ancestor's embeddings only on a grown graph
            reuse = self.parent_embeddings(a.label_store(store), key, g) if grown else None
            return label_ref(res, g, cfg, out=to, root=a.root, allow_pickle=allow_pickle,
                             progress=progress, reuse=reuse,
                             keep_embeddings=a.settings.keep_embeddings)

        if out is not None:
            run, path = labelled(out)
            return LabelOutcome("labelled", h, identity, run=run.summary(path))
        st = a.label_store(store)
        if not force:
            old = st.find(key, str(res.ref))
            if old is not None:
                same = old.get("same_content_as")
                return LabelOutcome("skipped", h, identity, old, reason=(
                    f"the same weights and config as revision {same}, already labelled with "
                    "these settings (this commit is recorded on that label)" if same else
                    "already labelled with these settings"))
        run, path = labelled(None)
        stored = st.put(key, res, run.label, path, force=force)
        if stored.created and (store or a.settings.label_store) == "registry":
            self._mark_stale_ensembles(str(res.ref), store)
        return LabelOutcome("labelled" if stored.created else "skipped", h, identity,
                            st.describe(stored), run.summary(path))

    def _mark_stale_ensembles(self, ref: str, store: str | None) -> None:
        """A new label of ``ref`` in the registry: the registered ensembles using it are checked
        and tagged ``mll.stale`` (:func:`~mll_registry.app.selection.ensemble_versions`); other
        stores are checked by `mll registry ensembles`. Never fails the labelling: a registry
        that cannot be asked is logged."""
        from mll_registry.app.selection import ensemble_versions

        try:
            stale = [e for e in ensemble_versions(self.app, ref, store) if e["stale"]]
        except Exception as exc:  # noqa: BLE001 - the label is stored; the check is a courtesy
            log.warning("could not check the ensembles using %s: %s", ref, exc)
            return
        for e in stale:
            log.warning("ensemble models:/%s/%s is stale: %s", e["name"], e["version"],
                        "; ".join(e["stale"]))

    def parent_embeddings(self, store: LabelStore, key: LabelKey,
                          graph: SemanticGraph) -> LabelEmbeddings | None:
        """The stored embeddings of this model's label on the nearest ancestor of ``graph``
        (its parent first) that has them, or None (the label is then computed in full)."""
        from dataclasses import replace

        from mll_registry.labels.embeddings import EmbeddingsError, LabelEmbeddings

        lineage = graph.manifest.get("lineage") or {}
        versions = lineage.get("ancestors") or ([lineage["parent"]] if lineage.get("parent") else [])
        for version in versions:
            path = store.embeddings(replace(key, graph_version=version))
            if path is None:
                continue
            try:
                return LabelEmbeddings.open(path)
            except EmbeddingsError as exc:
                log.warning("not reusing %s: %s", path, exc)
        return None

    def labelled_models(self, graph_version: str, store: str | None = None) -> list[str]:
        """Model refs the label store holds a label of on ``graph_version`` (current settings)."""
        return self.app.label_store(store).labelled_models(
            graph_version, self.app.label_config().label_hash())

    def registered_ref(self, name: str, store: str | None = None) -> str | None:
        """The MODEL_REF behind a registered model name (its newest label)."""
        return self.app.label_store(store).latest_ref(name)

    def latest_label_dir(self, model: str, store: str | None = None) -> Path | None:
        """The label directory of the newest label of ``model`` (any graph)."""
        return self.app.label_store(store).latest_label_dir(model)
