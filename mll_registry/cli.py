"""The ``mll`` command: parses arguments, calls the library, prints (``--json`` for machines).

Thin on purpose: everything it does is a library call a notebook can make too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mll_registry import __version__

app = typer.Typer(help="MLL Registry: label, select and reuse open_clip models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
graph_app = typer.Typer(help="Build and inspect semantic graphs.", no_args_is_help=True)
app.add_typer(graph_app, name="graph")

console = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="MLL_DATA_DIR", help="Data directory for assets and bundles.")]


def _fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {msg}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _known_errors() -> tuple[type[Exception], ...]:
    from mll_registry.demo.sources import SourceMissing
    from mll_registry.graph import GraphError
    from mll_registry.hub import ModelRefError
    from mll_registry.labels import LabelError
    from mll_registry.wordnet import WordNetUnavailable

    return (GraphError, WordNetUnavailable, SourceMissing, ModelRefError, LabelError)


def _graph_or_demo(graph: Path | None, data_dir: Path | None) -> Any:
    """Load ``graph``, or the demo graph (built on demand when absent)."""
    from mll_registry.graph import SemanticGraph

    if graph is not None:
        return SemanticGraph.load(graph)
    from mll_registry.demo.graph import build_demo_graph, demo_graph_path

    path = demo_graph_path(data_dir)
    if (path / "manifest.json").is_file():
        return SemanticGraph.load(path)
    console.print(f"no --graph given: building the demo graph at {path}")
    return build_demo_graph(data_dir)[0]


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def setup(
    data_dir: DataDirOpt = None,
    demo: Annotated[bool, typer.Option(help="Also render the demo image styles.")] = True,
    force: Annotated[bool, typer.Option(help="Re-render even if up to date.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Provision offline assets: WordNet for nltk and the demo images."""
    from mll_registry.assets import setup as do_setup

    try:
        rep = do_setup(data_dir, demo=demo, force=force)
    except _known_errors() as exc:
        _fail(str(exc))
    if as_json:
        _emit(rep.to_dict())
        return
    console.print(f"data directory: {rep.data_dir}")
    console.print(f"WordNet: {rep.wordnet['source']} {rep.wordnet['path'] or ''}")
    t = Table("style", "concepts", "images", "rendered now", "seconds")
    for r in rep.renders:
        t.add_row(r["style"], str(r["concepts"]), str(r["images"]), str(r["rendered"]),
                  f"{r['seconds']:.1f}")
    if rep.renders:
        console.print(t)


@graph_app.command("build")
def graph_build(
    source: Annotated[list[str] | None, typer.Option(
        "--source", "-s", help="Sample dataset NAME=PATH (ImageFolder by wnid or synset id).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Build the demo graph.")] = False,
    out: Annotated[Path | None, typer.Option(help="Bundle directory to write.")] = None,
    cap: Annotated[int, typer.Option(help="Max images per node.")] = 75,
    seed: Annotated[int, typer.Option(help="Seed of the per-node draw.")] = 0,
    caption: Annotated[str, typer.Option(help="Node caption template.")] =
        "{lemma} which is {definition}",
    min_depth: Annotated[int, typer.Option(help="Leave out hypernyms shallower than this.")] = 4,
    expand: Annotated[bool, typer.Option(help="Add hypernym nodes.")] = True,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a semantic graph bundle from sample datasets (or the demo's)."""
    from rich.progress import Progress

    from mll_registry.graph import GraphConfig, SampleDataset, build_and_save

    if not demo and not source:
        _fail("give --demo or at least one --source NAME=PATH")
    cfg = GraphConfig(cap=cap, seed=seed, caption_template=caption, min_depth=min_depth,
                      expand_hypernyms=expand)
    try:
        if demo:
            from mll_registry.demo.graph import build_demo_graph

            g, rep, path = build_demo_graph(data_dir, out=out, config=cfg,
                                            extra=[SampleDataset.parse(s) for s in source or []])
        else:
            from mll_registry.config import graphs_dir

            sets = [SampleDataset.parse(s) for s in source or []]
            path = out or graphs_dir(data_dir) / "-".join(s.name for s in sets)
            with Progress(console=console, transient=True, disable=as_json) as prog:
                task = prog.add_task("drawing node images", total=None)
                g, rep = build_and_save(sets, path, cfg,
                                        progress=lambda d, t: prog.update(task, completed=d, total=t))
    except _known_errors() as exc:
        _fail(str(exc))
    summary = {**g.summary(), "path": str(path), "seconds": rep.seconds,
               "skipped": {s.name: {"unknown_folders": s.unknown_folders,
                                    "unreadable_images": s.unreadable,
                                    "non_image_files": s.non_image_files} for s in rep.sources}}
    if as_json:
        _emit(summary)
        return
    _print_graph(summary)


def _print_graph(summary: dict[str, Any]) -> None:
    t = Table(title=f"graph {summary['version']}", show_header=False)
    for k in ("nodes", "folder_nodes", "hypernym_nodes", "edges", "images", "memberships", "cap"):
        t.add_row(k.replace("_", " "), str(summary[k]))
    for s, n in summary["images_per_source"].items():
        t.add_row(f"images from {s}", str(n))
    for s, sk in summary.get("skipped", {}).items():
        t.add_row(f"skipped in {s}", ", ".join(f"{k}={v}" for k, v in sk.items()))
    console.print(t)
    console.print(f"written to {summary.get('path')}")


@app.command()
def label(
    model_ref: Annotated[str, typer.Argument(
        help="hf-hub:ORG/NAME[@REV], local-dir:PATH or open_clip:ARCH/TAG")],
    graph: Annotated[Path | None, typer.Option(help="Graph bundle (default: the demo graph).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Label directory to write.")] = None,
    template: Annotated[list[str] | None, typer.Option(
        help="Prompt template(s) with {} for the node text (repeatable).")] = None,
    text_source: Annotated[str, typer.Option(help="lemma or caption.")] = "lemma",
    top_k: Annotated[int, typer.Option(help="Nodes kept per image.")] = 32,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 256,
    allow_pickle: Annotated[bool, typer.Option(
        help="Allow pickled (*.bin/*.pt) weights. Only for sources you trust.")] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Label a model on a semantic graph (task-independent, once per model and graph version)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from mll_registry.labeling import DEFAULT_TEMPLATES, LabelConfig, label_ref

    try:
        cfg = LabelConfig(templates=tuple(template) if template else DEFAULT_TEMPLATES,
                          text_source=text_source, top_k=top_k, batch_size=batch_size,
                          device=device)
    except ValueError as exc:
        _fail(str(exc))
    try:
        g = _graph_or_demo(graph, data_dir)
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
                "{task.completed}/{task.total}"), TimeRemainingColumn(), console=console,
                transient=True, disable=as_json) as prog:
            tasks: dict[str, Any] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = prog.add_task(
                        {"pixels": "decoding images", "images": "encoding images"}[stage],
                        total=total)
                prog.update(tasks[stage], completed=done)

            run, path = label_ref(model_ref, g, cfg, out=out, root=data_dir,
                                  allow_pickle=allow_pickle, progress=progress)
    except _known_errors() as exc:
        _fail(str(exc))
    summary = {**run.label.headline(), "path": str(path), "seconds": run.seconds,
               "bytes_per_image": round(run.label.bytes_per_image(), 1),
               "chunks": {"total": run.chunks_total, "computed": run.chunks_computed,
                          "reused": run.chunks_reused}}
    if as_json:
        _emit(summary)
        return
    t = Table(title=f"label of {summary['model']}", show_header=False)
    for k in ("revision", "graph_version", "nodes", "images", "mean_acc1", "mean_acc5",
              "images_per_s", "bytes_per_image"):
        t.add_row(k.replace("_", " "), str(summary[k]))
    console.print(t)
    best = run.label.summary.sort_values("acc1", ascending=False).head(5)
    console.print("strongest concepts: " + ", ".join(
        f"{r.node_id} ({r.acc1:.2f})" for r in best.itertuples()))
    console.print(f"written to {path}")


@graph_app.command("info")
def graph_info(path: Path, as_json: JsonOpt = False) -> None:
    """Show a graph bundle's summary (verifies its version)."""
    from mll_registry.graph import SemanticGraph

    try:
        g = SemanticGraph.load(path)
    except _known_errors() as exc:
        _fail(str(exc))
    summary = {**g.summary(), "path": str(path)}
    if as_json:
        _emit(summary)
    else:
        _print_graph(summary)


if __name__ == "__main__":  # pragma: no cover
    app()
