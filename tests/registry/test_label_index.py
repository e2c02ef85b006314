"""The label index's per-source figures, on labels computed from constructed embeddings and served
by an in-memory registry (the MLflow-backed index is tests/registry/test_registry.py, a slow test)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mll_registry.graph.bundle import SampleDataset, SemanticGraph, build_graph
from mll_registry.labels.format import LabelError
from mll_registry.labels.labeller import compact_label
from mll_registry.registry.label_index import LabelIndex
from mll_registry.registry.labels import LabelledVersion

if TYPE_CHECKING:
    from mll_registry.registry.labels import Registry


class MemoryRegistry:
    """What the label index asks of a registry, from summaries held in memory."""

    def __init__(self, root: Path, summaries: dict[str, pd.DataFrame]) -> None:
        self.uri = f"memory://{uuid.uuid4().hex}"
        self.root = root
        self.summaries = summaries
        self.downloads = 0

    def latest_per_model(self, graph_version: str | None,
                         label_hash: str | None = None) -> list[LabelledVersion]:
        return [LabelledVersion(name=n, version=1, run_id=f"run-{n}", model_ref=f"hf-hub:org/{n}",
                                revision="r", graph_version=str(graph_version), mean_acc1=0.0,
                                source="") for n in sorted(self.summaries)]

    def download_summary(self, v: LabelledVersion) -> pd.DataFrame:
        self.downloads += 1
        return self.summaries[v.name]

    def aliases_by_version(self) -> dict[tuple[str, int], list[str]]:
        return {}


@pytest.fixture()
def graph(tree: Path) -> SemanticGraph:
    """dog.n.01: three images from source A, one from source B."""
    return build_graph([SampleDataset("A", tree / "A"), SampleDataset("B", tree / "B")])[0]


def _summary(graph: SemanticGraph, predicted: dict[str, str]) -> pd.DataFrame:
    """The label summary of a model whose top-1 node for each image of source S is
    ``predicted[S]`` (one-hot image embeddings against one-hot node texts)."""
    pos = graph.node_index()
    img = np.zeros((len(graph.images), len(graph.nodes)), np.float32)
    img[np.arange(len(graph.images)), [pos[predicted[s]] for s in graph.images["source"]]] = 1
    return compact_label(img, np.eye(len(graph.nodes), dtype=np.float32), graph, top_k=3)[3]


@pytest.fixture()
def summaries(graph: SemanticGraph) -> dict[str, pd.DataFrame]:
    """On dog.n.01, "sharp" gets A's 3 images right and B's one wrong (pooled 3/4), "sketchy"
    the other way round (pooled 1/4): the pooled and source-B rankings are opposite."""
    return {"sharp": _summary(graph, {"A": "dog.n.01", "B": "domestic_cat.n.01"}),
            "sketchy": _summary(graph, {"A": "domestic_cat.n.01", "B": "dog.n.01"})}


def _index(reg: MemoryRegistry, graph: SemanticGraph, max_age: float) -> LabelIndex:
    return LabelIndex(cast("Registry", reg), graph.version, max_age=max_age)


def _ranked(hits: list) -> list[tuple[str, float, int]]:
    return [(h.name, round(h.acc1, 4), h.n_images) for h in hits]


def test_a_per_source_query_ranks_on_that_sources_images_only(graph, summaries,
                                                              tmp_path: Path) -> None:
    reg = MemoryRegistry(tmp_path, summaries)
    idx = _index(reg, graph, 0).refresh()
    assert idx.sources == ["A", "B"]
    assert _ranked(idx.best("dog.n.01")) == [("sharp", 0.75, 4), ("sketchy", 0.25, 4)]
    assert _ranked(idx.best("dog.n.01", source="B")) == [("sketchy", 1.0, 1), ("sharp", 0.0, 1)]
    assert _ranked(idx.best("dog.n.01", source="A")) == [("sharp", 1.0, 3), ("sketchy", 0.0, 3)]
    assert idx.best("dog.n.01", source="B")[0].to_dict()["source"] == "B"
    with pytest.raises(KeyError, match="domestic_cat.n.01 has no images from source 'B'.*A \\(2\\)"):
        idx.best("domestic_cat.n.01", source="B")
    with pytest.raises(KeyError, match="no sample source 'C'.*sources: A, B"):
        idx.best("dog.n.01", source="C")
    # from the disk cache (per-source arrays read on demand), and rebuilt incrementally
    warm = _index(reg, graph, 3600).refresh()
    assert "version_check_s" not in warm.build_stats
    assert isinstance(warm.src, np.memmap)  # read on demand, one node at a time
    assert _ranked(warm.best("dog.n.01", source="B")) == [("sketchy", 1.0, 1), ("sharp", 0.0, 1)]
    reg.summaries["third"] = _summary(graph, {"A": "dog.n.01", "B": "dog.n.01"})
    grown = _index(reg, graph, 0).refresh()
    assert grown.build_stats["fetched"] == 1  # the two others' rows came from the cache
    assert len(list(grown.path.glob("sources-*.npy"))) == 1  # the previous one is gone
    assert _ranked(grown.best("dog.n.01", source="B")) == [
        ("sketchy", 1.0, 1), ("third", 1.0, 1), ("sharp", 0.0, 1)]


def test_an_older_index_cache_is_rebuilt_not_misread(graph, summaries, tmp_path: Path) -> None:
    reg = MemoryRegistry(tmp_path, summaries)
    idx = _index(reg, graph, 3600).refresh()
    assert reg.downloads == 2
    # the cache as the previous format wrote it: pooled arrays only
    meta = json.loads((idx.path / "versions.json").read_text())
    meta.update(format="mll-label-index/2")
    del meta["sources"]
    (idx.path / "versions.json").write_text(json.dumps(meta))
    with np.load(idx.path / "index.npz") as z:
        pooled = {k: z[k] for k in ("acc1", "acc5", "own", "n_images")}
    np.savez(idx.path / "index.npz", **pooled)
    again = _index(reg, graph, 3600).refresh()
    assert reg.downloads == 4 and again.build_stats["fetched"] == 2
    assert _ranked(again.best("dog.n.01", source="B"))[0] == ("sketchy", 1.0, 1)


def test_labels_without_per_source_counts_answer_pooled_queries_only(graph, summaries,
                                                                     tmp_path: Path) -> None:
    old = summaries["sketchy"][["node_id", "n_images", "acc1", "acc5", "mean_own"]]
    reg = MemoryRegistry(tmp_path, {**summaries, "sketchy": old})
    idx = _index(reg, graph, 0).refresh()
    assert _ranked(idx.best("dog.n.01")) == [("sharp", 0.75, 4), ("sketchy", 0.25, 4)]
    with pytest.raises(LabelError, match="hf-hub:org/sketchy has no per-source counts.*"
                                         "`mll label hf-hub:org/sketchy --force`"):
        idx.best("dog.n.01", source="B")


def test_query_best_source_through_the_app_and_the_cli(graph, summaries, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from mll_registry.app.root import App
    from mll_registry.cli import main as cli
    from mll_registry.cli import query as query_cli
    from mll_registry.settings import Settings

    a = App(Settings(data_dir=str(tmp_path / "data")),
            registry=cast("Registry", MemoryRegistry(tmp_path / "data", summaries)))
    q = a.queries.best("dog.n.01", graph=graph, source="B")
    assert q.source == "B" and [h.name for h in q.models] == ["sketchy", "sharp"]
    assert [h.name for h in a.queries.best("dog.n.01", graph=graph).models] == ["sharp", "sketchy"]
    bundle = graph.save(tmp_path / "g")
    monkeypatch.setattr(query_cli, "open_app", lambda data_dir=None, **kw: a)
    res = CliRunner().invoke(cli.app, ["query", "best", "-c", "dog.n.01", "--graph", str(bundle),
                                       "--source", "B", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["source"] == "B" and [m["name"] for m in out["models"]] == ["sketchy", "sharp"]
    assert [m["acc1"] for m in out["models"]] == [1.0, 0.0]
    human = CliRunner().invoke(cli.app, ["query", "best", "-c", "dog.n.01", "--graph",
                                         str(bundle), "--source", "B"])
    assert human.exit_code == 0 and "source B" in human.output, human.output
    bad = CliRunner().invoke(cli.app, ["query", "best", "-c", "dog.n.01", "--graph", str(bundle),
                                       "--source", "silhouette"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert "no sample source 'silhouette'" in bad.output and "sources: A, B" in bad.output
