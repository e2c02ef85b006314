"""A graph that grows: child versions keep the parent's rows, and labels on a child are computed
incrementally from the parent label's stored embeddings, equal to a full relabelling.

The model here is a small open_clip model initialised in the test (arithmetic, not quality); the
demo-scale check on the 10 trained demo models is ``test_demo_graph_growth``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mll_registry.app.root import App
from mll_registry.cli.main import app as cli
from mll_registry.demo.archs import build_tiny
from mll_registry.graph.bundle import GraphError, SampleDataset, SemanticGraph, build_and_save
from mll_registry.graph.lineage import diff_graphs, extend_graph
from mll_registry.labels.embeddings import LabelEmbeddings, embeddings_path
from mll_registry.labels.format import ModelLabel
from mll_registry.models.loading import save_open_clip_dir
from mll_registry.settings import Settings

runner = CliRunner()


def _noise_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def tiny_ref(tmp_path_factory: pytest.TempPathFactory) -> str:
    model, cfg = build_tiny("tiny-vit", seed=5)
    return f"local-dir:{save_open_clip_dir(model, cfg, tmp_path_factory.mktemp('hub') / 'tiny')}"


@pytest.fixture()
def sources(tmp_path: Path) -> dict[str, Path]:
    """A parent source (dogs, cats, a sparrow) and a growth source: new concepts (a horse, a
    trout, a goldfish), more images of an existing one (dog), and one image whose bytes the parent has."""
    base, more = tmp_path / "base", tmp_path / "more"
    for i in range(4):
        _noise_png(base / "dog.n.01" / f"{i}.png", i)
        _noise_png(base / "domestic_cat.n.01" / f"{i}.png", 100 + i)
    _noise_png(base / "sparrow.n.01" / "0.png", 200)
    for i in range(3):
        _noise_png(more / "horse.n.01" / f"{i}.png", 300 + i)
        _noise_png(more / "trout.n.01" / f"{i}.png", 400 + i)
    for i in range(2):  # n01443537: sorts before every parent node (node order is by wnid)
        _noise_png(more / "goldfish.n.01" / f"{i}.png", 600 + i)
    _noise_png(more / "dog.n.01" / "new.png", 500)
    _noise_png(more / "dog.n.01" / "same-bytes.png", 0)  # the parent's dog.n.01/0.png
    return {"base": base, "more": more}


def _graphs(sources: dict[str, Path], tmp_path: Path) -> tuple[SemanticGraph, SemanticGraph]:
    parent, _ = build_and_save([SampleDataset("base", sources["base"])], tmp_path / "parent")
    child, _ = extend_graph(parent, [SampleDataset("more", sources["more"])])
    child.save(tmp_path / "child")
    return parent, SemanticGraph.load(tmp_path / "child")


def test_a_child_keeps_the_parent_and_records_the_delta(sources, tmp_path) -> None:
    parent, child = _graphs(sources, tmp_path)
    again, _ = extend_graph(parent, [SampleDataset("more", sources["more"])])
    assert again.version == child.version != parent.version  # same inputs, same version
    # every parent image keeps its row, every parent node its members (as a prefix, in order)
    n = len(parent.images)
    assert child.images["digest"].tolist()[:n] == parent.images["digest"].tolist()
    for node, rows in parent.members.groupby("node_id")["image_id"]:
        got = child.members[child.members["node_id"] == node]["image_id"].tolist()
        assert got[:len(rows)] == rows.tolist(), node
    # the delta, against set arithmetic on the tables
    added = set(child.node_ids) - set(parent.node_ids)
    assert {"horse.n.01", "trout.n.01", "equine.n.01", "goldfish.n.01"} <= added
    # new nodes sort between parent nodes: parent nodes move to other rows (labels follow them)
    assert [child.node_ids.index(n) for n in parent.node_ids] != list(range(len(parent.nodes)))
    assert "dog.n.01" not in added
    d = diff_graphs(parent, child)
    assert set(d.added_nodes) == added and not d.removed_nodes and d.added_sources == ["more"]
    assert d.added_images == len(set(child.images["digest"]) - set(parent.images["digest"])) == 9
    assert "dog.n.01" in d.changed_nodes  # it gained its new image
    lin = child.manifest["lineage"]
    assert lin["parent"] == parent.version and lin["ancestors"] == [parent.version]
    assert sorted(lin["delta"]["added_nodes"]) == sorted(added)
    # the other way round, every addition is a removal
    back = diff_graphs(child, parent)
    assert set(back.removed_nodes) == added and back.removed_images == 9


def test_extending_refuses_a_used_source_name_and_an_empty_growth(sources, tmp_path) -> None:
    parent, _ = build_and_save([SampleDataset("base", sources["base"])], tmp_path / "parent")
    with pytest.raises(GraphError, match="already used"):
        extend_graph(parent, [SampleDataset("base", sources["more"])])
    (tmp_path / "empty" / "not_a_synset").mkdir(parents=True)
    with pytest.raises(GraphError, match="add nothing"):
        extend_graph(parent, [SampleDataset("empty", tmp_path / "empty")])


def _compare(a: ModelLabel, b: ModelLabel) -> None:
    """Same top-K sets, scores equal up to fp16 rounding (a new image encoded in another batch
    may differ in its last bit), same per-node accuracies."""
    np.testing.assert_array_equal(np.sort(a.topk_idx, 1), np.sort(b.topk_idx, 1))
    np.testing.assert_allclose(a.topk_score.astype(np.float32), b.topk_score.astype(np.float32),
                               atol=1e-3, rtol=0)
    np.testing.assert_allclose(a.member_score.astype(np.float32),
                               b.member_score.astype(np.float32), atol=1e-3, rtol=0)
    np.testing.assert_array_equal(a.summary[["node_id", "acc1", "acc5"]].to_numpy(),
                                  b.summary[["node_id", "acc1", "acc5"]].to_numpy())
    # per-source counts: the same columns, equal counts, own-score sums up to fp16 rounding
    cols = [c for c in a.summary.columns if "@" in c]
    assert cols == [c for c in b.summary.columns if "@" in c]
    sums = [c for c in cols if c.startswith("sum_own@")]
    counts = [c for c in cols if c not in sums]
    np.testing.assert_array_equal(a.summary[counts].to_numpy(), b.summary[counts].to_numpy())
    np.testing.assert_allclose(a.summary[sums].to_numpy(), b.summary[sums].to_numpy(), atol=1e-2)


def test_an_incremental_label_equals_a_full_one_and_encodes_only_new_images(
        sources, tmp_path, tiny_ref) -> None:
    parent, child = _graphs(sources, tmp_path)
    a = App(Settings(data_dir=str(tmp_path / "data"), label_store="local", device="cpu"))
    first = a.labelling.label(tiny_ref, parent).to_dict()
    assert first["incremental"] is None and first["images_encoded"] == len(parent.images)
    emb = LabelEmbeddings.open(embeddings_path(first["path"]))
    assert emb.image_emb.dtype == np.float16 and emb.image_emb.shape[0] == len(parent.images)
    inc = a.labelling.label(tiny_ref, child).to_dict()
    new_rows = int((~child.images["digest"].isin(set(parent.images["digest"]))).sum())
    assert new_rows == 9 and inc["images_encoded"] == new_rows  # the same-bytes image is reused
    assert inc["incremental"]["from_graph"] == parent.version
    assert inc["incremental"]["texts_encoded"] == len(set(child.node_ids) - set(parent.node_ids))
    full = a.labelling.label(tiny_ref, child, out=tmp_path / "full", full=True).to_dict()
    assert full["incremental"] is None and full["images_encoded"] == len(child.images)
    _compare(ModelLabel.load(inc["path"]), ModelLabel.load(tmp_path / "full"))
    per = ModelLabel.load(inc["path"]).source_summary("more").set_index("node_id")
    assert per.loc["horse.n.01", "n_images"] == 3 and per.loc["dog.n.01", "n_images"] == 2
    # the label is computed from the fp16 embeddings it keeps: recompute it from them by hand
    lab, e = ModelLabel.load(inc["path"]), LabelEmbeddings.open(embeddings_path(inc["path"]))
    S = e.image_emb.astype(np.float32) @ e.text_emb.astype(np.float32).T
    np.testing.assert_array_equal(lab.topk_idx[:, 0], S.argmax(1))


def test_damaged_or_foreign_embeddings_are_not_reused(sources, tmp_path, tiny_ref) -> None:
    parent, child = _graphs(sources, tmp_path)
    a = App(Settings(data_dir=str(tmp_path / "data"), label_store="local", device="cpu"))
    first = a.labelling.label(tiny_ref, parent).to_dict()
    f = embeddings_path(first["path"])
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0xFF  # one embedding value changed: the file's digest no longer matches
    f.write_bytes(bytes(raw))
    out = a.labelling.label(tiny_ref, child).to_dict()
    assert out["incremental"] is None and out["images_encoded"] == len(child.images)
    # another model's embeddings never stand in (its revision differs)
    model, cfg = build_tiny("tiny-vit", seed=6)
    other = save_open_clip_dir(model, cfg, tmp_path / "other")
    o = a.labelling.label(f"local-dir:{other}", parent).to_dict()
    e = LabelEmbeddings.open(embeddings_path(o["path"]))
    lab = ModelLabel.load(out["path"])
    assert e.matches({"revision": lab.meta["revision"]}) is not None


def test_without_kept_embeddings_a_grown_graph_is_labelled_in_full(sources, tmp_path,
                                                                    tiny_ref) -> None:
    parent, child = _graphs(sources, tmp_path)
    a = App(Settings(data_dir=str(tmp_path / "data"), label_store="local", device="cpu",
                     keep_embeddings=False))
    first = a.labelling.label(tiny_ref, parent).to_dict()
    assert first["embeddings"] is None and not embeddings_path(first["path"]).exists()
    assert ModelLabel.load(first["path"]).meta["embeddings"]["kept"] is False
    out = a.labelling.label(tiny_ref, child).to_dict()
    assert out["incremental"] is None and out["images_encoded"] == len(child.images)


def test_registry_child_versions_record_their_lineage_and_reuse_from_any_worker(
        sources, tmp_path, tiny_ref, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'shared.db'}")
    parent, child = _graphs(sources, tmp_path)
    a = App(Settings(data_dir=str(tmp_path / "one"), device="cpu"))
    first = a.labelling.label(tiny_ref, parent).to_dict()
    # registering a version leaves the process's tracking URI as it was (MLflow's helper unset it)
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'shared.db'}"
    # a worker with its own data dir gets the parent's embeddings from the artifact store
    b = App(Settings(data_dir=str(tmp_path / "two"), device="cpu"))
    out = b.labelling.label(tiny_ref, child).to_dict()
    assert out["status"] == "labelled" and out["images_encoded"] == 9
    reg = b.registry
    v = reg.client.get_model_version(out["name"], str(out["version"]))
    assert v.tags["mll.parent_graph"] == parent.version
    assert v.tags["mll.incremental_from"] == parent.version and v.tags["mll.images_encoded"] == "9"
    assert v.tags["mll.graph_delta"].startswith(f"+{len(diff_graphs(parent, child).added_nodes)} "
                                                "nodes")
    # selection downloads the label directory only: the embeddings are beside it, not in it
    arts = {x.path for x in reg.client.list_artifacts(first["run_id"], "label")}
    assert arts and not any("embeddings" in p for p in arts)
    assert {x.path for x in reg.client.list_artifacts(first["run_id"], "embeddings")} == {
        "embeddings/embeddings.safetensors"}
    # selection on the child works as on any label
    assert b.labelling.labelled_models(child.version) == [tiny_ref]


def test_cli_extend_and_diff(sources, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLL_DATA_DIR", str(tmp_path / "data"))
    build_and_save([SampleDataset("base", sources["base"])], tmp_path / "parent")
    r = runner.invoke(cli, ["graph", "extend", str(tmp_path / "parent"), "--source",
                            f"more={sources['more']}", "--out", str(tmp_path / "child"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    child = SemanticGraph.load(tmp_path / "child")
    assert out["version"] == child.version and out["delta"]["added_images"] == 9
    r = runner.invoke(cli, ["graph", "diff", str(tmp_path / "parent"), str(tmp_path / "child"),
                            "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["child"] == child.version and "horse.n.01" in d["added_nodes"]
    r = runner.invoke(cli, ["graph", "extend", str(tmp_path / "parent"), "--source",
                            f"base={sources['more']}"])
    assert r.exit_code == 2 and "already used" in r.output


@pytest.mark.slow
def test_demo_graph_growth_on_demo_models(tmp_path, data_root) -> None:
    """The demo graph grown by its 60 extension concepts (in the five sample styles): labels of
    2 of the trained demo models (the two fastest towers, ResNets: a generalist and a specialist; the
    fast tests cover both towers on tiny graphs; 4 took
    twice the time, 296 s, for the same check) computed incrementally equal full relabelling,
    and the 7 demo tasks get the same selections from either."""
    from conftest import missing_demo_hub

    from mll_registry.demo.data import EXTENSION, load_concepts
    from mll_registry.demo.hub import demo_refs
    from mll_registry.demo.tasks import DEMO_TASKS, display_name, task_concepts
    from mll_registry.task import Task, TaskClass

    try:
        refs = demo_refs()
    except FileNotFoundError:
        missing_demo_hub()
    assert len(refs) == 10
    refs = [r for r in refs if r.rsplit("/", 1)[-1] in ("resnet-all-both-short", "resnet-objects")]
    assert len(refs) == 2
    inc_app = App(Settings(data_dir=str(data_root), label_store="local", device="cpu"))
    full_app = App(Settings(data_dir=str(tmp_path / "full"), label_store="local", device="cpu"))
    parent = inc_app.graphs.get("demo")
    out = inc_app.graphs.extend("demo", demo=True, out=tmp_path / "child").to_dict()
    child = SemanticGraph.load(out["path"])
    new = {c.synset for c in load_concepts(EXTENSION)}
    assert len(new) == 60 and not new & set(parent.node_ids) and new <= set(child.node_ids)
    assert out["delta"]["n_added_nodes"] >= 50
    n_new = int((~child.images["digest"].isin(set(parent.images["digest"]))).sum())
    # both models in one pass per graph (each image decoded once for the two)
    assert not inc_app.labelling.label_many(refs, parent)[1]
    incs, errors = inc_app.labelling.label_many(refs, child)
    fulls, errors_full = full_app.labelling.label_many(refs, child, full=True)
    assert not errors and not errors_full
    for ref, inc_o, full_o in zip(refs, incs, fulls, strict=True):
        inc, full = inc_o.to_dict(), full_o.to_dict()
        assert inc["incremental"]["from_graph"] == parent.version, ref
        assert inc["images_encoded"] == n_new, ref
        assert full["images_encoded"] == len(child.images)
        _compare(ModelLabel.load(inc["path"]), ModelLabel.load(full["path"]))
    for t in DEMO_TASKS:
        task = Task(t.name, [TaskClass(display_name(c))
                             for c in task_concepts(t, load_concepts())], domain=t.domain)
        a, b = inc_app.selection.select(task, child).result, full_app.selection.select(task, child).result
        assert a.models == b.models and len(a.models) == 2
        np.testing.assert_array_equal(a.chosen, b.chosen)
        np.testing.assert_array_equal(a.with_k(3).chosen, b.with_k(3).chosen)
