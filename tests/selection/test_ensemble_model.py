"""A selection as a deployable model (issue #28): the ensemble spec pins the members, and the
ensemble loaded by ``mlflow.pyfunc.load_model`` predicts what `mll reuse`'s code computes on the
same images (ProbCache + ensemble_scores, independent of the flavour's module). Real demo
models, real MLflow, real PNGs."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mll_registry.settings import Settings

DEMO = Path(__file__).resolve().parents[2] / "demo_hub" / "mll-demo"
CODEPOINTS = {"dog": 0x1F415, "cat": 0x1F408, "fish": 0x1F41F}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """Three demo models labelled on a small graph, a 3-class task's selection, and Twemoji
    renders of its classes as the images to predict."""
    from conftest import write_png

    from mll_registry.app.root import App
    from mll_registry.demo.sources import render
    from mll_registry.graph.bundle import SampleDataset, build_graph
    from mll_registry.task import Task, TaskClass

    root = tmp_path_factory.mktemp("ensemble")
    for j, node in enumerate(("dog.n.01", "cat.n.01", "fish.n.01")):
        for i in range(3):
            write_png(root / "src" / node / f"{i}.png", 30 * j + 70 * i)
    g = build_graph([SampleDataset("src", root / "src")])[0]
    app = App(Settings(device="cpu", label_store="local", data_dir=str(root / "d")))
    for name in ("vit-animals", "resnet-objects", "vit-all-colour"):
        app.labelling.label(f"local-dir:{DEMO / name}", g)
    task = Task("pets", [TaskClass(c) for c in CODEPOINTS], domain="cartoon emoji")
    sel = app.selection.select(task, g)
    images = []
    for c, cp in CODEPOINTS.items():
        for size in (64, 80):
            p = root / "img" / f"{c}-{size}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            render(cp, "twemoji", size).save(p)
            images.append(p)
    return app, g, sel, images


def _expected(app, sel, images: list[Path]) -> np.ndarray:
    """What `mll reuse` computes for the selection on these images: each selected model's
    probabilities at the selection's scales (ProbCache), voted by ensemble_scores."""
    from mll_registry.models.loading import load
    from mll_registry.selection.reuse import ProbCache, TaskImages, ensemble_scores

    res = sel.result
    cache = ProbCache(TaskImages(images, np.zeros(len(images), np.int64), res.classes),
                      app.settings.prompts)
    used = res.selected_models()
    probs = [cache.get(r, lambda ref: load(ref, device="cpu"), res.scale_of(r)) for r in used]
    chosen = np.vectorize(lambda m: used.index(res.models[int(m)]))(res.chosen)
    routing = res.vote_weights()
    if routing is not None:
        routing = routing[[res.models.index(r) for r in used]]
    s = ensemble_scores(probs, chosen.reshape(res.chosen.shape), app.settings.weighting, routing)
    return s / s.sum(1, keepdims=True)


@pytest.mark.slow
def test_the_saved_ensemble_loads_with_pyfunc_and_predicts_what_reuse_computes(
        world, tmp_path: Path) -> None:
    """Members loaded by their MODEL_REFs (bundled weights: the serving test below)."""
    import dataclasses

    import mlflow.pyfunc

    app, g, sel, images = world
    # each class routed to another model, so that the pooled vote differs from per-class votes
    res = dataclasses.replace(sel.result, chosen=np.array([[0], [1], [2]]))
    sel = dataclasses.replace(sel, result=res)
    assert len(res.selected_models()) == 3 and res.reuse_mode == "pooled"
    path = app.selection.save_ensemble(sel, tmp_path / "model")
    spec = json.loads((path / "data" / "ensemble" / "ensemble.json").read_text())
    labels = app.selection.labels(g)
    assert spec["classes"] == ["dog", "cat", "fish"] and spec["reuse_mode"] == "pooled"
    for m in spec["members"]:  # pinned: the revision, label and weights it was selected on
        meta = labels[m["ref"]].meta
        assert m["revision"] == meta["revision"] and m["label_hash"] == meta["label_hash"]
        assert m["logit_scale"] == pytest.approx(meta["calibration"]["logit_scale"])
        weights = Path(m["ref"].removeprefix("local-dir:")) / "open_clip_model.safetensors"
        assert m["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert not (path / "data" / "ensemble" / "members").exists()
    model = mlflow.pyfunc.load_model(str(path))
    want = _expected(app, sel, images)
    as_b64 = [base64.b64encode(p.read_bytes()).decode() for p in images]
    got = model.predict(pd.DataFrame({"image": as_b64}))
    cols = [f"p:{c}" for c in spec["classes"]]
    np.testing.assert_allclose(got[cols].to_numpy(), want, rtol=1e-5, atol=1e-7)
    assert list(got["class"]) == [spec["classes"][int(j)] for j in want.argmax(1)]
    # the in-process path (`mll predict`: files read as raw bytes) answers the same
    got = app.selection.predict(str(path), [str(p) for p in images[:2]])
    np.testing.assert_allclose(got[cols].to_numpy(), want[:2], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_bad_inputs_are_refused_by_row_with_the_fix(world, tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    from mll_registry.selection.ensemble_loader import _load_pyfunc

    EnsembleInputError = MlflowException  # noqa: N806  # what the served model raises: a 400
    app, g, sel, images = world
    path = app.selection.save_ensemble(sel, tmp_path / "model")
    model = _load_pyfunc(str(path / "data" / "ensemble"))
    png = base64.b64encode(images[0].read_bytes()).decode()
    with pytest.raises(EnsembleInputError, match="no images"):
        model.predict(pd.DataFrame({"image": []}))
    with pytest.raises(EnsembleInputError, match="row 1: .*not a readable image"):
        model.predict([png, base64.b64encode(b"not a png").decode()])
    with pytest.raises(EnsembleInputError, match="expected one column 'image'"):
        model.predict(pd.DataFrame({"picture": [png]}))
    with pytest.raises(EnsembleInputError, match="row 0: not base64 image bytes"):
        model.predict(["/no/such/file.png"])  # a served model opens no paths (item 2)
    with pytest.raises(EnsembleInputError, match="row 0: not base64 image bytes"):
        model.predict([str(images[0])])  # not even ones that exist


@pytest.mark.slow
def test_each_request_bound_is_a_400_naming_it(world, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #40 item 4: images per request, bytes per image and pixels per image, from the
    serve_max_* settings; an EPS image never reaches Ghostscript (item 3)."""
    import io

    from mlflow.exceptions import MlflowException
    from PIL import Image

    from mll_registry.selection.ensemble_loader import _load_pyfunc

    app, g, sel, images = world
    path = app.selection.save_ensemble(sel, tmp_path / "model")
    monkeypatch.setenv("MLL_SERVE_MAX_IMAGES", "3")
    monkeypatch.setenv("MLL_SERVE_MAX_IMAGE_MB", "0.05")
    monkeypatch.setenv("MLL_SERVE_MAX_PIXELS", str(300 * 300))
    model = _load_pyfunc(str(path / "data" / "ensemble"))
    png = base64.b64encode(images[0].read_bytes()).decode()
    assert len(model.predict([png] * 3)) == 3  # at the bounds: answered
    with pytest.raises(MlflowException, match="4 images in one request, over the 3 allowed "
                                              r"\(serve_max_images\)") as err:
        model.predict([png] * 4)
    assert err.value.get_http_status_code() == 400
    big = io.BytesIO()
    Image.effect_noise((160, 160), 64).convert("RGB").save(big, format="BMP")  # 76,854 bytes
    with pytest.raises(MlflowException, match=r"row 0: an image of over 50,000 bytes "
                                              r"\(serve_max_image_mb\)"):
        model.predict([base64.b64encode(big.getvalue()).decode()])
    wide = io.BytesIO()
    Image.new("L", (1000, 100)).save(wide, format="PNG")  # tiny file, 100,000 pixels
    with pytest.raises(MlflowException, match="row 0: .*over the serve_max_pixels limit of "
                                              "90,000 pixels"):
        model.predict([base64.b64encode(wide.getvalue()).decode()])
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(MlflowException, match="row 0: .*not one of the formats decoded here"):
        model.predict([base64.b64encode(eps).decode()])


@pytest.mark.slow
def test_mll_serve_answers_like_the_in_process_ensemble(world, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`mll serve` (as a user runs it, its own process) on a registered version with bundled
    weights (no Hub): PNGs posted as base64 get the in-process predictions; a bad image gets a
    400 with its reason; a body over the bound gets a 400 naming it, declared or chunked; the
    server keeps serving. The bundle holds the members' model files only, and none of the
    caller's project files (issue #40 items 5, 8)."""
    import dataclasses
    import os
    import shutil
    import subprocess
    import sys
    import time

    import httpx
    from conftest import free_port

    app, g, sel, images = world
    # a member whose folder is gone by the time the model is served: only its bundled copy
    copy = tmp_path / "gone" / "vit-all-colour"
    shutil.copytree(DEMO / "vit-all-colour", copy)
    (copy / "NOTES.md").write_text("not part of the model")
    app.labelling.label(f"local-dir:{copy}", g)
    fresh = app.selection.select(sel.task, g)
    res = fresh.result
    chosen = np.array([[res.models.index(f"local-dir:{copy}")],
                       [res.models.index(f"local-dir:{DEMO / 'vit-animals'}")],
                       [res.models.index(f"local-dir:{copy}")]])
    sel = dataclasses.replace(fresh, result=dataclasses.replace(res, chosen=chosen),
                              run_id=None)
    want = _expected(app, sel, images)
    project = tmp_path / "project"  # the caller's directory: a lock naming a private index
    project.mkdir()
    secret = "s3cr3t-index-password"
    (project / "uv.lock").write_text(f'[[package]]\nsource = {{ registry = '
                                     f'"https://me:{secret}@pypi.example/simple" }}\n')
    (project / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (project / ".python-version").write_text("3.11\n")
    monkeypatch.chdir(project)
    reg = app.selection.register(sel, "served-pets", bundle=True)
    monkeypatch.chdir(tmp_path)
    local = app.selection.save_ensemble(sel, tmp_path / "model", bundle=True)
    files = sorted(str(f.relative_to(local)) for f in local.rglob("*") if f.is_file())
    assert not {"uv.lock", "pyproject.toml", ".python-version"} & set(files), files
    assert all(secret not in f.read_text(errors="replace") for f in local.rglob("*")
               if f.is_file() and f.stat().st_size < 1 << 20)
    bundled = {f.split("/")[-1] for f in files if "/members/" in f}
    assert bundled == {"open_clip_config.json", "open_clip_model.safetensors"}, files
    shutil.rmtree(tmp_path / "gone")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLL_SERVE_MAX_IMAGES": "8",
           "MLL_SERVE_MAX_IMAGE_MB": "0.1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mll_registry.cli", "serve", "--model", reg["uri"],
         "--data-dir", app.settings.data_dir, "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "mll serve did not start in 90 s"
            time.sleep(0.5)
        b64 = [base64.b64encode(p.read_bytes()).decode() for p in images]
        r = httpx.post(f"{url}/invocations", timeout=60, json={
            "dataframe_split": {"columns": ["image"], "data": [[x] for x in b64]}})
        assert r.status_code == 200, r.text[:500]
        served = pd.DataFrame(r.json()["predictions"])
        cols = [f"p:{c}" for c in sel.result.classes]
        np.testing.assert_allclose(served[cols].to_numpy(), want, rtol=1e-5, atol=1e-7)
        bad = httpx.post(f"{url}/invocations", timeout=60, json={
            "dataframe_split": {"columns": ["image"],
                                "data": [[b64[0]], [base64.b64encode(b"no png").decode()]]}})
        assert bad.status_code == 400 and "row 1: " in bad.json()["message"]
        assert "not a readable image" in bad.json()["message"]
        # the body bound: 8 images of 0.1 MB base64-encoded, plus room for the JSON
        limit = 8 * (-(-100_000 // 3) * 4 + 1024) + 65536
        body = b'{"dataframe_split": {"columns": ["image"], "data": [["' + b"A" * limit + b'"]]}}'
        big = httpx.post(f"{url}/invocations", timeout=60, content=body,
                         headers={"content-type": "application/json"})
        assert big.status_code == 400 and f"request body over {limit:,} bytes" in \
            big.json()["message"]

        def chunks():  # no Content-Length: refused once the bound is passed
            for _ in range(limit // 65536 + 2):
                yield b"A" * 65536

        big = httpx.post(f"{url}/invocations", timeout=60, content=chunks(),
                         headers={"content-type": "application/json"})
        assert big.status_code == 400 and "request body over" in big.json()["message"]
        assert httpx.get(f"{url}/ping", timeout=5).status_code == 200  # still serving
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
def test_registered_versions_load_by_uri_and_mll_predict_prints_their_answers(
        world, tmp_path: Path) -> None:
    """`register` makes versions 1 and 2 of a registered model tagged with the members; the
    version loads by its models:/ URI (no pickle: the loader module reads the spec) and `mll
    predict` prints the classes and probabilities the in-process computation gives."""
    from typer.testing import CliRunner

    from mll_registry.cli.main import app as cli

    app, g, sel, images = world
    first = app.selection.register(sel, "pets-ensemble")
    second = app.selection.register(sel, "pets-ensemble", bundle=True)
    assert (first["version"], second["version"]) == ("1", "2")
    v = app.registry.client.get_model_version("pets-ensemble", "2")
    assert v.tags["mll.members"] == ",".join(sel.result.selected_models())
    assert v.tags["mll.bundled"] == "true" and v.tags["mll.calibration"] == "graph"
    want = _expected(app, sel, images)
    got = app.selection.predict("models:/pets-ensemble/1", [str(p) for p in images])
    cols = [f"p:{c}" for c in sel.result.classes]
    np.testing.assert_allclose(got[cols].to_numpy(), want, rtol=1e-5, atol=1e-7)
    res = CliRunner().invoke(cli, ["predict", "--model", "models:/pets-ensemble/2",
                                   "--data-dir", app.settings.data_dir, "--json",
                                   *map(str, images)])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["predictions"]
    classes = sel.result.classes
    assert [r["class"] for r in rows] == [classes[int(j)] for j in want.argmax(1)]
    assert [r["probability"] for r in rows] == pytest.approx(want.max(1), abs=6e-5)
    bad = CliRunner().invoke(cli, ["predict", "--model", "models:/pets-ensemble/2",
                                   "--data-dir", app.settings.data_dir, "/no/such.png"])
    assert bad.exit_code == 2 and "no such image file: /no/such.png" in bad.output
    text = tmp_path / "notes.png"  # issue #40 item 12: one line, exit 2, no traceback
    text.write_text("not an image at all")
    bad = CliRunner().invoke(cli, ["predict", "--model", "models:/pets-ensemble/2",
                                   "--data-dir", app.settings.data_dir, str(text)])
    assert bad.exit_code == 2, bad.output
    assert bad.output.strip().splitlines() == [
        "error: row 0: the image: not a readable image (not one of the formats decoded here: "
        "PNG, JPEG, WEBP, GIF, BMP); convert it to PNG, or remove it"], bad.output


@pytest.mark.slow
def test_the_alias_moves_only_to_a_challenger_that_wins(world, tmp_path: Path) -> None:
    """Three versions routed to single models of different measured accuracy (computed here,
    independently): the first becomes champion, a better one takes the alias, a worse one
    leaves it where it is, a rerun changes nothing, and without data only --force moves it."""
    import dataclasses
    import shutil

    from mll_registry.task import Task, TaskClass

    app, g, sel, images = world
    data = tmp_path / "data"
    for p in images:
        (data / p.stem.split("-")[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, data / p.stem.split("-")[0] / p.name)
    task = Task("pets", [TaskClass(c) for c in CODEPOINTS], domain="cartoon emoji")
    files = sorted(data.rglob("*.png"), key=lambda p: (list(CODEPOINTS).index(p.parent.name), p.name))
    y = np.array([list(CODEPOINTS).index(p.parent.name) for p in files])

    def single(m: int):  # every class routed to model m alone
        res = dataclasses.replace(sel.result, chosen=np.full((3, 1), m))
        return dataclasses.replace(sel, result=res, run_id=None)

    acc = {m: float(np.mean(_expected(app, single(m), files).argmax(1) == y)) for m in range(3)}
    worst, best = min(acc, key=acc.get), max(acc, key=acc.get)
    assert acc[best] > acc[worst], acc
    name = "pets-promotion"
    v1 = app.selection.register(single(worst), name)["version"]
    v2 = app.selection.register(single(best), name)["version"]
    v3 = app.selection.register(single(worst), name)["version"]
    first = app.selection.promote(name, v1, task, data)
    assert first["decision"] == "first" and first["moved"]
    won = app.selection.promote(name, v2, task, data)
    assert won["decision"] == "won" and won["top1"] == {v2: pytest.approx(acc[best]),
                                                        v1: pytest.approx(acc[worst])}
    client = app.registry.client
    assert str(client.get_model_version_by_alias(name, "champion").version) == v2
    run = client.get_run(won["run_id"])
    assert run.data.metrics["challenger_top1"] == pytest.approx(acc[best])
    assert run.data.metrics["champion_top1"] == pytest.approx(acc[worst])
    lost = app.selection.promote(name, v3, task, data)
    assert lost["decision"] == "lost" and not lost["moved"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == v2
    again = app.selection.promote(name, v2, task, data)
    assert again["decision"] == "already" and not again["moved"] and "run_id" not in again
    assert app.selection.promote(name, v3)["decision"] == "no data"
    assert str(client.get_model_version_by_alias(name, "champion").version) == v2
    assert app.selection.promote(name, v3, force=True)["decision"] == "forced"
    assert str(client.get_model_version_by_alias(name, "champion").version) == v3


@pytest.mark.slow
def test_a_member_at_a_new_revision_makes_the_ensemble_versions_using_it_stale(
        world, tmp_path: Path) -> None:
    """An ensemble pins each member's revision and label; when a member's weights change and
    it is relabelled, the versions using it are listed stale (and tagged), the others not."""
    import dataclasses
    import shutil

    from safetensors.numpy import load_file, save_file
    from typer.testing import CliRunner

    from mll_registry.cli.main import app as cli
    from mll_registry.selection.ensemble import FROM_TASK, MemberWeightsChanged

    app, g, sel, images = world
    copy = tmp_path / "vit-copy"
    shutil.copytree(DEMO / "vit-animals", copy)
    ref = f"local-dir:{copy}"
    app.labelling.label(ref, g)
    fresh = app.selection.select(sel.task, g)
    res = fresh.result
    res = dataclasses.replace(res, chosen=np.full((len(res.classes), 1), res.models.index(ref)))
    fresh = dataclasses.replace(fresh, result=res, task=dataclasses.replace(fresh.task,
                                                                             name="Copy Pets!"))
    reg = app.selection.register(fresh, FROM_TASK)  # the name derived from the task
    assert reg["name"] == "copy-pets-mll-ensemble"
    listed = {(e["name"], e["version"]): e for e in app.selection.ensembles(ref)}
    assert list(listed) == [(reg["name"], reg["version"])]  # only the one using the copy
    assert listed[(reg["name"], reg["version"])]["stale"] == []
    weights = copy / "open_clip_model.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name] = (tensors[name] * 1.5).astype(tensors[name].dtype)
    save_file(tensors, str(weights))
    # the registered version refuses the changed weights, naming the fix
    with pytest.raises(MemberWeightsChanged, match="Select and register the ensemble again"):
        app.selection.predict(reg["uri"], [str(images[0])])
    app.labelling.label(ref, g)  # the new revision is labelled (in the local store here)
    app.labelling._mark_stale_ensembles(ref, None)  # what a registry store's labelling runs
    v = app.registry.client.get_model_version(reg["name"], reg["version"])
    assert v.tags["mll.stale"].startswith(f"{ref}: new revision sha256:")
    e = app.selection.ensembles(ref)[0]
    assert e["stale"] == [v.tags["mll.stale"]]
    others = [x for x in app.selection.ensembles() if x["name"] != reg["name"]]
    assert all(x["stale"] == [] for x in others)
    res_cli = CliRunner().invoke(cli, ["registry", "ensembles", "--model", ref, "--data-dir",
                                       app.settings.data_dir])
    assert res_cli.exit_code == 0 and "stale: " in res_cli.output, res_cli.output
    label_dir = dict(app.label_store().label_dirs(g.version, app.settings.label_hash()))[ref]
    card = CliRunner().invoke(cli, ["card", "render", ref, "--label", str(label_dir),
                                    "--ensembles", "--json"],
                              env={"MLL_DATA_DIR": app.settings.data_dir})
    assert card.exit_code == 0, card.output
    section = json.loads(card.output)["card"].split("### Used in MLL ensembles")[1]
    assert f"| {reg['name']} | {reg['version']} |" in section and "| yes: " in section


def test_hub_members_load_at_the_revision_they_were_selected_on() -> None:
    from mll_registry.selection.ensemble import Member, pinned

    assert pinned(Member("hf-hub:org/name", "abc123", 10.0)) == "hf-hub:org/name@abc123"
    assert pinned(Member("hf-hub:org/name@v2", "abc123", 10.0)) == "hf-hub:org/name@v2"
    assert pinned(Member("local-dir:/m", "sha256:ff", 10.0)) == "local-dir:/m"


def test_registered_names_derive_from_the_task() -> None:
    from mll_registry.selection.ensemble import FROM_TASK, ensemble_name

    assert ensemble_name("pets") == "pets-mll-ensemble"
    assert ensemble_name("Copy Pets! v2.1") == "copy-pets-v2.1-mll-ensemble"
    assert ensemble_name("///") == "task-mll-ensemble"
    assert "@" in FROM_TASK  # never a registered name: "@" starts an alias in models:/ URIs


def test_members_are_pinned_by_the_sha256_of_their_weights(tmp_path: Path) -> None:
    """A member whose label recorded no weights digest gets one from its files at save time
    (refused when those are no longer the labelled revision); loading checks it."""
    import shutil

    from mll_registry.models.refs import resolve
    from mll_registry.selection.ensemble import (
        EnsembleSpec,
        Member,
        MemberWeightsChanged,
        check_pins,
        pin_weights,
    )

    folder = tmp_path / "m"
    shutil.copytree(DEMO / "vit-animals", folder)
    weights = folder / "open_clip_model.safetensors"
    config = folder / "open_clip_config.json"
    want = hashlib.sha256(weights.read_bytes()).hexdigest()
    want_cfg = hashlib.sha256(config.read_bytes()).hexdigest()
    ref = f"local-dir:{folder}"
    member = Member(ref, resolve(ref).revision, 50.0)
    spec = EnsembleSpec("t", ["a"], ["{}"], "uniform", "pooled", "none", [member], [[0]], None, 1)
    pinned = pin_weights(spec).members[0]
    assert (pinned.weights_sha256, pinned.config_sha256) == (want, want_cfg)
    check_pins(pinned, resolve(ref))  # the same bytes pass
    with pytest.raises(MemberWeightsChanged, match="not pinned by the sha256 of its weights"):
        check_pins(member, resolve(ref))  # no pin: refused, never taken on trust
    config.write_text(config.read_text() + "\n")  # issue #40 item 9: the config is pinned too
    with pytest.raises(MemberWeightsChanged, match=f"not the {want_cfg[:16]}"):
        check_pins(pinned, resolve(ref))
    config.write_bytes(config.read_bytes()[:-1])
    check_pins(pinned, resolve(ref))
    weights.write_bytes(weights.read_bytes() + b" ")
    with pytest.raises(MemberWeightsChanged, match=f"not the {want[:16]}"):
        check_pins(pinned, resolve(ref))
    with pytest.raises(MemberWeightsChanged, match="relabel it"):
        pin_weights(spec)  # the files are no longer the revision the label measured
