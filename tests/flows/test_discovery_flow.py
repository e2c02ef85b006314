"""Scheduled discovery never misses a model: the `label-new-models` flow against a loopback Hub.

The watermark and the failed models live in the tracking server (MLflow), not in a local file;
the flow pages through everything published since the last run. The models are real open_clip
models (tiny, seeded random init: labelling here is about bookkeeping, not accuracy).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import write_png
from hub_server import start_hub, use_hub

pytestmark = pytest.mark.slow

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    from mll_registry.demo.archs import build_tiny
    from mll_registry.graph.bundle import SampleDataset, build_and_save
    from mll_registry.models.loading import save_open_clip_dir

    tmp = tmp_path_factory.mktemp("discovery-flow")
    for i in range(2):
        write_png(tmp / "src" / "dog.n.01" / f"{i}.png", 10 + i)
        write_png(tmp / "src" / "n02121808" / f"{i}.png", 60 + i)
    g, _ = build_and_save([SampleDataset("toy", tmp / "src")], tmp / "graph")
    model, cfg = build_tiny("tiny-vit", seed=11)
    d = save_open_clip_dir(model, cfg, tmp / "tiny")
    files = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    files["README.md"] = b"---\nlibrary_name: open_clip\ntags: [clip]\n---\n# tiny\n"
    return {"tmp": tmp, "graph": g, "bundle": str(tmp / "graph"), "files": files}


def _registered(graph_version: str) -> dict[str, int]:
    """repo id -> number of ready label versions, read from MLflow directly."""
    from mlflow import MlflowClient

    from mll_registry.registry.tracking import tracking_uri

    out: dict[str, int] = {}
    for v in MlflowClient(tracking_uri()).search_model_versions(
            "tag.`mll.status` = 'ready'", max_results=10_000):
        if v.tags.get("mll.graph_version") == graph_version:
            repo = v.tags["mll.model_ref"].split(":", 1)[1].split("@")[0]
            out[repo] = out.get(repo, 0) + 1
    return out


PAGE = 5  # Hub page size: a burst of BURST models spans three pages
BURST = 2 * PAGE + 2


def test_a_burst_of_models_is_labelled_each_once_across_pages(world, tmp_path, monkeypatch):
    from flows.labeling import label_new_models

    monkeypatch.setenv("MLL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    hub = start_hub({f"org/first-{i}": world["files"] for i in range(3)},
                    created_at={f"org/first-{i}": T0 + timedelta(minutes=i) for i in range(3)},
                    page_size=PAGE)
    try:
        use_hub(monkeypatch, hub, cache_dir=tmp_path / "hf-cache")
        run = dict(source="hf", graph=world["bundle"], device="cpu", page_size=PAGE)
        first = label_new_models(**run)
        assert (first["found"], first["labelled"]) == (3, 3)
        # BURST models published between two runs, more than two pages of PAGE
        burst = {f"org/burst-{i:03d}": T0 + timedelta(hours=1, seconds=i) for i in range(BURST)}
        for repo, t in burst.items():
            hub.add_repo(repo, world["files"], created_at=t)
        before = len(hub.requests)
        second = label_new_models(**run)
        assert (second["found"], second["labelled"], second["failed"]) == (BURST, BURST, {})
        counts = _registered(world["graph"].version)
        assert set(counts) == {f"org/first-{i}" for i in range(3)} | set(burst)
        assert set(counts.values()) == {1}  # each model once
        listings = [r for r in hub.requests[before:] if r.path.startswith("/api/models?")
                    or r.path == "/api/models"]
        assert len(listings) >= 3, [r.path for r in listings]  # the burst came in 3 pages
        third = label_new_models(**run)
        assert (third["found"], third["labelled"]) == (0, 0)
        assert _registered(world["graph"].version) == counts
    finally:
        hub.stop()


def test_a_model_that_fails_is_reported_then_retried_by_the_next_run(world, tmp_path,
                                                                     monkeypatch):
    from flows.labeling import label_new_models
    from mll_registry.app.root import App

    monkeypatch.setenv("MLL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLL_RETRY_BUDGET_S", "1")
    hub = start_hub({"org/seed": world["files"]}, created_at={"org/seed": T0}, page_size=100)
    repos = {"org/ok": T0 + timedelta(minutes=1), "org/flaky": T0 + timedelta(minutes=2),
             "org/later": T0 + timedelta(minutes=3)}
    try:
        use_hub(monkeypatch, hub, cache_dir=tmp_path / "hf-cache")
        run = dict(source="hf", graph=world["bundle"], device="cpu", page_size=2)
        assert label_new_models(**run)["labelled"] == 1  # the first run sets the watermark
        for r, t in repos.items():
            hub.add_repo(r, world["files"], created_at=t)
        hub.fail_next("*", r"^/api/models/org/flaky(/revision/.*)?$", status=503, times=1000)
        with pytest.raises(Exception, match="1 of 3 models failed.*org/flaky"):
            label_new_models(**run)
        st = App.configured().discovery.state("hf", None, world["graph"].version).to_dict()
        assert [f["repo_id"] for f in st["failed"].values()] == ["org/flaky"]
        assert st["failed"][next(iter(st["failed"]))]["attempts"] == 1
        # the watermark moved past all three: the failure is kept, not the page held back
        assert datetime.fromisoformat(st["watermark"]) == repos["org/later"]
        assert set(_registered(world["graph"].version)) == {"org/seed", "org/ok", "org/later"}
        hub._state.faults.clear()
        again = label_new_models(**run)
        assert (again["found"], again["labelled"], again["failed"]) == (1, 1, {})
        st = App.configured().discovery.state("hf", None, world["graph"].version).to_dict()
        assert st["failed"] == {}
        assert set(_registered(world["graph"].version).values()) == {1}
        assert set(_registered(world["graph"].version)) == {"org/seed", *repos}
    finally:
        hub.stop()


def test_a_commit_that_keeps_the_weights_is_recorded_and_new_weights_are_relabelled_once(
        world, tmp_path, monkeypatch):
    """Issue #30 on a loopback Hub: a README-only commit and a merged card PR are recorded on
    the label's version (no relabelling, by discovery or by `mll label`); a commit replacing
    the weights gets exactly one new version, which takes the alias, the old one tagged
    superseded and the card PR opened again."""
    from mlflow import MlflowClient

    from flows.labeling import label_new_models
    from mll_registry.app.root import App
    from mll_registry.demo.archs import build_tiny
    from mll_registry.models.loading import save_open_clip_dir
    from mll_registry.models.refs import registered_name
    from mll_registry.registry.tracking import tracking_uri

    monkeypatch.setenv("MLL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = "org/changing"
    hub = start_hub({repo: world["files"]}, created_at={repo: T0})
    try:
        use_hub(monkeypatch, hub, cache_dir=tmp_path / "hf-cache")
        run = dict(source="hf", graph=world["bundle"], device="cpu", push_card=True)
        assert label_new_models(**run)["labelled"] == 1
        name = registered_name(f"hf-hub:{repo}")
        client = MlflowClient(tracking_uri())

        def ready() -> list:
            return sorted((v for v in client.search_model_versions(f"name = '{name}'")
                           if v.tags.get("mll.status") == "ready"), key=lambda v: int(v.version))

        commits = [hub.head(repo)]
        assert len(hub.prs(repo)) == 1  # the card PR of the first label
        # a README-only commit: discovery labels nothing and records the commit
        readme = world["files"]["README.md"] + b"\nMore about the model.\n"
        commits.append(hub.add_repo(repo, {**world["files"], "README.md": readme},
                                    message="Edit README"))
        # the Hub cannot say the new commit's file digests: the model is kept for labelling
        # (which reports its own error), not dropped and not a failed discovery
        app = App.configured()
        changed = {"ref": f"hf-hub:{repo}@{commits[1]}", "revision": commits[1],
                   "repo_id": repo, "created_at": T0.isoformat()}
        monkeypatch.setenv("MLL_RETRY_BUDGET_S", "1")
        hub.fail_next("GET", rf"^/api/models/{repo}/revision/{commits[1]}", 503, times=100)
        assert app.discovery.unlabelled([changed], world["bundle"]) == [changed]
        hub._state.faults.clear()
        monkeypatch.delenv("MLL_RETRY_BUDGET_S")
        out = label_new_models(**run)
        assert (out["found"], out["labelled"], out["updated"]) == (0, 0, 0)
        (v,) = ready()
        assert json.loads(v.tags["mll.revisions"]) == commits
        # ... and so does `mll label` at that commit
        lab = app.labelling.label(f"hf-hub:{repo}", world["bundle"])
        assert lab.status == "skipped" and "same weights and config" in (lab.reason or "")
        assert len(ready()) == 1
        # the card PR merged (README + label files): recorded, no relabelling, no new PR
        pr = hub.prs(repo)[0]
        commits.append(hub.add_repo(repo, hub.files(repo, pr.ref), message="Merge card PR"))
        assert label_new_models(**run)["updated"] == 0
        (v,) = ready()
        assert json.loads(v.tags["mll.revisions"]) == commits and len(hub.prs(repo)) == 1
        merged = app.labelling.label(f"hf-hub:{repo}", world["bundle"])  # the merge commit
        assert merged.status == "skipped" and len(ready()) == 1
        # new weights: exactly one new version, the alias moves, the old one is superseded
        model, cfg = build_tiny("tiny-vit", seed=12)
        d = save_open_clip_dir(model, cfg, tmp_path / "new-weights")
        files = {**hub.files(repo), "open_clip_model.safetensors":
                 (d / "open_clip_model.safetensors").read_bytes()}
        new_commit = hub.add_repo(repo, files, message="Retrained")
        out = label_new_models(**run)
        assert (out["labelled"], out["updated"], out["failed"]) == (0, 1, {})
        old, new = ready()
        assert new.tags["mll.revision"] == new_commit
        assert old.tags["mll.superseded_by"] == str(new.version)
        assert str(client.get_model_version_by_alias(name, "labeled").version) == \
            str(new.version)
        assert len(hub.prs(repo)) == 2  # the card PR opened again for the new label
        assert label_new_models(**run)["updated"] == 0  # and nothing more on the next run
        assert len(ready()) == 2
    finally:
        hub.stop()


def test_flows_never_fall_back_to_the_demo_graph(tmp_path, monkeypatch):
    from flows.labeling import label_model
    from flows.selection import select_models

    monkeypatch.setenv("MLL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    for state in (label_model(model_ref="local-dir:/nonexistent", return_state=True),
                  select_models(task_name="t", classes=["dog", "cat"], return_state=True)):
        assert state.is_failed()
        with pytest.raises(Exception, match="no default graph.*mll graph publish"):
            state.result()
    assert not (tmp_path / "data" / "graphs" / "demo").exists()
    assert not (tmp_path / "data" / "demo").exists()


def test_the_hourly_deployment_is_wired_to_discovery():
    import yaml

    spec = yaml.safe_load(Path("prefect.yaml").read_text())
    d = next(x for x in spec["deployments"] if x["name"] == "label-new-models-hourly")
    assert d["entrypoint"] == "flows/labeling.py:label_new_models"
    assert d["schedules"][0]["cron"] == "0 * * * *"
    assert "watermark_path" not in d["parameters"] and "limit" not in d["parameters"]
    assert d["parameters"].get("graph", "default") == "default"
