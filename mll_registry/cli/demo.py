"""``mll demo`` and ``mll setup``: the embedded default end to end, and the offline assets it needs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from mll_registry.cli.common import (
    DataDirOpt,
    DeviceOpt,
    JsonOpt,
    boundary,
    console,
    emit,
    heartbeat,
    open_app,
)
from mll_registry.terminal import SafeConsole, safe

if TYPE_CHECKING:
    from mll_registry.app.root import App


def demo(
    tasks: Annotated[list[str] | None, typer.Option(
        "--task", help="Demo task(s) to select for (default: pets, vehicles).")] = None,
    device: DeviceOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The embedded default end to end: assets, demo graph, labelling, selection, reuse."""
    import os

    if data_dir:
        os.environ["MLL_DATA_DIR"] = str(data_dir)
    a = open_app(data_dir, device=device)
    console.print("MLL demo: assets, demo graph, labelling of the demo hub, selection + "
                  "reuse on demo tasks (Prefect ephemeral mode, local MLflow)...")
    with boundary(ValueError), heartbeat("mll demo"):
        out = a.demo.demo(tasks or None).to_dict()
        out["links"] = demo_links(a, out)
    if as_json:
        emit(out)
        return
    _print_demo(out)


def demo_links(a: App, out: dict[str, Any], mlflow_ui: str = "http://127.0.0.1:5000",
               prefect_ui: str = "http://127.0.0.1:4200") -> dict[str, dict[str, str]]:
    """Deep links into the MLflow and Prefect UIs for what the demo made (the registry's own
    address when it is a server, else where `mlflow ui` listens by default)."""
    from mll_registry.redaction import redact
    from mll_registry.registry.tracking import LABEL_EXPERIMENT, SELECTION_EXPERIMENT

    reg = a.registry
    base = redact(reg.uri.rstrip("/")) if reg.uri.startswith("http") else mlflow_ui
    sel_exp = reg.experiment(SELECTION_EXPERIMENT)
    mlflow = {"label runs": f"{base}/#/experiments/{reg.experiment(LABEL_EXPERIMENT)}/runs",
              "selection runs": f"{base}/#/experiments/{sel_exp}/runs"}
    for t in out.get("tasks", []):
        mlflow[f"selection run {t['task']}"] = (
            f"{base}/#/experiments/{sel_exp}/runs/{t['mlflow_run_id']}")
    versions = reg.labelled_versions(out.get("graph", {}).get("version"))
    if versions:
        v = versions[0]
        mlflow[f"model version {v.name}"] = f"{base}/#/models/{v.name}/versions/{v.version}"
    prefect = {"flow runs": f"{prefect_ui}/runs"}
    if out.get("prefect_flow_run_id"):
        prefect["this demo run"] = f"{prefect_ui}/runs/flow-run/{out['prefect_flow_run_id']}"
    return {"mlflow": mlflow, "prefect": prefect}


def _print_demo(out: dict[str, Any]) -> None:
    from mll_registry.config import data_dir as ddir

    g = out["graph"]
    lab = out["labelling"]
    con = SafeConsole()
    con.print(f"[bold]graph[/] {safe(g['version'])}: {g['nodes']} nodes, {g['images']} images",
              markup=True)
    con.print(f"[bold]labelling[/]: {lab['found']} demo models found, {lab['labelled']} labelled "
              f"now ({lab['found'] - lab['labelled']} already in the registry)", markup=True)
    for t in out["tasks"]:
        tab = Table(title=f"task {t['task']}: {len(t['classes'])} classes")
        tab.add_column("class")
        tab.add_column("selected model")
        for c in t["classes"][:8]:
            tab.add_row(c["class"], c["models"][0]["model"].rstrip("/").rsplit("/", 1)[-1])
        if len(t["classes"]) > 8:
            tab.add_row(f"... {len(t['classes']) - 8} more", "")
        con.print(tab)
        short = lambda r: r.rstrip("/").rsplit("/", 1)[-1]  # noqa: E731
        con.print(f"  MLL ensemble top-1 [bold]{t['ensemble_top1']:.3f}[/]   "
                  f"INB ({safe(short(t['inb_model']))}) {t['inb_top1']:.3f}   "
                  f"oracle ({safe(short(t['oracle_model']))}) {t['oracle_top1']:.3f}   "
                  f"[MLflow run {safe(t['mlflow_run_id'])}]", markup=True)
    uri = out["mlflow_tracking_uri"]
    links = out.get("links", {})
    con.print("\n[bold]Where to look[/] (commands as set up by the README; `uv run` from the "
              "checkout)", markup=True)
    if uri.startswith("http"):
        con.print(f"  MLflow UI at {uri}")
    else:
        con.print(f"  MLflow UI:  uv run mlflow ui --backend-store-uri {uri} --port 5000",
                  soft_wrap=True)
    for what, url in links.get("mlflow", {}).items():
        con.print(f"    {what}: {url}", soft_wrap=True)
    con.print("  Prefect UI: uv run prefect server start   (the demo's runs are in PREFECT_HOME)",
              soft_wrap=True)
    for what, url in links.get("prefect", {}).items():
        con.print(f"    {what}: {url}", soft_wrap=True)
    con.print(f"  data directory: {ddir()}")
    con.print(f"[bold]total time[/]: {out['seconds']:.1f} s", markup=True)


def setup(
    data_dir: DataDirOpt = None,
    demo: Annotated[bool, typer.Option(help="Also render the demo image styles.")] = True,
    force: Annotated[bool, typer.Option(help="Re-render even if up to date.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Provision offline assets: WordNet for nltk and the demo images."""
    a = open_app(data_dir)
    with boundary():
        rep = a.setup(demo=demo, force=force)
    if as_json:
        emit(rep.to_dict())
        return
    console.print(f"data directory: {rep.data_dir}")
    console.print(f"WordNet: {rep.wordnet['source']} {rep.wordnet['path'] or ''}")
    t = Table("style", "concepts", "images", "rendered now", "seconds")
    for r in rep.renders:
        t.add_row(r["style"], str(r["concepts"]), str(r["images"]), str(r["rendered"]),
                  f"{r['seconds']:.1f}")
    if rep.renders:
        console.print(t)
    if rep.tasks:
        console.print(f"demo task files: {Path(rep.tasks[0]).parent}/ "
                      f"({', '.join(Path(p).stem for p in rep.tasks)})")
