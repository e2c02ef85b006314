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

Whatever the registry serves is untrusted input (anyone who can write to the tracking server can
write it): every tag, alias target, artifact name and manifest field is checked against a strict
shape before use, every name becomes a path only through :func:`~mll_registry.fsutil.path_under`,
tar members are streamed with byte bounds, and each file written must hold the digest of the one
image row that names it. A malformed registry entry is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from mll_registry.fsutil import FileTooLarge, path_under, sha256_file
from mll_registry.graph.bundle import (
    FORMAT,
    MAX_IMAGE_BYTES,
    GraphError,
    SemanticGraph,
    read_sample,
)
from mll_registry.redaction import redact
from mll_registry.registry.tracking import RUN_ID

if TYPE_CHECKING:
    from mll_registry.registry.tracking import Tracking

GRAPH_MODEL = "mll-graphs"  # registered model: one version per published graph version
GRAPH_EXPERIMENT = "mll-graphs"  # the runs holding the artifacts
DEFAULT_ALIAS = "default"
SHARD_BYTES = 256 * 1024 * 1024  # images per tar shard, by size (WebDataset's usual range)
#: the largest shard fetched: a full shard plus the image that overflowed it, plus tar headers
MAX_SHARD_BYTES = SHARD_BYTES + MAX_IMAGE_BYTES + (1 << 20)
FETCH_WORKERS = 4  # shards downloaded at once
INDEX = "index.json"
INDEX_FORMAT = "mll-graph-shards/1"
_CHUNK = 1 << 20  # tar members are read, hashed and written this much at a time
# the shapes of what the registry serves (matched whole: re.fullmatch)
_VERSION = re.compile(r"[0-9a-f]{16}")  # a graph version
_SOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a sample source name
_COUNT = re.compile(r"[0-9]{1,18}")  # a count tag
_SHARD = re.compile(r"([0-9a-f]{64})\.tar")  # a shard: the sha256 of its bytes
_DIGEST = re.compile(r"[0-9a-f]{32}")  # an image's content digest (blake2b-128)
_MEMBER = re.compile(r"([0-9a-f]{32})\.[a-z0-9]{1,8}")  # a shard member: digest.ext
log = logging.getLogger(__name__)
_TABLE_FILES = ("nodes.parquet", "edges.parquet", "images.parquet", "members.parquet",
                "manifest.json")


def is_graph_version(spec: str) -> bool:
    """Whether ``spec`` names a published graph (a content version or ``default``): such a spec
    is always a name, never a folder of the working directory."""
    return spec == DEFAULT_ALIAS or bool(_VERSION.fullmatch(spec))


def _under(root: Path, *parts: str, what: str) -> Path:
    """``root / parts`` for names the registry served, refused (GraphError) if it leaves root."""
    try:
        return path_under(root, *parts)
    except ValueError as exc:
        raise GraphError(f"{what}: unsafe name ({exc}); republish the graph") from exc


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
    """A registry version as a PublishedGraph, every field checked for its shape.

    Raises:
        ValueError: a malformed tag or field (the message names it; values are shown escaped).
    """
    t = v.tags or {}

    def shaped(key: str, value: Any, shape: re.Pattern[str]) -> str:
        if not isinstance(value, str) or not shape.fullmatch(value):
            raise ValueError(f"{key} {value!r:.60} is malformed")
        return value

    def count(key: str) -> int:
        return int(shaped(key, t.get(key, "0"), _COUNT))

    sources = [s for s in t.get("mll.sources", "").split(",") if s]
    for src in sources:
        shaped("mll.sources", src, _SOURCE)
    parent = t.get("mll.parent_graph", "")
    if parent:
        shaped("mll.parent_graph", parent, _VERSION)
    return PublishedGraph(
        graph_version=shaped("mll.graph_version", t.get("mll.graph_version", ""), _VERSION),
        registry_version=int(shaped("version", str(v.version), _COUNT)),
        run_id=shaped("run_id", v.run_id, RUN_ID), nodes=count("mll.nodes"),
        images=count("mll.images"), sources=sources, shards=count("mll.shards"),
        bytes=count("mll.bytes"),
        published_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(shaped(
            "creation_timestamp", str(v.creation_timestamp or 0), _COUNT)) / 1000)),
        default=str(v.version) == default_version, parent=parent,
        delta=str(t.get("mll.delta", ""))[:200])


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
            data = read_sample(paths[row])  # GraphError for a FIFO or device: its own line
        except (OSError, FileTooLarge) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise GraphError(f"sample image {paths[row]} of graph {graph.version} cannot be read "
                             f"({why}); publish from the machine that built the "
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
        version = str(v.version)
        return version if _COUNT.fullmatch(version) else "(malformed)"

    def _versions(self) -> list[Any]:
        from mlflow.exceptions import MlflowException

        try:
            return list(self.tracking.call(lambda: self.client.search_model_versions(
                f"name='{GRAPH_MODEL}'", max_results=1000), "list graphs"))
        except MlflowException:
            return []

    def list(self) -> list[PublishedGraph]:
        """Every published graph, newest first (one registry version per graph version); a
        version with a malformed tag is skipped with a warning, so one bad entry hides no other."""
        default = self._default_version()
        out = []
        for v in self._versions():
            if (v.tags or {}).get("mll.published") != "true":
                continue
            try:
                out.append(_entry(v, default))
            except ValueError as exc:
                log.warning("skipping version %.20r of registered model %s: %s (fix or delete "
                            "that version)", str(v.version), GRAPH_MODEL, exc)
        return sorted(out, key=lambda g: -g.registry_version)

    def find(self, spec: str) -> PublishedGraph | None:
        """The published graph ``spec`` names: a graph version, or ``default``.

        Raises:
            GraphError: ``default`` points at a version that is no valid published graph.
        """
        if spec == DEFAULT_ALIAS:
            dv = self._default_version()
            hit = next((g for g in self.list() if str(g.registry_version) == dv), None)
            if hit is None and dv is not None:
                raise GraphError(f"the `{DEFAULT_ALIAS}` alias of {GRAPH_MODEL} points at registry "
                                 f"version {dv:.20}, which is no valid published graph (a malformed "
                                 "tag, see the warning): point it at a good one with `mll graph "
                                 "default VERSION` (`mll graph list` shows them)")
            return hit
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

        if shard_bytes > SHARD_BYTES:
            raise GraphError(f"shards of at most {SHARD_BYTES:,} bytes are fetched; publish with "
                             f"shard_bytes <= {SHARD_BYTES}")
        old = self.find(graph.version)
        if old is not None:
            return (self.set_default(graph.version) if default else old), False
        stage = _under(data_dir(self.root) / "cache" / "graph-publish", graph.version,
                       what=f"graph {graph.version}")
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
                from mll_registry.graph.lineage import GraphDelta

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
        """Where a fetched graph version is cached (refused unless ``graph_version`` is one)."""
        if not _VERSION.fullmatch(graph_version):
            raise GraphError(f"{graph_version!r:.60} is no graph version (16 hex digits); "
                             "`mll graph list` shows the published ones")
        return _under(data_dir(self.root) / "graphs" / "published", graph_version,
                      what=f"graph {graph_version}")

    def cached(self, graph_version: str) -> Path | None:
        """The cached bundle of a graph version, if fetched before (no server call)."""
        path = self.cache_dir(graph_version)
        return path if (path / "manifest.json").is_file() else None

    def fetch(self, spec: str, progress: Callable[[int, int], None] | None = None
              ) -> tuple[SemanticGraph, Path]:
        """A published graph as a local bundle: cached by version, else downloaded and checked."""
        if spec != DEFAULT_ALIAS and not _VERSION.fullmatch(spec):
            raise GraphError(f"{spec!r:.60} names no published graph: give `{DEFAULT_ALIAS}` or a "
                             "16-hex graph version (`mll graph list` shows them)")
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

        from mll_registry.fsutil import atomic_dir

        uri = self.tracking.uri

        def get(artifact: str, dst: Path) -> Path:
            return Path(self.tracking.call(lambda: mlflow.artifacts.download_artifacts(
                run_id=g.run_id, artifact_path=artifact, dst_path=str(dst), tracking_uri=uri),
                f"download {artifact}"))

        version = g.graph_version
        dest = self.cache_dir(version)
        with atomic_dir(dest) as tmp:
            get(f"graph/{INDEX}", tmp)
            names = _check_index(_json_object(tmp / INDEX, version), version)
            for f in _TABLE_FILES:
                get(f"graph/bundle/{f}", tmp)
            manifest = _check_manifest(_json_object(tmp / "manifest.json", version), version)
            roots = {name: _under(tmp / "images", name, what=f"published graph {version}")
                     for name in manifest["sources"]}
            try:
                images = pd.read_parquet(tmp / "images.parquet",
                                         columns=["source", "relpath", "digest"])
            except Exception as exc:  # noqa: BLE001 - pyarrow's errors for a damaged file
                raise GraphError(f"published graph {version}: images.parquet is unreadable "
                                 f"({type(exc).__name__}); republish it") from exc
            rows = _destinations(images, roots, version)
            targets: dict[str, list[Path]] = {}  # image digest -> the files it is written to
            for path, digest in rows:
                targets.setdefault(digest, []).append(path)
            shards_dir = tmp / ".shards"
            done = [0]

            def one(name: str) -> None:
                part = _under(shards_dir, name.removesuffix(".tar"),
                              what=f"published graph {version}")
                got = get(f"graph/shards/{name}", part)
                if got.resolve() != (part / name).resolve() or got.is_symlink() or \
                        not got.is_file():
                    raise GraphError(f"published graph {version}: shard {name} did not download "
                                     "as one file; republish the graph")
                _extract(got, names[name], targets, version)
                shutil.rmtree(part, ignore_errors=True)
                done[0] += 1
                if progress:
                    progress(done[0], len(names))

            with ThreadPoolExecutor(FETCH_WORKERS) as pool:
                list(pool.map(one, sorted(names)))
            _verify_written(rows, version)
            shutil.rmtree(shards_dir, ignore_errors=True)
            (tmp / INDEX).unlink()
            manifest["sources"] = {n: str(dest / "images" / n) for n in roots}
            manifest["published"] = {"run_id": g.run_id, "registry_version": g.registry_version,
                                     "tracking_uri": redact(uri)}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) +
                                               "\n", encoding="utf-8")
        return dest


def _json_object(path: Path, version: str) -> dict[str, Any]:
    from mll_registry.fsutil import read_json_object

    try:
        return read_json_object(path)
    except ValueError as exc:
        raise GraphError(f"published graph {version}: {path.name} is damaged ({exc}); "
                         "republish it") from exc


def _check_index(index: dict[str, Any], version: str) -> dict[str, str]:
    """The shards a published index lists (name -> sha256), each name ``<its sha256>.tar``."""
    bad = f"published graph {version}: {INDEX}"
    if index.get("format") != INDEX_FORMAT or index.get("graph_version") != version:
        raise GraphError(f"{bad} is not the shard index of this graph; republish it")
    shards = index.get("shards")
    if not isinstance(shards, list):
        raise GraphError(f"{bad} lists no shards; republish it")
    names: dict[str, str] = {}
    for s in shards:
        name = s.get("name") if isinstance(s, dict) else None
        m = _SHARD.fullmatch(name) if isinstance(name, str) else None
        if m is None or m.group(1) != s.get("sha256") or name in names:
            raise GraphError(f"{bad}: shard name {name!r:.80} is not the sha256 file name of "
                             "a shard (<64 hex>.tar); republish the graph")
        size = s.get("bytes")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_SHARD_BYTES:
            raise GraphError(f"{bad}: shard {name} declares {size!r:.30} bytes (at most "
                             f"{MAX_SHARD_BYTES:,}); republish the graph")
        names[str(name)] = m.group(1)
    return names


def _check_manifest(manifest: dict[str, Any], version: str) -> dict[str, Any]:
    """A published manifest, each field a worker reads checked for its shape (GraphError)."""
    from dataclasses import fields

    from mll_registry.graph.bundle import GraphConfig

    def bad(what: str) -> GraphError:
        return GraphError(f"published graph {version}: manifest {what}; republish it")

    if manifest.get("format") != FORMAT or manifest.get("version") != version:
        raise bad(f"is not of graph {version} in format {FORMAT}")
    sources = manifest.get("sources")
    if not isinstance(sources, dict) or not sources or not all(
            isinstance(k, str) and _SOURCE.fullmatch(k) and isinstance(v, str)
            for k, v in sources.items()):
        raise bad("sources are not a mapping of source names (letters, digits, ._-)")
    desc = manifest.get("descriptions", {})
    if not isinstance(desc, dict) or not all(k in sources and isinstance(v, str)
                                             for k, v in desc.items()):
        raise bad("descriptions are not texts of its sources")
    config = manifest.get("config")
    defaults = {f.name: f.default for f in fields(GraphConfig)}
    if not isinstance(config, dict) or not all(
            k not in defaults or type(v) is type(defaults[k]) for k, v in config.items()) or \
            not isinstance(config.get("cap"), int) or config["cap"] < 1:
        raise bad("config is malformed")
    if manifest.get("lineage") not in (None, {}) and not _lineage_ok(manifest["lineage"]):
        raise bad("lineage is malformed")
    if not isinstance(manifest.get("report", []), list):
        raise bad("report is malformed")
    return manifest


def _lineage_ok(lineage: Any) -> bool:
    """Whether a manifest's ``lineage`` has the shape extend writes: a parent version, ancestor
    versions (label stores look them up by version) and a delta that builds a GraphDelta."""
    from dataclasses import fields

    from mll_registry.graph.lineage import GraphDelta

    if not isinstance(lineage, dict):
        return False
    parent, ancestors, delta = (lineage.get("parent"), lineage.get("ancestors", []),
                                lineage.get("delta"))
    if not isinstance(parent, str) or not _VERSION.fullmatch(parent) or \
            not isinstance(ancestors, list) or not isinstance(delta, dict):
        return False
    if not all(isinstance(a, str) and _VERSION.fullmatch(a) for a in ancestors):
        return False
    for f in fields(GraphDelta):
        v = delta.get(f.name, f.default)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        ok = (isinstance(v, list) and all(isinstance(x, str) for x in v)
              if kind.startswith("list") else isinstance(v, str) if kind == "str"
              else isinstance(v, int) and not isinstance(v, bool))
        if not ok:
            return False
    return True


def _destinations(images: Any, roots: dict[str, Path], version: str) -> list[tuple[Path, str]]:
    """(file, digest) of each image row: the file built under its source's root, and no file
    named by two rows, so no row can take another's image (paths are not in the version)."""
    out: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    dirs: dict[tuple[str, ...], Path] = {}  # (source, *folders) -> checked folder
    for src, rel, dig in zip(images["source"], images["relpath"], images["digest"], strict=True):
        where = f"published graph {version}: image {src!r:.60}/{rel!r:.120}"
        if not isinstance(src, str) or src not in roots or not isinstance(rel, str) or \
                not isinstance(dig, str) or not _DIGEST.fullmatch(dig):
            raise GraphError(f"{where} (digest {dig!r:.40}) is malformed; republish it")
        p = Path(rel)
        if not rel or "\x00" in rel or p.is_absolute() or ".." in p.parts or p.name in ("", "."):
            raise GraphError(f"{where} is an unsafe path; republish it")
        # the folder through path_under (once per folder: it resolves links), then one plain name
        key = (src, *p.parts[:-1])
        if key not in dirs:
            dirs[key] = (_under(roots[src], *p.parts[:-1], what=where) if len(p.parts) > 1
                         else roots[src])
        path = dirs[key] / p.name
        if path in seen:
            raise GraphError(f"{where} is named by two image rows (one would take the other's "
                             "image); republish the graph")
        seen.add(path)
        out.append((path, dig))
    return out


def _blake2b_file(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _verify_written(rows: list[tuple[Path, str]], version: str) -> None:
    """Every image row's file is there and holds that row's digest."""
    for path, digest in rows:
        if not path.is_file() or path.is_symlink():
            raise GraphError(f"published graph {version}: image {digest} is in no shard; "
                             "republish it")
        if _blake2b_file(path) != digest:
            raise GraphError(f"published graph {version}: {path.name} does not hold image "
                             f"{digest}; republish it")


def _member_kind(m: tarfile.TarInfo) -> str | None:
    """Why a shard member is refused (not a plain regular file, or sparse), or None."""
    if m.sparse is not None or m.type == tarfile.GNUTYPE_SPARSE:
        return "a sparse file"
    if m.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return "a link" if m.issym() or m.islnk() else "a directory" if m.isdir() else \
            "not a regular file"
    return None


def _extract(shard: Path, sha256: str, targets: dict[str, list[Path]], version: str) -> None:
    """Check a shard's size and sha256, then stream each image it holds (hashed while written,
    checked by digest) to its files. Members must be regular, not sparse, at most
    ``MAX_IMAGE_BYTES``, named by a digest the graph holds, each once."""
    where = f"shard {shard.name} of published graph {version}"
    size = shard.stat().st_size
    if size > MAX_SHARD_BYTES:
        raise GraphError(f"{where} is {size:,} bytes, more than {MAX_SHARD_BYTES:,}; republish "
                         "the graph")
    if sha256_file(shard) != sha256:
        raise GraphError(f"shard {shard.name} of published graph {version} fails its sha256 "
                         "(the artifact store holds a damaged copy); republish the graph")
    seen: set[str] = set()
    try:
        with tarfile.open(shard, "r:") as tar:
            for m in tar:
                member = f"member {m.name!r:.80} of {where}"
                kind = _member_kind(m)
                if kind is not None:
                    raise GraphError(f"{member} is {kind}; republish the graph")
                if m.size > MAX_IMAGE_BYTES:
                    raise GraphError(f"{member} declares {m.size:,} bytes, more than the "
                                     f"{MAX_IMAGE_BYTES:,} an image may have; republish the graph")
                name = _MEMBER.fullmatch(m.name)
                digest = name.group(1) if name else ""
                if digest not in targets or digest in seen:
                    raise GraphError(f"{member} is no image of the graph (or a second copy); "
                                     "republish the graph")
                seen.add(digest)
                _write_member(tar, m, targets[digest], digest, member)
    except tarfile.TarError as exc:
        raise GraphError(f"{where} is not a readable tar ({exc}); republish the graph") from exc


def _write_member(tar: tarfile.TarFile, m: tarfile.TarInfo, paths: list[Path], digest: str,
                  member: str) -> None:
    """Stream one member to each of its (new) files while hashing it; GraphError on a mismatch
    (the caller's temporary directory, with the partial files, is then removed)."""
    src = tar.extractfile(m)
    if src is None:
        raise GraphError(f"{member} has no data; republish the graph")
    h = hashlib.blake2b(digest_size=16)
    outs = []
    try:
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            outs.append(open(p, "xb"))  # noqa: SIM115 - closed below; a new file, never followed
        while chunk := src.read(_CHUNK):
            h.update(chunk)
            for out in outs:
                out.write(chunk)
    except OSError as exc:
        raise GraphError(f"{member} cannot be written ({exc.strerror or exc}); republish the "
                         "graph") from exc
    finally:
        for out in outs:
            out.close()
    if h.hexdigest() != digest:
        raise GraphError(f"{member} does not match its digest; republish the graph")
