"""The semantic graph G: WordNet noun synsets with sample images, captions and a content version.

Model labels are measured on this graph (docs/method.md §1). A graph is built from one or more
*sample datasets* in ImageFolder layout whose sub-folders are named by wnid (``n02084071``, the
ImageNet convention) or by synset id (``dog.n.01``). Folder nodes are expanded with their WordNet
hypernyms; a node holds its own images first and is filled from its descendants' images up to
``cap`` (default 75) by a seeded draw that does not depend on the order anything is processed in.

The result is saved as a *graph bundle*, a directory with four parquet tables and a manifest::

    nodes.parquet    node_id, wnid, lemma, definition, caption, lexname, depth, n_own, n_images
    edges.parquet    parent, child              (hypernym -> hyponym, both in the graph)
    images.parquet   image_id, source, relpath, node_id, digest   (one row per distinct image)
    members.parquet  node_id, image_id, own     (which images represent which node)
    manifest.json    version, config, sources (name -> root), counts, build report

The version is a hash of content only (node ids, lemmas and captions, edges, which image *content*
represents which node, in the order labels store them), so moving the image folders keeps it and
changing one image or one lemma changes it.
A label is valid only for the graph version it was computed on.

Large folders are streamed: listing keeps file names only, and only the images drawn for a node are
opened (decoded once to check them, and hashed).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mll_registry import __version__
from mll_registry.fsutil import atomic_dir, read_json_object
from mll_registry.graph import build as B
from mll_registry.graph import wordnet as W

# the build's types and constants, named by the bundle too (where callers look for them)
from mll_registry.graph.build import DEFAULT_CAPTION as DEFAULT_CAPTION
from mll_registry.graph.build import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from mll_registry.graph.build import MAX_IMAGE_BYTES as MAX_IMAGE_BYTES
from mll_registry.graph.build import (
    BuildReport,
    GraphConfig,
    GraphError,
    Parent,
    SampleDataset,
    SourceReport,
)
from mll_registry.graph.build import read_sample as read_sample

FORMAT = "mll-graph/2"  # 2: lemmas and table order in the version
_TABLES = ("nodes", "edges", "images", "members")


def describe_sources(sets: Sequence[SampleDataset], describe: Sequence[str]) -> list[SampleDataset]:
    """Attach ``NAME=TEXT`` descriptions (CLI ``--describe``) to the sample datasets named."""
    import dataclasses

    texts: dict[str, str] = {}
    for spec in describe:
        name, sep, text = spec.partition("=")
        if not sep or not text.strip():
            raise GraphError(f"--describe takes NAME=TEXT (e.g. noto='colour emoji'), got {spec!r}")
        texts[name.strip()] = text.strip()
    unknown = sorted(set(texts) - {s.name for s in sets})
    if unknown:
        raise GraphError(f"--describe names {unknown}, which are not among the sources "
                         f"{[s.name for s in sets]}; use the NAME of a --source NAME=PATH")
    return [dataclasses.replace(s, description=texts.get(s.name, s.description)) for s in sets]


class SemanticGraph:
    """A built graph: node, edge, image and membership tables plus a manifest.

    Node order (``nodes`` row position) is the column order of model labels.
    """

    def __init__(self, nodes: pd.DataFrame, edges: pd.DataFrame, images: pd.DataFrame,
                 members: pd.DataFrame, manifest: dict[str, Any]) -> None:
        self.nodes = nodes
        self.edges = edges
        self.images = images
        self.members = members
        self.manifest = manifest
        self._roots = {k: Path(v) for k, v in manifest["sources"].items()}

    # -- identity -------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """Content version: labels carry it and are only valid for it."""
        return str(self.manifest["version"])

    @property
    def node_ids(self) -> list[str]:
        return self.nodes["node_id"].tolist()

    def __repr__(self) -> str:
        return (f"SemanticGraph(version={self.version}, nodes={len(self.nodes)}, "
                f"images={len(self.images)}, memberships={len(self.members)})")

    # -- access ---------------------------------------------------------------------------------
    def image_paths(self) -> list[Path]:
        """Absolute path of every image, in ``image_id`` order."""
        return [self._roots[s] / r for s, r in zip(self.images["source"], self.images["relpath"],
                                                    strict=True)]

    def node_index(self) -> dict[str, int]:
        """node_id -> row position."""
        return {n: i for i, n in enumerate(self.nodes["node_id"])}

    def member_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(node position, image id) of every membership row, int64; computed once."""
        cached = getattr(self, "_member_arrays", None)
        if cached is None:
            pos = self.node_index()
            cached = (self.members["node_id"].map(pos).to_numpy(np.int64),
                      self.members["image_id"].to_numpy(np.int64))
            self._member_arrays = cached
        return cached

    def relocate(self, roots: dict[str, str | os.PathLike[str]]) -> None:
        """Point sources at new roots (the version does not change: it hashes content)."""
        for name, root in roots.items():
            if name not in self._roots:
                raise GraphError(f"no source {name!r} in this graph; sources: {sorted(self._roots)}")
            self._roots[name] = Path(root)
            self.manifest["sources"][name] = str(root)

    @property
    def source_descriptions(self) -> dict[str, str]:
        """Each sample source's domain description ("" where none was given), by source name."""
        given = self.manifest.get("descriptions") or {}
        return {name: str(given.get(name, "")) for name in self.manifest["sources"]}

    def summary(self) -> dict[str, Any]:
        """Counts a person reads first: nodes, leaves, images per source, version."""
        per_source = self.images.groupby("source").size().to_dict()
        return {
            "version": self.version,
            "nodes": int(len(self.nodes)),
            "folder_nodes": int((self.nodes["n_own"] > 0).sum()),
            "hypernym_nodes": int((self.nodes["n_own"] == 0).sum()),
            "edges": int(len(self.edges)),
            "images": int(len(self.images)),
            "memberships": int(len(self.members)),
            "images_per_source": {str(k): int(v) for k, v in sorted(per_source.items())},
            "source_descriptions": {k: v for k, v in self.source_descriptions.items() if v},
            "cap": int(self.manifest["config"]["cap"]),
        }

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bundle atomically (a reader never sees a half-written bundle)."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            for name in _TABLES:
                getattr(self, name).to_parquet(tmp / f"{name}.parquet", index=False)
            (tmp / "manifest.json").write_text(
                json.dumps(self.manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], verify: bool = True,
             root: str | os.PathLike[str] | None = None) -> SemanticGraph:
        """Read a bundle; with ``verify`` the tables must hash to the manifest's version (once
        per set of files: a stamp in the data dir ``root`` remembers a verified bundle)."""
        path = Path(path)
        mf = path / "manifest.json"
        if not mf.is_file():
            raise GraphError(f"{path} is not a graph bundle (no manifest.json); "
                             "build one with `mll graph build`")
        try:
            manifest = read_json_object(mf)
        except ValueError as exc:
            raise GraphError(f"{mf} is damaged ({exc}); rebuild the bundle with "
                             "`mll graph build` (`--demo` for the demo graph)") from exc
        if manifest.get("format") != FORMAT:
            raise GraphError(f"{path}: unsupported bundle format {manifest.get('format')!r}, "
                             f"expected {FORMAT!r}; rebuild it with `mll graph build`")
        tables = {}
        for name in _TABLES:
            f = path / f"{name}.parquet"
            if not f.is_file():
                raise GraphError(f"{path}: missing {f.name}; the bundle is incomplete, rebuild it")
            try:
                tables[name] = pd.read_parquet(f)
            except Exception as exc:  # noqa: BLE001 - pyarrow's errors for a damaged file
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise GraphError(f"{f} is damaged ({first}); rebuild the bundle with "
                                 "`mll graph build` (`--demo` for the demo graph)") from exc
        g = cls(**tables, manifest=manifest)
        if verify:
            stamp = _verified_stamp(path, g.version, root)
            if stamp is None or not stamp.is_file():
                actual = content_version(g.nodes, g.edges, g.images, g.members)
                if actual != g.version:
                    raise GraphError(f"{path}: tables hash to {actual} but the manifest says "
                                     f"{g.version}; the bundle was modified, rebuild it")
                if stamp is not None:
                    stamp.parent.mkdir(parents=True, exist_ok=True)
                    stamp.touch()
        return g


def bundle_path(spec: str) -> Path:
    """The bundle directory a graph spec names, when it names a local one.

    Callers take the names (``default``, ``demo``, a 16-hex version) first: those are never
    paths, so a folder ``./default`` cannot stand in for the registry's default. A path is written
    ``./PATH``, ``../PATH``, ``/PATH`` or ``~/PATH``; a bare relative path is taken only if it is
    an existing bundle directory (``mll graph info g`` after ``mll graph build --out g``).

    Raises:
        GraphError: a bare word that is no bundle directory.
    """
    if spec in (".", "..") or spec.startswith(("./", "../", "/", "~")):
        return Path(spec).expanduser()
    if spec and (Path(spec) / "manifest.json").is_file():
        return Path(spec)
    raise GraphError(f"no graph {spec!r}: give a bundle directory as ./{spec} (or /PATH, ~/PATH), "
                     "a published graph as `default` or its 16-hex version, or `demo`")


def _verified_stamp(path: Path, version: str,
                    root: str | os.PathLike[str] | None) -> Path | None:
    """A cache entry saying "these exact files hashed to ``version``": keyed by each file's
    size, modification time and inode, so any rewrite of the bundle is verified again. Hashing
    a 750,000-image graph takes seconds; every later load of the same files skips it."""
    from mll_registry.config import data_dir

    try:
        stats = [(f, st.st_size, st.st_mtime_ns, st.st_ino) for f in
                 (*(f"{n}.parquet" for n in _TABLES), "manifest.json")
                 for st in [(path / f).stat()]]
        base = data_dir(root)
    except OSError:
        return None
    key = hashlib.sha256(json.dumps([str(path.resolve()), stats]).encode()).hexdigest()[:24]
    return base / "cache" / "graph-verified" / f"{version}-{key}"


def content_version(nodes: pd.DataFrame, edges: pd.DataFrame, images: pd.DataFrame,
                    members: pd.DataFrame) -> str:
    """Hash of everything a label depends on.

    Nodes in table order with their lemma (the default label text) and caption (labels' columns
    follow the node order), the edges, images in table order by content digest (labels' rows
    follow it; paths and roots are not included, so moving folders keeps the version), and the
    memberships in table order (the member scores follow it).
    """
    h = hashlib.sha256(FORMAT.encode())
    lemma = nodes["lemma"] if "lemma" in nodes else pd.Series("", index=nodes.index)
    h.update("".join(f"N\t{n}\t{lem}\t{c}\n" for n, lem, c in zip(
        nodes["node_id"], lemma, nodes["caption"], strict=True)).encode())
    h.update("".join(f"E\t{p}\t{c}\n" for p, c in sorted(zip(
        edges["parent"], edges["child"], strict=True))).encode())
    if len(images):
        h.update(("I\t" + images["digest"].astype(str) + "\n").str.cat().encode())
    if len(members):
        h.update(("M\t" + members["node_id"].astype(str) + "\t" +
                  members["image_id"].astype(str) + "\n").str.cat().encode())
    return h.hexdigest()[:16]


def report_of(version: str, t: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame],
              seconds: float,
              reports: list[SourceReport]) -> BuildReport:
    """The build report of tables ``t`` = (nodes, edges, images, members)."""
    nodes, edges, images, members = t
    return BuildReport(
        version=version, nodes=len(nodes), folder_nodes=int((nodes["n_own"] > 0).sum()),
        hypernym_nodes=int((nodes["n_own"] == 0).sum()), edges=len(edges),
        images=len(images), memberships=len(members), seconds=round(seconds, 3),
        sources=reports)


def build_manifest(report: BuildReport, parent: Parent, sources: Sequence[SampleDataset],
                   cfg: GraphConfig) -> dict[str, Any]:
    """The bundle's manifest: the parent's sources, descriptions and reports, then the new."""
    base = parent.manifest
    return {
        "format": FORMAT, "version": report.version,
        "config": base.get("config", cfg.recorded()),
        "sources": {**base.get("sources", {}), **{s.name: str(s.root) for s in sources}},
        "descriptions": {**base.get("descriptions", {}),
                         **{s.name: s.description for s in sources if s.description}},
        "counts": {k: v for k, v in report.to_dict().items() if k not in ("sources", "version")},
        "report": list(base.get("report", [])) + [asdict(r) for r in report.sources],
        "code_version": __version__, "wordnet": base.get("wordnet", "3.0"),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


@dataclass
class Grown:
    """A graph the pipeline made: the graph, its report, and how many folder nodes it drew."""

    graph: SemanticGraph
    report: BuildReport
    folders: int


def grow(parent: Parent, sources: Sequence[SampleDataset], cfg: GraphConfig, workers: int,
         progress: Callable[[int, int], None] | None,
         empty: Callable[[list[SourceReport]], GraphError], t0: float) -> Grown:
    """The one pipeline of a build (from an empty parent) and an extension: the steps of
    :mod:`mll_registry.graph.build`, then the content version and the manifest; ``empty(reports)``
    is raised when no new image is drawn."""
    wn = W.wn()
    col = B.collect(sources)
    checked: dict[tuple[int, str], str | None] = {}
    own_new = B.draw_own(col, parent, sources, cfg, workers, checked, progress)
    if not own_new:
        raise empty(col.reports)
    keep = set(col.folder_nodes) if parent.empty else set()
    node_set = B.expand(parent, own_new, cfg, wn, keep)
    members = B.assign_members(node_set, B.hypernym_edges(node_set, wn), parent, own_new, cfg)
    t = B.tables(members, B.hypernym_edges(set(members), wn), parent, own_new, sources, checked,
                 col.reports, cfg, wn)
    version = content_version(*t)
    report = report_of(version, t, time.perf_counter() - t0, col.reports)
    nodes, edges, images, members_df = t
    g = SemanticGraph(nodes, edges, images, members_df, build_manifest(report, parent, sources, cfg))
    return Grown(g, report, len(col.folder_nodes))


def build_graph(
    sources: Sequence[SampleDataset],
    config: GraphConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[SemanticGraph, BuildReport]:
    """Build a semantic graph from sample datasets: :func:`grow` from no parent.

    Args:
        sources: ImageFolder roots (sub-folders named by wnid or synset id).
        config: build parameters (recorded in the manifest).
        progress: called as ``progress(done_nodes, total_nodes)`` while images are drawn.

    Returns:
        The graph and a build report (skipped folders and unreadable images are counted there).

    Raises:
        GraphError: no sources, duplicate source names, or no usable image at all.
    """
    cfg = config or GraphConfig()
    if not sources:
        raise GraphError("no sample dataset given; pass at least one ImageFolder root")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise GraphError(f"sample dataset names must be unique, got {names}; use NAME=PATH")
    if cfg.cap < 1:
        raise GraphError(f"cap must be >= 1, got {cfg.cap}")

    def empty(reports: list[SourceReport]) -> GraphError:
        return GraphError(
            "the graph is empty: no readable image in any folder named by a wnid (n02084071) "
            f"or synset id (dog.n.01). Report: {[asdict(r) for r in reports]}")

    out = grow(Parent(), sources, cfg, cfg.workers, progress, empty, time.perf_counter())
    if progress:
        progress(out.folders, out.folders)
    return out.graph, out.report


def build_and_save(sources: Iterable[SampleDataset], out: str | os.PathLike[str],
                   config: GraphConfig | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   ) -> tuple[SemanticGraph, BuildReport]:
    """Build a graph and write its bundle to ``out`` atomically."""
    g, rep = build_graph(list(sources), config, progress)
    g.save(out)
    return g, rep
