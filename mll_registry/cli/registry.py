"""``mll registry``: maintain the MLflow registry."""

from __future__ import annotations

import typer

from mll_registry.cli.common import DataDirOpt, JsonOpt, boundary, console, emit, open_app

registry_app = typer.Typer(help="Maintain the MLflow registry.", no_args_is_help=True)


@registry_app.command("migrate")
def registry_migrate(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Bring a registry written by mll-registry 0.1 up to date (names, label-settings hashes)."""
    a = open_app(data_dir)
    with boundary():
        moved = a.registry.migrate()
    if as_json:
        emit(moved)
        return
    for m in moved:
        console.print(f"{m['from']} -> {m['to']} ({m['versions']} version(s))")
    console.print(f"{len(moved)} registered model(s) or version(s) updated")
