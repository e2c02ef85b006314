"""The CLI's one error boundary and its plug point for commands from outside the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mll_registry.cli import common
from mll_registry.cli import main as cli
from mll_registry.graph.bundle import GraphError

REPO = Path(__file__).resolve().parents[2]


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_bad_model_reference_keeps_its_bracketed_hint() -> None:
    res = CliRunner().invoke(cli.app, ["label", "hf-hub:"])
    assert res.exit_code == 2, res.output
    line = _one_error_line(res.stderr)
    assert line == ("error: bad model reference 'hf-hub:': use hf-hub:ORG/NAME[@REVISION], "
                    "local-dir:PATH or open_clip:ARCH/PRETRAINED_TAG")


def test_a_known_error_is_one_line_with_markup_shown_as_text() -> None:
    """Bracketed text that Rich would read as markup (``[x]``, ``[/]``, ``[bold]``) is shown."""
    sub = typer.Typer()

    @sub.command()
    def boom() -> None:
        with common.boundary():
            raise GraphError("'[x]' is not a WordNet noun; [bold]see[/] [/x] token=hf_abcdefghijklmnopqrstuvwxyz")

    res = CliRunner().invoke(sub, [])
    assert res.exit_code == 2
    line = _one_error_line(res.stderr)
    assert line.startswith("error: '[x]' is not a WordNet noun; [bold]see[/] [/x] token=")
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in line  # redacted


def test_unknown_errors_keep_their_traceback() -> None:
    with pytest.raises(ZeroDivisionError), common.boundary(ValueError):
        raise ZeroDivisionError("a bug")
    assert common.known_message(KeyError("'[y]' is unknown"), (KeyError,)) == "'[y]' is unknown"
    assert common.known_message(ValueError("v")) is None
    assert common.known_message(ValueError("v"), (ValueError,)) == "v"
    assert common.known_message(OSError(28, "No space left on device")).startswith("the disk")


def test_a_command_registered_in_code_runs_through_the_cli() -> None:
    hello = typer.Typer()

    @hello.command("say")
    def say(name: str) -> None:
        typer.echo(f"hello {name}")

    cli.COMMANDS.register("hello", hello)
    try:
        res = CliRunner().invoke(cli.build_app(), ["hello", "say", "world"])
    finally:
        cli.COMMANDS.unregister("hello")
    assert res.exit_code == 0, res.output
    assert res.stdout == "hello world\n"
    assert "hello" not in [g.name for g in cli.build_app().registered_groups]


def test_an_entry_point_of_another_distribution_adds_a_command(tmp_path: Path) -> None:
    """A ``*.dist-info/entry_points.txt`` on the path is a plug-in; its error uses the boundary."""
    (tmp_path / "outside_cli.py").write_text(
        "import typer\nfrom mll_registry.errors import MLLError\n"
        "app = typer.Typer()\n"
        "@app.command()\ndef hi(fail: bool = False) -> None:\n"
        "    if fail:\n        raise MLLError('outside says [no]: fix it')\n"
        "    typer.echo('hi from outside')\n")
    info = tmp_path / "outside_cli-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: outside-cli\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mll_registry.commands]\nouter = outside_cli:app\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}

    def mll(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "from mll_registry.cli.main import run; run()",
                               *args], env=env, capture_output=True, text=True, timeout=120)

    ok = mll("outer", "hi")
    assert ok.returncode == 0 and ok.stdout == "hi from outside\n", ok.stderr
    bad = mll("outer", "hi", "--fail")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert _one_error_line(bad.stderr) == "error: outside says [no]: fix it"
