"""The `mll` CLI: JSON output with checked values, human output, clear errors."""

import json
from pathlib import Path

from typer.testing import CliRunner

from mll_registry.cli import app

runner = CliRunner()


def test_graph_build_json_and_info(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "g"
    res = runner.invoke(app, ["graph", "build", "--source", f"A={tree / 'A'}",
                              "--source", f"B={tree / 'B'}", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["nodes"] == 14 and summary["folder_nodes"] == 2
    assert summary["images_per_source"] == {"A": 5, "B": 1}
    assert summary["skipped"]["A"] == {"unknown_folders": 2, "unreadable_images": 1,
                                       "non_image_files": 1}
    info = runner.invoke(app, ["graph", "info", str(out), "--json"])
    assert info.exit_code == 0
    assert json.loads(info.stdout)["version"] == summary["version"]


def test_graph_build_options_are_recorded(tree: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["graph", "build", "-s", f"A={tree / 'A'}", "--cap", "1",
                              "--no-expand", "--out", str(tmp_path / "g"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["nodes"] == 2
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["config"]["cap"] == 1 and manifest["config"]["expand_hypernyms"] is False


def test_graph_build_human_output(tree: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["graph", "build", "-s", f"A={tree / 'A'}", "--out",
                              str(tmp_path / "g")])
    assert res.exit_code == 0
    assert "folder nodes" in res.output and "unknown_folders=2" in res.output


def test_errors_are_clear_and_exit_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["graph", "build"])
    assert res.exit_code == 2 and "--source" in res.output
    res = runner.invoke(app, ["graph", "build", "-s", f"x={tmp_path / 'nope'}", "--out",
                              str(tmp_path / "g")])
    assert res.exit_code == 2 and "not a directory" in res.output
    assert not (tmp_path / "g").exists()  # nothing half-written
    res = runner.invoke(app, ["graph", "info", str(tmp_path)])
    assert res.exit_code == 2 and "not a graph bundle" in res.output
