"""The `mll` CLI: JSON output with checked values, human output, clear errors."""

import json
from pathlib import Path

from typer.testing import CliRunner

from mll_registry.cli.main import app

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


def test_version_flag_and_settings_command(tmp_path: Path, monkeypatch) -> None:
    from mll_registry import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == __version__
    (tmp_path / "mll.toml").write_text("alpha = 0.8\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLL_TOP_N", "7")
    res = runner.invoke(app, ["settings", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["settings"]["alpha"] == 0.8 and out["origins"]["alpha"].endswith("mll.toml")
    assert out["settings"]["top_n"] == 7 and out["origins"]["top_n"] == "$MLL_TOP_N"
    assert out["origins"]["k"] == "default"
    (tmp_path / "mll.toml").write_text("alpha = 'high'\n")
    bad = runner.invoke(app, ["settings"])
    assert bad.exit_code == 2 and "alpha='high'" in bad.output


def test_bench_tasks_takes_several_files(tree: Path, tmp_path: Path) -> None:
    """`--tasks a.yaml b.yaml` reaches the benchmark as two files (the second one is read)."""
    g = tmp_path / "g"
    assert runner.invoke(app, ["graph", "build", "-s", f"A={tree / 'A'}", "--out", str(g),
                               "--json"]).exit_code == 0
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("name: a\nclasses: [dog]\n")
    b.write_text("name: b\nclasses: [cat]\n")
    missing = tmp_path / "missing.yaml"
    res = runner.invoke(app, ["bench", "--tasks", str(a), str(missing), "--no-log",
                              "--graph", str(g), "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 2 and "missing.yaml" in res.output  # the second file was read
    res = runner.invoke(app, ["bench", "--tasks", str(a), str(b), "--no-log", "--graph", str(g),
                              "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 2 and "no labelled models" in res.output  # both parsed
