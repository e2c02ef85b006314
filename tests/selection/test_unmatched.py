"""Classes with no good match in the graph: one rule for select and query best, and the user's
choice of what to do with them (fallback, drop, fail)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mll_registry.graph.concepts import resolve_concept
from mll_registry.settings import Settings

DEMO = Path(__file__).resolve().parents[2] / "demo_hub" / "mll-demo"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A small graph (dogs, cats and their hypernyms) and three demo models labelled on it."""
    from conftest import write_png

    from mll_registry.app.root import App
    from mll_registry.graph.bundle import SampleDataset, build_graph

    root = tmp_path_factory.mktemp("unmatched")
    for i in range(3):
        write_png(root / "src" / "dog.n.01" / f"{i}.png", 10 + 40 * i)
        write_png(root / "src" / "n02121808" / f"{i}.png", 130 + 40 * i)
    g = build_graph([SampleDataset("src", root / "src")])[0]
    app = App(Settings(top_k=4, device="cpu", label_store="local", data_dir=str(root / "d")))
    for name in ("vit-animals", "resnet-objects", "vit-food"):
        app.labelling.label(f"local-dir:{DEMO / name}", g).to_dict()
    return app, g


def _task(*names: str):
    from mll_registry.task import Task, TaskClass

    return Task("mixed", [TaskClass(n) for n in names], domain="photo")


@pytest.mark.slow
def test_absent_class_is_flagged_and_present_ones_are_not(world) -> None:
    app, g = world
    sel = app.selection.select(_task("dog", "giraffe", "Siamese cat"), g).result
    assert sel.weak == ["giraffe"]
    assert sel.matched_by == {"dog": "name", "giraffe": "none", "Siamese cat": "name"}
    # the same resolution answers `mll query best`: giraffe is no graph concept, Siamese cat is
    # a cat (its head noun), dog is dog
    with pytest.raises(KeyError, match="giraffe"):
        resolve_concept("giraffe", g.node_ids)
    assert resolve_concept("Siamese cat", g.node_ids)[0] in g.node_ids
    assert resolve_concept("dog", g.node_ids)[0] == "dog.n.01"


@pytest.mark.slow
def test_fallback_gives_unmatched_classes_the_best_general_models(world) -> None:
    from mll_registry.labels.stores import load_labels

    app, g = world
    app = type(app)(Settings(**{**app.settings.recorded(), "k": 2, "unmatched": "fallback"}))
    sel = app.selection.select(_task("dog", "giraffe"), g).result
    labels = load_labels(app.label_store().list_labels(g.version, app.settings.label_hash()),
                         g.version)
    general = sorted(labels, key=lambda r: -float(labels[r].summary["acc1"].mean()))
    row = {c["class"]: c for c in sel.per_class()}
    assert [m["model"] for m in row["giraffe"]["models"]] == general[:2]
    assert row["giraffe"]["fallback"] and not row["dog"]["fallback"]
    # dog keeps its selection by the reuse metric
    dog = sel.classes.index("dog")
    want = [sel.models[i] for i in np.argsort(-sel.reuse[:, dog], kind="stable")[:2]]
    assert [m["model"] for m in row["dog"]["models"]] == want


@pytest.mark.slow
def test_drop_and_fail(world) -> None:
    from mll_registry.selection.select import SelectionError

    app, g = world
    drop = type(app)(Settings(**{**app.settings.recorded(), "unmatched": "drop"}))
    sel = drop.selection.select(_task("dog", "giraffe"), g)
    assert sel.result.classes == ["dog"] and sel.result.dropped == ["giraffe"]
    assert sel.task.class_names == ["dog"]  # reuse then measures the classes left
    fail = type(app)(Settings(**{**app.settings.recorded(), "unmatched": "fail"}))
    with pytest.raises(SelectionError, match="giraffe"):
        fail.selection.select(_task("dog", "giraffe"), g)


@pytest.mark.parametrize("k", [1, 2])
def test_choose_by_hand(k: int) -> None:
    """Unmatched classes take the general order; the others the reuse metric's order."""
    from mll_registry.selection.select import choose

    r = np.array([[0.9, 0.1, 0.2],   # model 0: best for class 0
                  [0.1, 0.8, 0.3],   # model 1: best for class 1
                  [0.5, 0.4, 0.7]])  # model 2: best for class 2
    general = np.array([1, 2, 0])  # model 1 is the best general model, then 2
    got = choose(r, k, unmatched=[2], general=general)
    assert got[:, 0].tolist() == [0, 1, 1]  # class 2 gets model 1, not its own best (2)
    if k == 2:
        assert got.tolist() == [[0, 2], [1, 2], [1, 2]]
    assert choose(r, k, unmatched=[2], general=None)[2, 0] == 2  # no fallback: reuse order
