"""Graph lineage: grow a graph version into a child version, and say what changed between two.

The paper's graph is growable: "more semantic nodes can be added continually". A child graph is
its parent plus new sample sources (docs/architecture.md "graph lineage"):

* every parent node keeps its members, in order, and every parent image keeps its row, so the
  parent's labels and stored embeddings stay reusable (:mod:`mll_registry.labels.embeddings`);
* folders of the new sources that name a node the parent lacks become new nodes, with their
  WordNet hypernyms (the parent's ``min_depth`` rule) as the build does, drawn with the same
  seeded draw (:func:`mll_registry.graph.bundle.build_graph`);
* a node with room under ``cap`` takes new own images from the new sources, then fills from its
  descendants' *new* images (a new hypernym node fills from all its descendants' images);
* nodes are in wnid order as in a build; new images follow the parent's images.

Identity is content based (node ids are synset names, images are their content digests), and
the child's version is the content hash of its tables (:func:`mll_registry.graph.bundle.content_version`),
so the same parent and the same new folders give the same version. The manifest records the
parent version and the delta. A child is not the graph a fresh build of all sources would give
(the parent's draws are kept); :func:`diff_graphs` compares any two versions.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mll_registry import __version__
from mll_registry.graph import wordnet as W
from mll_registry.graph.bundle import (
    FORMAT,
    IMAGE_EXTENSIONS,
    BuildReport,
    GraphConfig,
    GraphError,
    SampleDataset,
    SemanticGraph,
    SourceReport,
    _caption,
    _scan,
    content_version,
    descendants,
    draw_images,
    fill,
)

_EXAMPLES = 10  # node ids listed in a delta's short form


@dataclass
class GraphDelta:
    """What differs from graph ``parent`` to graph ``child`` (nodes by id, images by content)."""

    parent: str
    child: str
    added_nodes: list[str] = field(default_factory=list)
    removed_nodes: list[str] = field(default_factory=list)
    changed_nodes: list[str] = field(default_factory=list)  # in both, other member images
    added_images: int = 0
    removed_images: int = 0
    added_sources: list[str] = field(default_factory=list)
    removed_sources: list[str] = field(default_factory=list)

    def to_dict(self, full: bool = True) -> dict[str, Any]:
        """All fields; with ``full=False`` node lists are cut to a few examples plus counts."""
        d = asdict(self)
        if not full:
            for k in ("added_nodes", "removed_nodes", "changed_nodes"):
                d[f"n_{k}"] = len(d[k])
                d[k] = d[k][:_EXAMPLES]
        return d

    def headline(self) -> str:
        """``+60 nodes, +960 images, 12 nodes changed`` (for tags and logs)."""
        parts = [f"+{len(self.added_nodes)} nodes", f"+{self.added_images} images"]
        if self.removed_nodes or self.removed_images:
            parts += [f"-{len(self.removed_nodes)} nodes", f"-{self.removed_images} images"]
        if self.changed_nodes:
            parts.append(f"{len(self.changed_nodes)} nodes changed")
        return ", ".join(parts)


def _member_digests(g: SemanticGraph) -> dict[str, frozenset[str]]:
    dig = g.images["digest"].to_numpy()
    out: dict[str, set[str]] = defaultdict(set)
    for n, i in zip(g.members["node_id"], g.members["image_id"].to_numpy(), strict=True):
        out[n].add(dig[i])
    return {n: frozenset(s) for n, s in out.items()}


def diff_graphs(a: SemanticGraph, b: SemanticGraph) -> GraphDelta:
    """The delta from ``a`` to ``b``: nodes by id, images by content digest, and the nodes in
    both whose member images differ."""
    na, nb = set(a.node_ids), set(b.node_ids)
    da, db = set(a.images["digest"]), set(b.images["digest"])
    ma, mb = _member_digests(a), _member_digests(b)
    sa, sb = set(a.manifest.get("sources", {})), set(b.manifest.get("sources", {}))
    return GraphDelta(
        parent=a.version, child=b.version,
        added_nodes=sorted(nb - na), removed_nodes=sorted(na - nb),
        changed_nodes=sorted(n for n in na & nb if ma.get(n) != mb.get(n)),
        added_images=len(db - da), removed_images=len(da - db),
        added_sources=sorted(sb - sa), removed_sources=sorted(sa - sb))


def extend_graph(base: SemanticGraph, sources: Sequence[SampleDataset],
                 progress: Callable[[int, int], None] | None = None,
                 workers: int = 8) -> tuple[SemanticGraph, BuildReport]:
    """A child of ``base`` with the new sample ``sources`` (module docstring for the rules).

    Raises:
        GraphError: no source, a name the parent already uses, or nothing new to add.
    """
    t0 = time.perf_counter()
    if not sources:
        raise GraphError("no sample source to add; pass --source NAME=PATH")
    names = [s.name for s in sources]
    clash = sorted(set(names) & set(base.manifest.get("sources", {})))
    if clash or len(set(names)) != len(names):
        raise GraphError(f"source names must be new and unique: {clash or names} already used; "
                         "name them NAME=PATH")
    cfg = GraphConfig(**{k: v for k, v in base.manifest["config"].items()
                         if k in GraphConfig.__dataclass_fields__})
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
    candidates: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for si, (ds, rep) in enumerate(zip(sources, reports, strict=True)):
        for node, files in _scan(ds, IMAGE_EXTENSIONS, rep, resolve).items():
            candidates[node].extend((si, f) for f in files)

    # parent state: members (image ids, in order) and own images per node
    base_nodes = set(base.node_ids)
    base_members: dict[str, list[tuple[Any, bool]]] = defaultdict(list)
    for n, i, o in zip(base.members["node_id"], base.members["image_id"].to_numpy(),
                       base.members["own"].to_numpy(), strict=True):
        base_members[n].append((("base", int(i)), bool(o)))
    own_all: dict[str, list[Any]] = defaultdict(list)
    for n, picks in base_members.items():
        own_all[n].extend(k for k, o in picks if o)

    # -- new own images: the build's seeded draw, into the room left under cap ------------------
    checked: dict[tuple[int, str], str | None] = {}
    own_new: dict[str, list[tuple[int, str]]] = {}
    folder_nodes = sorted(n for n, c in candidates.items() if c)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, n in enumerate(folder_nodes, 1):
            room = cfg.cap - len(base_members.get(n, []))
            chosen = draw_images(n, candidates[n], room, cfg.seed, sources, checked, reports,
                                 pool)
            if chosen:
                own_new[n] = chosen
                own_all[n].extend(chosen)
            if progress:
                progress(done, len(folder_nodes))

    new_folder = {n for n in own_new if n not in base_nodes}
    node_set = base_nodes | new_folder
    if cfg.expand_hypernyms:
        for n in sorted(new_folder):
            for anc in wn.synset(n).closure(lambda s: s.hypernyms() + s.instance_hypernyms()):
                if anc.min_depth() >= cfg.min_depth:
                    node_set.add(anc.name())
    if node_set == base_nodes and not own_new:
        raise GraphError("the new sources add nothing: no readable image in a folder named by "
                         "a wnid or synset id, and no node with room under the cap "
                         f"({cfg.cap}). Report: {[asdict(r) for r in reports]}")
    edges = sorted({(h.name(), n) for n in node_set
                    for h in wn.synset(n).hypernyms() + wn.synset(n).instance_hypernyms()
                    if h.name() in node_set})
    children: dict[str, list[str]] = defaultdict(list)
    for p, c in edges:
        children[p].append(c)

    # -- members: parent's first, then new own images, then the fill ----------------------------
    members: dict[str, list[tuple[Any, bool]]] = {}
    for n in sorted(node_set):
        picked = list(base_members.get(n, [])) + [(k, True) for k in own_new.get(n, [])]
        if cfg.fill_from_descendants and len(picked) < cfg.cap:
            is_new = n not in base_nodes
            pool_of = own_all if is_new else own_new  # a parent node fills from new images only
            queues = [list(pool_of[d]) for d in descendants(children, n) if pool_of.get(d)]
            keys = [k for k, _ in picked]
            fill(keys, cfg.cap, queues, cfg.seed, n)
            picked += [(k, False) for k in keys[len(picked):]]
        if picked:
            members[n] = picked
    node_set = set(members)
    edges = [(p, c) for p, c in edges if p in node_set and c in node_set]

    # -- tables ---------------------------------------------------------------------------------
    nb = len(base.images)
    new_keys = sorted({k for picks in members.values() for k, _ in picks if k[0] != "base"})
    image_id: dict[Any, int] = {k: nb + i for i, k in enumerate(new_keys)}
    origin = {k: n for n, ks in own_new.items() for k in ks}
    images = pd.concat([base.images, pd.DataFrame({
        "image_id": np.arange(nb, nb + len(new_keys), dtype=np.int64),
        "source": [sources[si].name for si, _ in new_keys],
        "relpath": [rel for _, rel in new_keys],
        "node_id": [origin[k] for k in new_keys],
        "digest": [checked[k] for k in new_keys],
    })], ignore_index=True)
    for si, rep in enumerate(reports):
        rep.used = sum(1 for s, _ in new_keys if s == si)
    base_rows = base.nodes.set_index("node_id")
    node_rows = []
    for n in sorted(node_set, key=lambda x: W.wnid(wn.synset(x))):
        n_own = sum(1 for _, o in members[n] if o)
        if n in base_rows.index:
            row = {"node_id": n, **base_rows.loc[n].to_dict()}
        else:
            s = wn.synset(n)
            row = {"node_id": n, "wnid": W.wnid(s), "lemma": W.lemma(s),
                   "definition": s.definition(), "caption": _caption(s, cfg.caption_template),
                   "lexname": s.lexname(), "depth": s.min_depth()}
        node_rows.append({**row, "n_own": n_own, "n_images": len(members[n])})
    nodes = pd.DataFrame(node_rows)[list(base.nodes.columns)].astype(base.nodes.dtypes.to_dict())

    def iid(k: Any) -> int:
        return int(k[1]) if k[0] == "base" else image_id[k]

    mem_rows = [(n, iid(k), o) for n in nodes["node_id"] for k, o in members[n]]
    members_df = pd.DataFrame(mem_rows, columns=["node_id", "image_id", "own"]).astype(
        {"image_id": np.int64, "own": bool})
    edges_df = pd.DataFrame(sorted(edges), columns=["parent", "child"], dtype=object)
    version = content_version(nodes, edges_df, images, members_df)
    report = BuildReport(
        version=version, nodes=len(nodes), folder_nodes=int((nodes["n_own"] > 0).sum()),
        hypernym_nodes=int((nodes["n_own"] == 0).sum()), edges=len(edges_df),
        images=len(images), memberships=len(members_df),
        seconds=round(time.perf_counter() - t0, 3), sources=reports)
    child_sources = {**base.manifest["sources"], **{s.name: str(s.root) for s in sources}}
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": version, "config": base.manifest["config"],
        "sources": child_sources,
        "descriptions": {**base.manifest.get("descriptions", {}),
                         **{s.name: s.description for s in sources if s.description}},
        "counts": {k: v for k, v in report.to_dict().items() if k not in ("sources", "version")},
        "report": list(base.manifest.get("report", [])) + [asdict(r) for r in reports],
        "code_version": __version__, "wordnet": base.manifest.get("wordnet", "3.0"),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    child = SemanticGraph(nodes, edges_df, images, members_df, manifest)
    delta = diff_graphs(base, child)
    manifest["lineage"] = {"parent": base.version, "delta": delta.to_dict(full=True),
                           "ancestors": [base.version,
                                         *base.manifest.get("lineage", {}).get("ancestors", [])]}
    return child, report


def extend_and_save(base: SemanticGraph, sources: Sequence[SampleDataset],
                    out: str | os.PathLike[str],
                    progress: Callable[[int, int], None] | None = None,
                    ) -> tuple[SemanticGraph, BuildReport, GraphDelta]:
    """Extend ``base`` and write the child bundle to ``out`` atomically."""
    child, report = extend_graph(base, sources, progress)
    child.save(Path(out))
    return child, report, diff_graphs(base, child)

