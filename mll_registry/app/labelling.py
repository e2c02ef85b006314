"""Labelling: resolve a model, label it on a graph (incrementally on a grown one), store it, and
find what a label store holds. Every store is reached through the
:class:`~mll_registry.labels.stores.LabelStore` port."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mll_registry.app.results import LabelOutcome

if TYPE_CHECKING:
    from mll_registry.app.graphs import GraphService, GraphSpec
    from mll_registry.app.parts import Parts
    from mll_registry.graph.bundle import SemanticGraph
    from mll_registry.labels.embeddings import LabelEmbeddings
    from mll_registry.labels.labeller import LabelConfig, LabelRun
    from mll_registry.labels.stores import LabelKey, LabelStore
    from mll_registry.models.refs import ResolvedModel

log = logging.getLogger(__name__)

#: labelling progress: (stage, done, total)
Progress = Callable[[str, int, int], None]


def _one_line(exc: BaseException) -> str:
    """An error as one line: its type and the first line of its message."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"[:500]


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
        outcomes, errors = self.label_many([ref], graph, force=force, allow_pickle=allow_pickle,
                                           same_as=same_as, store=store, out=out,
                                           progress=progress, full=full, isolate=False)
        assert not errors  # isolate=False raises the model's own error
        return outcomes[0]

    def label_many(self, refs: Sequence[str], graph: SemanticGraph | GraphSpec, *,
                   force: bool = False, allow_pickle: bool = False, same_as: str | None = None,
                   store: str | None = None, out: str | os.PathLike[str] | None = None,
                   progress: Progress | None = None, full: bool = False,
                   isolate: bool = True) -> tuple[list[LabelOutcome], dict[str, str]]:
        """:meth:`label` for several models, in passes that decode each graph image once for
        all the models of the pass (models grouped by their weights, ``pass_model_gb``); each
        label is stored as its pass ends and equals the label of a run of its own.

        With ``isolate`` a model that cannot be resolved, loaded or labelled fails alone: its
        error is returned (ref -> one line) and the others are labelled (a pass that fails is
        retried one model at a time); without, the first error is raised. ``same_as`` and
        ``out`` take one ref. Returns the outcomes of the models that did not fail, in the
        order of ``refs``, and the errors.
        """
        from mll_registry.labels.labeller import label_refs, pass_groups
        from mll_registry.models.loading import load
        from mll_registry.models.refs import ModelRef

        if (same_as or out is not None) and len(refs) != 1:
            raise ValueError("same_as and out label one model at a time")
        a = self.app
        errors: dict[str, str] = {}
        for ref in refs:  # a malformed ref fails before any graph is built
            try:
                if ":" in ref:
                    ModelRef.parse(ref)
            except Exception as exc:
                if not isolate:
                    raise
                errors[ref] = _one_line(exc)
        g = self.graphs.of(graph)
        cfg = a.label_config()
        st = None if out is not None else a.label_store(store)
        outcomes: dict[int, LabelOutcome] = {}
        todo: list[tuple[int, ResolvedModel, LabelKey]] = []
        for i, ref in enumerate(refs):
            if ref in errors:
                continue
            try:
                planned = self._plan(ref, g, cfg, st, force, allow_pickle, same_as, store)
            except Exception as exc:
                if not isolate:
                    raise
                errors[ref] = _one_line(exc)
                continue
            if isinstance(planned, LabelOutcome):
                outcomes[i] = planned
            else:
                todo.append((i, *planned))
        sizes = [res.weights.stat().st_size if res.weights.is_file() else 0
                 for _, res, _ in todo]
        passes = [[todo[k] for k in group] for group in pass_groups(sizes, a.settings.pass_model_gb)]
        while passes:
            group, loaded = passes.pop(0), []
            for item in group:  # a model that cannot be loaded fails alone, before the pass
                try:
                    loaded.append(load(item[1], device=cfg.device, allow_pickle=allow_pickle,
                                       max_model_gb=cfg.max_model_gb, batch_size=cfg.batch_size))
                except Exception as exc:
                    if not isolate:
                        raise
                    errors[refs[item[0]]] = _one_line(exc)
            group = [item for item in group if refs[item[0]] not in errors]
            if not group:
                continue
            try:
                runs = label_refs(loaded, g, cfg,
                                  [out] if out is not None else None, root=a.root,
                                  allow_pickle=allow_pickle, progress=progress,
                                  reuse=[self._reuse(store, key, g, full) for _, _, key in group],
                                  keep_embeddings=a.settings.keep_embeddings)
            except Exception as exc:
                if not isolate:
                    raise
                if len(group) > 1:  # find the model that fails: one pass each
                    log.warning("a pass of %d models failed (%s); labelling them one at a time",
                                len(group), _one_line(exc))
                    del loaded
                    passes[:0] = [[item] for item in group]
                else:
                    errors[refs[group[0][0]]] = _one_line(exc)
                continue
            for (i, res, key), (run, path) in zip(group, runs, strict=True):
                outcomes[i] = self._stored(st, store, key, res, run, path, force)
        return [outcomes[i] for i in sorted(outcomes)], errors

    def _plan(self, ref: str, g: SemanticGraph, cfg: LabelConfig, st: LabelStore | None,
              force: bool, allow_pickle: bool, same_as: str | None, store: str | None
              ) -> LabelOutcome | tuple[ResolvedModel, LabelKey]:
        """A model resolved and its label key; or the store's label of that key (skipped)."""
        from mll_registry.labels.stores import LabelKey
        from mll_registry.models.refs import ModelRef, link_copy, local_content_id, resolve

        a = self.app
        if ":" not in ref:  # a registered model name: its MODEL_REF (as every command accepts)
            ref = self.registered_ref(ref, store) or ref
        parsed = ModelRef.parse(ref)
        res = resolve(parsed, allow_pickle=allow_pickle)
        if same_as:
            res = link_copy(res, same_as)
        key = LabelKey.of(res, g.version, cfg.label_hash(),
                          local_content_id(res, cfg.max_model_gb))
        if st is not None and not force:
            old = st.find(key, str(res.ref))
            if old is not None:
                same = old.get("same_content_as")
                return LabelOutcome("skipped", key.label_hash, a.settings.label_identity(), old,
                                    reason=(
                    f"the same weights and config as revision {same}, already labelled with "
                    "these settings (this commit is recorded on that label)" if same else
                    "already labelled with these settings"))
        return res, key

    def _reuse(self, store: str | None, key: LabelKey, g: SemanticGraph,
               full: bool) -> LabelEmbeddings | None:
        """An ancestor label's embeddings to label incrementally from (only on a grown graph,
        with the ``incremental`` setting and not ``full``)."""
        a = self.app
        if not (a.settings.incremental and not full and g.manifest.get("lineage")):
            return None
        return self.parent_embeddings(a.label_store(store), key, g)

    def _stored(self, st: LabelStore | None, store: str | None, key: LabelKey,
                res: ResolvedModel, run: LabelRun, path: Path, force: bool) -> LabelOutcome:
        """A finished label put in the store (or, with no store, its files described)."""
        a = self.app
        h, identity = key.label_hash, a.settings.label_identity()
        if st is None:
            return LabelOutcome("labelled", h, identity, run=run.summary(path))
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

    def migrate_local_labels(self) -> list[dict[str, Any]]:
        """Rewrite the local label store's ``mll-label/1`` labels in the chunked format
        (:meth:`~mll_registry.labels.stores.LocalLabelStore.migrate`)."""
        from mll_registry.labels.stores import LocalLabelStore

        return LocalLabelStore(self.app.root).migrate()

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
