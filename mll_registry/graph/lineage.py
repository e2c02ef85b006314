"""Graph lineage: grow a graph version into a child version, and say what changed between two.

The paper's graph is growable: "more semantic nodes can be added continually". A child graph is
its parent plus new sample sources (docs/architecture.md "graph lineage"):

* every parent node keeps its members, in order, and every parent image keeps its row, so the
  parent's labels and stored embeddings stay reusable (:mod:`mll_registry.labels.embeddings`);
* folders of the new sources that name a node the parent lacks become new nodes, with their
  WordNet hypernyms (the parent's ``min_depth`` rule) as the build does, drawn with the same
  seeded draw, by the build's own pipeline (:mod:`mll_registry.graph.build`);
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mll_registry.graph.build import Parent
from mll_registry.graph.bundle import (
    BuildReport,
    GraphConfig,
    GraphError,
    SampleDataset,
    SemanticGraph,
    SourceReport,
    grow,
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
    """A child of ``base`` with the new sample ``sources`` (module docstring for the rules): the
    build's pipeline (:func:`mll_registry.graph.bundle.grow`) from the parent, then its lineage.

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

    def empty(reports: list[SourceReport]) -> GraphError:
        return GraphError("the new sources add nothing: no readable image in a folder named by "
                          "a wnid or synset id, and no node with room under the cap "
                          f"({cfg.cap}). Report: {[asdict(r) for r in reports]}")

    parent = Parent.of(base.nodes, base.images, base.members, base.manifest)
    child = grow(parent, sources, cfg, workers, progress, empty, t0)
    record_lineage(base, child.graph)
    return child.graph, child.report


def record_lineage(base: SemanticGraph, child: SemanticGraph) -> None:
    """Write into ``child``'s manifest its parent, the delta and the ancestors' versions."""
    delta = diff_graphs(base, child)
    child.manifest["lineage"] = {"parent": base.version, "delta": delta.to_dict(full=True),
                                 "ancestors": [base.version,
                                               *base.manifest.get("lineage", {}).get("ancestors",
                                                                                     [])]}


def extend_and_save(base: SemanticGraph, sources: Sequence[SampleDataset],
                    out: str | os.PathLike[str],
                    progress: Callable[[int, int], None] | None = None,
                    ) -> tuple[SemanticGraph, BuildReport, GraphDelta]:
    """Extend ``base`` and write the child bundle to ``out`` atomically."""
    child, report = extend_graph(base, sources, progress)
    child.save(Path(out))
    return child, report, diff_graphs(base, child)

