"""Baselines (INB, both ModelGPT variants, oracles, Kendall tau) against numbers computed
independently: by hand, or by numpy written out in the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mll_registry.evaluation.baselines import (
    PAPER_FEATURES,
    CentredRegression,
    ClassTexts,
    ModelGPT,
    TextBank,
    best_of,
    check_embeddings,
    class_synonyms,
    feature_vector,
    fit_paper_modelgpt,
    inb_scores,
    kendall_tau,
    label_node_prompts,
    lovm_features,
    oracle_per_class,
    oracle_per_class_f1,
    oracle_single,
    paper_features,
    per_class_f1,
    pseudo_task_accuracy,
    pseudo_tasks,
    text_features,
)
from mll_registry.labels.embeddings import EmbeddingsError, LabelEmbeddings, embeddings_path
from mll_registry.labels.format import ModelLabel


def _label(acc1: list[float]) -> ModelLabel:
    idx = np.zeros((1, 1), np.uint16)
    return ModelLabel(idx, np.zeros((1, 1), np.float16), np.zeros(1, np.float16),
                      pd.DataFrame({"node_id": [f"n{i}" for i in range(len(acc1))],
                                    "acc1": acc1}), {"graph_version": "v"})


def test_inb_is_the_best_mean_label_accuracy_and_ties_go_to_the_first_ref() -> None:
    scores = inb_scores({"b": _label([0.2, 0.6]), "a": _label([0.4, 0.4]), "c": _label([0.1, 0.2])})
    assert scores == pytest.approx({"a": 0.4, "b": 0.4, "c": 0.15})
    assert best_of(scores) == "a"  # a tie: sorted order decides, never dict order
    assert oracle_single({"x": 0.3, "y": 0.9}) == "y"


def test_oracle_per_class_and_kendall_tau_by_hand() -> None:
    per_class = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.6]])  # models x classes
    assert oracle_per_class(per_class).tolist() == [[0], [1], [1]]
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # one discordant pair of three: (2 - 1) / 3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert np.isnan(kendall_tau([1], [1]))


def test_modelgpt_recovers_a_linear_relation_and_does_not_shrink_the_intercept() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.random((40, 4)), np.ones(40)])
    true = np.array([0.5, -0.2, 0.1, 0.3, 0.25])
    y = X @ true
    m = ModelGPT(ridge=1e-9).fit(X, y)
    assert m.coef is not None
    np.testing.assert_allclose(m.coef, true, atol=1e-6)
    # heavy ridge: slopes shrink to zero, the intercept stays free and becomes the mean
    big = ModelGPT(ridge=1e9).fit(X, y)
    assert m.coef is not None and big.coef is not None
    assert np.abs(big.coef[:4]).max() < 1e-6
    assert big.coef[4] == pytest.approx(y.mean(), abs=1e-6)
    np.testing.assert_allclose(m.predict(X[:3]), y[:3], atol=1e-6)
    with pytest.raises(ValueError, match="other tasks"):
        ModelGPT().fit(X[:1], y[:1])
    with pytest.raises(ValueError, match="fit ModelGPT"):
        ModelGPT().predict(X)


def test_text_features_match_a_direct_computation(tmp_path: Path) -> None:
    from mll_registry.demo.archs import build_tiny
    from mll_registry.models.loading import load, save_open_clip_dir

    model, cfg = build_tiny("tiny-vit", seed=4)
    lm = load(f"local-dir:{save_open_clip_dir(model, cfg, tmp_path / 'm')}", device="cpu")
    classes = ["dog", "cat", "car"]
    desc = [["a dog barking", "a puppy"], ["a kitten"], ["a red car", "a truck", "a sedan"]]
    tf = text_features(lm, classes, desc)

    def enc(texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return lm.model.encode_text(lm.tokenizer(texts), normalize=True).numpy()

    P = enc([f"a photo of a {c}." for c in classes])
    flat = [d for ds in desc for d in ds]
    owner = np.array([0, 0, 1, 2, 2, 2])
    S = enc(flat) @ P.T
    own = S[np.arange(6), owner]
    other = np.array([max(S[i, j] for j in range(3) if j != owner[i]) for i in range(6)])
    PP = P @ P.T
    np.fill_diagonal(PP, -np.inf)
    assert tf["text_acc"] == pytest.approx(float(np.mean(S.argmax(1) == owner)))
    assert tf["text_margin"] == pytest.approx(float(np.mean(own - other)), abs=1e-5)
    assert tf["class_separation"] == pytest.approx(float(1 - PP.max(1).mean()), abs=1e-5)
    v = feature_vector(0.3, tf)
    assert v.tolist() == pytest.approx([0.3, tf["text_acc"], tf["text_margin"],
                                        tf["class_separation"], 1.0])


# -- ModelGPT (paper): pseudo-tasks, ground truth from embeddings, features, regression ------------
def _noise_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory):
    """A 3-source graph (s1: 6 concepts, s2: 3, s3: 1) and two tiny real open_clip models
    labelled on it with their embeddings kept: (graph, {ref: label dir}, {ref: loaded model})."""
    from mll_registry.demo.archs import build_tiny
    from mll_registry.graph.bundle import SampleDataset, build_and_save
    from mll_registry.labels.labeller import LabelConfig, label_ref
    from mll_registry.models.loading import load, save_open_clip_dir

    tmp = tmp_path_factory.mktemp("paper")
    s1 = ["dog.n.01", "domestic_cat.n.01", "sparrow.n.01", "horse.n.01", "trout.n.01",
          "goldfish.n.01"]
    for k, n in enumerate(s1):
        for i in range(3):
            _noise_png(tmp / "s1" / n / f"{i}.png", 10 * k + i)
    for k, n in enumerate(["dog.n.01", "car.n.01", "truck.n.01"]):
        for i in range(2):
            _noise_png(tmp / "s2" / n / f"{i}.png", 100 + 10 * k + i)
    for i in range(2):
        _noise_png(tmp / "s3" / "apple.n.01" / f"{i}.png", 200 + i)
    g, _ = build_and_save([SampleDataset(s, tmp / s) for s in ("s1", "s2", "s3")], tmp / "g")
    dirs, lms = {}, {}
    for seed in (1, 2):
        model, cfg = build_tiny("tiny-vit", seed=seed)
        ref = f"local-dir:{save_open_clip_dir(model, cfg, tmp / f'm{seed}')}"
        _, dirs[ref] = label_ref(ref, g, LabelConfig(device="cpu"), out=tmp / f"label{seed}",
                                 root=tmp / "data")
        lms[ref] = load(ref, device="cpu")
    return g, dirs, lms


def test_pseudo_tasks_are_seeded_draws_of_one_sources_folder_nodes(labelled) -> None:
    g = labelled[0]
    tasks = pseudo_tasks(g, per_source=3, classes=(2, 4), seed=7)
    assert [t.name for t in tasks] == [t.name for t in pseudo_tasks(g, 3, (2, 4), 7)]
    again = pseudo_tasks(g, 3, (2, 4), 7)
    assert all(a.nodes == b.nodes and (a.image_ids == b.image_ids).all()
               for a, b in zip(tasks, again, strict=True))
    # s3 has a single folder node: no task; s2 has 3 candidates: at most one task of all three
    assert {t.source for t in tasks} == {"s1", "s2"}
    assert sum(t.source == "s1" for t in tasks) == 3
    own = g.members[g.members["own"]].merge(g.images[["image_id", "source"]], on="image_id")
    for t in tasks:
        assert 2 <= len(t.nodes) <= 4 and len(set(t.nodes)) == len(t.nodes)
        mine = own[(own["source"] == t.source) & own["node_id"].isin(t.nodes)]
        assert sorted(t.image_ids.tolist()) == sorted(mine["image_id"].tolist())
        node_of = dict(zip(mine["image_id"], mine["node_id"], strict=True))
        assert [t.nodes[c] for c in t.targets] == [node_of[i] for i in t.image_ids]
        assert all(g.nodes.set_index("node_id").loc[list(t.nodes), "n_own"] > 0)
    assert len({t.nodes for t in tasks if t.source == "s1"}) > 1  # the draws differ


def test_pseudo_task_ground_truth_is_zero_shot_top1_from_the_label_embeddings(labelled) -> None:
    g, dirs, _ = labelled
    tasks = pseudo_tasks(g, per_source=3, classes=(2, 4))
    digests = g.images["digest"].tolist()
    for d in dirs.values():
        e = LabelEmbeddings.open(embeddings_path(d))
        got = pseudo_task_accuracy(tasks, g, e, label_node_prompts(g, ModelLabel.load(d)))
        row = {bytes(r).hex(): i for i, r in enumerate(np.asarray(e.image_digest))}
        img = np.asarray(e.image_emb, np.float32)
        txt = np.asarray(e.text_emb, np.float32)  # labelled in full: node order
        node_pos = {n: i for i, n in enumerate(g.node_ids)}
        want = []
        for t in tasks:
            hits = 0
            for i, c in zip(t.image_ids, t.targets, strict=True):
                x = img[row[digests[i]]]
                scores = [float(x @ txt[node_pos[n]]) for n in t.nodes]
                hits += int(np.argmax(scores) == c)
            want.append(hits / len(t.image_ids))
        np.testing.assert_allclose(got, want, atol=1e-12)
    # a foreign embeddings file (another graph's images) is refused by name
    e = LabelEmbeddings.open(embeddings_path(next(iter(dirs.values()))))
    e.image_digest = e.image_digest[:1]
    e.image_emb = e.image_emb[:1]
    with pytest.raises(EmbeddingsError, match="not in these embeddings"):
        pseudo_task_accuracy(tasks, g, e, label_node_prompts(g, ModelLabel.load(
            next(iter(dirs.values())))))


def test_lovm_features_on_a_constructed_case() -> None:
    d = 6
    a = np.deg2rad(60)
    P = np.zeros((4, d))
    P[0, 0] = 1
    P[1, :2] = [np.cos(a), np.sin(a)]  # cos(P0, P1) = 0.5; P2, P3 orthogonal to all
    P[2, 2] = P[3, 3] = 1
    owner = np.array([0, 0, 1, 2, 3, 3])
    D = P[owner].copy()
    D[1] = [np.cos(0.3), 0, 0, 0, np.sin(0.3), 0]  # cos 0.955 to its own prompt P0
    syn = np.stack([P[0], np.eye(d)[5], P[2]])  # class 0: cos 1 and 0; class 2: cos 1
    syn_owner = np.array([0, 0, 2])
    f = lovm_features(P, D, owner, syn, syn_owner, sigma=1e-3)
    assert f["text_acc"] == 1.0 and f["text_f1"] == 1.0  # far apart, small noise
    assert f["intra_sim"] == pytest.approx(np.mean([(1 + np.cos(0.3)) / 2, 1, 1, 1]))
    assert f["inter_sim"] == pytest.approx((0.5 + 0.5 + 0 + 0) / 4)
    # classes 1 and 3 have no synonyms and count 1
    assert f["synonym"] == pytest.approx(np.mean([0.5, 1, 1, 1]))
    # a description of class 3 that sits on class 2: text-acc 5/6, F1 by hand
    D2 = D.copy()
    D2[5] = P[2]
    f2 = lovm_features(P, D2, owner, syn, syn_owner, sigma=0.0, repeats=1)
    assert f2["text_acc"] == pytest.approx(5 / 6)
    # class 2: TP 1, FP 1 -> 2/3; class 3: TP 1, FN 1 -> 2/3; classes 0, 1: 1
    assert f2["text_f1"] == pytest.approx(np.mean([1, 1, 2 / 3, 2 / 3]))
    # large noise makes the text classification fail often
    assert lovm_features(P, D, owner, syn, syn_owner, sigma=3.0, repeats=50)["text_acc"] < 0.6


def test_class_synonyms_from_wordnet() -> None:
    assert class_synonyms("dog") == ["domestic dog", "Canis familiaris"]
    assert class_synonyms("trout", "trout.n.01") == ["fish"]  # no other lemma: the hypernym
    assert class_synonyms("no such concept xyzzy") == []


def test_paper_features_from_a_real_text_tower(labelled) -> None:
    g, dirs, lms = labelled
    ref = sorted(lms)[0]
    lm = lms[ref]
    bank = TextBank(lm)

    def enc(texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return lm.model.encode_text(lm.tokenizer(texts), normalize=True).numpy()

    np.testing.assert_allclose(bank(["a dog", "a cat", "a dog"]), enc(["a dog", "a cat", "a dog"]),
                               atol=1e-5)
    texts = ClassTexts(["dog", "trout"], [["a dog barking", "a puppy"], ["a fish"]],
                       [["domestic dog"], ["fish"]])
    v = paper_features(bank, texts, 0.25)
    P = enc(["a photo of a dog.", "a photo of a trout."])
    want = lovm_features(P, enc(["a dog barking", "a puppy", "a fish"]), np.array([0, 0, 1]),
                         enc(["a photo of a domestic dog.", "a photo of a fish."]),
                         np.array([0, 1]))
    assert len(v) == len(PAPER_FEATURES)
    assert v.tolist() == pytest.approx([0.25] + [want[k] for k in PAPER_FEATURES[1:]], abs=1e-5)
    assert v[PAPER_FEATURES.index("inter_sim")] == pytest.approx(float(P[0] @ P[1]), abs=1e-5)


def test_centred_regression_recovers_a_linear_relation_despite_task_offsets() -> None:
    rng = np.random.default_rng(0)
    T, M = 12, 6
    groups = np.repeat(np.arange(T), M)
    X = rng.random((T * M, 3)) + 5 * rng.random(T)[groups, None]  # task-level feature shifts
    w = np.array([0.4, -0.3, 0.2])
    y = X @ w + 3 * rng.random(T)[groups]  # task-level accuracy offsets, unrelated to X
    m = CentredRegression(ridge=0.0).fit(X, y, groups)
    assert m.coef is not None
    np.testing.assert_allclose(m.coef, w, atol=1e-8)
    one = X[groups == 0]
    pred = m.predict(one)
    np.testing.assert_allclose(pred, (one - one.mean(0)) @ w, atol=1e-8)
    assert abs(pred.sum()) < 1e-9  # a centred prediction: deviation from the task's mean
    # an uncentred least-squares fit is thrown off by the offsets
    naive = np.linalg.lstsq(np.column_stack([X, np.ones(len(X))]), y, rcond=None)[0][:3]
    assert np.abs(naive - w).max() > 0.05
    heavy = CentredRegression(ridge=1e9).fit(X, y, groups).coef
    assert heavy is not None and np.abs(heavy).max() < 1e-6
    with pytest.raises(ValueError, match="before predicting"):
        CentredRegression().predict(X)


def test_fit_paper_modelgpt_on_pseudo_tasks_and_refuses_missing_embeddings(labelled) -> None:
    g, dirs, lms = labelled
    refs = sorted(dirs)
    labels = {r: ModelLabel.load(d) for r, d in dirs.items()}
    emb = {r: embeddings_path(d) for r, d in dirs.items()}
    tasks = pseudo_tasks(g, per_source=2, classes=(2, 3))
    fit = fit_paper_modelgpt(g, labels, emb, lambda r: TextBank(lms[r]), tasks=tasks,
                             describe=lambda c, t: [f"a {c.name}."])
    assert fit.refs == refs and fit.X.shape == (len(tasks) * 2, len(PAPER_FEATURES))
    acc = [pseudo_task_accuracy(tasks, g, LabelEmbeddings.open(emb[r]),
                                label_node_prompts(g, labels[r])) for r in refs]
    np.testing.assert_allclose(fit.y, np.stack(acc, 1).reshape(-1))
    general = inb_scores(labels)
    assert fit.X[:, 0].tolist() == pytest.approx([general[r] for _ in tasks for r in refs])
    s = fit.summary()
    assert s["pseudo_tasks"] == len(tasks) and s["sources"] == ["s1", "s2"]
    with pytest.raises(EmbeddingsError, match="keep_embeddings") as err:
        check_embeddings(refs, {refs[0]: emb[refs[0]]})
    assert refs[1] in str(err.value) and refs[0] not in str(err.value)
    with pytest.raises(EmbeddingsError, match="keep_embeddings"):
        fit_paper_modelgpt(g, labels, {}, lambda r: TextBank(lms[r]), tasks=tasks)


# -- oracles and the bench table -------------------------------------------------------------------
def test_per_class_f1_oracle_picks_best_f1_not_best_recall() -> None:
    targets = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([[0, 0, 0, 0, 0, 2],    # model 0: recall 1 on class 0, but 2 FPs
                     [0, 1, 1, 1, 2, 2]])   # model 1: one miss on class 0, no FP for it
    f1 = per_class_f1(pred, targets, 3)
    np.testing.assert_allclose(f1, [[2 * 2 / (2 * 2 + 3), 0, 2 / 3],
                                    [2 / 3, 4 / 5, 1]])
    recall = np.array([[1.0, 0.0, 0.5], [0.5, 1.0, 1.0]])
    assert oracle_per_class(recall)[0, 0] == 0  # the old per-class recall oracle: model 0
    assert oracle_per_class_f1(pred, targets, 3).tolist() == [[1], [1], [1]]
    # a class with neither images nor predictions scores 0, not nan
    assert per_class_f1(pred, targets, 4)[:, 3].tolist() == [0.0, 0.0]


def test_bench_table_bolds_the_best_selection_method_not_an_oracle() -> None:
    from mll_registry.evaluation.bench import METHODS, ORACLES, BenchConfig, BenchResult, TaskRun
    from mll_registry.task import Task, TaskClass

    assert {"ModelGPT (paper)", "ModelGPT (target-fit)", "Oracle (per-class F1)"} <= set(METHODS)
    assert set(ORACLES) <= set(METHODS)
    top1 = {m: 0.1 + 0.01 * i for i, m in enumerate(METHODS) if m not in ORACLES}
    top1["ModelGPT (paper)"] = 0.5
    top1.update({o: 0.9 for o in ORACLES})
    tau = {"MLL": 0.1, "INB": 0.2, "ModelGPT (paper)": 0.3, "ModelGPT (target-fit)": 0.4}
    run = TaskRun(Task("t", [TaskClass("a"), TaskClass("b")]), top1, {m: "x" for m in METHODS},
                  {"x": 0.5}, np.zeros((1, 2)), tau, 0.1, 1.0)
    res = BenchResult([run], ["x"], BenchConfig())
    md = res.markdown()
    row = md.splitlines()[2]
    assert row.count("**") == 2 and "**0.500**" in row and "**0.900**" not in row
    assert "| 0.30 |" in row  # the ModelGPT (paper) tau column
    d = res.to_dict()
    assert d["average_kendall_tau"]["ModelGPT (paper)"] == 0.3
    assert set(d["average_top1"]) == set(METHODS)


def test_run_bench_reports_every_method_and_refuses_labels_without_embeddings(
        labelled, tmp_path: Path) -> None:
    from mll_registry.evaluation.bench import BENCH_METHODS, METHODS, BenchMethod, run_bench
    from mll_registry.models.loading import load
    from mll_registry.task import Task, TaskClass

    g, dirs, _ = labelled
    for k, c in enumerate(["dog", "trout", "car"]):
        for i in range(3):
            _noise_png(tmp_path / "task" / c / f"{i}.png", 900 + 10 * k + i)
    task = Task("t", [TaskClass(c) for c in ["dog", "trout", "car"]], data=tmp_path / "task")
    labels = {r: ModelLabel.load(d) for r, d in dirs.items()}
    with pytest.raises(EmbeddingsError, match="keep_embeddings"):
        run_bench([task], g, labels, lambda r: load(r, device="cpu"))
    # a method registered in code is measured as a column after the built-ins
    last = BenchMethod("Last model", lambda ev: (ev.correct_of(ev.refs[-1]), ev.refs[-1]))
    BENCH_METHODS.register("last", last)
    try:
        res = run_bench([task], g, labels, lambda r: load(r, device="cpu"),
                        embeddings={r: embeddings_path(d) for r, d in dirs.items()})
    finally:
        BENCH_METHODS.unregister("last")
    run = res.runs[0]
    # the task names no reference set: no attainable columns
    cols = tuple(m for m in METHODS if not m.startswith("Attainable"))
    assert res.methods == (*cols, "Last model") and "Last model" in res.markdown()
    assert len(res.rows()) == len(cols) + 1
    assert run.top1["Last model"] == run.per_model_top1[sorted(dirs)[-1]]
    assert set(run.top1) == {*cols, "Last model"}
    for m in ("ModelGPT (paper)", "ModelGPT (target-fit)", "INB"):
        assert run.top1[m] == run.per_model_top1[run.chosen[m]]
    assert "ModelGPT (paper)" in run.tau and run.per_class_f1.shape == (len(dirs), 3)
    assert res.modelgpt_paper["sources"] == ["s1", "s2"]


def test_attainable_references_choose_on_the_reference_set_not_on_the_task() -> None:
    """Constructed evidence where the reference set favours other models than the task does:
    each attainable choice is the reference set's, scored on the task's images."""
    from mll_registry.evaluation.bench import (
        BUILTIN_METHODS,
        ReferenceEvidence,
        TaskEvidence,
    )
    from mll_registry.task import Task, TaskClass

    targets = np.array([0, 0, 1, 1])
    sure = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])  # right on every image
    wrong = sure[:, ::-1]  # wrong on every image
    half = np.array([[0.8, 0.2], [0.8, 0.2], [0.8, 0.2], [0.8, 0.2]])  # always class 0
    refs = ["a", "b", "c"]
    probs = [sure, wrong, half]
    f1 = per_class_f1(np.stack([p.argmax(1) for p in probs]), targets, 2)
    # on the reference set, "b" is the best single model and "c" the best on class 0
    ref = ReferenceEvidence({"a": 0.3, "b": 0.6, "c": 0.5},
                            np.array([[0.2, 0.2], [0.5, 0.9], [0.8, 0.1]]))
    ev = TaskEvidence(Task("t", [TaskClass("x"), TaskClass("y")]), refs, probs, targets,
                      {"a": 1.0, "b": 0.0, "c": 0.5}, "a", {}, "a", f1, "inverse_entropy",
                      reference=ref)
    by = {m.name: m for m in BUILTIN_METHODS}
    correct, chosen = by["Attainable (single)"].pick(ev)
    assert chosen == "b" and correct.tolist() == [False] * 4
    assert by["Oracle (single)"].pick(ev)[1] == "a"
    correct, chosen = by["Attainable (per-class F1)"].pick(ev)
    # class 0 scored by "c" (0.8 with its own entropy weight), class 1 by "b"
    w_c = 1 / (-(0.8 * np.log(0.8) + 0.2 * np.log(0.2)) + 1e-8)
    w_b = 1 / (-(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) + 1e-8)
    expected = np.stack([0.8 * w_c * np.ones(4), wrong[:, 1] * w_b], 1).argmax(1) == targets
    assert chosen == ["b", "c"] and correct.tolist() == expected.tolist()


def test_the_bench_measures_the_reference_set_the_task_names(labelled, tmp_path: Path) -> None:
    """The reference set holds copies of the task's images filed under other classes and in
    other numbers, so each model's reference top-1 follows from its task predictions: computed
    here with numpy and checked against the bench's measurement."""
    import shutil

    from mll_registry.evaluation.bench import METHODS, measure_reference, run_bench
    from mll_registry.models.loading import load
    from mll_registry.task import Task, TaskClass

    g, dirs, _ = labelled
    names = ["dog", "trout", "car"]
    for k, c in enumerate(names):
        for i in range(3):
            _noise_png(tmp_path / "task" / c / f"{i}.png", 700 + 10 * k + i)
    # (task class, image, reference class)
    filing = [(2, 0, 0), (0, 0, 1), (0, 1, 1), (0, 2, 1), (1, 0, 1), (1, 1, 1), (1, 2, 1),
              (2, 1, 2), (2, 2, 2)]
    for n, (tc, i, rc) in enumerate(filing):
        dst = tmp_path / "ref" / names[rc] / f"{n}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "task" / names[tc] / f"{i}.png", dst)
    task = Task("t", [TaskClass(c) for c in names], data=tmp_path / "task",
                reference=tmp_path / "ref")
    labels = {r: ModelLabel.load(d) for r, d in dirs.items()}
    res = run_bench([task], g, labels, lambda r: load(r, device="cpu"),
                    embeddings={r: embeddings_path(d) for r, d in dirs.items()})
    run = res.runs[0]
    assert res.methods == METHODS and {"Attainable (single)", "Attainable (per-class F1)"} <= \
        set(res.references)
    refs = sorted(dirs)
    pred = np.stack([p.argmax(1) for p in run.probs])  # (M, 9) task class order
    ref_pred = np.array([[pred[m, 3 * tc + i] for tc, i, _ in filing] for m in range(len(refs))])
    ref_targets = np.array([rc for _, _, rc in filing])
    measured = measure_reference(task, refs, lambda r: load(r, device="cpu"))
    assert measured is not None
    for m, r in enumerate(refs):
        assert measured.top1[r] == pytest.approx(float(np.mean(ref_pred[m] == ref_targets)))
    single = refs[int(np.argmax((ref_pred == ref_targets).mean(1)))]  # ties: the first model
    assert run.chosen["Attainable (single)"] == single
    assert run.top1["Attainable (single)"] == run.per_model_top1[single]


def test_pseudo_evidence_holds_the_tasks_source_out_and_scores_from_the_embeddings(
        labelled) -> None:
    from mll_registry.evaluation.baselines import (
        label_node_prompts,
        pseudo_task_accuracy,
        pseudo_tasks,
    )
    from mll_registry.evaluation.tuning import choose_reuse_settings, pseudo_evidence
    from mll_registry.labels.embeddings import LabelEmbeddings

    g, dirs, _ = labelled
    labels = {r: ModelLabel.load(d) for r, d in dirs.items()}
    emb = {r: embeddings_path(d) for r, d in dirs.items()}
    tasks = pseudo_tasks(g, per_source=2)
    ev = pseudo_evidence(g, labels, emb, tasks=tasks)
    refs = sorted(labels)
    member_node = g.members["node_id"].to_numpy()
    member_src = g.images["source"].to_numpy()[g.members["image_id"].to_numpy(np.int64)]
    for e, t in zip(ev, tasks, strict=True):
        # each model's argmax accuracy is the one pseudo_task_accuracy computes on its own
        for m, ref in enumerate(refs):
            want = pseudo_task_accuracy([t], g, LabelEmbeddings.open(emb[ref]),
                                        label_node_prompts(g, labels[ref]))[0]
            for cal in ("none", "graph"):  # a positive scale never changes the argmax
                assert np.mean(e.probs(cal)[m].argmax(1) == t.targets) == pytest.approx(want)
                assert np.allclose(e.probs(cal)[m].sum(1), 1.0)
            # the own scale is the label's; the calibrated one is fitted without the task's
            # source: the fit on the other source's own images, found independently
            assert e.scales["none"][m] == pytest.approx(labels[ref].meta["logit_scale"])
            assert e.scales["graph"][m] == pytest.approx(_held_out_scale(g, emb[ref],
                                                                         labels[ref], t.source), rel=1e-2)
        # the counts behind each class: its node's member images from the other sources only
        held = [int(((member_node == n) & (member_src != t.source)).sum()) for n in t.nodes]
        assert e.n.tolist() == held
    choice = choose_reuse_settings(ev, zs=(None, 1e9))
    assert choice.best == max(choice.table, key=choice.table.get)
    for cal in ("none", "graph"):  # one model each: the mode makes no difference
        assert choice.table[("per_class", 1e9, cal)] == choice.table[("pooled", 1e9, cal)]
    # the table is the mean over held-out sources of each source's mean
    key = ("pooled", None, "graph")
    by = {s: np.mean([e.top1("pooled", None, 1, calibration="graph") for e in ev
                      if e.task.source == s]) for s in {e.task.source for e in ev}}
    assert choice.table[key] == pytest.approx(np.mean(list(by.values())))


def _held_out_scale(g, emb_path, label, source: str) -> float:
    """The NLL-minimising scale over the own images of the other sources, among the folder
    nodes, by a brute-force search over a fine grid (independent of the fit's optimiser)."""
    from mll_registry.evaluation.baselines import label_node_prompts
    from mll_registry.labels.embeddings import (
        LabelEmbeddings,
        digest_bytes,
        row_index,
        text_keys,
    )

    e = LabelEmbeddings.open(emb_path)
    own = g.members[g.members["own"].to_numpy(bool)]
    src = g.images["source"].to_numpy()[own["image_id"].to_numpy(np.int64)]
    own = own[src != source]
    folder = sorted(set(g.members[g.members["own"].to_numpy(bool)]["node_id"]),
                    key=g.node_index().__getitem__)
    rows = row_index(e.image_digest, digest_bytes(
        g.images["digest"].to_numpy()[own["image_id"].to_numpy(np.int64)]))
    t_rows = row_index(e.text_key, text_keys(label_node_prompts(g, label)))
    X = np.asarray(e.image_emb[rows], np.float64)
    T = np.asarray(e.text_emb[t_rows[[g.node_index()[n] for n in folder]]], np.float64)
    y = np.array([folder.index(n) for n in own["node_id"]])
    cos = X @ T.T
    best = (np.inf, 0.0)
    for s in np.exp(np.linspace(np.log(0.05), np.log(1000), 3001)):
        z = s * cos
        top = z.max(1)
        nll = float(np.mean(np.log(np.exp(z - top[:, None]).sum(1)) + top - z[np.arange(len(y)), y]))
        best = min(best, (nll, float(s)))
    return best[1]
