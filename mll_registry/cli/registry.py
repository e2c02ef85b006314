"""``mll registry``: maintain the MLflow registry."""

from __future__ import annotations

from typing import Annotated

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


@registry_app.command("migrate-labels")
def registry_migrate_labels(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Rewrite the local label store's mll-label/1 labels in mll-label/2 (ranks in chunks, so
    that a selection reads and fetches only its candidates' chunks)."""
    a = open_app(data_dir)
    with boundary():
        done = a.labelling.migrate_local_labels()
    if as_json:
        emit(done)
        return
    for m in done:
        console.print(f"{m['model_ref']}: {m['from']} -> {m['to']}")
    console.print(f"{len(done)} label(s) rewritten")


@registry_app.command("relocate")
def registry_relocate(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """After the data dir was copied or moved: point its embedded MLflow store (mlflow.db) at
    the artifacts in this data dir; MLflow records absolute locations, which still name the
    original, so the store is refused until then."""
    from mll_registry.registry.tracking import relocate

    a = open_app(data_dir)
    with boundary():
        moved = relocate(a.root)
    if as_json:
        emit(moved)
        return
    if moved["from"] == moved["to"]:
        console.print(f"{moved['to']}: the store is in place, nothing to do", soft_wrap=True,
                      highlight=False, markup=False)
        return
    console.print(f"{moved['from']} -> {moved['to']}: {moved['rows']} artifact location(s) "
                  "rewritten", soft_wrap=True, highlight=False, markup=False)


@registry_app.command("ensembles")
def registry_ensembles(
    model: Annotated[str | None, typer.Option(
        "--model", help="Only the ensembles that use this MODEL_REF.")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Registered ensembles (mll select --register), which models they use, and which versions
    are stale (a member relabelled or at a new revision since); stale versions get the tag
    ``mll.stale``."""
    a = open_app(data_dir)
    with boundary():
        found = a.selection.ensembles(model)
    if as_json:
        emit(found)
        return
    for e in found:
        aliases = f" @{', @'.join(e['aliases'])}" if e["aliases"] else ""
        state = "stale: " + "; ".join(e["stale"]) if e["stale"] else "current"
        console.print(f"models:/{e['name']}/{e['version']}{aliases}: {len(e['members'])} "
                      f"models, {state}", soft_wrap=True, highlight=False, markup=False)
    console.print(f"{len(found)} ensemble version(s)", highlight=False)
