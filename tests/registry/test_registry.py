"""The MLflow registry, against a real `mlflow server` and in embedded (sqlite) mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import label_and_register

from mll_registry.demo.archs import build_tiny
from mll_registry.graph.bundle import SampleDataset, build_graph
from mll_registry.graph.concepts import resolve_concept
from mll_registry.labels.labeller import LabelConfig, label_model
from mll_registry.models.loading import save_open_clip_dir
from mll_registry.models.refs import registered_name, resolve
from mll_registry.registry.label_index import LabelIndex
from mll_registry.registry.labels import ALIAS, Registry
from mll_registry.registry.tracking import LABEL_EXPERIMENT, RegistryError

pytestmark = pytest.mark.slow


@pytest.fixture()
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny models under an org name unique to the test (the server is shared)."""
    import uuid

    root = tmp_path_factory.mktemp("hub") / f"org{uuid.uuid4().hex[:8]}"
    out = []
    for i, arch in enumerate(["tiny-vit", "tiny-resnet"]):
        m, cfg = build_tiny(arch, seed=10 + i)
        out.append(save_open_clip_dir(m, cfg, root / f"m{i}"))
    return out


@pytest.fixture()
def graph(tree: Path):
    return build_graph([SampleDataset("A", tree / "A"), SampleDataset("B", tree / "B")])[0]


@pytest.fixture(params=["embedded", "server"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    if request.param == "server":
        url = request.getfixturevalue("mlflow_server")
        return Registry(url, root=tmp_path / "data")
    return Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", root=tmp_path / "data")


def test_name_mapping() -> None:
    import hashlib

    assert registered_name("hf-hub:laion/CLIP-ViT-B-32@abc") == "hf--laion--CLIP-ViT-B-32"
    assert registered_name("local-dir:/x/mll-demo/vit-food") == (
        "local--vit-food--" + hashlib.sha256(b"/x/mll-demo/vit-food").hexdigest()[:12])
    assert registered_name("open_clip:ViT-B-32/openai") == "open_clip--ViT-B-32--openai"
    # two folders with the same last parts, and a Hub repo of that name: three names
    assert len({registered_name("local-dir:/x/mll-demo/vit-food"),
                registered_name("local-dir:/y/mll-demo/vit-food"),
                registered_name("hf-hub:mll-demo/vit-food")}) == 3


def test_label_run_version_tags_alias(registry: Registry, models: list[Path], graph) -> None:
    ref = f"local-dir:{models[0]}"
    out = label_and_register(ref, graph, LabelConfig(top_k=4, device="cpu"), registry,
                             root=registry.root)
    assert out["status"] == "labelled" and out["name"] == registered_name(ref)
    res = resolve(ref)
    c = registry.client
    v = c.get_model_version(out["name"], str(out["version"]))
    assert v.source == f"models:/{v.tags['mll.model_id']}"  # MLflow-native: the label model
    assert v.tags["mll.pinned_source"] == f"local-dir:{models[0]}@{res.revision}"
    assert v.tags["mll.status"] == "ready" and v.tags["mll.graph_version"] == graph.version
    assert float(v.tags["mll.mean_acc1"]) == pytest.approx(out["mean_acc1"], abs=1e-4)
    assert int(c.get_model_version_by_alias(out["name"], ALIAS).version) == int(v.version)
    run = c.get_run(v.run_id)
    assert run.data.params["graph_version"] == graph.version
    assert run.data.params["templates"] == '["a photo of a {}."]'
    assert {"mean_acc1", "coverage", "images_per_s"} <= set(run.data.metrics)
    arts = {a.path for a in c.list_artifacts(v.run_id)}
    assert {"label", "summary.csv", "concepts.png"} <= arts
    assert {a.path for a in c.list_artifacts(v.run_id, "label")} == {
        "label/ranks", "label/scores.safetensors", "label/meta.json", "label/summary.parquet"}
    assert {a.path for a in c.list_artifacts(v.run_id, "label/ranks")} == {
        "label/ranks/00000.safetensors"}  # the graph's images fit one chunk
    exp = c.get_experiment_by_name(LABEL_EXPERIMENT)
    assert run.info.experiment_id == exp.experiment_id

    # idempotent: a second call is a no-op
    again = label_and_register(ref, graph, LabelConfig(top_k=4, device="cpu"), registry,
                               root=registry.root)
    assert again["status"] == "skipped" and again["version"] == out["version"]
    # ... found before any work: nothing was computed (a full relabel reports its timings)
    assert again["reason"] == "already labelled with these settings" and "seconds" not in again
    assert len(registry.versions(out["name"])) == 1
    # forced: a new version, and the alias moves to it
    forced = label_and_register(ref, graph, LabelConfig(top_k=4, device="cpu"), registry,
                                force=True, root=registry.root)
    assert forced["version"] == out["version"] + 1
    assert int(c.get_model_version_by_alias(out["name"], ALIAS).version) == forced["version"]


def _register_after_barrier(uri: str, root: str, ref: str, label_dir: str, barrier, out) -> None:
    """A separate process: open the registry, wait until every process is ready, register."""
    try:
        from mll_registry.labels.format import ModelLabel

        reg = Registry(uri, root=root)
        res, lab = resolve(ref), ModelLabel.load(label_dir)
        barrier.wait(timeout=120)
        v = reg.register_label(res, lab, Path(label_dir))[0]
        out.put(("ok", v.version))
    except Exception as exc:  # pragma: no cover - shown on failure
        out.put(("error", repr(exc)))


def test_concurrent_registration_leaves_one_version(registry: Registry, models: list[Path],
                                                    graph) -> None:
    """Four processes register the same label at the same moment (a barrier releases them
    together): one ready version, and every process reports that same version."""
    import multiprocessing as mp

    res = resolve(f"local-dir:{models[1]}")
    from mll_registry.models.loading import load

    lab = label_model(load(res, device="cpu"), graph, LabelConfig(top_k=4)).label
    path = lab.save(Path(registry.root or ".") / "lab")
    ctx = mp.get_context("spawn")
    n = 4
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_register_after_barrier,
                         args=(registry.uri, str(registry.root), str(res.ref), str(path),
                               barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [r for r in results if r[0] != "ok"] == []
    name = registered_name(res.ref)
    ready = [v for v in registry.versions(name) if v.tags.get("mll.status") == "ready"]
    assert len(ready) == 1
    assert {r[1] for r in results} == {int(ready[0].version)}


def test_failed_labelling_leaves_nothing_registered(registry: Registry, models: list[Path],
                                                   graph, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk during the label upload fails at once (no retry) with the one-line error."""
    import errno

    from mll_registry.cli.common import known_message

    calls = []

    def full(*a, **k):
        calls.append(a)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(registry.client, "log_artifacts", full)
    with pytest.raises(OSError) as err:
        label_and_register(f"local-dir:{models[0]}", graph, LabelConfig(top_k=4, device="cpu"),
                           registry, root=registry.root)
    assert len(calls) == 1  # not retried
    assert (known_message(err.value) or "").startswith("the disk is full")
    name = registered_name(f"local-dir:{models[0]}")
    assert registry.versions(name) == []
    runs = registry.client.search_runs([registry.experiment(LABEL_EXPERIMENT)],
                                       f"tags.`mll.registered_model` = '{name}'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_connection_reset_during_the_label_upload_is_retried(
        registry: Registry, models: list[Path], graph, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """The first upload sends one file for real, then the connection is reset: the upload is
    retried, the version ends ready, and the registered label is the labelled one, whole."""
    import errno
    import json

    import mlflow

    from mll_registry.labels.format import ModelLabel, checksum_mismatch

    real = registry.client.log_artifacts
    calls = []

    def reset_once(run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        calls.append(local_dir)
        if len(calls) == 1:
            first = sorted(p for p in Path(local_dir).iterdir() if p.is_file())[0]
            registry.client.log_artifact(run_id, str(first), artifact_path)
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        real(run_id, local_dir, artifact_path)

    monkeypatch.setattr(registry.client, "log_artifacts", reset_once)
    ref = f"local-dir:{models[0]}"
    out = label_and_register(ref, graph, LabelConfig(top_k=4, device="cpu"), registry,
                             root=registry.root)
    assert len(calls) == 2
    v = registry.client.get_model_version(out["name"], str(out["version"]))
    assert v.tags["mll.status"] == "ready"
    fetched = Path(mlflow.artifacts.download_artifacts(
        run_id=v.run_id, artifact_path="label", dst_path=str(tmp_path / "fetched"),
        tracking_uri=registry.uri))
    assert not checksum_mismatch(fetched)  # every file the meta lists, whole
    meta = json.loads((fetched / "meta.json").read_text())
    from mll_registry.labels.format import stored_files

    assert set(stored_files(meta)) <= {str(p.relative_to(fetched)) for p in fetched.rglob("*")}
    assert ModelLabel.load(fetched).meta["model_ref"] == ref


def test_label_index_queries_and_invalidation(registry: Registry, models: list[Path],
                                              graph) -> None:
    cfg = LabelConfig(top_k=4, device="cpu")
    label_and_register(f"local-dir:{models[0]}", graph, cfg, registry, root=registry.root)
    idx = LabelIndex(registry, graph.version, max_age=0).refresh()
    n0 = len(idx.versions)
    assert n0 >= 1
    label_and_register(f"local-dir:{models[1]}", graph, cfg, registry, root=registry.root)
    idx2 = LabelIndex(registry, graph.version, max_age=0).refresh()  # from disk, then +1 version
    assert len(idx2.versions) == n0 + 1 and idx2.build_stats["fetched"] == 1
    hits = idx2.best("carnivore.n.01", n=100)
    assert len(hits) == n0 + 1
    # ranked by acc@1 (then acc@5, mean own score), values straight from the labels
    store = registry.list_labels(graph.version)
    from mll_registry.labels.format import ModelLabel

    direct = {}
    for ref, p in store.items():
        s = ModelLabel.load(p).summary.set_index("node_id").loc["carnivore.n.01"]
        direct[ref] = (s["acc1"], s["acc5"], s["mean_own"])
    want = sorted(direct, key=lambda r: tuple(-x for x in direct[r]))
    assert [h.model_ref for h in hits] == want
    assert hits[0].acc1 == pytest.approx(direct[want[0]][0])
    assert hits[0].n_images == 6
    with pytest.raises(KeyError):
        idx2.best("spaceship.n.01")
    # warm: a fresh index object trusts the disk cache within max_age (no registry call)
    warm = LabelIndex(registry, graph.version, max_age=3600).refresh()
    assert "version_check_s" not in warm.build_stats and len(warm.versions) == n0 + 1

    def no_mlflow() -> Registry:
        raise AssertionError("a fresh disk cache must not touch MLflow")

    lazy = LabelIndex(no_mlflow, graph.version, max_age=3600, uri=registry.uri,
                      root=registry.root).refresh()
    assert [h.model_ref for h in lazy.best("carnivore.n.01", n=100)] == want


def test_selection_run_logged(registry: Registry, models: list[Path], graph, tmp_path: Path) -> None:
    from mll_registry.labels.format import ModelLabel
    from mll_registry.selection.select import SelectOptions, select
    from mll_registry.task import Task, TaskClass

    cfg = LabelConfig(top_k=4, device="cpu")
    for m in models:
        label_and_register(f"local-dir:{m}", graph, cfg, registry, root=registry.root)
    labels = {r: ModelLabel.load(p) for r, p in registry.list_labels(graph.version).items()}
    task = Task("pets", [TaskClass("dog"), TaskClass("cat")], domain="photo")
    sel = select(task, graph, labels, SelectOptions(k=1), root=registry.root)
    links, model_ids = registry.selection_links(sel.selected_models(), graph.version)
    rid = registry.log_selection(task, sel, links=links, model_ids=model_ids)
    run = registry.client.get_run(rid)
    assert run.data.params["k"] == "1" and run.data.params["alpha"] == "0.7"
    assert run.data.params["embedding_model"] == "all-MiniLM-L6-v2"
    assert run.data.params["caption_provider"] == "wordnet"
    links = run.data.tags["mll.model_versions"].split(",")
    assert links and all(link.split("/")[0] in {registered_name(r) for r in labels}
                         for link in links)
    arts = {a.path for a in registry.client.list_artifacts(rid)}
    assert {"selection.json", "selection.csv", "ensemble_composition.json"} <= arts
    assert run.data.metrics["models_used"] == len(sel.selected_models())
    # the versions used are the run's model inputs (MLflow logged models), one per model used
    used = {registry.client.get_model_version(*link.split("/")).tags["mll.model_id"]
            for link in links}
    assert {m.model_id for m in run.inputs.model_inputs} == used
    assert len(used) == len(sel.selected_models())


def test_concept_resolution(graph) -> None:
    assert resolve_concept("dog.n.01", graph.node_ids) == ("dog.n.01", [])
    assert resolve_concept("n02084071", graph.node_ids) == ("dog.n.01", [])
    assert resolve_concept("dog", graph.node_ids)[0] == "dog.n.01"
    with pytest.raises(KeyError, match="not a WordNet noun"):
        resolve_concept("qwzx", graph.node_ids)
    with pytest.raises(KeyError, match="no sense"):
        resolve_concept("spaceship", graph.node_ids)


def test_server_down_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    reg = Registry(f"http://127.0.0.1:{free_port()}", root=tmp_path, tries=2)
    with pytest.raises(RegistryError, match="not reachable.*nothing was registered"):
        reg.labelled_versions()


def test_embedded_default_lives_in_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    reg = Registry(root=tmp_path)
    assert reg.uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    eid = reg.experiment(LABEL_EXPERIMENT)
    assert reg.client.get_experiment(eid).artifact_location.startswith(
        (tmp_path.resolve() / "mlartifacts").as_uri())
    assert reg.labelled_versions() == []  # a fresh embedded store: nothing labelled yet


def test_labels_are_mlflow_native(registry: Registry, graph, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`models:/NAME@labeled` downloads the label with MLflow's own API; pyfunc reads it."""
    import mlflow

    from mll_registry.labels.format import ModelLabel

    demo = Path(__file__).resolve().parents[2] / "demo_hub" / "mll-demo" / "vit-animals"
    ref = f"local-dir:{demo}"
    out = label_and_register(ref, graph, LabelConfig(top_k=4, device="cpu"), registry)
    name = registered_name(ref)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # MLflow's process-wide URI, put back after the test (it outlives the env variable)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    mlflow.set_tracking_uri(registry.uri)
    got = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@{ALIAS}",
                                                   dst_path=str(tmp_path / "dl")))
    mine = ModelLabel.load(out["path"])
    theirs = ModelLabel.load(got / "label")
    assert theirs.meta["model_ref"] == ref and theirs.label_hash == mine.label_hash
    assert np.array_equal(theirs.topk_idx, mine.topk_idx)
    reader = mlflow.pyfunc.load_model(f"models:/{name}@{ALIAS}")
    pred = reader.predict(pd.DataFrame({"concept": ["dog.n.01", "carnivore.n.01"]}))
    want = mine.summary.set_index("node_id").loc[["dog.n.01", "carnivore.n.01"]]
    assert pred["acc1"].tolist() == pytest.approx(want["acc1"].tolist())
    assert pred["n_images"].tolist() == want["n_images"].tolist()
    v = registry.client.get_model_version(name, str(out["version"]))
    assert v.tags["mll.model_id"] and v.run_id == out["run_id"]
    assert registry.client.get_logged_model(v.tags["mll.model_id"]).source_run_id == v.run_id
    assert v.tags["mll.pinned_source"].startswith(f"local-dir:{demo}@sha256:")
    run = registry.client.get_run(out["run_id"])  # the run's duration covers the labelling
    took = mine.meta["timings"]["total"]
    assert (run.info.end_time - run.info.start_time) / 1000 >= took * 0.9


def test_names_aliases_and_commands_agree(registry: Registry, graph, tmp_path: Path) -> None:
    """A registered name works wherever a MODEL_REF does; query label reports the UI's aliases."""
    from mll_registry.app.root import App
    from mll_registry.cli import card as cli_card
    from mll_registry.settings import Settings

    demo = Path(__file__).resolve().parents[2] / "demo_hub" / "mll-demo" / "vit-food"
    ref = f"local-dir:{demo}"
    label_and_register(ref, graph, LabelConfig(top_k=4, device="cpu"), registry)
    a = App(Settings(top_k=4, device="cpu", data_dir=str(registry.root)), registry=registry,
            label_stores={"registry": registry})
    name = registered_name(ref)
    found = a.queries.label(name, graph)  # by registered name
    assert found is not None
    v = found[0]
    assert v.model_ref == ref
    h = Settings(top_k=4).label_hash()
    assert sorted(v.aliases) == sorted([ALIAS, f"{ALIAS}-{h}"])
    assert sorted(registry.client.get_registered_model(name).aliases) == sorted(v.aliases)
    assert a.queries.label(ref, graph)[0].version == v.version  # by MODEL_REF: the same version
    old = cli_card.REGISTERED
    cli_card.REGISTERED = a.labelling.registered_ref
    try:
        assert cli_card.model_ref_of(name) == ref
        assert cli_card.model_ref_of(ref) == ref
        with pytest.raises(ValueError, match="neither a MODEL_REF"):
            cli_card.model_ref_of("no-such-model")
    finally:
        cli_card.REGISTERED = old
