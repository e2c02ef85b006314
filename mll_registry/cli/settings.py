"""``mll version`` and ``mll settings``: what this installation is and how it is configured."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from mll_registry import __version__
from mll_registry.cli.common import DataDirOpt, JsonOpt, console, emit, open_app
from mll_registry.terminal import SafeConsole


def version_callback(value: bool) -> None:
    """``mll --version``: print the version and stop."""
    if value:
        typer.echo(__version__)
        raise typer.Exit()


def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def settings(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Show the effective settings and where each comes from."""
    a = open_app(data_dir)
    rec = a.settings.recorded()
    origins = {k: a.settings.sources.get(k, "default") for k in rec}
    out = {"settings": rec, "label_hash": a.settings.label_hash(), "origins": origins}
    if as_json:
        emit(out)
        return
    t = Table("setting", "value", "from")
    for k, v in rec.items():
        t.add_row(k, json.dumps(v), origins[k])
    SafeConsole().print(t)
    console.print(f"label settings hash: {out['label_hash']}")
