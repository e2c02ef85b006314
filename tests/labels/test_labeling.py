"""Labelling on a small open_clip model built in the test, checked against direct computation.

The model is freshly initialised (the test checks arithmetic, not quality); results shown to users
come from the trained demo hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mll_registry.demo.archs import build_tiny
from mll_registry.errors import ModelRefError, PickledWeightsRefused
from mll_registry.graph.bundle import GraphConfig, SampleDataset, build_graph
from mll_registry.labels.format import LabelError, ModelLabel
from mll_registry.labels.labeller import LabelConfig, compact_label, dense_similarities, label_model
from mll_registry.models.loading import load, save_open_clip_dir
from mll_registry.models.refs import ModelRef, resolve


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, cfg = build_tiny("tiny-vit", seed=3)
    return save_open_clip_dir(model, cfg, tmp_path_factory.mktemp("hub") / "tiny-vit")


@pytest.fixture()
def graph(tree: Path):
    g, _ = build_graph([SampleDataset("A", tree / "A"), SampleDataset("B", tree / "B")],
                       GraphConfig())
    return g


def _direct(lm, graph, templates=("a photo of a {}.",)) -> np.ndarray:
    """S[x, u] the plain way: open_clip's own preprocess and encoders, one image at a time;
    embeddings rounded to fp16 first, as labels define them (what incremental labels reuse)."""
    with torch.no_grad():
        txt = []
        for lemma in graph.nodes["lemma"]:
            e = lm.model.encode_text(lm.tokenizer([t.format(lemma) for t in templates]),
                                     normalize=True).mean(0)
            txt.append(e / e.norm())
        T = torch.stack(txt)
        rows = []
        for p in graph.image_paths():
            x = lm.preprocess(Image.open(p)).unsqueeze(0)
            rows.append(lm.model.encode_image(x, normalize=True)[0])
        return (torch.stack(rows).half().float() @ T.half().float().T).numpy()


def test_label_matches_direct_computation(tiny_dir: Path, graph, data_root: Path) -> None:
    lm = load(f"local-dir:{tiny_dir}", device="cpu")
    run = label_model(lm, graph, LabelConfig(top_k=5, batch_size=4, chunk_size=4))
    lab = run.label
    S = _direct(lm, graph)
    # top-k indices and scores (fp16) equal the direct top-k
    order = np.argsort(-S, axis=1, kind="stable")[:, :5]
    np.testing.assert_allclose(lab.topk_score.astype(np.float32),
                               np.take_along_axis(S, order, 1), atol=2e-3)
    np.testing.assert_array_equal(lab.topk_idx[:, 0], order[:, 0])
    # member scores: S[image, node] for every membership row
    pos = graph.node_index()
    m_node = graph.members["node_id"].map(pos).to_numpy()
    m_img = graph.members["image_id"].to_numpy()
    np.testing.assert_allclose(lab.member_score.astype(np.float32), S[m_img, m_node], atol=2e-3)
    # summary: accuracy@1 over all nodes, by hand
    s = lab.summary.set_index("node_id")
    for node in ("dog.n.01", "carnivore.n.01"):
        rows = graph.members[graph.members["node_id"] == node]["image_id"].to_numpy()
        want = np.mean(S[rows].argmax(1) == pos[node])
        assert s.loc[node, "acc1"] == pytest.approx(want)
        # accuracy@5: the own node among the 5 best = fewer than 5 nodes score strictly higher
        higher = (S[rows] > S[rows, pos[node]][:, None]).sum(1)
        assert s.loc[node, "acc5"] == pytest.approx(np.mean(higher < 5))
        assert s.loc[node, "acc5"] >= s.loc[node, "acc1"]
        assert s.loc[node, "mean_own"] == pytest.approx(S[rows, pos[node]].mean(), abs=1e-5)
        # per sample source: the same counts over that source's images only
        src = graph.images["source"].to_numpy()[rows]
        for name in ("A", "B"):
            mine = rows[src == name]
            assert s.loc[node, f"n_images@{name}"] == len(mine)
            assert s.loc[node, f"hits1@{name}"] == np.sum(S[mine].argmax(1) == pos[node])
    assert s.loc["carnivore.n.01", "n_images@B"] == 1  # the check covers a node of two sources
    meta = lab.meta
    assert meta["graph_version"] == graph.version and meta["label_config"]["top_k"] == 5
    assert meta["logit_scale"] == pytest.approx(lm.model.logit_scale.exp().item())
    # the calibrated scale: the NLL minimiser over each image's own node among the folder nodes,
    # found here by a brute-force search on the direct similarities
    own = graph.members[graph.members["own"].to_numpy(bool)]
    folder = sorted({pos[n] for n in own["node_id"]})
    y = np.array([folder.index(pos[n]) for n in own["node_id"]])
    cos = S[own["image_id"].to_numpy()][:, folder].astype(np.float64)
    grid = np.exp(np.linspace(np.log(0.05), np.log(1000), 3001))
    nll = [np.mean(np.log(np.exp(g * cos - (g * cos).max(1, keepdims=True)).sum(1))
                   + (g * cos).max(1) - g * cos[np.arange(len(y)), y]) for g in grid]
    cal = meta["calibration"]
    assert cal["logit_scale"] == pytest.approx(float(grid[int(np.argmin(nll))]), rel=0.01)
    assert cal["images"] == len(y) and cal["nodes"] == len(folder)
    assert meta["revision"].startswith("sha256:") and meta["architecture"] == "vit-w128-l2-e64"
    assert run.chunks_total == 2 and run.chunks_computed == 2


def test_templates_are_averaged(tiny_dir: Path, graph) -> None:
    lm = load(f"local-dir:{tiny_dir}", device="cpu")
    tpl = ("a photo of a {}.", "a drawing of a {}.")
    lab = label_model(lm, graph, LabelConfig(templates=tpl, top_k=3)).label
    S = _direct(lm, graph, tpl)
    np.testing.assert_allclose(lab.topk_score[:, 0].astype(np.float32), S.max(1), atol=2e-3)
    assert lab.meta["label_config"]["templates"] == list(tpl) or \
        tuple(lab.meta["label_config"]["templates"]) == tpl


def test_resume_after_interruption_gives_identical_label(tiny_dir: Path, graph) -> None:
    lm = load(f"local-dir:{tiny_dir}", device="cpu")
    cfg = LabelConfig(top_k=4, batch_size=2, chunk_size=2)  # 6 images -> 3 chunks

    class Boom(Exception):
        pass

    def interrupt(chunk: int) -> None:
        if chunk == 1:
            raise Boom

    with pytest.raises(Boom):
        label_model(lm, graph, cfg, on_chunk=interrupt)
    resumed = label_model(lm, graph, cfg)
    assert (resumed.chunks_reused, resumed.chunks_computed) == (2, 1)
    from mll_registry.labels.labeller import clear_checkpoints

    clear_checkpoints(lm, graph)
    fresh = label_model(lm, graph, cfg)
    assert fresh.chunks_computed == 3
    for k in ("topk_idx", "topk_score", "member_score"):
        np.testing.assert_array_equal(getattr(resumed.label, k), getattr(fresh.label, k))
    assert resumed.label.summary.equals(fresh.label.summary)


def test_label_roundtrip_and_wrong_graph_version(tiny_dir: Path, graph, tmp_path: Path) -> None:
    lm = load(f"local-dir:{tiny_dir}", device="cpu")
    lab = label_model(lm, graph, LabelConfig(top_k=3)).label
    path = lab.save(tmp_path / "label")
    back = ModelLabel.load(path, graph_version=graph.version)
    np.testing.assert_array_equal(back.topk_idx, lab.topk_idx)
    assert back.summary.equals(lab.summary)  # the per-source columns too
    in_b = graph.images["source"].to_numpy()[graph.members["image_id"].to_numpy()] == "B"
    assert back.source_summary("B")["n_images"].sum() == in_b.sum() > 0
    assert back.headline()["nodes"] == len(graph.nodes)
    with pytest.raises(LabelError, match="computed on graph version"):
        ModelLabel.load(path, graph_version="0000000000000000")
    (path / "summary.parquet").unlink()
    with pytest.raises(LabelError, match="missing summary.parquet"):
        ModelLabel.load(path)


def test_compact_topk_agrees_with_dense(graph) -> None:
    rng = np.random.default_rng(0)
    n, m, d = len(graph.images), len(graph.nodes), 16
    img = rng.normal(size=(n, d)).astype(np.float32)
    txt = rng.normal(size=(m, d)).astype(np.float32)
    dense = dense_similarities(img, txt)
    idx, score, member, summary = compact_label(img, txt, graph, top_k=4, block=4)
    np.testing.assert_array_equal(idx, np.argsort(-dense, 1, kind="stable")[:, :4])
    np.testing.assert_allclose(score, np.sort(dense, 1)[:, ::-1][:, :4], atol=1e-2)
    pos = graph.node_index()
    mn = graph.members["node_id"].map(pos).to_numpy()
    np.testing.assert_allclose(member, dense[graph.members["image_id"], mn], atol=1e-2)
    assert summary["n_images"].sum() == len(graph.members)


def test_per_node_accuracy_at_1_and_5_over_many_ranks(graph) -> None:
    """Random embeddings put images' own nodes at every rank: acc@1 and acc@5 per node equal
    a direct count of "fewer than r nodes score higher" (a rank-4 own node counts for acc@5)."""
    from mll_registry.graph.bundle import SemanticGraph

    rng = np.random.default_rng(3)
    n_nodes, n_img = 12, 600
    nodes = pd.DataFrame({"node_id": [f"n{i}" for i in range(n_nodes)],
                          "caption": [f"c{i}" for i in range(n_nodes)]})
    own = rng.integers(0, n_nodes, n_img)
    images = pd.DataFrame({"image_id": np.arange(n_img), "source": "s", "relpath": "",
                           "node_id": "", "digest": ""})
    members = pd.DataFrame({"node_id": nodes["node_id"].to_numpy()[own],
                            "image_id": np.arange(n_img), "own": True})
    g = SemanticGraph(nodes, pd.DataFrame({"parent": [], "child": []}), images, members,
                      {"version": "v", "sources": {"s": "/"}, "config": {"cap": 75}})
    img = rng.normal(size=(n_img, 8)).astype(np.float32)
    txt = rng.normal(size=(n_nodes, 8)).astype(np.float32)
    S = img @ txt.T
    rank = (S[np.arange(n_img), own][:, None] < S).sum(1)
    assert set(np.unique(rank)) >= {0, 3, 4, 5}  # the test covers the boundary ranks
    summary = compact_label(img, txt, g, top_k=8, block=64)[3]
    for v in range(n_nodes):
        mine = own == v
        assert summary.loc[v, "acc1"] == pytest.approx(np.mean(rank[mine] < 1))
        assert summary.loc[v, "acc5"] == pytest.approx(np.mean(rank[mine] < 5))


def _mixed_source_graph(rng: np.random.Generator, n_nodes: int = 12, n_img: int = 600):
    """Images of three sources (a fourth, named in the manifest, has none), each image a member
    of its own node and of a "parent" node (as hypernym filling makes them)."""
    from mll_registry.graph.bundle import SemanticGraph

    nodes = pd.DataFrame({"node_id": [f"n{i:02d}" for i in range(n_nodes)],
                          "caption": [f"c{i}" for i in range(n_nodes)]})
    own = rng.integers(0, n_nodes, n_img)
    parent = (own + 1 + rng.integers(0, n_nodes - 1, n_img)) % n_nodes  # never the own node
    images = pd.DataFrame({"image_id": np.arange(n_img), "relpath": "", "node_id": "",
                           "digest": "", "source": rng.choice(["noto", "symbola", "textured"],
                                                              n_img)})
    ids = nodes["node_id"].to_numpy()
    members = pd.DataFrame({"node_id": np.concatenate([ids[own], ids[parent]]),
                            "image_id": np.tile(np.arange(n_img), 2), "own": True})
    sources = {s: "/" for s in ("noto", "symbola", "textured", "greyscale")}
    return SemanticGraph(nodes, pd.DataFrame({"parent": [], "child": []}), images, members,
                         {"version": "v", "sources": sources, "config": {"cap": 75}})


def test_per_source_counts_equal_a_hand_count_and_pool_to_the_node_figures() -> None:
    """Per node and source, n_images/hits1/hits5/sum_own equal a count over the dense
    similarities restricted to that source's member images; summed over the sources they give
    the pooled n_images, acc1, acc5 and mean_own."""
    from mll_registry.labels.format import source_summary, summary_sources

    rng = np.random.default_rng(7)
    g = _mixed_source_graph(rng)
    img = rng.normal(size=(len(g.images), 8)).astype(np.float32)
    txt = rng.normal(size=(len(g.nodes), 8)).astype(np.float32)
    S = dense_similarities(img, txt)
    summary = compact_label(img, txt, g, top_k=6, block=128)[3]
    sources = ["greyscale", "noto", "symbola", "textured"]
    assert summary_sources(summary) == sources
    src = g.images["source"].to_numpy()
    m_node = g.members["node_id"].map(g.node_index()).to_numpy()
    m_img = g.members["image_id"].to_numpy()
    for v in range(len(g.nodes)):
        rows = m_img[m_node == v]
        for name in sources:
            mine = rows[src[rows] == name]
            rank = (S[mine] > S[mine, v][:, None]).sum(1)  # nodes scoring strictly higher
            got = summary.loc[v]
            assert got[f"n_images@{name}"] == len(mine)
            assert got[f"hits1@{name}"] == np.sum(rank < 1)
            assert got[f"hits5@{name}"] == np.sum(rank < 5)
            assert got[f"sum_own@{name}"] == pytest.approx(S[mine, v].sum(), abs=1e-4)
    assert summary["hits5@noto"].sum() > summary["hits1@noto"].sum() > 0  # both counts tested
    assert (summary["n_images@greyscale"] == 0).all()
    pooled = {st: sum(summary[f"{st}@{s}"] for s in sources)
              for st in ("n_images", "hits1", "hits5", "sum_own")}
    np.testing.assert_array_equal(pooled["n_images"], summary["n_images"])
    np.testing.assert_allclose(pooled["hits1"] / summary["n_images"], summary["acc1"])
    np.testing.assert_allclose(pooled["hits5"] / summary["n_images"], summary["acc5"])
    np.testing.assert_allclose(pooled["sum_own"] / summary["n_images"], summary["mean_own"],
                               atol=1e-6)
    one = source_summary(summary, "noto")
    np.testing.assert_allclose(one["acc1"], summary["hits1@noto"] / summary["n_images@noto"])
    assert source_summary(summary, "greyscale")["acc1"].isna().all()  # no images: no ratio
    with pytest.raises(KeyError, match="greyscale, noto, symbola, textured"):
        source_summary(summary, "silhouette")


def test_a_label_without_per_source_counts_loads_and_selects_but_refuses_a_per_source_read(
        tmp_path: Path) -> None:
    """Labels written before per-source counts existed: same format, same selection counts;
    only a per-source read fails, naming the relabelling."""
    from mll_registry.labels.format import MappedLabel, source_column
    from mll_registry.selection.select import count_all

    rng = np.random.default_rng(1)
    g = _mixed_source_graph(rng, n_nodes=8, n_img=80)
    img = rng.normal(size=(len(g.images), 8)).astype(np.float32)
    txt = rng.normal(size=(len(g.nodes), 8)).astype(np.float32)
    idx, score, member, summary = compact_label(img, txt, g, top_k=4)
    meta = {"graph_version": g.version, "model_ref": "hf-hub:org/old-model"}
    new = ModelLabel(idx, score, member, summary, meta).save(tmp_path / "new")
    pooled = summary[["node_id", "n_images", "acc1", "acc5", "mean_own"]]  # the old columns
    old = ModelLabel(idx, score, member, pooled, meta).save(tmp_path / "old")
    lab = ModelLabel.load(old, graph_version=g.version)
    assert list(lab.summary.columns) == list(pooled.columns)
    np.testing.assert_array_equal(ModelLabel.load(new).source_summary("noto")["hits1"],
                                  summary[source_column("hits1", "noto")])
    with pytest.raises(LabelError, match=r"hf-hub:org/old-model.*no per-source counts.*"
                                         r"`mll label hf-hub:org/old-model --force`"):
        lab.source_summary("noto")
    cand = np.arange(len(g.nodes))
    a = count_all(g, [MappedLabel.open(old, g.version)], cand)
    b = count_all(g, [MappedLabel.open(new, g.version)], cand)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_pickled_weights_refused_unless_opted_in(tmp_path: Path) -> None:
    model, cfg = build_tiny("tiny-vit", seed=1)
    d = tmp_path / "pickled"
    d.mkdir()
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    with pytest.raises(PickledWeightsRefused, match="allow-pickle"):
        resolve(f"local-dir:{d}")
    lm = load(f"local-dir:{d}", device="cpu", allow_pickle=True)
    assert lm.resolved.weights.name == "open_clip_pytorch_model.bin"


def test_bad_model_dirs_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelRefError, match="no such directory"):
        resolve(f"local-dir:{tmp_path / 'missing'}")
    (tmp_path / "notclip").mkdir()
    with pytest.raises(ModelRefError, match="not an open_clip model"):
        resolve(f"local-dir:{tmp_path / 'notclip'}")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "open_clip_config.json").write_text('{"preprocess_cfg": {}}')
    with pytest.raises(ModelRefError, match="no 'model_cfg'"):
        resolve(f"local-dir:{tmp_path / 'old'}")


@pytest.mark.parametrize("ref,scheme,name,rev", [
    ("hf-hub:laion/CLIP-ViT-B-32@abc123", "hf-hub", "laion/CLIP-ViT-B-32", "abc123"),
    ("hf-hub:org/name", "hf-hub", "org/name", None),
    ("open_clip:ViT-B-32/laion2b_s34b_b79k", "open_clip", "ViT-B-32/laion2b_s34b_b79k", None),
])
def test_model_ref_parse(ref: str, scheme: str, name: str, rev: str | None) -> None:
    r = ModelRef.parse(ref)
    assert (r.scheme, r.name, r.revision) == (scheme, name, rev)
    assert str(r) == ref


@pytest.mark.parametrize("bad", ["dog", "hf-hub:noslash", "s3:x/y", "open_clip:ViT-B-32", "hf-hub:"])
def test_model_ref_parse_errors(bad: str) -> None:
    with pytest.raises(ModelRefError):
        ModelRef.parse(bad)


def test_pixel_sources_give_the_same_label_and_the_cache_is_opt_in(tiny_dir: Path, graph,
                                                                   data_root: Path) -> None:
    """Decoding in DataLoader workers, in-process, into the raw-pixel cache and from it: one label.
    The cache exists only when given a budget the graph fits, and only once complete."""
    from mll_registry.labels.labeller import clear_checkpoints
    from mll_registry.models.image_stream import PixelPipeline, pixel_cache_path

    lm = load(f"local-dir:{tiny_dir}", device="cpu")
    cache = pixel_cache_path(graph.version, PixelPipeline.from_preprocess(lm.preprocess))
    cache.unlink(missing_ok=True)  # another test's cache for the same graph and preprocess
    runs = {}
    for name, kw in (("workers", {"decode_workers": 2}), ("inline", {"decode_workers": 0}),
                     ("too-small", {"pixel_cache_gb": 1e-9}), ("build", {"pixel_cache_gb": 1.0}),
                     ("read", {"pixel_cache_gb": 1.0})):
        clear_checkpoints(lm, graph)
        runs[name] = label_model(lm, graph, LabelConfig(top_k=4, batch_size=2, chunk_size=4, **kw))
        if name in ("workers", "inline", "too-small"):
            assert not cache.exists() and runs[name].pixel_source == "stream"
    assert runs["build"].pixel_source == "stream+cache" and runs["build"].pixels_built
    assert runs["read"].pixel_source == "cache" and not runs["read"].pixels_built
    side = lm.model.visual.image_size
    side = side[0] if isinstance(side, list | tuple) else side
    assert np.load(cache, mmap_mode="r").shape == (len(graph.images), side, side, 3)
    for name in ("inline", "too-small", "build", "read"):
        for k in ("topk_idx", "topk_score", "member_score"):
            np.testing.assert_array_equal(getattr(runs[name].label, k),
                                          getattr(runs["workers"].label, k), err_msg=name)


def test_a_crash_while_building_the_pixel_cache_leaves_no_cache(tiny_dir: Path, graph,
                                                                data_root: Path) -> None:
    from mll_registry.labels.labeller import clear_checkpoints
    from mll_registry.models.image_stream import PixelPipeline, pixel_cache_path

    lm = load(f"local-dir:{tiny_dir}", device="cpu")
    cache = pixel_cache_path(graph.version, PixelPipeline.from_preprocess(lm.preprocess))
    cfg = LabelConfig(top_k=4, batch_size=2, chunk_size=2, pixel_cache_gb=1.0)
    clear_checkpoints(lm, graph)
    cache.unlink(missing_ok=True)

    class Crash(Exception):
        pass

    def crash(chunk: int) -> None:
        if chunk == 1:
            raise Crash

    with pytest.raises(Crash):
        label_model(lm, graph, cfg, on_chunk=crash)
    assert not cache.exists() and not list(cache.parent.glob("*.tmp"))  # nothing half-written
    resumed = label_model(lm, graph, cfg)  # finished chunks reused, the cache completed
    assert (resumed.chunks_reused, resumed.chunks_computed) == (2, 1)
    assert resumed.pixel_source == "stream+cache" and cache.is_file()


def test_device_cuda_without_cuda_is_one_clear_line(tiny_dir: Path, graph, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mll_registry.cli.main import app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on every CI machine
    bundle = graph.save(tmp_path / "g")
    res = CliRunner().invoke(app, ["label", f"local-dir:{tiny_dir}", "--graph", str(bundle),
                                   "--out", str(tmp_path / "label"), "--device", "cuda"])
    assert res.exit_code == 2, res.output
    assert "CUDA is not available" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("bad", [{"top_k": 0}, {"text_source": "title"}, {"templates": ("no slot",)},
                                 {"chunk_size": 0}, {"pixel_cache_gb": -1.0}])
def test_label_config_is_validated_by_settings(bad: dict) -> None:
    """LabelConfig has no checks of its own: Settings' reject the value, with Settings' message."""
    from mll_registry.settings import Settings, SettingsError

    (key, value), = bad.items()
    with pytest.raises(SettingsError) as from_settings:
        Settings(**bad)
    with pytest.raises(SettingsError) as from_config:
        LabelConfig(**bad)
    assert str(from_config.value) == str(from_settings.value)
    assert f"setting {key}={value!r} is invalid" in str(from_config.value)
    s = Settings(top_k=7, chunk_size=3, device="cpu")
    assert LabelConfig.from_settings(s) == LabelConfig(top_k=7, chunk_size=3, device="cpu")
