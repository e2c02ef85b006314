"""Selection arithmetic with numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mll_registry.graph.bundle import SemanticGraph
from mll_registry.labels.format import ModelLabel
from mll_registry.selection.select import (
    candidate_rows,
    class_scores,
    dense_predictions,
    node_counts,
    restricted_predictions,
    reuse_metric,
    top_models,
)


def _graph(members: list[tuple[str, int]], nodes=("a", "b", "c", "d"), n_images=4) -> SemanticGraph:
    nd = pd.DataFrame({"node_id": list(nodes), "caption": list(nodes)})
    im = pd.DataFrame({"image_id": np.arange(n_images), "source": "s",
                       "relpath": [f"{i}.png" for i in range(n_images)], "node_id": "x",
                       "digest": [str(i) for i in range(n_images)]})
    mem = pd.DataFrame(members, columns=["node_id", "image_id"]).assign(own=True)
    return SemanticGraph(nd, pd.DataFrame({"parent": [], "child": []}), im, mem,
                         {"version": "v", "sources": {"s": "/"}, "config": {"cap": 75}})


def _label(topk: list[list[int]], member_score: list[float]) -> ModelLabel:
    idx = np.array(topk, np.uint16)
    return ModelLabel(idx, np.zeros(idx.shape, np.float16), np.array(member_score, np.float16),
                      pd.DataFrame({"node_id": list("abcd")}), {"graph_version": "v"})


A, B, C, D = 0, 1, 2, 3
# images 0,1 are of a; 2,3 of b
G = _graph([("a", 0), ("a", 1), ("b", 2), ("b", 3)])
M1 = _label([[C, A], [B, A], [B, C], [C, D]], [0.5, 0.1, 0.9, 0.4])  # img3: no candidate in top-2
M2 = _label([[A, B], [A, C], [B, A], [B, D]], [0.9, 0.9, 0.9, 0.9])
Z = np.array([[0.8, 0.0], [0.2, 1.0]])  # candidates a, b  x  classes y0, y1


def test_restricted_predictions_and_counts_by_hand() -> None:
    rows = candidate_rows(G, [M1, M2], np.array([A, B]))
    pred = restricted_predictions(rows, n_nodes=4)
    # M1: img0 -> a (first candidate at rank 2), img1 -> b (wrong), img2 -> b,
    #     img3 -> -1: no candidate in its top-K, a miss for b and a false positive for nobody
    assert pred.tolist() == [[0, 1, 1, -1], [0, 0, 1, 1]]
    TP, FP, P = node_counts(rows, pred)
    assert TP.tolist() == [[1, 1], [2, 2]]
    assert FP.tolist() == [[0, 1], [0, 0]]
    assert P.tolist() == [2, 2]
    # the "members" fallback would guess b for img3 (its own node): a true positive
    members = restricted_predictions(rows, n_nodes=4, fallback="members")
    assert members.tolist() == [[0, 1, 1, 1], [0, 0, 1, 1]]
    assert node_counts(rows, members)[0].tolist() == [[1, 2], [2, 2]]
    with pytest.raises(ValueError):
        restricted_predictions(rows, 4, fallback="guess")


def test_transfer_scores_and_reuse_metric_by_hand() -> None:
    TP = np.array([[1.0, 2.0], [2.0, 2.0]])
    FP = np.array([[0.0, 1.0], [0.0, 0.0]])
    P = np.array([2.0, 2.0])
    f1 = class_scores(TP, FP, P, Z, "f1")
    # M1: TP_y = [1.2, 2], FP_y = [0.2, 1], P_y = [2, 2]
    np.testing.assert_allclose(f1[0], [2.4 / 4.6, 4 / 7], rtol=1e-6)
    np.testing.assert_allclose(f1[1], [4 / 6, 4 / 6], rtol=1e-6)
    prec = class_scores(TP, FP, P, Z, "precision")
    np.testing.assert_allclose(prec[0], [1.2 / 1.4, 2 / 3], rtol=1e-6)
    r = reuse_metric(f1, alpha=0.7)
    mean1 = (2.4 / 4.6 + 4 / 7) / 2
    assert r[0, 0] == pytest.approx(0.7 * 2.4 / 4.6 + 0.3 * mean1)
    np.testing.assert_allclose(reuse_metric(f1, 1.0), f1)
    assert top_models(r, k=1).tolist() == [[1], [1]]
    assert top_models(r, k=2).tolist() == [[1, 0], [1, 0]]
    with pytest.raises(ValueError):
        reuse_metric(f1, 1.5)
    with pytest.raises(ValueError):
        class_scores(TP, FP, P, Z, "accuracy")


def test_hierarchy_parent_prediction_is_not_a_false_positive() -> None:
    # image 0 is a member of both a and its parent c; image 1 only of c
    g = _graph([("a", 0), ("c", 0), ("c", 1)], n_images=2)
    lab = _label([[C, A], [A, C]], [0.1, 0.9, 0.5])
    rows = candidate_rows(g, [lab], np.array([A, C]))
    pred = restricted_predictions(rows, 4)
    assert pred.tolist() == [[1, 0]]  # img0 -> c (member: no FP), img1 -> a (not a member: FP)
    TP, FP, P = node_counts(rows, pred)
    assert TP.tolist() == [[0, 1]] and FP.tolist() == [[1, 0]] and P.tolist() == [1, 2]


def test_compact_equals_dense_when_candidates_are_in_topk() -> None:
    rng = np.random.default_rng(1)
    n_img, n_nodes = 40, 12
    members = [(f"n{i % n_nodes}", i) for i in range(n_img)]
    g = _graph(members, nodes=tuple(f"n{i}" for i in range(n_nodes)), n_images=n_img)
    dense = [rng.normal(size=(n_img, n_nodes)) for _ in range(3)]
    labels = []
    for S in dense:
        idx = np.argsort(-S, 1)[:, :n_nodes]  # K = all nodes: must be exact
        ms = S[np.arange(n_img), np.arange(n_img) % n_nodes]
        labels.append(ModelLabel(idx.astype(np.uint16), np.zeros(idx.shape, np.float16),
                                 ms.astype(np.float16), pd.DataFrame({"node_id": g.node_ids}),
                                 {"graph_version": "v"}))
    rows = candidate_rows(g, labels, np.array([0, 3, 5, 7]))
    np.testing.assert_array_equal(restricted_predictions(rows, n_nodes),
                                  dense_predictions(dense, rows))


def test_selection_does_not_depend_on_model_order() -> None:
    rows = candidate_rows(G, [M1, M2], np.array([A, B]))
    rows_rev = candidate_rows(G, [M2, M1], np.array([A, B]))
    r = reuse_metric(class_scores(*node_counts(rows, restricted_predictions(rows, 4)), Z))
    r_rev = reuse_metric(class_scores(*node_counts(rows_rev, restricted_predictions(rows_rev, 4)), Z))
    np.testing.assert_allclose(r, r_rev[::-1])


def test_with_k_keeps_the_top_k_of_the_same_reuse_matrix() -> None:
    from mll_registry.selection.select import SelectionResult

    r = np.array([[0.1, 0.9], [0.5, 0.2], [0.3, 0.4]])  # 3 models x 2 classes
    s1 = SelectionResult("t", ["a", "b"], ["m0", "m1", "m2"], top_models(r, 1), r, r, {}, [],
                         {"k": 1, "alpha": 0.7})
    s2 = s1.with_k(2)
    assert s1.chosen.tolist() == [[1], [0]]
    assert s2.chosen.tolist() == [[1, 2], [0, 2]]
    assert s2.params == {"k": 2, "alpha": 0.7} and s1.params["k"] == 1
    assert s2.selected_models() == ["m1", "m2", "m0"]


def test_blockwise_counts_equal_the_whole_and_the_hand_counts() -> None:
    """count_all reads MODEL_BLOCK models at a time; any block size gives the hand counts."""
    from mll_registry.selection.select import count_all

    for block in (1, 2, 64):
        TP, FP, P = count_all(G, [M1, M2], np.array([A, B]), block=block)
        assert TP.tolist() == [[1, 1], [2, 2]] and FP.tolist() == [[0, 1], [0, 0]]
        assert P.tolist() == [2, 2]


@pytest.mark.parametrize("fmt", ["mll-label/1", "mll-label/2"])
def test_memory_mapped_labels_select_exactly_as_loaded_ones(tmp_path, monkeypatch, fmt) -> None:
    """A label saved to disk (either format; format 2 in chunks of 3 rows, so reads cross a
    chunk) and opened for selection gives the same rows and counts as in memory, and an
    out-of-range node index (a damaged label) is never taken for a candidate."""
    from label_files import save_v1

    from mll_registry.labels import format as F
    from mll_registry.labels.format import MappedLabel
    from mll_registry.selection.select import count_all, gather

    monkeypatch.setattr(F, "CHUNK_ROWS", 3)
    mapped = []
    for i, lab in enumerate((M1, M2)):
        path = save_v1(lab, tmp_path / f"m{i}") if fmt.endswith("1") else lab.save(
            tmp_path / f"m{i}")
        assert sorted(p.name for p in path.rglob("*.safetensors")) == (
            ["label.safetensors"] if fmt.endswith("1") else
            ["ranks.safetensors", "scores.safetensors"])
        if i == 1 and fmt.endswith("2"):  # as fetched from an artifact store: ranks in chunks
            assert F.write_chunks(path, path) == ["ranks/00000.safetensors",
                                                  "ranks/00001.safetensors"]
            (path / "ranks.safetensors").unlink()
            assert F.checksum_mismatch(path) is None and F.files_look_whole(path)
        mapped.append(MappedLabel.open(path, "v", n_images=4, n_members=4))
        rows = np.empty((4, 2), np.uint16)
        mapped[-1].read_rows("topk_idx", np.arange(4), rows)
        np.testing.assert_array_equal(rows, lab.topk_idx)
    got = count_all(G, mapped, np.array([A, B]))
    want = count_all(G, [M1, M2], np.array([A, B]))
    for g_, w_ in zip(got, want, strict=True):
        np.testing.assert_array_equal(g_, w_)
    cs = __import__("mll_registry.selection.select", fromlist=["x"]).candidate_set(
        G, np.array([A, B]))
    rows = gather(cs, mapped)
    np.testing.assert_array_equal(rows.member_score, np.stack([M1.member_score, M2.member_score]))
    bad = _label([[9999, A], [B, A], [B, C], [C, D]], [0.5, 0.1, 0.9, 0.4])  # 9999: no node
    pred = restricted_predictions(candidate_rows(G, [bad], np.array([A, B])), n_nodes=4)
    assert pred.tolist() == [[0, 1, 1, -1]]  # image 0: the first real candidate, a


def test_mapped_label_refuses_truncated_files_and_wrong_shapes(tmp_path) -> None:
    from label_files import save_v1

    from mll_registry.labels.format import LabelError, MappedLabel

    for path, f in ((save_v1(M1, tmp_path / "v1"), "label.safetensors"),
                    (M1.save(tmp_path / "v2"), "ranks.safetensors")):
        with pytest.raises(LabelError, match="graph has 5"):
            MappedLabel.open(path, "v", n_images=5)
        with pytest.raises(LabelError, match="not v2"):
            MappedLabel.open(path, "v2")
        (path / f).write_bytes((path / f).read_bytes()[:-3])
        with pytest.raises(LabelError, match="truncated"):  # format 2: when the rows are read
            MappedLabel.open(path, "v").read_rows("topk_idx", np.arange(4),
                                                  np.empty((4, 2), np.uint16))


def test_scores_of_a_class_with_no_images_and_no_predictions_are_zero_not_nan() -> None:
    zero = np.zeros((2, 2))
    for metric in ("f1", "precision"):
        s = class_scores(zero, zero, np.zeros(2), Z, metric)
        assert np.isfinite(s).all() and (s == 0).all(), metric


def test_labels_for_another_graph_version_are_refused_by_name() -> None:
    from mll_registry.selection.select import SelectionError, select
    from mll_registry.task import Task, TaskClass

    other = _label([[A, B]] * 4, [0.5] * 4)
    other.meta["graph_version"] = "w"
    task = Task(name="t", classes=[TaskClass("a"), TaskClass("b")])
    with pytest.raises(SelectionError, match=r"\['m2'\] are for another graph version than v"):
        select(task, G, {"m1": M1, "m2": other})


def test_false_positives_by_difference_equal_the_direct_count() -> None:
    """Unweighted counts take FP as (predictions of v) - TP; weights of one take the direct
    count (images predicted v that are not its members): the same numbers, on a random
    hierarchy-like membership with images in several candidate nodes."""
    from mll_registry.selection.select import candidate_set

    rng = np.random.default_rng(3)
    n_img, n_nodes = 400, 30
    pairs = {(int(v), int(u)) for u in range(n_img) for v in rng.choice(n_nodes, rng.integers(
        1, 4), replace=False)}
    nodes = [f"n{i}" for i in range(n_nodes)]
    g = _graph([(nodes[v], u) for v, u in sorted(pairs)], nodes=nodes, n_images=n_img)
    cs = candidate_set(g, np.sort(rng.choice(n_nodes, 12, replace=False)))
    pred = rng.integers(-1, len(cs.cand_nodes), size=(5, len(cs.img_ids)))
    got = node_counts(cs, pred)
    want = node_counts(cs, pred, np.ones(len(cs.img_ids)))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    assert got[1].sum() > 0 and got[0].sum() > 0
