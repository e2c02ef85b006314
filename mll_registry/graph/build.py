"""One pipeline that builds a graph and grows a child graph: a build is a growth from nothing.

The steps (docs/architecture.md "graph lineage"), each a small function below:

1. :func:`collect`: list the sample sources (folder names resolved to WordNet nodes);
2. :func:`draw_own`: each folder node's own images, by the seeded draw, into the room its parent
   members leave under ``cap`` (a build has no parent: room = ``cap``);
3. :func:`expand`: the new folder nodes with their WordNet hypernyms (the ``min_depth`` rule);
4. :func:`assign_members`: parent members first, then new own images, then the fill from
   descendants (a parent node fills from new images only, a new node from all);
5. :func:`tables`: the four tables, new images after the parent's.

:func:`mll_registry.graph.bundle.grow` runs them, then hashes the tables (the content version)
and writes the manifest; ``bundle.build_graph`` grows from no parent, ``lineage.extend_graph``
from its parent and records the lineage. The types of a build (:class:`SampleDataset`,
:class:`GraphConfig`, the reports) are here, below the bundle, and named by it too.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mll_registry.errors import MLLError
from mll_registry.fsutil import FileTooLarge, read_regular
from mll_registry.graph import wordnet as W

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_CAPTION = "{lemma} which is {definition}"
EXAMPLES = 5  # examples of skipped items kept in the report
#: the largest sample image read, in bytes (a 64 Mpx image as uncompressed RGBA); larger files are
#: skipped as unreadable when building and refused in a published graph's shards
MAX_IMAGE_BYTES = 256 * 1024 * 1024
#: an image of the parent graph (``("base", image_id)``) or of a new source (source index, relpath)
Key = tuple[Any, Any]
Progress = Callable[[int, int], None]


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


def _seed_for(seed: int, key: str) -> int:
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little")


def _check_image(path: Path) -> str | None:
    """Decode ``path`` fully (so truncated files fail) and return its content digest, or None.

    Raises:
        GraphError: ``path`` is no regular file (a FIFO, a link to a device).
    """
    from PIL import Image

    from mll_registry.errors import IMAGE_FORMATS, MAX_IMAGE_PIXELS

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # a bomb raises, and is skipped as unreadable
    try:
        data = read_sample(path)
    except (FileTooLarge, OSError):  # skipped as unreadable, like a decompression bomb
        return None
    try:
        import io

        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
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
            if len(rep.unknown_examples) < EXAMPLES:
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
                if len(rep.unreadable_examples) < EXAMPLES:
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


def _caption(s: Any, template: str) -> str:
    return template.format(
        lemma=W.lemma(s), definition=s.definition(), synset=s.name(), wnid=W.wnid(s),
        lemmas=", ".join(n.replace("_", " ") for n in s.lemma_names()),
    )



def _hypernyms(s: Any) -> list[Any]:
    return s.hypernyms() + s.instance_hypernyms()


@dataclass
class Parent:
    """What a growth keeps of the parent graph (nothing, for a build): its node and image
    tables and manifest, each node's members in order and own images."""

    nodes: set[str] = field(default_factory=set)
    members: dict[str, list[tuple[Key, bool]]] = field(default_factory=dict)
    own: dict[str, list[Key]] = field(default_factory=dict)
    node_table: pd.DataFrame | None = None
    images: pd.DataFrame | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """No parent: a build."""
        return self.node_table is None

    @classmethod
    def of(cls, nodes: pd.DataFrame, images: pd.DataFrame, members: pd.DataFrame,
           manifest: dict[str, Any]) -> Parent:
        """The parent state of a graph's tables: its image ids as ``("base", id)`` keys."""
        picks: dict[str, list[tuple[Key, bool]]] = defaultdict(list)
        for n, i, o in zip(members["node_id"], members["image_id"].to_numpy(),
                           members["own"].to_numpy(), strict=True):
            picks[n].append((("base", int(i)), bool(o)))
        own = {n: [k for k, o in p if o] for n, p in picks.items()}
        return cls(set(nodes["node_id"]), dict(picks), own, nodes, images, manifest)


@dataclass
class Collected:
    """The listing of the new sources: per node its candidate images, and the reports."""

    candidates: dict[str, list[tuple[int, str]]]
    reports: list[SourceReport]

    @property
    def folder_nodes(self) -> list[str]:
        """Nodes named by a folder holding at least one candidate image, sorted."""
        return sorted(n for n, c in self.candidates.items() if c)


def collect(sources: Sequence[SampleDataset]) -> Collected:
    """List every source: node -> [(source index, relpath)] by source, then path."""
    resolved: dict[str, str | None] = {}

    def resolve(folder: str) -> str | None:
        if folder not in resolved:
            try:
                resolved[folder] = W.synset(folder).name() if W.is_node_name(folder) else None
            except KeyError:
                resolved[folder] = None
        return resolved[folder]

    reports = [SourceReport(name=s.name, root=str(s.root)) for s in sources]
    candidates: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for si, (ds, rep) in enumerate(zip(sources, reports, strict=True)):
        for node, files in _scan(ds, IMAGE_EXTENSIONS, rep, resolve).items():
            candidates[node].extend((si, f) for f in files)
    return Collected(candidates, reports)


def draw_own(col: Collected, parent: Parent, sources: Sequence[SampleDataset], cfg: GraphConfig,
             workers: int, checked: dict[tuple[int, str], str | None],
             progress: Progress | None) -> dict[str, list[Key]]:
    """New own images per folder node (non-empty lists only), into the room under ``cap``;
    ``checked`` receives the digest of every image opened."""
    own: dict[str, list[Key]] = {}
    folders = col.folder_nodes
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, n in enumerate(folders, 1):
            room = cfg.cap - len(parent.members.get(n, []))
            chosen = draw_images(n, col.candidates[n], room, cfg.seed, sources, checked,
                                 col.reports, pool)
            if chosen:
                own[n] = list(chosen)
            if progress:
                progress(done, len(folders))
    return own


def expand(parent: Parent, own_new: dict[str, list[Key]], cfg: GraphConfig, wn: Any,
           keep_any_depth: set[str]) -> set[str]:
    """The parent's nodes, the new folder nodes and (``expand_hypernyms``) their hypernyms of
    WordNet depth >= ``min_depth``; an ancestor in ``keep_any_depth`` is kept at any depth (a
    build keeps a folder above a drawn one even if none of its own images could be read)."""
    new_folder = {n for n in own_new if n not in parent.nodes}
    node_set = parent.nodes | new_folder
    if cfg.expand_hypernyms:
        for n in sorted(new_folder):
            for anc in wn.synset(n).closure(_hypernyms):
                if anc.min_depth() >= cfg.min_depth or anc.name() in keep_any_depth:
                    node_set.add(anc.name())
    return node_set


def hypernym_edges(node_set: set[str], wn: Any) -> list[tuple[str, str]]:
    """(hypernym, hyponym) pairs with both ends in ``node_set``, sorted."""
    return sorted({(h.name(), n) for n in node_set for h in _hypernyms(wn.synset(n))
                   if h.name() in node_set})


def assign_members(node_set: set[str], edges: list[tuple[str, str]], parent: Parent,
                   own_new: dict[str, list[Key]], cfg: GraphConfig,
                   ) -> dict[str, list[tuple[Key, bool]]]:
    """Each node's members, (key, own) in order: the parent's, the new own images, then the
    fill from descendants; nodes left with no member are absent."""
    children: dict[str, list[str]] = defaultdict(list)
    for p, c in edges:
        children[p].append(c)
    own_all: dict[str, list[Key]] = defaultdict(list)
    for n, ks in parent.own.items():
        own_all[n].extend(ks)
    for n, ks in own_new.items():
        own_all[n].extend(ks)
    members: dict[str, list[tuple[Key, bool]]] = {}
    for n in sorted(node_set):
        picked = list(parent.members.get(n, [])) + [(k, True) for k in own_new.get(n, [])]
        if cfg.fill_from_descendants and len(picked) < cfg.cap:
            pool_of = own_all if n not in parent.nodes else own_new  # a parent node: new only
            queues = [list(pool_of[d]) for d in descendants(children, n) if pool_of.get(d)]
            keys = [k for k, _ in picked]
            fill(keys, cfg.cap, queues, cfg.seed, n)
            picked += [(k, False) for k in keys[len(picked):]]
        if picked:
            members[n] = picked
    return members


def node_row(n: str, wn: Any, cfg: GraphConfig) -> dict[str, Any]:
    """A new node's row of the node table (without its counts)."""
    s = wn.synset(n)
    return {"node_id": n, "wnid": W.wnid(s), "lemma": W.lemma(s), "definition": s.definition(),
            "caption": _caption(s, cfg.caption_template), "lexname": s.lexname(),
            "depth": s.min_depth()}


def tables(members: dict[str, list[tuple[Key, bool]]], edges: list[tuple[str, str]],
           parent: Parent, own_new: dict[str, list[Key]], sources: Sequence[SampleDataset],
           checked: dict[tuple[int, str], str | None], reports: list[SourceReport], cfg: GraphConfig,
           wn: Any) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(nodes, edges, images, members): nodes in wnid order, new images (sorted by source and
    path) after the parent's; sets each report's ``used``."""
    node_set = set(members)
    edges = [(p, c) for p, c in edges if p in node_set and c in node_set]
    nb = 0 if parent.images is None else len(parent.images)
    new_keys = sorted({k for picks in members.values() for k, _ in picks if k[0] != "base"})
    image_id: dict[Key, int] = {k: nb + i for i, k in enumerate(new_keys)}
    origin = {k: n for n, ks in own_new.items() for k in ks}
    new_images = pd.DataFrame({
        "image_id": np.arange(nb, nb + len(new_keys), dtype=np.int64),
        "source": [sources[si].name for si, _ in new_keys],
        "relpath": [rel for _, rel in new_keys],
        "node_id": [origin[k] for k in new_keys],
        "digest": [checked[k] for k in new_keys],
    })
    images = new_images if parent.images is None else pd.concat([parent.images, new_images],
                                                                ignore_index=True)
    for si, rep in enumerate(reports):
        rep.used = sum(1 for s, _ in new_keys if s == si)
    base = parent.node_table
    base_rows = None if base is None else base.set_index("node_id")
    node_rows = []
    for n in sorted(node_set, key=lambda x: W.wnid(wn.synset(x))):
        if base_rows is not None and n in base_rows.index:
            row = {"node_id": n, **base_rows.loc[n].to_dict()}
        else:
            row = node_row(n, wn, cfg)
        node_rows.append({**row, "n_own": sum(1 for _, o in members[n] if o),
                          "n_images": len(members[n])})
    nodes = pd.DataFrame(node_rows)
    if base is not None:
        nodes = nodes[list(base.columns)].astype(base.dtypes.to_dict())

    def iid(k: Key) -> int:
        return int(k[1]) if k[0] == "base" else image_id[k]

    mem_rows = [(n, iid(k), o) for n in nodes["node_id"] for k, o in members[n]]
    members_df = pd.DataFrame(mem_rows, columns=["node_id", "image_id", "own"]).astype(
        {"image_id": np.int64, "own": bool})
    edges_df = pd.DataFrame(sorted(edges), columns=["parent", "child"], dtype=object)
    if edges_df.empty and base is None:
        edges_df = pd.DataFrame({"parent": pd.Series(dtype=str), "child": pd.Series(dtype=str)})
    return nodes, edges_df, images, members_df
