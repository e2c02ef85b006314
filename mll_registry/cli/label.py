"""``mll label``: label a model on a semantic graph (task-independent, once per model, graph and
settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mll_registry.cli.common import (
    DEMO_GRAPH,
    DataDirOpt,
    DeviceOpt,
    GraphOpt,
    JsonOpt,
    boundary,
    console,
    emit,
    error_line,
    fail,
    open_app,
)
from mll_registry.settings import DEFAULTS


def label(
    model_refs: Annotated[list[str], typer.Argument(
        metavar="MODEL_REF...",
        help="hf-hub:ORG/NAME[@REV], local-dir:PATH or open_clip:ARCH/TAG; several are labelled "
             "in shared passes (each graph image decoded once for the models of a pass)")],
    graph: GraphOpt = None,
    device: DeviceOpt = None,
    out: Annotated[Path | None, typer.Option(
        help="Write the label files here (its embeddings beside it, OUT.embeddings.safetensors) "
             "and register nothing.")] = None,
    template: Annotated[list[str] | None, typer.Option(
        help="Prompt template(s) with {} for the node text (repeatable) "
             f"[default: {list(DEFAULTS.templates)}].")] = None,
    text_source: Annotated[str | None, typer.Option(
        help=f"lemma or caption [default: {DEFAULTS.text_source}].")] = None,
    top_k: Annotated[int | None, typer.Option(
        help=f"Nodes kept per image [default: {DEFAULTS.top_k}].")] = None,
    batch_size: Annotated[int | None, typer.Option(
        help=f"Images per forward pass [default: {DEFAULTS.batch_size}].")] = None,
    allow_pickle: Annotated[bool, typer.Option(
        help="Allow pickled (*.bin/*.pt) weights. Only for sources you trust.")] = False,
    register: Annotated[bool, typer.Option(
        help="Log the label to MLflow and register the model version.")] = True,
    force: Annotated[bool, typer.Option(help="Relabel even if already registered.")] = False,
    same_as: Annotated[str | None, typer.Option(
        "--same-as", help="Register a local copy under this Hub model (hf-hub:ORG/NAME[@REV]) "
        "after checking it is the Hub's bytes.")] = None,
    full: Annotated[bool, typer.Option(
        "--full", help="Label in full even on a graph extended from one the model is labelled "
        "on (by default only the new images and node texts are encoded).")] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Label models on a semantic graph (task-independent, once per model, graph and settings)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    a = open_app(data_dir, device=device, templates=template or None, text_source=text_source,
                 top_k=top_k, batch_size=batch_size)
    with boundary(), Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
            "{task.completed}/{task.total}"), TimeRemainingColumn(), console=console,
            transient=True, disable=as_json) as prog:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(
                    {"images": "encoding images"}.get(stage, stage), total=total)
            prog.update(tasks[stage], completed=done)

        if len(model_refs) > 1:
            if out is not None or same_as:
                fail("--out and --same-as take one MODEL_REF; label the others in another call")
            outcomes, errors = a.labelling.label_many(
                model_refs, graph or DEMO_GRAPH, force=force, allow_pickle=allow_pickle,
                store=None if register else "local", progress=progress, full=full)
        else:
            outcomes, errors = [a.labelling.label(
                model_refs[0], graph or DEMO_GRAPH, force=force, allow_pickle=allow_pickle,
                same_as=same_as, store=None if register else "local", out=out,
                progress=progress, full=full)], {}
    if len(model_refs) > 1:
        _report_many(model_refs, [o.to_dict() for o in outcomes], errors, as_json)
        return
    model_ref, summary = model_refs[0], outcomes[0].to_dict()
    if as_json:
        emit(summary)
        return
    if summary["status"] == "skipped":
        where = (f"{summary['name']} version {summary['version']}" if summary.get("name")
                 else summary.get("path"))
        console.print(f"{model_ref} is already labelled on graph {summary['graph_version']} "
                      f"with these settings: {where} (use --force to relabel)")
        return
    t = Table(title=f"label of {summary['model']}", show_header=False)
    for k in ("revision", "graph_version", "label_hash", "nodes", "images", "images_encoded",
              "mean_acc1", "mean_acc5", "images_per_s", "bytes_per_image", "name", "version"):
        if k in summary:
            t.add_row(k.replace("_", " "), str(summary[k]))
    inc = summary.get("incremental")
    if inc:
        t.add_row("incremental from", f"graph {inc['from_graph']}: {inc['images_reused']} images "
                  f"and {inc['texts_reused']} node texts reused")
    console.print(t)
    console.print(f"written to {summary['path']}")


def _report_many(refs: list[str], summaries: list[dict[str, Any]], errors: dict[str, str],
                 as_json: bool) -> None:
    """Several models: one row (or JSON object) per model; exit 1 when any failed."""
    if as_json:
        emit({"labels": summaries, "failed": errors})
    else:
        t = Table(title=f"labels of {len(refs)} models")
        for col in ("model", "status", "version", "mean acc1", "images/s (pass)"):
            t.add_column(col)
        for sm in summaries:
            t.add_row(str(sm.get("model") or sm.get("model_ref")), sm["status"],
                      str(sm.get("version", "")), str(sm.get("mean_acc1", "")),
                      str(sm.get("images_per_s", "")))
        for ref, err in errors.items():
            t.add_row(ref, "failed", "", err, "")
        console.print(t)
    if errors:
        for ref, err in errors.items():
            error_line(f"{ref}: {err}")
        raise typer.Exit(1)
