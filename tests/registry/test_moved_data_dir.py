"""A copied or moved data dir (issue #40, item 13): MLflow records absolute artifact locations in
the embedded store, so a copy still read and wrote the original's artifacts. The store is
refused in its new place, before anything is written, until `mll registry relocate` rewrites
its locations. Real embedded MLflow (sqlite), a run with an artifact and a registered version."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mll_registry.cli.main import app as cli
from mll_registry.registry.labels import Registry
from mll_registry.registry.tracking import HOME_FILE, SELECTION_EXPERIMENT, RegistryError


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``root``: size, mtime and sha256 (what "unchanged" means here)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns,
                                       hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def _data_dir_with_a_run(root: Path, tmp_path: Path) -> tuple[str, str]:
    """An embedded store in ``root`` with one run holding ``a.txt`` and a registered version
    of its ``ensemble`` folder; returns (run id, model version)."""
    reg = Registry(root=root)
    model = tmp_path / "model"
    model.mkdir()
    (model / "m.txt").write_text("model")
    with reg.run(SELECTION_EXPERIMENT, "one", {"mll.kind": "selection"}) as rid:
        reg.client.log_text(rid, "original", "a.txt")
    version = reg.register_model_dir(rid, model, "pets-mll-ensemble", {"mll.task": "pets"})
    return rid, version


@pytest.fixture()
def embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The data dir's own store, not a server."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.mark.parametrize("how", ["copied", "moved-from-before-the-record"])
def test_a_copied_or_moved_data_dir_is_refused_then_relocated_and_the_original_is_untouched(
        how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedded: None) -> None:
    orig, copy = (tmp_path / "orig").resolve(), (tmp_path / "copy").resolve()
    rid, version = _data_dir_with_a_run(orig, tmp_path)
    if how == "copied":
        shutil.copytree(orig, copy)
    else:  # a data dir from a release that did not record its place, then renamed
        (orig / HOME_FILE).unlink()
        orig.rename(copy)
        orig.mkdir()
        (orig / "mlartifacts").mkdir()  # where the store would write: must stay empty
    before = _snapshot(orig)
    monkeypatch.setenv("MLL_DATA_DIR", str(copy))

    with pytest.raises(RegistryError) as exc:
        Registry()
    msg = str(exc.value)
    assert "\n" not in msg and f"copied or moved from {orig}" in msg, msg
    assert f"mll registry relocate --data-dir {copy}" in msg and f"MLL_DATA_DIR={orig}" in msg
    r = CliRunner().invoke(cli, ["registry", "ensembles"])  # any command: one line, exit 2
    assert r.exit_code == 2 and "mll registry relocate" in r.output, r.output
    assert _snapshot(orig) == before

    if how == "copied":  # from now on the copy's own artifacts, not the original's
        next(copy.rglob(f"{rid}/artifacts/a.txt")).write_text("in the copy")
    r = CliRunner().invoke(cli, ["registry", "relocate", "--json"])
    assert r.exit_code == 0, r.output
    moved = json.loads(r.output)
    assert (moved["from"], moved["to"]) == (str(orig), str(copy))
    assert moved["rows"] >= 4  # the experiment, the run, the version's source and storage

    reg = Registry()
    here = (copy / "mlartifacts").as_uri()
    assert reg.client.get_run(rid).info.artifact_uri.startswith(here + "/")
    mv = reg.client.get_model_version("pets-mll-ensemble", version)
    assert str(mv.source).startswith(here + "/")
    got = Path(reg.client.download_artifacts(rid, "a.txt", str(tmp_path / "get")))
    assert got.read_text() == ("in the copy" if how == "copied" else "original")
    with reg.run(SELECTION_EXPERIMENT, "two", {"mll.kind": "selection"}) as rid2:
        reg.client.log_text(rid2, "new", "b.txt")
    assert list(copy.rglob(f"{rid2}/artifacts/b.txt"))
    assert _snapshot(orig) == before

    again = CliRunner().invoke(cli, ["registry", "relocate"])
    assert again.exit_code == 0 and "in place, nothing to do" in again.output, again.output


def test_the_data_dir_in_place_opens_and_relocate_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedded: None) -> None:
    """The normal path: the place is recorded at the first open and matches afterwards."""
    data = (tmp_path / "d").resolve()
    _data_dir_with_a_run(data, tmp_path)
    assert json.loads((data / HOME_FILE).read_text()) == {"data_dir": str(data)}
    monkeypatch.setenv("MLL_DATA_DIR", str(data))
    Registry()
    r = CliRunner().invoke(cli, ["registry", "relocate", "--json"])
    assert json.loads(r.output) == {"from": str(data), "to": str(data), "rows": 0}


def test_a_damaged_record_is_one_line_naming_the_fix(
        tmp_path: Path, embedded: None) -> None:
    data = (tmp_path / "d").resolve()
    Registry(root=data)
    (data / HOME_FILE).write_text('["not", "an object"]')
    with pytest.raises(RegistryError, match=f"{HOME_FILE} is damaged.*delete it"):
        Registry(root=data)
    (data / HOME_FILE).unlink()
    Registry(root=data)  # rebuilt from the store's own experiments
    assert json.loads((data / HOME_FILE).read_text()) == {"data_dir": str(data)}
