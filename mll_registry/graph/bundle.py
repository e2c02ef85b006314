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
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mll_registry import __version__
from mll_registry.errors import MLLError
from mll_registry.fsutil import FileTooLarge, atomic_dir, read_json_object, read_regular
from mll_registry.graph import wordnet as W

FORMAT = "mll-graph/2"  # 2: lemmas and table order in the version
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_CAPTION = "{lemma} which is {definition}"
_TABLES = ("nodes", "edges", "images", "members")
_EXAMPLES = 5  # examples of skipped items kept in the report
#: the largest sample image read, in bytes (a 64 Mpx image as uncompressed RGBA); larger files are
#: skipped as unreadable when building and refused in a published graph's shards
MAX_IMAGE_BYTES = 256 * 1024 * 1024


class GraphError(MLLError, ValueError):
    """A graph could not be built or loaded; the message says why and how to fix it."""


@dataclass(frozen=True)
class SampleDataset:
    """An ImageFolder root whose sub-folders are wnids or synset ids.

    ``description`` names its domain in a few words ("colour emoji", "pencil sketch"): recorded
    in the graph, compared with a task's domain by domain-aware selection; "" = not described.
    """

    name: str
    root: Path
    description: str = ""

    @classmethod
    def parse(cls, spec: str) -> SampleDataset:
        """Parse ``NAME=PATH`` or ``PATH`` (name = folder name)."""
        name, sep, path = spec.partition("=")
        if not sep:
            path, name = spec, Path(spec).expanduser().resolve().name
        return cls(name=name, root=Path(path).expanduser().resolve())


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


@dataclass(frozen=True)
class GraphConfig:
    """How a graph is built. Every field is recorded in the bundle's manifest.

    Attributes:
        cap: maximum images per node (the paper: 75).
        seed: seed of the per-node draw.
        caption_template: node caption; fields ``{lemma} {definition} {synset} {wnid} {lemmas}``.
        expand_hypernyms: add the folder nodes' WordNet hypernyms as parent nodes.
        min_depth: hypernyms shallower than this WordNet depth are left out (``entity`` is 0,
            ``object`` 2, ``whole`` 3): they stand for everything and tell models apart poorly.
        fill_from_descendants: fill nodes with fewer than ``cap`` own images from descendants.
        workers: threads used to check and hash images (I/O and decoding release the GIL).
    """

    cap: int = 75
    seed: int = 0
    caption_template: str = DEFAULT_CAPTION
    expand_hypernyms: bool = True
    min_depth: int = 4
    fill_from_descendants: bool = True
    workers: int = 8

    def recorded(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("workers")  # does not change the result
        return d


@dataclass
class SourceReport:
    """What was found and skipped in one sample dataset."""

    name: str
    root: str
    folders: int = 0
    unknown_folders: int = 0
    unknown_examples: list[str] = field(default_factory=list)
    files: int = 0
    non_image_files: int = 0
    candidates: int = 0
    unreadable: int = 0
    unreadable_examples: list[str] = field(default_factory=list)
    used: int = 0


@dataclass
class BuildReport:
    """Summary of a build: counts, skips and timing."""

    version: str
    nodes: int
    folder_nodes: int
    hypernym_nodes: int
    edges: int
    images: int
    memberships: int
    seconds: float
    sources: list[SourceReport]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _seed_for(seed: int, key: str) -> int:
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little")


def read_sample(path: Path) -> bytes:
    """A sample image's bytes: a regular file (or a link to one) of at most ``MAX_IMAGE_BYTES``.

    Raises:
        GraphError: a FIFO, device or other non-regular file (reading it would hang or never
            end).
        FileTooLarge: larger than ``MAX_IMAGE_BYTES``.
        OSError: it cannot be read.
    """
    try:
        return read_regular(path, MAX_IMAGE_BYTES)
    except FileTooLarge:
        raise
    except ValueError as exc:
        raise GraphError(f"sample image {exc}; sample folders take regular image files only: "
                         "remove or replace it") from exc


def _check_image(path: Path) -> str | None:
    """Decode ``path`` fully (so truncated files fail) and return its content digest, or None.

    Raises:
        GraphError: ``path`` is no regular file (a FIFO, a link to a device).
    """
    from PIL import Image

    from mll_registry.errors import MAX_IMAGE_PIXELS

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # a bomb raises, and is skipped as unreadable
    try:
        data = read_sample(path)
    except (FileTooLarge, OSError):  # skipped as unreadable, like a decompression bomb
        return None
    try:
        import io

        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG":
                im.draft("RGB", (64, 64))  # a reduced decode is enough to prove it decodes
            im.load()
            if im.width < 1 or im.height < 1:
                return None
    except Exception:
        return None
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _scan(ds: SampleDataset, exts: tuple[str, ...], rep: SourceReport,
          resolve: Callable[[str], str | None]) -> dict[str, list[str]]:
    """List ``ds``: node_id -> sorted relative image paths. Unknown folders are counted."""
    out: dict[str, list[str]] = defaultdict(list)
    if not ds.root.is_dir():
        raise GraphError(f"sample dataset {ds.name!r}: {ds.root} is not a directory")
    with os.scandir(ds.root) as it:
        folders = sorted((e.name for e in it if e.is_dir()), key=str)
    for name in folders:
        rep.folders += 1
        node = resolve(name)
        if node is None:
            rep.unknown_folders += 1
            if len(rep.unknown_examples) < _EXAMPLES:
                rep.unknown_examples.append(name)
            continue
        files: list[str] = []
        for dirpath, dirnames, filenames in os.walk(ds.root / name):
            dirnames.sort()
            rel = os.path.relpath(dirpath, ds.root)
            for fn in sorted(filenames):
                rep.files += 1
                if fn.lower().endswith(exts) and not fn.startswith("."):
                    files.append(os.path.join(rel, fn))
                else:
                    rep.non_image_files += 1
        rep.candidates += len(files)
        out[node].extend(files)
    return out


def draw_images(node: str, cands: list[tuple[int, str]], want: int, seed: int,
                sources: Sequence[SampleDataset], checked: dict[tuple[int, str], str | None],
                reports: list[SourceReport], pool: ThreadPoolExecutor) -> list[tuple[int, str]]:
    """Up to ``want`` readable images of ``node`` from ``cands`` (source index, relpath), by a
    draw seeded per node; only drawn images are opened (``checked`` caches their digests,
    unreadable ones are counted in ``reports``)."""
    perm = np.random.default_rng(_seed_for(seed, node)).permutation(len(cands))
    chosen: list[tuple[int, str]] = []
    pos = 0
    while len(chosen) < want and pos < len(perm):
        batch = [cands[i] for i in perm[pos:pos + (want - len(chosen))]]
        pos += len(batch)
        todo = [b for b in batch if b not in checked]
        paths = [sources[si].root / rel for si, rel in todo]
        for key, dig in zip(todo, pool.map(_check_image, paths), strict=True):
            checked[key] = dig
            if dig is None:
                rep = reports[key[0]]
                rep.unreadable += 1
                if len(rep.unreadable_examples) < _EXAMPLES:
                    rep.unreadable_examples.append(key[1])
        chosen.extend(b for b in batch if checked[b] is not None)
    return chosen


def descendants(children: dict[str, list[str]], node: str) -> list[str]:
    """Every node below ``node`` (``children``: parent -> child nodes), sorted."""
    seen: set[str] = set()
    stack = list(children.get(node, []))
    while stack:
        c = stack.pop()
        if c not in seen:
            seen.add(c)
            stack.extend(children.get(c, []))
    return sorted(seen)


def fill(keys: list[Any], cap: int, queues: list[list[Any]], seed: int, node: str) -> None:
    """Fill ``keys`` up to ``cap`` from the descendants' image ``queues``, round-robin over
    queues in a seeded order, each queue shuffled (seed per node); keys already in are skipped."""
    rng = np.random.default_rng(_seed_for(seed, "fill:" + node))
    for q in queues:
        rng.shuffle(q)  # type: ignore[arg-type]
    order = rng.permutation(len(queues)).tolist()
    taken = set(keys)
    while len(keys) < cap and order:
        nxt = []
        for qi in order:
            q = queues[qi]
            while q and q[-1] in taken:
                q.pop()
            if q and len(keys) < cap:
                k = q.pop()
                taken.add(k)
                keys.append(k)
            if q:
                nxt.append(qi)
        order = nxt


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


def _caption(s: Any, template: str) -> str:
    return template.format(
        lemma=W.lemma(s), definition=s.definition(), synset=s.name(), wnid=W.wnid(s),
        lemmas=", ".join(n.replace("_", " ") for n in s.lemma_names()),
    )


def build_graph(
    sources: Sequence[SampleDataset],
    config: GraphConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[SemanticGraph, BuildReport]:
    """Build a semantic graph from sample datasets.

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
    t0 = time.perf_counter()
    wn = W.wn()

    resolved: dict[str, str | None] = {}

    def resolve(folder: str) -> str | None:
        if folder not in resolved:
            try:
                resolved[folder] = W.synset(folder).name() if W.is_node_name(folder) else None
            except KeyError:
                resolved[folder] = None
        return resolved[folder]

    reports = [SourceReport(name=s.name, root=str(s.root)) for s in sources]
    # node -> [(source index, relpath)], in a fixed order: by source, then path
    candidates: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for si, (ds, rep) in enumerate(zip(sources, reports, strict=True)):
        for node, files in _scan(ds, IMAGE_EXTENSIONS, rep, resolve).items():
            candidates[node].extend((si, f) for f in files)

    # -- nodes and edges ------------------------------------------------------------------------
    folder_nodes = sorted(n for n, c in candidates.items() if c)
    node_set = set(folder_nodes)
    if cfg.expand_hypernyms:
        for n in folder_nodes:
            for anc in wn.synset(n).closure(lambda s: s.hypernyms() + s.instance_hypernyms()):
                if anc.min_depth() >= cfg.min_depth:
                    node_set.add(anc.name())
    edges = sorted({(h.name(), n) for n in node_set
                    for h in wn.synset(n).hypernyms() + wn.synset(n).instance_hypernyms()
                    if h.name() in node_set})
    children: dict[str, list[str]] = defaultdict(list)
    for p, c in edges:
        children[p].append(c)

    # -- own images: seeded draw, check only what is drawn ----------------------------------------
    checked: dict[tuple[int, str], str | None] = {}
    own: dict[str, list[tuple[int, str]]] = {}
    total = len(folder_nodes)
    with ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
        for done, n in enumerate(folder_nodes, 1):
            own[n] = draw_images(n, candidates[n], cfg.cap, cfg.seed, sources, checked,
                                 reports, pool)
            if progress:
                progress(done, total)

    own = {n: c for n, c in own.items() if c}
    if not own:
        raise GraphError(
            "the graph is empty: no readable image in any folder named by a wnid (n02084071) "
            f"or synset id (dog.n.01). Report: {[asdict(r) for r in reports]}")
    if cfg.expand_hypernyms:  # drop ancestors of folders that turned out to be unreadable
        keep = set(own)
        for n in own:
            keep.update(a.name() for a in wn.synset(n).closure(
                lambda s: s.hypernyms() + s.instance_hypernyms()) if a.name() in node_set)
        node_set = keep
    else:
        node_set = set(own)
    edges = [(p, c) for p, c in edges if p in node_set and c in node_set]
    children = defaultdict(list)
    for p, c in edges:
        children[p].append(c)

    # -- fill from descendants: round-robin over shuffled descendant nodes ------------------------
    members: dict[str, list[tuple[tuple[int, str], bool]]] = {}
    for n in sorted(node_set):
        mine = own.get(n, [])
        picked = [(k, True) for k in mine]
        if cfg.fill_from_descendants and len(picked) < cfg.cap:
            keys = list(mine)
            fill(keys, cfg.cap, [list(own[d]) for d in descendants(children, n) if d in own],
                 cfg.seed, n)
            picked += [(k, False) for k in keys[len(mine):]]
        if picked:
            members[n] = picked

    node_set = set(members)
    edges = [(p, c) for p, c in edges if p in node_set and c in node_set]

    # -- tables ---------------------------------------------------------------------------------
    image_keys = sorted({k for picks in members.values() for k, _ in picks})
    image_id = {k: i for i, k in enumerate(image_keys)}
    origin: dict[tuple[int, str], str] = {k: n for n, ks in own.items() for k in ks}
    images = pd.DataFrame({
        "image_id": np.arange(len(image_keys), dtype=np.int64),
        "source": [sources[si].name for si, _ in image_keys],
        "relpath": [rel for _, rel in image_keys],
        "node_id": [origin[k] for k in image_keys],
        "digest": [checked[k] for k in image_keys],
    })
    for si, rep in enumerate(reports):
        rep.used = sum(1 for s, _ in image_keys if s == si)
    node_rows = []
    for n in sorted(node_set, key=lambda x: W.wnid(wn.synset(x))):
        s = wn.synset(n)
        node_rows.append({
            "node_id": n, "wnid": W.wnid(s), "lemma": W.lemma(s), "definition": s.definition(),
            "caption": _caption(s, cfg.caption_template), "lexname": s.lexname(),
            "depth": s.min_depth(), "n_own": len(own.get(n, [])), "n_images": len(members[n]),
        })
    nodes = pd.DataFrame(node_rows)
    mem_rows = [(n, image_id[k], o) for n in nodes["node_id"] for k, o in members[n]]
    members_df = pd.DataFrame(mem_rows, columns=["node_id", "image_id", "own"]).astype(
        {"image_id": np.int64, "own": bool})
    edges_df = pd.DataFrame(sorted(edges), columns=["parent", "child"], dtype=object)
    if edges_df.empty:
        edges_df = pd.DataFrame({"parent": pd.Series(dtype=str), "child": pd.Series(dtype=str)})
    version = content_version(nodes, edges_df, images, members_df)
    seconds = time.perf_counter() - t0
    report = BuildReport(
        version=version, nodes=len(nodes), folder_nodes=int((nodes["n_own"] > 0).sum()),
        hypernym_nodes=int((nodes["n_own"] == 0).sum()), edges=len(edges_df),
        images=len(images), memberships=len(members_df), seconds=round(seconds, 3),
        sources=reports,
    )
    manifest = {
        "format": FORMAT,
        "version": version,
        "config": cfg.recorded(),
        "sources": {s.name: str(s.root) for s in sources},
        "descriptions": {s.name: s.description for s in sources if s.description},
        "counts": {k: v for k, v in report.to_dict().items() if k not in ("sources", "version")},
        "report": [asdict(r) for r in reports],
        "code_version": __version__,
        "wordnet": "3.0",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if progress:
        progress(total, total)
    return SemanticGraph(nodes, edges_df, images, members_df, manifest), report


def build_and_save(sources: Iterable[SampleDataset], out: str | os.PathLike[str],
                   config: GraphConfig | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   ) -> tuple[SemanticGraph, BuildReport]:
    """Build a graph and write its bundle to ``out`` atomically."""
    g, rep = build_graph(list(sources), config, progress)
    g.save(out)
    return g, rep
