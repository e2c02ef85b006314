"""Where labels live: the label-store port, its key, and the local-directory store.

A label is identified by :class:`LabelKey` = (model source, revision, graph version, hash of the
label settings). A :class:`LabelStore` can tell whether it holds a key (``has``, ``find``), give
its label directory (``get``) and embeddings (``embeddings``), take a new label (``put``), list
what a graph version has (``list_labels``, ``labelled_models``, ``label_dirs``) and find a
model's newest label on any graph (``latest_ref``, ``latest_label_dir``). Built-in stores
(:data:`LABEL_STORES`): ``local`` (files in the data directory) here, and ``registry`` (MLflow:
:mod:`mll_registry.registry.store`), which registers itself through the
``mll_registry.label_stores`` entry point as a company store would.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from mll_registry.config import data_dir
from mll_registry.fsutil import is_leftover, recover_swap
from mll_registry.labels.embeddings import embeddings_path
from mll_registry.labels.format import Fetch, MappedLabel, ModelLabel
from mll_registry.models.refs import ModelRef, ResolvedModel
from mll_registry.plugins import Plugins


@dataclass(frozen=True)
class LabelKey:
    """What a label is the label of; the same key is the same label (a no-op to redo)."""

    source: str  # model source, revision excluded (``hf-hub:org/name``, ``local-dir:/path``)
    revision: str  # Hub commit sha, or the weights' content digest
    graph_version: str
    label_hash: str  # Settings.label_hash(): templates, text source, top-K, format
    #: what the label is computed from (models.refs.content_id); "" when unknown. A label of
    #: the same source, graph and settings with this content is the same label at another
    #: commit: reused, the commit recorded (issue #30)
    content: str = ""

    @classmethod
    def of(cls, res: ResolvedModel, graph_version: str, label_hash: str,
           content: str = "") -> LabelKey:
        return cls(res.ref.source, res.revision, graph_version, label_hash, content)


@dataclass
class StoredLabel:
    """A label as a store holds it (what ``put`` returns and ``mll label`` reports)."""

    key: LabelKey
    model_ref: str
    path: Path | None  # the label directory, when local
    created: bool  # this call stored it (False: it was there already)
    name: str = ""  # registered model name (registry store)
    version: int | None = None
    run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("key"))
        d["path"] = str(self.path) if self.path else None
        return d


class LabelStore(Protocol):
    """Read and write labels by :class:`LabelKey`."""

    def has(self, key: LabelKey) -> bool: ...

    def get(self, key: LabelKey) -> Path | None: ...

    def put(self, key: LabelKey, res: ResolvedModel, label: ModelLabel, label_dir: Path,
            force: bool = False) -> StoredLabel: ...

    def list_labels(self, graph_version: str, label_hash: str | None = None) -> dict[str, Path]:
        """Model ref -> label directory of the newest label per model for ``graph_version``."""
        ...

    def embeddings(self, key: LabelKey) -> Path | None:
        """The stored embeddings file of the label ``key`` (:mod:`mll_registry.labels.embeddings`),
        or None when the label or its embeddings are not there."""
        ...

    def find(self, key: LabelKey, model_ref: str) -> dict[str, Any] | None:
        """What ``mll label`` reports about the stored label ``key`` of ``model_ref``, or None
        when the store does not hold it (nothing is downloaded)."""
        ...

    def describe(self, stored: StoredLabel) -> dict[str, Any]:
        """What ``mll label`` reports about a label ``put`` just returned."""
        ...

    def labelled_models(self, graph_version: str, label_hash: str | None = None) -> list[str]:
        """Model refs with a label for ``graph_version``, sorted (no label is read)."""
        ...

    def label_dirs(self, graph_version: str, label_hash: str) -> dict[str, Path]:
        """Model ref -> label directory of the newest label per model, as selection reads them
        (a store may answer from its caches: :meth:`list_labels` by default)."""
        ...

    def latest_ref(self, model: str) -> str | None:
        """The MODEL_REF of the newest label of ``model`` (a MODEL_REF or registered name) on
        any graph, or None."""
        ...

    def latest_label_dir(self, model: str) -> Path | None:
        """The label directory of the newest label of ``model`` on any graph, or None."""
        ...


class LocalLabelStore:
    """Labels under ``<data>/labels/<model key>/<graph version>-<label hash>/``."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.base = data_dir(root) / "labels"

    def path(self, key: LabelKey, model_ref: str | ModelRef) -> Path:
        ref = model_ref if isinstance(model_ref, ModelRef) else ModelRef.parse(model_ref)
        return self.base / ref.key / f"{key.graph_version}-{key.label_hash}"

    def _metas(self, graph_version: str, label_hash: str | None) -> list[tuple[dict[str, Any],
                                                                               Path]]:
        """(meta.json, label dir) of every label of ``graph_version`` (any: ``*``). A label a
        writer was killed in the middle of swapping is put back first (:func:`recover_swap`);
        hidden names (a writer's temporaries and leftovers) are never labels."""
        if not self.base.is_dir():
            return []
        for left in self.base.glob(f"*/.{graph_version}-{label_hash or '*'}.old-*"):
            recover_swap(left)
        out = []
        for meta in sorted(self.base.glob(f"*/{graph_version}-{label_hash or '*'}/meta.json")):
            if is_leftover(meta.parent.name) or is_leftover(meta.parent.parent.name):
                continue
            out.append((json.loads(meta.read_text(encoding="utf-8")), meta.parent))
        return out

    def has(self, key: LabelKey) -> bool:
        return self.get(key) is not None

    def get(self, key: LabelKey) -> Path | None:
        """The label of ``key``: its revision, else (a ``key.content``) the same content."""
        metas = [(m, p) for m, p in self._metas(key.graph_version, key.label_hash)
                 if m.get("source") == key.source]
        for m, p in metas:
            if m.get("revision") == key.revision:
                return p
        for m, p in metas:
            if key.content and m.get("content") == key.content:
                return p
        return None

    def put(self, key: LabelKey, res: ResolvedModel, label: ModelLabel, label_dir: Path,
            force: bool = False) -> StoredLabel:
        dest = self.path(key, res.ref)
        if Path(label_dir).resolve() == dest.resolve():  # the labeller wrote it in place
            return StoredLabel(key, str(res.ref), dest, created=True)
        if not force and self.has(key):
            return StoredLabel(key, str(res.ref), dest, created=False)
        label.save(dest)
        emb = embeddings_path(label_dir)
        if emb.is_file():
            from mll_registry.fsutil import atomic_path

            with atomic_path(embeddings_path(dest), suffix=".safetensors") as tmp:
                shutil.copyfile(emb, tmp)
        return StoredLabel(key, str(res.ref), dest, created=True)

    def embeddings(self, key: LabelKey) -> Path | None:
        path = self.get(key)
        emb = embeddings_path(path) if path is not None else None
        return emb if emb is not None and emb.is_file() else None

    def list_labels(self, graph_version: str, label_hash: str | None = None) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for m, p in self._metas(graph_version, label_hash):
            if m.get("model_ref"):
                out[str(m["model_ref"])] = p
        return out

    def find(self, key: LabelKey, model_ref: str) -> dict[str, Any] | None:
        path = self.get(key)
        return ({**asdict(key), "model_ref": model_ref, "path": str(path)}
                if path is not None else None)

    def describe(self, stored: StoredLabel) -> dict[str, Any]:
        return stored.to_dict()

    def labelled_models(self, graph_version: str, label_hash: str | None = None) -> list[str]:
        return sorted(self.list_labels(graph_version, label_hash))

    def label_dirs(self, graph_version: str, label_hash: str) -> dict[str, Path]:
        return self.list_labels(graph_version, label_hash)

    def _latest(self, model: str) -> tuple[str, Path] | None:
        """(model ref, label dir) of the most recently written label of ``model``: a MODEL_REF
        (matched by source) or a registered model name."""
        from mll_registry.models.refs import registered_name

        want = ModelRef.parse(model).source if ":" in model else None
        best: tuple[float, str, Path] | None = None
        for m, p in self._metas("*", None):
            ref = str(m.get("model_ref") or "")
            if not ref:
                continue
            src = ModelRef.parse(ref).source
            if (src != want) if want is not None else (registered_name(src) != model):
                continue
            t = (p / "meta.json").stat().st_mtime
            if best is None or t > best[0]:
                best = (t, ref, p)
        return (best[1], best[2]) if best is not None else None

    def migrate(self) -> list[dict[str, Any]]:
        """Rewrite every ``mll-label/1`` label of this store in :data:`~mll_registry.labels.
        format.FORMAT` (the same arrays, ranks in chunks), each validated first and replaced
        atomically; the rest are left as they are. Returns one entry per label rewritten."""
        from mll_registry.labels.format import FORMAT, FORMAT_V1

        out = []
        for m, p in self._metas("*", None):
            if m.get("format") != FORMAT_V1:
                continue
            ModelLabel.load(p).save(p)
            out.append({"model_ref": m.get("model_ref"), "path": str(p), "from": FORMAT_V1,
                        "to": FORMAT})
        return out

    def latest_ref(self, model: str) -> str | None:
        found = self._latest(model)
        return found[0] if found is not None else None

    def latest_label_dir(self, model: str) -> Path | None:
        found = self._latest(model)
        return found[1] if found is not None else None


#: label stores by name: factory(root) -> LabelStore
LABEL_STORES: Plugins[Any] = Plugins("label_stores")
LABEL_STORES.register("local", LocalLabelStore)


def load_labels(paths: dict[str, Path], graph_version: str,
                fetch: Fetch | None = None) -> dict[str, ModelLabel]:
    """Load and validate labels (each must be for ``graph_version``); ``fetch`` completes a
    remote label's directory first (a store's ``fetch_label_file``)."""
    if fetch is None:
        return {ref: ModelLabel.load(p, graph_version=graph_version) for ref, p in paths.items()}
    return {ref: MappedLabel.open(p, graph_version, fetch=fetch).load()
            for ref, p in paths.items()}


def open_labels(paths: dict[str, Path], graph_version: str, n_images: int | None = None,
                n_members: int | None = None, fetch: Fetch | None = None
                ) -> dict[str, MappedLabel]:
    """Open labels for selection by their meta.json or headers (each must be for
    ``graph_version``); ``fetch`` gets a remote label's files when first read."""
    return {ref: MappedLabel.open(p, graph_version, n_images, n_members, fetch)
            for ref, p in paths.items()}


def store_fetch(store: object) -> Fetch | None:
    """The store's per-file fetch for remote labels (``fetch_label_file``), or None when its
    labels are whole on disk."""
    fetch = getattr(store, "fetch_label_file", None)
    return fetch if callable(fetch) else None
