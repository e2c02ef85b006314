"""Domain-aware source weights: softmax of domain-to-description similarity, weighted counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mll_registry.graph.bundle import GraphError, SampleDataset, SemanticGraph, describe_sources
from mll_registry.labels.format import ModelLabel
from mll_registry.selection.matching import Embedder
from mll_registry.selection.select import count_all, task_source_weights
from mll_registry.selection.source_weights import (
    SourceWeights,
    calibrate_temperature,
    softmax_weights,
    source_accuracy,
    source_weights,
)
from mll_registry.task import Task, TaskClass

DESCR = {"colour": "colour emoji", "lines": "black-and-white line drawing",
         "shadow": "solid black silhouette"}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_domain_weights_are_the_softmax_of_text_similarity(embedder: Embedder) -> None:
    sw = source_weights("pencil sketch", DESCR, embedder, "domain", 0.1)
    # independent: embed each text alone, cosine, softmax by hand
    d = embedder.encode(["pencil sketch"])[0]
    names = sorted(DESCR)
    sims = np.array([float(embedder.encode([DESCR[n]])[0] @ d) for n in names])
    e = np.exp((sims - sims.max()) / 0.1)
    want = e / e.sum()
    assert [sw.weights[n] for n in names] == pytest.approx(want.tolist(), abs=1e-5)
    assert sum(sw.weights.values()) == pytest.approx(1.0)
    assert max(sw.weights, key=sw.weights.__getitem__) == "lines"  # a sketch is a line drawing
    assert not sw.uniform and sw.reason == ""
    # a colder temperature concentrates, a hotter one spreads the weight
    cold = source_weights("pencil sketch", DESCR, embedder, "domain", 0.02)
    hot = source_weights("pencil sketch", DESCR, embedder, "domain", 1.0)
    assert cold.weights["lines"] > sw.weights["lines"] > hot.weights["lines"] > 1 / 3


def test_uniform_mode_no_domain_and_undescribed_sources_weigh_alike(embedder: Embedder) -> None:
    uni = source_weights("pencil sketch", DESCR, embedder, "uniform")
    assert list(uni.weights.values()) == pytest.approx([1 / 3] * 3) and uni.uniform
    none = source_weights(None, DESCR, embedder, "domain")
    assert none.uniform and "no domain" in none.reason
    part = source_weights("pencil sketch", {**DESCR, "shadow": ""}, embedder, "domain")
    assert part.uniform and "shadow" in part.reason and "--describe" in part.reason
    one = source_weights("pencil sketch", {"colour": "colour emoji"}, embedder, "domain")
    assert one.weights == {"colour": 1.0}
    with pytest.raises(ValueError, match="domain, uniform|one of"):
        source_weights("x", DESCR, embedder, "softmax")
    with pytest.raises(ValueError, match="> 0"):
        softmax_weights(np.zeros(2), 0.0)


def test_image_weights_scale_uniform_to_one() -> None:
    sw = SourceWeights("domain", {"a": 0.5, "b": 0.25, "c": 0.25}, 0.1)
    assert sw.image_weights(["c", "a", "b", "a"]).tolist() == [0.75, 1.5, 0.75, 1.5]
    uni = SourceWeights("uniform", {"a": 0.5, "b": 0.5}, 0.1)
    assert uni.image_weights(["a", "b"]).tolist() == [1.0, 1.0]


def _two_source_graph() -> SemanticGraph:
    """Nodes a, b; images 0-3 from source s1, 4-7 from s2; a owns 0,1,4,5, b owns 2,3,6,7."""
    nd = pd.DataFrame({"node_id": ["a", "b"], "caption": ["a", "b"]})
    src = ["s1"] * 4 + ["s2"] * 4
    im = pd.DataFrame({"image_id": np.arange(8), "source": src,
                       "relpath": [f"{i}.png" for i in range(8)], "node_id": "x",
                       "digest": [str(i) for i in range(8)]})
    mem = pd.DataFrame([("a", 0), ("a", 1), ("a", 4), ("a", 5), ("b", 2), ("b", 3), ("b", 6),
                        ("b", 7)], columns=["node_id", "image_id"]).assign(own=True)
    return SemanticGraph(nd, pd.DataFrame({"parent": [], "child": []}), im, mem,
                         {"version": "v", "sources": {"s1": "/", "s2": "/"},
                          "descriptions": {"s1": "colour emoji", "s2": "line drawing"},
                          "config": {"cap": 75}})


def _label(top1: list[int]) -> ModelLabel:
    idx = np.array([[t, 1 - t] for t in top1], np.uint16)
    return ModelLabel(idx, np.zeros(idx.shape, np.float16), np.zeros(8, np.float16),
                      pd.DataFrame({"node_id": ["a", "b"], "acc1": [0.5, 0.5]}),
                      {"graph_version": "v"})


def test_weighted_counts_equal_per_source_counts_combined_by_hand() -> None:
    g = _two_source_graph()
    # the model is right on every s1 image, and on s2 calls everything a
    lab = _label([0, 0, 1, 1, 0, 0, 0, 0])
    cand = np.array([0, 1])
    TP, FP, P = count_all(g, [lab], cand)
    # pooled by hand: a: TP 4 (0,1,4,5), FP 2 (6,7); b: TP 2 (2,3), FP 0; P 4 each
    assert TP.tolist() == [[4, 2]] and FP.tolist() == [[2, 0]] and P.tolist() == [4, 4]
    # per source by hand: s1: TP a2 b2, FP 0 0, P 2 2;  s2: TP a2 b0, FP a2 b0, P 2 2
    w1, w2 = 0.8, 0.2
    iw = np.array([w1] * 4 + [w2] * 4) * 2  # scaled as SourceWeights.image_weights scales
    TPw, FPw, Pw = count_all(g, [lab], cand, image_weight=iw)
    assert TPw[0].tolist() == pytest.approx([2 * (w1 * 2 + w2 * 2), 2 * (w1 * 2 + w2 * 0)])
    assert FPw[0].tolist() == pytest.approx([2 * (w2 * 2), 0.0])
    assert Pw.tolist() == pytest.approx([2 * (w1 * 2 + w2 * 2)] * 2)
    # uniform weights are the pooled counts exactly
    TPu, FPu, Pu = count_all(g, [lab], cand, image_weight=np.ones(8))
    assert TPu.tolist() == TP.tolist() and FPu.tolist() == FP.tolist() and Pu.tolist() == P.tolist()


def test_a_task_without_a_domain_gets_uniform_weights(embedder: Embedder, tmp_path) -> None:
    g = _two_source_graph()
    p = tmp_path / "t.yaml"
    p.write_text("name: t\nclasses: [a, b]\n")
    t = Task.from_yaml(p)
    assert not t.domain_given and "domain" not in t.to_dict()
    assert task_source_weights(t, g, embedder, "domain").uniform
    sketchy = Task("t", [TaskClass("a"), TaskClass("b")], domain="pencil line drawing")
    sw = task_source_weights(sketchy, g, embedder, "domain")
    assert sw.weights["s2"] > 0.9  # "line drawing" is the sketch's source
    assert task_source_weights(sketchy, g, embedder, "uniform").uniform


def test_describe_sources_attaches_and_checks_names(tmp_path) -> None:
    sets = [SampleDataset("noto", tmp_path), SampleDataset("sym", tmp_path)]
    out = describe_sources(sets, ["noto=colour emoji"])
    assert [s.description for s in out] == ["colour emoji", ""]
    with pytest.raises(GraphError, match="not among the sources"):
        describe_sources(sets, ["twemoji=cartoon"])
    with pytest.raises(GraphError, match="NAME=TEXT"):
        describe_sources(sets, ["noto"])


def test_calibration_prefers_the_similar_source_when_it_predicts(embedder: Embedder) -> None:
    names = ["colour", "greys", "lines", "shadow"]
    descr = {"colour": "colour emoji", "greys": "greyscale emoji",
             "lines": "black-and-white line drawing", "shadow": "solid black silhouette"}
    rng = np.random.default_rng(0)
    emoji_skill, shape_skill = rng.uniform(size=12), rng.uniform(size=12)
    # accuracy on the two emoji sources follows one skill, on lines/shadow another
    acc = np.stack([emoji_skill, emoji_skill + 0.01 * rng.normal(size=12),
                    shape_skill, shape_skill + 0.01 * rng.normal(size=12)], axis=1)
    rows = calibrate_temperature(acc, names, descr, embedder, grid=(0.05, 1.0))
    by_t = {r["temperature"]: r["tau_mean"] for r in rows}
    assert by_t[0.05] > 0.8 > by_t[float("inf")]  # similar descriptions predict; uniform blurs


def test_source_accuracy_reads_the_per_source_counts_of_folder_nodes() -> None:
    from mll_registry.labels.format import LabelError

    g = _two_source_graph()
    g.nodes["n_own"] = [4, 0]  # b is a hypernym node here: its counts do not count
    lab = _label([0, 0, 1, 1, 0, 0, 0, 0])
    lab.summary = lab.summary.assign(**{
        "n_images@s1": [2, 2], "hits1@s1": [2, 2], "n_images@s2": [4, 2], "hits1@s2": [1, 0]})
    names, acc = source_accuracy(g, [lab])
    assert names == ["s1", "s2"]
    assert acc.tolist() == [[1.0, 0.25]]  # node a only: s1 2/2, s2 1/4
    with pytest.raises(LabelError, match="--force"):
        source_accuracy(g, [_label([0] * 8)])  # a label without per-source counts


def test_the_weights_used_are_logged_with_the_selection_run(embedder: Embedder, tmp_path) -> None:
    from flows.selection import source_weights_markdown
    from mll_registry.registry.labels import Registry
    from mll_registry.selection.select import SelectOptions, select

    g = _two_source_graph()
    labels = {"m1": _label([0, 0, 1, 1, 0, 0, 0, 0]), "m2": _label([1, 1, 1, 1, 0, 0, 1, 1])}
    task = Task("t", [TaskClass("a"), TaskClass("b")], domain="pencil line drawing")
    res = select(task, g, labels, SelectOptions(source_weighting="domain"), embedder=embedder,
                 root=tmp_path)
    sw = res.params["source_weights"]
    want = task_source_weights(task, g, embedder, "domain").weights  # computed on its own
    assert sw["weights"] == {k: round(v, 4) for k, v in want.items()}
    reg = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", root=tmp_path / "data")
    run = reg.client.get_run(reg.log_selection(task, res))
    assert run.data.params["source_weighting"] == "domain"
    assert run.data.metrics["source_weight_s2"] == pytest.approx(want["s2"], abs=1e-4)
    assert run.data.metrics["source_weight_s1"] == pytest.approx(want["s1"], abs=1e-4)
    md = source_weights_markdown(sw)
    assert f"| s2 | {sw['weights']['s2']:.3f} |" in md and "pencil line drawing" in md
    uni = select(task, g, labels, SelectOptions(source_weighting="uniform"), embedder=embedder,
                 root=tmp_path)
    assert uni.params["source_weights"]["weights"] == {"s1": 0.5, "s2": 0.5}
    assert "(uniform" not in source_weights_markdown(uni.params["source_weights"])
