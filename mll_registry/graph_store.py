"""Published graphs: a graph bundle and its sample images in the tracking server's artifact store.

A graph bundle on disk points at its sample images through local folders, which a worker on
another host does not have. :func:`publish` makes a graph usable anywhere: the bundle's tables and
manifest, plus every distinct sample image once, in WebDataset tar shards (sample key = the image's
content digest) named by the sha256 of their bytes, and an index saying which image is in which
shard. They are logged to one run of the ``mll-graphs`` experiment, then registered as a version of
the registered model ``mll-graphs`` tagged with the graph version (the entry is created last: a
publish that dies leaves a failed run, never a half-published graph). The alias ``default`` is the
default graph that the flows use when they are given none.

:func:`fetch` is what a worker does with only ``MLFLOW_TRACKING_URI``: resolve a version (or
``default``), download the shards one at a time, check each shard's sha256 and each image's content
digest, write the images under the data dir, and load the bundle, whose tables must hash to the
version. The result is cached by version; a cached graph is used without asking the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mll_registry.config import data_dir
from mll_registry.fsutil import sha256_file
from mll_registry.graph import GraphError, SemanticGraph
from mll_registry.redaction import redact

if TYPE_CHECKING:
    from mll_registry.mlflow_tracking import Tracking

GRAPH_MODEL = "mll-graphs"  # registered model: one version per published graph version
GRAPH_EXPERIMENT = "mll-graphs"  # the runs holding the artifacts
DEFAULT_ALIAS = "default"
SHARD_BYTES = 256 * 1024 * 1024  # images per tar shard, by size (WebDataset's usual range)
FETCH_WORKERS = 4  # shards downloaded at once
INDEX = "index.json"
_VERSION = re.compile(r"^[0-9a-f]{16}$")
_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_TABLE_FILES = ("nodes.parquet", "edges.parquet", "images.parquet", "members.parquet",
                "manifest.json")


def is_graph_version(spec: str) -> bool:
    """Whether ``spec`` names a published graph (a content version or ``default``)."""
    return spec == DEFAULT_ALIAS or bool(_VERSION.match(spec))


@dataclass(frozen=True)
class PublishedGraph:
    """A graph version in the registry."""

    graph_version: str
    registry_version: int
    run_id: str
    nodes: int
    images: int
    sources: list[str]
    shards: int
    bytes: int
    published_at: str
    default: bool = False
    parent: str = ""  # the graph version it was extended from (graph lineage)
    delta: str = ""  # what the extension added, e.g. "+119 nodes, +944 images"

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _entry(v: Any, default_version: str | None) -> PublishedGraph:
    t = v.tags or {}
    return PublishedGraph(
        graph_version=t.get("mll.graph_version", ""), registry_version=int(v.version),
        run_id=str(v.run_id), nodes=int(t.get("mll.nodes", 0)), images=int(t.get("mll.images", 0)),
        sources=[s for s in t.get("mll.sources", "").split(",") if s],
        shards=int(t.get("mll.shards", 0)), bytes=int(t.get("mll.bytes", 0)),
        published_at=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                   time.gmtime(int(v.creation_timestamp or 0) / 1000)),
        default=str(v.version) == default_version, parent=t.get("mll.parent_graph", ""),
        delta=t.get("mll.delta", ""))


# -- packing ---------------------------------------------------------------------------------------
def _ext(relpath: str) -> str:
    ext = Path(relpath).suffix.lower().lstrip(".")
    return ext if re.fullmatch(r"[a-z0-9]{1,8}", ext) else "bin"


def pack_shards(graph: SemanticGraph, out: Path, shard_bytes: int = SHARD_BYTES,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write each distinct sample image once into WebDataset tar shards under ``out``, named by
    the sha256 of their bytes; return the index (shard -> sha256, image digest -> shard).

    The tars are deterministic (sorted keys, zero mtimes and owners), so the same images give the
    same shard names. Each image is checked against the digest the graph recorded for it.
    """
    from webdataset import TarWriter

    out.mkdir(parents=True, exist_ok=True)
    paths = graph.image_paths()
    first: dict[str, int] = {}  # digest -> first image row holding it
    for i, d in enumerate(graph.images["digest"].astype(str)):
        first.setdefault(d, i)
    shards: list[dict[str, Any]] = []
    where: dict[str, int] = {}
    state: dict[str, Any] = {"writer": None, "file": None, "size": 0, "keys": 0}

    def close() -> None:
        if state["writer"] is None:
            return
        state["writer"].close()
        tmp: Path = state["file"]
        digest = sha256_file(tmp)
        name = f"{digest}.tar"
        os.replace(tmp, out / name)
        shards.append({"name": name, "sha256": digest, "bytes": (out / name).stat().st_size,
                       "images": state["keys"]})
        state.update(writer=None, file=None, size=0, keys=0)

    total = len(first)
    for n, (digest, row) in enumerate(sorted(first.items(), key=lambda kv: kv[1])):
        try:
            data = paths[row].read_bytes()
        except OSError as exc:
            raise GraphError(f"sample image {paths[row]} of graph {graph.version} cannot be read "
                             f"({exc.strerror or exc}); publish from the machine that built the "
                             "graph, or relocate its sources") from exc
        if hashlib.blake2b(data, digest_size=16).hexdigest() != digest:
            raise GraphError(f"sample image {paths[row]} changed since graph {graph.version} was "
                             "built (its content digest differs); rebuild the graph")
        if state["writer"] is None:
            state["file"] = out / f".shard-{len(shards):05d}.tar.tmp"
            state["writer"] = TarWriter(str(state["file"]), user="", group="", mtime=0.0,
                                        encoder=False)
        state["writer"].write({"__key__": digest, _ext(str(paths[row])): data})
        where[digest] = len(shards)
        state["size"] += len(data) + 1024
        state["keys"] += 1
        if state["size"] >= shard_bytes:
            close()
        if progress and (n + 1 == total or n % 1000 == 0):
            progress(n + 1, total)
    close()
    return {"format": "mll-graph-shards/1", "graph_version": graph.version,
            "shards": shards, "images": {d: shards[s]["name"] for d, s in where.items()}}


# -- the store -------------------------------------------------------------------------------------
class GraphStore:
    """Published graphs in one tracking server (its registry and artifact store)."""

    def __init__(self, tracking: Tracking | Callable[[], Tracking],
                 root: str | os.PathLike[str] | None = None) -> None:
        self._tracking = tracking  # a factory: no MLflow client while the cache answers
        self.root = root

    @property
    def tracking(self) -> Tracking:
        if callable(self._tracking):
            self._tracking = self._tracking()
        return self._tracking

    @property
    def client(self) -> Any:
        return self.tracking.client

    # -- listing ---------------------------------------------------------------------------------
    def _default_version(self) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            v = self.tracking.call(lambda: self.client.get_model_version_by_alias(
                GRAPH_MODEL, DEFAULT_ALIAS), "read the default graph")
        except MlflowException:
            return None
        return str(v.version)

    def _versions(self) -> list[Any]:
        from mlflow.exceptions import MlflowException

        try:
            return list(self.tracking.call(lambda: self.client.search_model_versions(
                f"name='{GRAPH_MODEL}'", max_results=1000), "list graphs"))
        except MlflowException:
            return []

    def list(self) -> list[PublishedGraph]:
        """Every published graph, newest first (one registry version per graph version)."""
        default = self._default_version()
        out = [_entry(v, default) for v in self._versions()
               if (v.tags or {}).get("mll.published") == "true"]
        return sorted(out, key=lambda g: -g.registry_version)

    def find(self, spec: str) -> PublishedGraph | None:
        """The published graph ``spec`` names: a graph version, or ``default``."""
        if spec == DEFAULT_ALIAS:
            dv = self._default_version()
            return next((g for g in self.list() if str(g.registry_version) == dv), None)
        hits = [g for g in self.list() if g.graph_version == spec]
        return min(hits, key=lambda g: g.registry_version) if hits else None

    def set_default(self, graph_version: str) -> PublishedGraph:
        """Point ``default`` at a published graph version."""
        g = self.find(graph_version)
        if g is None:
            raise GraphError(f"graph {graph_version} is not published; publish it first with "
                             "`mll graph publish PATH`")
        self.tracking.call(lambda: self.client.set_registered_model_alias(
            GRAPH_MODEL, DEFAULT_ALIAS, str(g.registry_version)), "set the default graph")
        return PublishedGraph(**{**g.to_dict(), "default": True})

    # -- publishing ------------------------------------------------------------------------------
    def publish(self, graph: SemanticGraph, bundle: Path, *, default: bool = False,
                shard_bytes: int = SHARD_BYTES,
                progress: Callable[[int, int], None] | None = None) -> tuple[PublishedGraph, bool]:
        """Publish a graph bundle and its images; returns (entry, created). Idempotent: a graph
        version already published is returned as it is (and made the default if asked)."""
        from mll_registry.fsutil import atomic_dir

        old = self.find(graph.version)
        if old is not None:
            return (self.set_default(graph.version) if default else old), False
        stage = data_dir(self.root) / "cache" / "graph-publish" / graph.version
        t0 = time.time()
        with atomic_dir(stage) as tmp:
            index = pack_shards(graph, tmp / "shards", shard_bytes, progress)
            (tmp / INDEX).write_text(json.dumps(index, sort_keys=True), encoding="utf-8")
            (tmp / "bundle").mkdir()
            for f in _TABLE_FILES:
                shutil.copy2(bundle / f, tmp / "bundle" / f)
            size = sum(s["bytes"] for s in index["shards"])
            s = graph.summary()
            tags = {"mll.kind": "graph", "mll.graph_version": graph.version,
                    "mll.nodes": str(s["nodes"]), "mll.images": str(s["images"]),
                    "mll.sources": ",".join(sorted(s["images_per_source"])),
                    "mll.shards": str(len(index["shards"])), "mll.bytes": str(size)}
            lineage = graph.manifest.get("lineage") or {}
            if lineage.get("parent"):
                from mll_registry.graph_lineage import GraphDelta

                tags["mll.parent_graph"] = str(lineage["parent"])
                tags["mll.delta"] = GraphDelta(**lineage["delta"]).headline()
            with self.tracking.run(GRAPH_EXPERIMENT, f"graph {graph.version}", tags,
                                   started=t0) as rid:
                self.tracking.call(lambda: self.client.log_artifacts(rid, str(tmp), "graph"),
                                   "upload the graph")
                self.client.log_metric(rid, "images", float(s["images"]))
                self.client.log_metric(rid, "bytes", float(size))
                self.client.log_metric(rid, "seconds", round(time.time() - t0, 3))
        shutil.rmtree(stage, ignore_errors=True)
        # not `mll.status`: that tag marks label versions, which the label queries search for
        mv = self._register(rid, {**tags, "mll.published": "true"})
        created = mv is not None
        if default:
            return self.set_default(graph.version), created
        found = self.find(graph.version)
        assert found is not None
        return found, created

    def _register(self, run_id: str, tags: dict[str, str]) -> Any | None:
        """The registry entry, last; of two concurrent publishers of one version the lower
        registry version stays and the other is removed (returns None then)."""
        from mlflow.exceptions import MlflowException

        try:
            self.tracking.call(lambda: self.client.create_registered_model(
                GRAPH_MODEL, tags={"mll.kind": "graph"},
                description="Semantic graphs published by MLL Registry: tables and sample-image "
                            "shards (alias `default`: the graph the flows use)."),
                "create the graph registry")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS" and "already exists" not in str(exc):
                raise
        mv = self.tracking.call(lambda: self.client.create_model_version(
            GRAPH_MODEL, f"runs:/{run_id}/graph", run_id=run_id, tags=tags),
            "register the graph")
        same = [v for v in self._versions()
                if (v.tags or {}).get("mll.graph_version") == tags["mll.graph_version"]]
        if any(int(v.version) < int(mv.version) for v in same):
            self.client.delete_model_version(GRAPH_MODEL, str(mv.version))
            return None
        return mv

    # -- fetching --------------------------------------------------------------------------------
    def cache_dir(self, graph_version: str) -> Path:
        return data_dir(self.root) / "graphs" / "published" / graph_version

    def cached(self, graph_version: str) -> Path | None:
        """The cached bundle of a graph version, if fetched before (no server call)."""
        path = self.cache_dir(graph_version)
        return path if (path / "manifest.json").is_file() else None

    def fetch(self, spec: str, progress: Callable[[int, int], None] | None = None
              ) -> tuple[SemanticGraph, Path]:
        """A published graph as a local bundle: cached by version, else downloaded and checked."""
        if spec != DEFAULT_ALIAS and (path := self.cached(spec)) is not None:
            return SemanticGraph.load(path, root=self.root), path
        g = self.find(spec)
        if g is None:
            if spec == DEFAULT_ALIAS:
                raise GraphError(
                    f"no default graph in the registry at {redact(self.tracking.uri)}: "
                    "publish one with `mll graph publish PATH --default` (or pass a graph "
                    "version; `mll graph list` shows them)")
            raise GraphError(f"graph {spec} is not published in the registry; `mll graph list` "
                             "shows the published versions, `mll graph publish PATH` adds one")
        path = self.cached(g.graph_version)
        if path is None:
            path = self._download(g, progress)
        graph = SemanticGraph.load(path, root=self.root)
        if graph.version != g.graph_version:
            raise GraphError(f"the published graph {g.graph_version} (run {g.run_id}) holds "
                             f"graph {graph.version}; republish it")
        return graph, path

    def _download(self, g: PublishedGraph, progress: Callable[[int, int], None] | None) -> Path:
        import mlflow
        import pandas as pd

        from mll_registry.fsutil import atomic_dir, read_json_object

        uri = self.tracking.uri

        def get(artifact: str, dst: Path) -> Path:
            return Path(self.tracking.call(lambda: mlflow.artifacts.download_artifacts(
                run_id=g.run_id, artifact_path=artifact, dst_path=str(dst), tracking_uri=uri),
                f"download {artifact}"))

        dest = self.cache_dir(g.graph_version)
        with atomic_dir(dest) as tmp:
            get(f"graph/{INDEX}", tmp)
            index = read_json_object(tmp / INDEX)
            for f in _TABLE_FILES:
                get(f"graph/bundle/{f}", tmp)
            images = pd.read_parquet(tmp / "images.parquet")
            manifest = read_json_object(tmp / "manifest.json")
            roots = {}
            for name in manifest.get("sources", {}):
                if not _SOURCE.match(str(name)):
                    raise GraphError(f"published graph {g.graph_version}: bad source name "
                                     f"{name!r}; republish it")
                roots[name] = tmp / "images" / name
            # image digest -> the relative files it is written to
            targets: dict[str, list[Path]] = {}
            for src, rel, dig in zip(images["source"], images["relpath"], images["digest"],
                                     strict=True):
                p = Path(str(rel))
                if p.is_absolute() or ".." in p.parts or str(src) not in roots:
                    raise GraphError(f"published graph {g.graph_version}: unsafe image path "
                                     f"{src}/{rel}; republish it")
                targets.setdefault(str(dig), []).append(roots[str(src)] / p)
            names = {s["name"]: s["sha256"] for s in index.get("shards", [])}
            done = [0]

            def one(name: str) -> None:
                part = tmp / ".shards" / name.removesuffix(".tar")
                got = get(f"graph/shards/{name}", part)
                _extract(got, names[name], targets, g.graph_version)
                shutil.rmtree(part, ignore_errors=True)
                done[0] += 1
                if progress:
                    progress(done[0], len(names))

            with ThreadPoolExecutor(FETCH_WORKERS) as pool:
                list(pool.map(one, sorted(names)))
            missing = [d for d, ps in targets.items() if not ps[0].is_file()]
            if missing:
                raise GraphError(f"published graph {g.graph_version}: {len(missing)} images are "
                                 f"in no shard (e.g. {missing[0]}); republish it")
            shutil.rmtree(tmp / ".shards", ignore_errors=True)
            (tmp / INDEX).unlink()
            manifest["sources"] = {n: str(dest / "images" / n) for n in roots}
            manifest["published"] = {"run_id": g.run_id, "registry_version": g.registry_version,
                                     "tracking_uri": redact(uri)}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) +
                                               "\n", encoding="utf-8")
        return dest


def _extract(shard: Path, sha256: str, targets: dict[str, list[Path]], version: str) -> None:
    """Check a shard's sha256, then write each image it holds (checked by digest) to its paths."""
    if sha256_file(shard) != sha256:
        raise GraphError(f"shard {shard.name} of published graph {version} fails its sha256 "
                         "(the artifact store holds a damaged copy); republish the graph")
    with tarfile.open(shard, "r:") as tar:
        for m in tar:
            if not m.isfile():
                continue
            digest = m.name.split(".", 1)[0]
            member = tar.extractfile(m)
            data = member.read() if member is not None else b""
            if hashlib.blake2b(data, digest_size=16).hexdigest() != digest:
                raise GraphError(f"image {m.name} in shard {shard.name} of graph {version} "
                                 "does not match its digest; republish the graph")
            for p in targets.get(digest, []):
                p.parent.mkdir(parents=True, exist_ok=True)
                with open(p, "wb") as out:
                    out.write(data)
