"""The Prefect flows under Prefect's test harness, on real demo-hub models and a real MLflow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small graph (tree fixture layout), two demo-hub models in an ORG/NAME folder."""
    from conftest import missing_demo_hub, write_png

    from mll_registry.demo.hub import demo_model_dirs

    try:
        dirs = demo_model_dirs()[:2]
    except FileNotFoundError:
        missing_demo_hub()
    tmp = tmp_path_factory.mktemp("flows")
    for i in range(4):
        write_png(tmp / "src" / "dog.n.01" / f"{i}.png", 10 + i)
        write_png(tmp / "src" / "n02121808" / f"{i}.png", 60 + i)
    hub = tmp / "hub" / "mll-demo"
    for d in dirs:
        shutil.copytree(d, hub / d.name)
    return {"tmp": tmp, "hub": tmp / "hub", "src": tmp / "src"}


@pytest.fixture(scope="module")
def graph(world: dict[str, Path]) -> dict:
    from flows.graph import build_graph

    return build_graph(sources=[f"toy={world['src']}"], out=str(world["tmp"] / "graph"))


@pytest.fixture(scope="module")
def labelled(world: dict[str, Path], graph: dict) -> dict:
    from flows.labeling import label_new_models

    mp = pytest.MonkeyPatch()
    mp.setenv("MLL_DATA_DIR", str(world["tmp"] / "data"))
    try:
        yield label_new_models(source="local", local_root=str(world["hub"]),
                               graph=graph["path"], device="cpu")
    finally:
        mp.undo()


def test_build_graph_flow(graph: dict) -> None:
    assert graph["folder_nodes"] == 2 and graph["images"] == 8
    assert Path(graph["path"], "manifest.json").is_file()


def test_label_new_models_local_labels_each_once(world: dict[str, Path], graph: dict,
                                                 labelled: dict,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.labeling import label_new_models
    from mll_registry.models.refs import registered_name
    from mll_registry.registry.labels import Registry

    monkeypatch.setenv("MLL_DATA_DIR", str(world["tmp"] / "data"))
    g = graph
    first = labelled
    assert first["found"] == 2 and first["labelled"] == 2 and first["failed"] == {}
    again = label_new_models(source="local", local_root=str(world["hub"]),
                             graph=g["path"], device="cpu")
    assert again["found"] == 0 and again["labelled"] == 0  # past the watermark: a no-op
    versions = Registry().labelled_versions(g["version"])
    assert sorted(v.name for v in versions) == sorted(
        registered_name(f"local-dir:{p}") for p in (world["hub"] / "mll-demo").iterdir())


def test_select_models_flow_logs_run_and_artifacts(world: dict[str, Path], labelled: dict,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client

    from flows.selection import select_models
    from mll_registry.demo.tasks import ensure_demo_tasks
    from mll_registry.registry.labels import Registry

    monkeypatch.setenv("MLL_DATA_DIR", str(world["tmp"] / "data"))
    pets = ensure_demo_tasks(names=["pets"])[0].parent / "pets"
    data = world["tmp"] / "petdata"
    for c in ("dog", "cat"):
        shutil.copytree(pets / c, data / c)
    out = select_models(task_name="dogs-and-cats", classes=["dog", "cat"], domain="cartoon emoji",
                        k=1, data_path=str(data), graph=str(world["tmp"] / "graph"),
                        device="cpu", source_weighting="domain", register="dogs-and-cats")
    run = Registry().client.get_run(out["mlflow_run_id"])
    # registered as a deployable ensemble with the selection's run, the members it chose
    mv = Registry().client.get_model_version("dogs-and-cats", out["registered"]["version"])
    assert mv.run_id == out["mlflow_run_id"] and out["registered"]["uri"] == "models:/dogs-and-cats/1"
    assert mv.tags["mll.members"] == ",".join(out["selection"]["selected_models"])
    assert run.data.params["task"] == "dogs-and-cats" and run.data.params["k"] == "1"
    assert run.data.metrics["top1"] == pytest.approx(out["reuse"]["ensemble"]["top1"], abs=1e-4)
    assert out["reuse"]["images"] == 12
    # the sample-source weights used: a one-source graph weighs its source 1, and says why
    assert run.data.params["source_weighting"] == "domain"
    assert run.data.metrics["source_weight_toy"] == 1.0
    assert "one sample source" in run.data.params["source_weights_uniform_because"]
    with get_client(sync_client=True) as client:
        arts = {a.key: a for a in client.read_artifacts()}
    assert {"selection-dogs-and-cats", "selection-dogs-and-cats-run"} <= set(arts)
    md = str(arts["selection-dogs-and-cats-run"].data)
    assert "| toy | 1.000 |" in md and "one sample source" in md
    assert "Registered as `models:/dogs-and-cats/1`" in md
    # the promotion flow: the first version takes the alias, measured on the same images
    from flows.selection import promote_ensemble

    pro = promote_ensemble(name="dogs-and-cats", version="1", classes=["dog", "cat"],
                           data_path=str(data))
    assert pro["decision"] == "first" and pro["top1"]["1"] == pytest.approx(
        out["reuse"]["ensemble"]["top1"], abs=1e-4)  # the ensemble reuse measured, served
    assert Registry().client.get_model_version_by_alias("dogs-and-cats", "champion").version \
        in (1, "1")


def test_extend_graph_flow_publishes_the_child_and_labels_each_model_incrementally(
        world: dict[str, Path], graph: dict, labelled: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import write_png

    from flows.graph import extend_graph
    from mll_registry.graph.bundle import SemanticGraph
    from mll_registry.registry.labels import Registry

    monkeypatch.setenv("MLL_DATA_DIR", str(world["tmp"] / "data"))
    for i in range(3):
        write_png(world["tmp"] / "more" / "horse.n.01" / f"{i}.png", 120 + i)
    out = extend_graph(base=graph["path"], sources=[f"more={world['tmp'] / 'more'}"])
    child = SemanticGraph.load(out["path"])
    assert out["parent"] == graph["version"] and out["published"]["graph_version"] == child.version
    assert child.manifest["lineage"]["parent"] == graph["version"]
    assert out["published"]["parent"] == graph["version"]
    added = len(set(child.node_ids) - set(SemanticGraph.load(graph["path"]).node_ids))
    assert added >= 2 and out["published"]["delta"].startswith(f"+{added} nodes, +3 images")
    assert len(out["labelled"]) == 2  # the two models labelled on the parent
    for r in out["labelled"]:
        assert r["status"] == "labelled" and r["images_encoded"] == 3, r
        assert r["incremental"]["from_graph"] == graph["version"]
    versions = Registry().labelled_versions(child.version)
    assert len(versions) == 2
    assert all(Registry().client.get_model_version(v.name, str(v.version)).tags[
        "mll.incremental_from"] == graph["version"] for v in versions)
