"""The label index: per-concept scores of every labelled model, for fast "best model for X".

A (models x nodes) table of accuracy@1/@5 and mean own score, built from the registry's newest
labelled version per model and cached on disk (numeric arrays + JSON, never a pickle). Beside it,
the summaries' per-source counts (nodes x sources x stats x models, ``sources-<stamp>.npy``),
memory-mapped: a per-source query reads its one node's slice, a pooled one nothing of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mll_registry.labels.format import no_source_counts, source_column, summary_sources
from mll_registry.registry.index_cache import index_cache_dir
from mll_registry.registry.labels import LabelledVersion, Registry  # noqa: F401 - types

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class ConceptHit:
    """One model's measured ability on one concept."""

    name: str
    version: int
    model_ref: str
    revision: str
    acc1: float
    acc5: float
    mean_own: float
    n_images: int
    source: str | None = None  # the figures are of this sample source's images only

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("acc1", "acc5", "mean_own"):
            d[k] = round(float(d[k]), 4)
        return d


class LabelIndex:
    """Per-concept scores of every labelled model (models x nodes), for fast queries.

    Built from the registry's newest labelled version per model; cached on disk per (tracking
    URI, graph version) together with the (name, version, run) list it was built from, and
    rebuilt incrementally when that list changes. ``max_age`` seconds after a version check the
    next query trusts the cache without asking MLflow again (0 = always check).
    """

    FORMAT = "mll-label-index/3"
    #: the per-source statistics kept, in the order of the per-source array's axis 2
    SOURCE_STATS = ("hits1", "hits5", "sum_own")

    def __init__(self, registry: Registry | Callable[[], Registry], graph_version: str,
                 max_age: float = 30.0, label_hash: str | None = None, *,
                 uri: str | None = None, root: str | os.PathLike[str] | None = None) -> None:
        """``registry`` may be a factory: then MLflow is not touched (nor imported) while the
        disk cache is fresh. ``uri``/``root`` name the cache when a factory is given."""
        self._registry = registry
        self.graph_version = graph_version
        self.label_hash = label_hash
        self.max_age = max_age
        if callable(registry) and not hasattr(registry, "uri"):
            from mll_registry.registry.tracking import tracking_uri

            uri, base = uri or tracking_uri(root), root
        else:
            uri, base = registry.uri, registry.root  # type: ignore[union-attr]
        key = hashlib.sha256(uri.encode()).hexdigest()[:12]
        self.path = (index_cache_dir(base) /
                     f"{key}-{graph_version}-{label_hash or 'any'}")
        self.versions: list[LabelledVersion] = []
        self.nodes: list[str] = []
        self.acc1 = self.acc5 = self.own = np.zeros((0, 0), np.float32)
        self.n_images = np.zeros(0, np.int64)
        self.sources: list[str] = []  # sample sources with per-source counts
        self.src_n = np.zeros((0, 0), np.int64)  # (sources, nodes) images per source and node
        # which models' labels have per-source counts (models,), and the counts (nodes, sources,
        # SOURCE_STATS, models; NaN where a label has none): a memory map once read from disk
        self.src_ok = np.zeros(0, bool)
        self.src = np.zeros((0, 0, len(self.SOURCE_STATS), 0), np.float32)
        self.checked_at = 0.0
        self.build_stats: dict[str, float] = {}

    @property
    def registry(self) -> Registry:
        if callable(self._registry) and not hasattr(self._registry, "uri"):
            self._registry = self._registry()
        return self._registry  # type: ignore[return-value]

    def _signature(self, versions: Sequence[LabelledVersion]) -> list[list[Any]]:
        return [[v.name, v.version, v.run_id] for v in versions]

    def refresh(self, force_check: bool = False) -> LabelIndex:
        """Load from the disk cache; check the registry for new versions unless recently checked."""
        if not self.versions and (self.path / "index.npz").is_file():
            self._load()
        if not force_check and self.versions and time.time() - self.checked_at < self.max_age:
            return self
        t0 = time.perf_counter()
        current = self.registry.latest_per_model(self.graph_version, self.label_hash)
        t1 = time.perf_counter()
        if self._signature(current) != self._signature(self.versions) or not self.versions:
            from filelock import FileLock

            # one builder per data dir: concurrent queries (threads, processes) wait for it and
            # read what it wrote, instead of each downloading every summary again
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.path.parent / f"{self.path.name}.lock")):
                if (self.path / "index.npz").is_file():
                    self._load()
                if self._signature(current) != self._signature(self.versions) or not self.versions:
                    self._build(current)
                self.checked_at = time.time()
                self._save_meta()
            self.build_stats["version_check_s"] = round(t1 - t0, 4)
            return self
        self.checked_at = time.time()
        self._save_meta()
        self.build_stats["version_check_s"] = round(t1 - t0, 4)
        return self

    def _build(self, versions: list[LabelledVersion]) -> None:
        t0 = time.perf_counter()
        old = {(v.name, v.run_id): i for i, v in enumerate(self.versions)}
        rows1, rows5, rows_own = [], [], []
        src_rows: list[np.ndarray | None] = []  # per model: (nodes, sources, stats), None: lacking
        nodes: list[str] | None = self.nodes or None
        fetched = 0
        for v in versions:
            i = old.get((v.name, v.run_id))
            if i is not None and nodes is not None:
                rows1.append(self.acc1[i])
                rows5.append(self.acc5[i])
                rows_own.append(self.own[i])
                src_rows.append(np.array(self.src[..., i]) if self.src_ok[i] else None)
                continue
            s = self.registry.download_summary(v)
            fetched += 1
            if nodes is None:
                nodes = s["node_id"].tolist()
                self.n_images = s["n_images"].to_numpy(np.int64)
            s = s.set_index("node_id").reindex(nodes)
            rows1.append(s["acc1"].to_numpy(np.float32))
            rows5.append(s["acc5"].to_numpy(np.float32))
            rows_own.append(s["mean_own"].to_numpy(np.float32))
            have = summary_sources(s)
            if have and not self.sources:  # the first summary with per-source counts
                self.sources = have
                self.src_n = np.stack([s[source_column("n_images", x)].fillna(0).to_numpy(np.int64)
                                       for x in have])
            # one graph version has one set of sources: another set is a summary we cannot use
            src_rows.append(np.stack([np.stack([s[source_column(st, x)].to_numpy(np.float32)
                                                for st in self.SOURCE_STATS], axis=-1)
                                      for x in self.sources], axis=1)
                            if have and set(self.sources) <= set(have) else None)
        if versions:  # aliases move with every registration: read them on every rebuild
            import dataclasses

            aliases = self.registry.aliases_by_version()
            versions = [dataclasses.replace(v, aliases=aliases.get((v.name, v.version), []))
                        for v in versions]
        self.nodes = nodes or []
        n = len(self.nodes)
        self.acc1 = np.stack(rows1) if rows1 else np.zeros((0, n), np.float32)
        self.acc5 = np.stack(rows5) if rows5 else np.zeros((0, n), np.float32)
        self.own = np.stack(rows_own) if rows_own else np.zeros((0, n), np.float32)
        if not self.sources:
            self.src_n = np.zeros((0, n), np.int64)
        blank = np.full((n, len(self.sources), len(self.SOURCE_STATS)), np.nan, np.float32)
        self.src_ok = np.array([r is not None for r in src_rows], bool)
        self.src = (np.stack([blank if r is None else r for r in src_rows], axis=-1) if src_rows
                    else np.zeros((*blank.shape, 0), np.float32))
        self.versions = versions
        self._node_pos = {nd: i for i, nd in enumerate(self.nodes)}
        self.path.mkdir(parents=True, exist_ok=True)
        from mll_registry.fsutil import atomic_path

        stamp = self._stamp(self.versions, self.sources)
        with atomic_path(self._sources_file(stamp), suffix=".npy") as tmp:
            np.save(tmp, self.src)
        with atomic_path(self.path / "index.npz", suffix=".npz") as tmp:
            np.savez(tmp, acc1=self.acc1, acc5=self.acc5, own=self.own, n_images=self.n_images,
                     src_n=self.src_n, src_ok=self.src_ok, signature=np.array(stamp))
        for f in self.path.glob("sources-*.npy"):  # a reader's memory map keeps its own copy
            if f != self._sources_file(stamp):
                f.unlink(missing_ok=True)
        self.build_stats.update(build_s=round(time.perf_counter() - t0, 3), fetched=fetched)

    def _save_meta(self) -> None:
        from mll_registry.fsutil import write_json

        write_json(self.path / "versions.json", {
            "format": self.FORMAT, "checked_at": self.checked_at, "nodes": self.nodes,
            "sources": self.sources, "versions": [v.to_dict() for v in self.versions]})

    def _stamp(self, versions: Sequence[LabelledVersion], sources: Sequence[str]) -> str:
        """What the cached arrays were built from (checked when they are read)."""
        return json.dumps([self._signature(versions), list(sources)])

    def _sources_file(self, stamp: str) -> Path:
        """The per-source array of the index built from ``stamp`` (named by it: a rebuild
        writes a new file, so a reader never sees one that does not match its index.npz)."""
        return self.path / f"sources-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}.npy"

    def _load(self) -> None:
        """Read the disk cache: numeric arrays only (never a pickle), checked against the meta.

        A cache that is not exactly what this code writes (damaged, planted, older format) is
        deleted and rebuilt from the registry.
        """
        try:
            meta = json.loads((self.path / "versions.json").read_text(encoding="utf-8"))
            if meta.get("format") != self.FORMAT:
                raise ValueError("older cache format")
            nodes = [str(n) for n in meta["nodes"]]
            versions = [LabelledVersion(**v) for v in meta["versions"]]
            sources = [str(s) for s in meta["sources"]]
            stamp = self._stamp(versions, sources)
            with np.load(self.path / "index.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("acc1", "acc5", "own", "n_images", "src_n", "src_ok",
                                            "signature")}
            # memory-mapped: a per-source query reads one node's slice
            src = np.load(self._sources_file(stamp), mmap_mode="r", allow_pickle=False)
            shape = (len(versions), len(nodes))
            if any(arrays[k].shape != shape or arrays[k].dtype.kind != "f"
                   for k in ("acc1", "acc5", "own")) or arrays["n_images"].shape != (len(nodes),) \
                    or arrays["src_n"].shape != (len(sources), len(nodes)) \
                    or arrays["src_ok"].shape != (len(versions),) \
                    or src.shape != (len(nodes), len(sources), len(self.SOURCE_STATS),
                                     len(versions)) or src.dtype != np.float32 \
                    or str(arrays["signature"]) != stamp:
                raise ValueError("arrays do not match the version, node and source lists")
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt, never trusted
            log.warning("label index cache %s is unusable (%s); rebuilding it", self.path, exc)
            for f in (self.path / "index.npz", self.path / "versions.json",
                      *self.path.glob("sources-*.npy")):
                f.unlink(missing_ok=True)
            return
        self.acc1, self.acc5, self.own = arrays["acc1"], arrays["acc5"], arrays["own"]
        self.n_images, self.src_n = arrays["n_images"], arrays["src_n"]
        self.src_ok, self.src = arrays["src_ok"].astype(bool), src
        self.nodes, self.versions, self.sources = nodes, versions, sources
        self.checked_at = float(meta["checked_at"])
        self._node_pos = {nd: i for i, nd in enumerate(self.nodes)}

    def _columns(self, j: int, source: str | None) -> tuple[np.ndarray, ...]:
        """Per model on node position ``j``: acc1, acc5, mean own score, and the image count
        (pooled, or of ``source``'s images only)."""
        if source is None or not self.versions:
            return (self.acc1[:, j], self.acc5[:, j], self.own[:, j],
                    np.full(len(self.versions), self.n_images[j]))
        if not self.src_ok.all():
            raise no_source_counts([v.model_ref for v, y in zip(self.versions, self.src_ok,
                                                                strict=True) if not y])
        if source not in self.sources:
            raise KeyError(f"no sample source {source!r} in the labels of graph "
                           f"{self.graph_version}; sources: {', '.join(self.sources)}")
        k = self.sources.index(source)
        cnt = int(self.src_n[k, j])
        if cnt == 0:
            where = ", ".join(f"{s} ({int(c)})" for s, c in zip(self.sources, self.src_n[:, j],
                                                                 strict=True) if c)
            raise KeyError(f"{self.nodes[j]} has no images from source {source!r}; its images "
                           f"come from: {where or 'no source'}")
        hits1, hits5, own = np.asarray(self.src[j, k], np.float64)  # one contiguous read
        return hits1 / cnt, hits5 / cnt, own / cnt, np.full(len(self.versions), cnt)

    def best(self, node_id: str, n: int = 5, source: str | None = None) -> list[ConceptHit]:
        """Models ranked by accuracy@1 on ``node_id`` (then accuracy@5, then mean own score),
        over all its images or (``source``) over that sample source's images only.

        Raises:
            KeyError: an unknown node or source, or a node with no image from ``source``.
            LabelError: ``source`` given and some model's label predates per-source counts.
        """
        j = self._node_pos.get(node_id)
        if j is None:
            raise KeyError(node_id)
        acc1, acc5, own, cnt = self._columns(j, source)
        order = np.lexsort((-own, -acc5, -acc1))[:n]
        return [ConceptHit(self.versions[i].name, self.versions[i].version,
                           self.versions[i].model_ref, self.versions[i].revision,
                           float(acc1[i]), float(acc5[i]), float(own[i]), int(cnt[i]), source)
                for i in order]

    def summary_of(self, model: str) -> tuple[LabelledVersion, pd.DataFrame] | None:
        """A model's per-node figures from the index: its newest indexed version (a MODEL_REF is
        matched by source, as :meth:`Registry.latest_for` does, else a registered name)."""
        import pandas as pd

        from mll_registry.models.refs import ModelRef

        if ":" in model:
            src = ModelRef.parse(model).source
            hits = [i for i, v in enumerate(self.versions) if v.model_source == src]
        else:
            hits = [i for i, v in enumerate(self.versions) if v.name == model]
        if not hits:
            return None
        i = max(hits, key=lambda j: self.versions[j].version)
        return self.versions[i], pd.DataFrame({
            "node_id": self.nodes, "n_images": self.n_images, "acc1": self.acc1[i],
            "acc5": self.acc5[i], "mean_own": self.own[i]})
