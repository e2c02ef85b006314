"""A registered model version is code to MLflow's loader (issue #40 item 1): the tool loads only
its own ensembles. Hostile versions are built here the way a registry writer would (MLflow's own
``save_model`` with a loader module in ``code_paths``, a cloudpickled ``python_model``, a
genuine-looking folder with one extra file or one changed MLmodel key); each payload only
writes a marker file. `mll predict`, `mll promote` and `mll serve` must refuse each with one
line, exit 2, and the marker must not exist. The spec itself is checked in full."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "demo_hub" / "mll-demo"


def _register(client, folder: Path, name: str) -> str:
    """``folder`` uploaded as a run's artifact and registered as a version of ``name`` (what
    any user who may write versions can do)."""
    exp = client.get_experiment_by_name("hostile") or None
    eid = exp.experiment_id if exp else client.create_experiment("hostile")
    run = client.create_run(eid)
    client.log_artifacts(run.info.run_id, str(folder), "ensemble")
    with contextlib.suppress(Exception):  # exists already
        client.create_registered_model(name, tags={"mll.kind": "ensemble"})
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/ensemble",
                                      run_id=run.info.run_id)
    client.set_terminated(run.info.run_id)
    return str(mv.version)


def _loader_module_model(tmp: Path, marker: Path) -> Path:
    """A pyfunc whose loader module, shipped in code_paths, writes ``marker`` when imported."""
    import mlflow.pyfunc

    code = tmp / "code-src" / "evil_loader.py"
    code.parent.mkdir(parents=True)
    code.write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(marker)!r}).write_text("ran")

        class _M:
            def predict(self, df, params=None):
                import pandas as pd
                return pd.DataFrame({{"class": ["dog"] * len(df), "p:dog": [1.0] * len(df)}})

        def _load_pyfunc(path):
            return _M()
    """))
    data = tmp / "data-src"
    data.mkdir()
    (data / "x.txt").write_text("x")
    out = tmp / "loader-model"
    mlflow.pyfunc.save_model(str(out), loader_module="evil_loader", code_paths=[str(code)],
                             data_path=str(data), pip_requirements=["mll-registry"],
                             uv_project_path=data)
    return out


def _pickled_model(tmp: Path, marker: Path) -> Path:
    """A pyfunc whose cloudpickled python_model writes ``marker`` when unpickled."""
    import mlflow.pyfunc

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (Path(marker), "ran"))

    class Evil(mlflow.pyfunc.PythonModel):
        def __init__(self):
            self.payload = Payload()

        def predict(self, context, model_input, params=None):
            return model_input

    out = tmp / "pickle-model"
    mlflow.pyfunc.save_model(str(out), python_model=Evil(), pip_requirements=["mll-registry"],
                             uv_project_path=tmp)
    return out


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _genuine_model(tmp: Path) -> Path:
    """A folder shaped exactly as save_ensemble writes it, one demo member bundled and pinned
    (pins computed here with hashlib), written by MLflow's save_model with the tool's loader."""
    import mlflow.pyfunc

    from mll_registry.selection.ensemble import input_example

    member = DEMO / "vit-animals"
    data = tmp / "genuine-src" / "ensemble"
    (data / "members" / "0").mkdir(parents=True)
    for f in ("open_clip_config.json", "open_clip_model.safetensors"):
        shutil.copyfile(member / f, data / "members" / "0" / f)
    spec = {"format": "mll-ensemble/1", "task": "pets", "classes": ["dog", "cat"],
            "prompts": ["a photo of a {}."], "weighting": "inverse_entropy",
            "reuse_mode": "pooled", "calibration": "graph", "k": 1, "alpha": 0.7,
            "graph_version": None, "extra": {}, "chosen": [[0], [0]], "routing": [[1.0, 1.0]],
            "members": [{"ref": f"local-dir:{member}", "revision": None, "logit_scale": 50.0,
                         "label_hash": None, "graph_version": None,
                         "weights_file": "open_clip_model.safetensors",
                         "weights_sha256": _sha(member / "open_clip_model.safetensors"),
                         "config_sha256": _sha(member / "open_clip_config.json")}]}
    (data / "ensemble.json").write_text(json.dumps(spec))
    out = tmp / "genuine"
    mlflow.pyfunc.save_model(str(out), loader_module="mll_registry.selection.ensemble_loader",
                             data_path=str(data), pip_requirements=["mll-registry"],
                             input_example=input_example(), uv_project_path=data.parent,
                             metadata={"mll_ensemble": "mll-ensemble/1", "task": "pets"})
    return out


@pytest.fixture()
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mll_registry.app.root import App
    from mll_registry.settings import Settings

    data_dir = tmp_path / "d"
    monkeypatch.setenv("MLL_DATA_DIR", str(data_dir))
    app = App(Settings(device="cpu", label_store="local", data_dir=str(data_dir)))
    marker = tmp_path / "PAYLOAD-RAN"
    png = tmp_path / "img.png"
    from conftest import write_png

    write_png(png, 200, size=16)
    return app, marker, png, data_dir


def _cli(args: list[str]):
    from typer.testing import CliRunner

    from mll_registry.cli.main import app as cli

    return CliRunner().invoke(cli, args)


@pytest.mark.parametrize("kind", ["loader_module", "python_model"])
def test_predict_and_promote_refuse_a_version_that_is_code(world, tmp_path: Path,
                                                          kind: str) -> None:
    app, marker, png, data_dir = world
    folder = (_loader_module_model if kind == "loader_module" else _pickled_model)(tmp_path,
                                                                                   marker)
    version = _register(app.registry.client, folder, "pets-ensemble")
    res = _cli(["predict", "--model", f"models:/pets-ensemble/{version}", "--data-dir",
                str(data_dir), str(png)])
    assert res.exit_code == 2, res.output
    assert "not an MLL ensemble this tool loads" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert not marker.exists(), "the version's code ran in mll predict"
    # promote: neither measured nor made champion (no task data: it would have been "first")
    res = _cli(["promote", "--model", "pets-ensemble", "--version", version, "--data-dir",
                str(data_dir)])
    assert res.exit_code == 2 and "not an MLL ensemble" in res.output, res.output
    assert not marker.exists()
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        app.registry.client.get_model_version_by_alias("pets-ensemble", "champion")


def test_mll_serve_refuses_a_loader_module_version_before_serving(world, tmp_path: Path) -> None:
    """As a user runs it: `mll serve` in its own process exits 2 with one line, no server."""
    app, marker, png, data_dir = world
    version = _register(app.registry.client, _loader_module_model(tmp_path, marker), "served")
    proc = subprocess.run([sys.executable, "-m", "mll_registry.cli", "serve", "--model",
                           f"models:/served/{version}", "--data-dir", str(data_dir), "--port",
                           "9"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "not an MLL ensemble this tool loads" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists(), "the version's code ran in mll serve"


TAMPERS = [
    ("code_paths", "ships code"),
    ("python_model", "holds a python_model"),
    ("extra_file", "a file no MLL ensemble has"),
    ("pickle_file", "a file no MLL ensemble has"),
    ("symlink", "is a link"),
    ("second_flavor", "not python_function alone"),
    ("loader", "its loader module is"),
    ("unpinned_config", "not pinned by the sha256 of its config"),
    ("prompt_format", "exactly one {}"),
    ("unknown_key", "unknown keys"),
    ("infinite_scale", "logit_scale is not a finite number"),
    ("member_index", "member positions"),
]


@pytest.mark.parametrize("tamper, named", TAMPERS, ids=[t for t, _ in TAMPERS])
def test_a_genuine_looking_folder_changed_in_one_place_is_refused(tmp_path: Path, tamper: str,
                                                                  named: str) -> None:
    import yaml

    from mll_registry.selection.ensemble_trust import UntrustedModelError, verify_model_dir

    folder = _genuine_model(tmp_path)
    spec = verify_model_dir(folder)  # the untouched folder passes
    assert spec.members[0].config_sha256 == _sha(DEMO / "vit-animals" / "open_clip_config.json")
    mlmodel = folder / "MLmodel"
    doc = yaml.safe_load(mlmodel.read_text())
    spec_file = folder / "data" / "ensemble" / "ensemble.json"
    sd = json.loads(spec_file.read_text())
    if tamper == "code_paths":
        doc["flavors"]["python_function"]["code"] = "code"
        (folder / "code").mkdir()
    elif tamper == "python_model":
        doc["flavors"]["python_function"]["python_model"] = "python_model.pkl"
    elif tamper == "extra_file":
        (folder / "data" / "ensemble" / "helper.py").write_text("print('x')")
    elif tamper == "pickle_file":
        (folder / "data" / "ensemble" / "members" / "0" / "model.pkl").write_bytes(b"\x80\x04.")
    elif tamper == "symlink":
        (folder / "input_example.json").unlink()
        (folder / "input_example.json").symlink_to("/etc/hostname")
    elif tamper == "second_flavor":
        doc["flavors"]["sklearn"] = {"pickled_model": "model.pkl"}
    elif tamper == "loader":
        doc["flavors"]["python_function"]["loader_module"] = "os"
    elif tamper == "unpinned_config":
        sd["members"][0]["config_sha256"] = None
    elif tamper == "prompt_format":
        sd["prompts"] = ["{0.__class__.__mro__}{}"]
    elif tamper == "unknown_key":
        sd["python_model"] = "x"
    elif tamper == "infinite_scale":
        sd["members"][0]["logit_scale"] = float("inf")
    elif tamper == "member_index":
        sd["chosen"] = [[0], [3]]
    mlmodel.write_text(yaml.safe_dump(doc))
    spec_file.write_text(json.dumps(sd))
    with pytest.raises(UntrustedModelError, match="not an MLL ensemble") as err:
        verify_model_dir(folder)
    assert named in str(err.value)


def test_the_genuine_folder_predicts_from_bytes_and_checks_its_pins(world, tmp_path: Path) -> None:
    """The folder passes, loads and answers for image bytes; a member config changed after
    pinning (weights untouched) is refused by name (item 9)."""
    app, marker, png, data_dir = world
    folder = _genuine_model(tmp_path)
    out = app.selection.predict(str(folder), [str(png)])
    assert list(out.columns) == ["class", "p:dog", "p:cat"]
    assert out[["p:dog", "p:cat"]].to_numpy().sum() == pytest.approx(1.0)
    cfg = folder / "data" / "ensemble" / "members" / "0" / "open_clip_config.json"
    cfg.write_text(cfg.read_text().replace("{", "{\n ", 1))  # same JSON, other bytes
    from mll_registry.selection.ensemble import MemberWeightsChanged

    with pytest.raises(MemberWeightsChanged, match=r"config \(open_clip_config.json\)"):
        app.selection.predict(str(folder), [str(png)])


def test_served_model_takes_no_paths_and_says_nothing_about_them() -> None:
    """Item 2: a path is refused as an image, the same for a readable, an unreadable and a
    missing file: the answer tells them apart in no way."""
    from mll_registry.selection.ensemble import EnsembleInputError, decode

    answers = []
    for path in ("/etc/hostname", "/etc/shadow", "/no/such/file.png"):
        with pytest.raises(EnsembleInputError) as err:
            decode(path, 0)
        answers.append(str(err.value))
    assert len(set(answers)) == 1 and "opens no paths" in answers[0]
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    assert decode(png, 0).read() == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(EnsembleInputError, match="serve_max_image_mb"):
        decode(base64.b64encode(b"x" * 100).decode(), 0, max_bytes=50)


def test_an_ensemble_cannot_take_a_label_models_name(world) -> None:
    """Labelling workers may write label models (hf--, local--, open_clip--) and mll-graphs, and
    deploy/mlflow-users.sh denies them every other registered model: so an ensemble never takes
    one of those names, and the script's list is the library's."""
    from types import SimpleNamespace

    from mll_registry.models.refs import LABEL_MODEL_PREFIXES
    from mll_registry.selection.select import SelectionError

    app, marker, png, data_dir = world
    sel = SimpleNamespace(task=SimpleNamespace(name="pets"))
    for name in ("hf--org--pets", "local--x--abc", "open_clip--ViT--x", "mll-graphs"):
        with pytest.raises(SelectionError, match="are the registry's label and graph models"):
            app.selection.register(sel, name)  # type: ignore[arg-type]
    script = (Path(__file__).resolve().parents[2] / "deploy" / "mlflow-users.sh").read_text()
    assert f'LABEL_PREFIXES, GRAPHS = {LABEL_MODEL_PREFIXES!r}, "mll-graphs"' in script
