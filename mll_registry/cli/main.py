"""The ``mll`` command: parses arguments, calls the assembly layer, renders the result.

Thin on purpose: every command is one call on :class:`mll_registry.app.root.App` (which a notebook can
make too). Defaults come from :mod:`mll_registry.settings` (flags > ``MLL_*`` > ``mll.toml`` /
``[tool.mll]`` > built-in); ``--json`` prints machine-readable output; known errors print one line
and exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.table import Table

from mll_registry import __version__
from mll_registry.settings import DEFAULTS
from mll_registry.terminal import SafeConsole, safe

if TYPE_CHECKING:
    from mll_registry.app.root import App

app = typer.Typer(help="MLL Registry: label, select and reuse open_clip models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
graph_app = typer.Typer(help="Build and inspect semantic graphs.", no_args_is_help=True)
app.add_typer(graph_app, name="graph")

console = SafeConsole(stderr=True)  # data is printed as text (mll_registry.terminal)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="MLL_DATA_DIR", help="Data directory for assets and bundles.")]
GraphOpt = Annotated[str | None, typer.Option(
    help="Graph: `default` (the registry's default graph), a published graph version (16 hex "
         "digits), `demo`, or a bundle directory written ./PATH, /PATH or ~/PATH (a bare PATH only "
         "if it is a bundle directory: the names are never folders) [default: demo].")]
DeviceOpt = Annotated[str | None, typer.Option(help=f"auto, cpu or cuda[:N] [default: {DEFAULTS.device}].")]


def _fail(msg: str, code: int = 2) -> NoReturn:
    from mll_registry.redaction import redact

    msg = redact(msg)  # an error line never shows a credential, whoever wrote the message
    console.print(f"[bold red]error:[/] {safe(msg)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _known_errors(with_value_errors: bool = False) -> tuple[type[Exception], ...]:
    """Errors whose message is the whole story: print it, exit 2 (no traceback)."""
    from mll_registry.demo.sources import SourceMissing
    from mll_registry.errors import CaptionProviderError, ImageFileError, ModelRefError
    from mll_registry.graph.bundle import GraphError
    from mll_registry.graph.wordnet import WordNetUnavailable
    from mll_registry.hub.discovery import HubSourceError
    from mll_registry.labels.embeddings import EmbeddingsError
    from mll_registry.labels.format import LabelError
    from mll_registry.plugins import PluginError
    from mll_registry.registry.tracking import RegistryError
    from mll_registry.selection.select import SelectionError
    from mll_registry.settings import SettingsError
    from mll_registry.task import TaskError

    known: tuple[type[Exception], ...] = (
        GraphError, WordNetUnavailable, SourceMissing, ModelRefError, LabelError, TaskError,
        SelectionError, RegistryError, HubSourceError, PluginError, SettingsError, ImageFileError,
        EmbeddingsError, CaptionProviderError)
    return (*known, ValueError) if with_value_errors else known


def _app(data_dir: Path | None = None, **overrides: Any) -> App:
    """The assembly layer with these flags over the configured settings (None = not given)."""
    from mll_registry.app.root import App
    from mll_registry.settings import SettingsError

    try:
        return App.configured(data_dir=str(data_dir) if data_dir else None, **overrides)
    except SettingsError as exc:
        _fail(str(exc))


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option(
        "--version", callback=_version_callback, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """MLL Registry: label, select and reuse open_clip models."""


@app.command()
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
    a = _app(data_dir, device=device)
    console.print("MLL demo: assets, demo graph, labelling of the demo hub, selection + "
                  "reuse on demo tasks (Prefect ephemeral mode, local MLflow)...")
    try:
        with _heartbeat("mll demo"):
            out = a.demo(tasks or None)
    except _known_errors(with_value_errors=True) as exc:
        _fail(str(exc))
    if as_json:
        _emit(out)
        return
    _print_demo(out)


class _heartbeat:
    """While a long call runs: a live status line on a terminal, else a line every 8 s (logs)."""

    def __init__(self, what: str, every: float = 8.0) -> None:
        import threading

        self.what, self.every = what, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.status: Any = None

    def _beat(self) -> None:
        import time

        t0 = time.monotonic()
        while not self.stop.wait(self.every):
            console.print(f"{self.what}: still working ({time.monotonic() - t0:.0f} s)",
                          highlight=False)

    def __enter__(self) -> _heartbeat:
        if console.is_terminal:
            self.status = console.status(f"{self.what}: working...")
            self.status.__enter__()
        else:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.status is not None:
            self.status.__exit__(None, None, None)


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


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def settings(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Show the effective settings and where each comes from."""
    a = _app(data_dir)
    rec = a.settings.recorded()
    origins = {k: a.settings.sources.get(k, "default") for k in rec}
    out = {"settings": rec, "label_hash": a.settings.label_hash(), "origins": origins}
    if as_json:
        _emit(out)
        return
    t = Table("setting", "value", "from")
    for k, v in rec.items():
        t.add_row(k, json.dumps(v), origins[k])
    SafeConsole().print(t)
    console.print(f"label settings hash: {out['label_hash']}")


@app.command()
def setup(
    data_dir: DataDirOpt = None,
    demo: Annotated[bool, typer.Option(help="Also render the demo image styles.")] = True,
    force: Annotated[bool, typer.Option(help="Re-render even if up to date.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Provision offline assets: WordNet for nltk and the demo images."""
    a = _app(data_dir)
    try:
        rep = a.setup(demo=demo, force=force)
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
    if rep.tasks:
        console.print(f"demo task files: {Path(rep.tasks[0]).parent}/ "
                      f"({', '.join(Path(p).stem for p in rep.tasks)})")


@graph_app.command("build")
def graph_build(
    source: Annotated[list[str] | None, typer.Option(
        "--source", "-s", help="Sample dataset NAME=PATH (ImageFolder by wnid or synset id).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Build the demo graph.")] = False,
    describe: Annotated[list[str] | None, typer.Option(
        "--describe", help="A source's domain, NAME=TEXT (e.g. noto='colour emoji'): domain-aware "
        "selection weights it by its similarity to a task's domain.")] = None,
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

    from mll_registry.graph.bundle import GraphConfig

    if not demo and not source:
        _fail("give --demo or at least one --source NAME=PATH")
    a = _app(data_dir)
    cfg = GraphConfig(cap=cap, seed=seed, caption_template=caption, min_depth=min_depth,
                      expand_hypernyms=expand)
    try:
        with Progress(console=console, transient=True, disable=as_json) as prog:
            task = prog.add_task("drawing node images", total=None)
            built = a.build_graph(source or [], demo=demo, out=out, config=cfg,
                                  progress=lambda d, t: prog.update(task, completed=d, total=t),
                                  describe=describe or [])
    except _known_errors() as exc:
        _fail(str(exc))
    summary = built.to_dict()
    if as_json:
        _emit(summary)
        return
    _print_graph(summary)


def _print_graph(summary: dict[str, Any], verb: str = "written to") -> None:
    t = Table(title=f"graph {summary['version']}", show_header=False)
    for k in ("nodes", "folder_nodes", "hypernym_nodes", "edges", "images", "memberships", "cap"):
        t.add_row(k.replace("_", " "), str(summary[k]))
    described = summary.get("source_descriptions", {})
    for s, n in summary["images_per_source"].items():
        t.add_row(f"images from {s}", f"{n}" + (f" ({described[s]})" if s in described else ""))
    for s, sk in summary.get("skipped", {}).items():
        t.add_row(f"skipped in {s}", ", ".join(f"{k}={v}" for k, v in sk.items()))
    console.print(t)
    console.print(f"{verb} {summary.get('path')}")


@app.command()
def label(
    model_ref: Annotated[str, typer.Argument(
        help="hf-hub:ORG/NAME[@REV], local-dir:PATH or open_clip:ARCH/TAG")],
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
    """Label a model on a semantic graph (task-independent, once per model, graph and settings)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    a = _app(data_dir, device=device, templates=template or None, text_source=text_source,
             top_k=top_k, batch_size=batch_size)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
                "{task.completed}/{task.total}"), TimeRemainingColumn(), console=console,
                transient=True, disable=as_json) as prog:
            tasks: dict[str, Any] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = prog.add_task(
                        {"images": "encoding images"}.get(stage, stage), total=total)
                prog.update(tasks[stage], completed=done)

            summary = a.label(model_ref, graph, force=force, allow_pickle=allow_pickle,
                              same_as=same_as, store=None if register else "local", out=out,
                              progress=progress, full=full)
    except _known_errors() as exc:
        _fail(str(exc))
    if as_json:
        _emit(summary)
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


TaskOpt = Annotated[Path, typer.Option("--task", "-t", help="Task YAML file.")]
KOpt = Annotated[int | None, typer.Option("-k", help=f"Models per class [default: {DEFAULTS.k}].")]
AlphaOpt = Annotated[float | None, typer.Option(
    help=f"Reuse-metric weight of the class's own score [default: {DEFAULTS.alpha}].")]
MetricOpt = Annotated[str | None, typer.Option(
    help=f"f1 or precision [default: {DEFAULTS.metric}].")]
TopNOpt = Annotated[int | None, typer.Option(
    help=f"Graph nodes matched per class [default: {DEFAULTS.top_n}].")]
EmbOpt = Annotated[str | None, typer.Option(
    help=f"Sentence embedding model for matching [default: {DEFAULTS.embedder}].")]
CapOpt = Annotated[str | None, typer.Option(
    help="OpenAI-compatible endpoint for class descriptions (default: WordNet, no LLM).")]
LabelsOpt = Annotated[str | None, typer.Option(
    "--labels", help="Label store: registry (MLflow), local (data dir) or a plugged one "
    f"[default: {DEFAULTS.label_store}].")]
LogOpt = Annotated[bool, typer.Option("--log/--no-log", help="Log the run to MLflow.")]
UnmatchedOpt = Annotated[str | None, typer.Option(
    help="Classes with no good match in the graph: fallback (best general models), drop, or "
         f"fail [default: {DEFAULTS.unmatched}].")]
SourceWeightingOpt = Annotated[str | None, typer.Option(
    "--source-weighting", help="Weigh the graph's sample sources by the similarity of their "
    "descriptions to the task's domain (domain) or all alike, as the paper (uniform) "
    f"[default: {DEFAULTS.source_weighting}].")]


def _selection_app(data_dir: Path | None, k: int | None, alpha: float | None,
                   metric: str | None, top_n: int | None, embedding_model: str | None,
                   caption_url: str | None, labels: str | None, **more: Any) -> App:
    return _app(data_dir, k=k, alpha=alpha, metric=metric, top_n=top_n,
                embedder=embedding_model, caption_url=caption_url,
                caption_provider="openai" if caption_url else None, label_store=labels, **more)


def _warn_unmatched(res: Any) -> None:
    for row in res.per_class():
        if not row["weak_match"]:
            continue
        best = row["nodes"][0] if row["nodes"] else {"node": "-", "similarity": 0.0}
        then = ("it gets the best general models" if row["fallback"] else
                "its choice is a guess")
        console.print(f"[yellow]warning:[/] class {safe(repr(row['class']))} has no good match "
                      f"in the graph (its name is no graph concept; closest {safe(best['node'])} "
                      f"at {best['similarity']:.2f}): {then}", markup=True, soft_wrap=True)
    for cls in res.dropped:
        console.print(f"[yellow]warning:[/] class {safe(repr(cls))} has no good match in the "
                      "graph and was dropped (--unmatched drop)", markup=True, soft_wrap=True)


def _print_source_weights(sw: Any) -> None:
    if not isinstance(sw, dict) or len(sw.get("weights", {})) < 2:
        return
    if sw.get("uniform"):
        why = f" ({sw['reason']})" if sw.get("reason") else ""
        console.print(f"sample sources weighed alike{why}", soft_wrap=True)
        return
    parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(sw["weights"].items(), key=lambda kv: -kv[1]))
    console.print(f"sample sources weighted by the domain {sw.get('domain')!r} "
                  f"(T={sw.get('temperature')}): {parts}", soft_wrap=True)


@app.command("select")
def select_cmd(
    task: TaskOpt,
    graph: GraphOpt = None,
    k: KOpt = None,
    alpha: AlphaOpt = None,
    metric: MetricOpt = None,
    top_n: TopNOpt = None,
    embedding_model: EmbOpt = None,
    caption_url: CapOpt = None,
    labels: LabelsOpt = None,
    unmatched: UnmatchedOpt = None,
    source_weighting: SourceWeightingOpt = None,
    log: LogOpt = True,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Select the best models per class of a task from their labels (no model is run)."""
    a = _selection_app(data_dir, k, alpha, metric, top_n, embedding_model, caption_url, labels,
                       unmatched=unmatched, source_weighting=source_weighting)
    try:
        sel = a.select(task, graph, log=log)
    except _known_errors(with_value_errors=True) as exc:
        _fail(str(exc))
    _warn_unmatched(sel.result)
    if as_json:
        _emit(sel.to_dict())
        return
    res = sel.result
    SafeConsole().print(res.table())
    console.print(f"{len(res.models)} labelled models considered; ensemble uses "
                  f"{len(res.selected_models())}: {', '.join(res.selected_models())}")
    _print_source_weights(res.params.get("source_weights"))
    if sel.run_id:
        console.print(f"logged to MLflow run {sel.run_id} (experiment mll-selection)")


@app.command("reuse")
def reuse_cmd(
    task: TaskOpt,
    data: Annotated[Path | None, typer.Option(
        help="Image folder, one sub-folder per class (default: the task's `data`).")] = None,
    graph: GraphOpt = None,
    k: KOpt = None,
    alpha: AlphaOpt = None,
    metric: MetricOpt = None,
    top_n: TopNOpt = None,
    weighting: Annotated[str | None, typer.Option(
        help="inverse_entropy, entropy (ablation) or uniform "
             f"[default: {DEFAULTS.weighting}].")] = None,
    prompt: Annotated[list[str] | None, typer.Option(
        help=f"Class prompt template(s) [default: {list(DEFAULTS.prompts)}].")] = None,
    device: DeviceOpt = None,
    embedding_model: EmbOpt = None,
    caption_url: CapOpt = None,
    labels: LabelsOpt = None,
    unmatched: UnmatchedOpt = None,
    source_weighting: SourceWeightingOpt = None,
    log: LogOpt = True,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Select per class, run the entropy-weighted ensemble on labelled images, measure it."""
    a = _selection_app(data_dir, k, alpha, metric, top_n, embedding_model, caption_url, labels,
                       weighting=weighting, prompts=prompt or None, device=device,
                       unmatched=unmatched, source_weighting=source_weighting)
    try:
        with _heartbeat("mll reuse"):
            r = a.reuse(task, data, graph, log=log)
    except _known_errors(with_value_errors=True) as exc:
        _fail(str(exc))
    _warn_unmatched(r.selection.result)
    if as_json:
        _emit(r.to_dict())
        return
    out = r.result
    tab = Table(title=f"reuse on {r.selection.task.name}: {out.n_images} images")
    tab.add_column("predictor")
    tab.add_column("top-1", justify="right")
    tab.add_column("top-5", justify="right")
    tab.add_row("MLL ensemble", f"{out.ensemble['top1']:.3f}", f"{out.ensemble['top5']:.3f}")
    for m, acc in out.per_model.items():
        tab.add_row(f"  {m.rstrip('/').rsplit('/', 1)[-1]} alone", f"{acc['top1']:.3f}",
                    f"{acc['top5']:.3f}")
    SafeConsole().print(tab)
    if r.run_id:
        console.print(f"logged to MLflow run {r.run_id} (experiment mll-selection)")


@app.command()
def bench(
    more: Annotated[list[Path] | None, typer.Argument(
        help="More task YAML files (`--tasks a.yaml b.yaml` works too).",
        show_default=False)] = None,
    tasks: Annotated[list[Path] | None, typer.Option(
        "--tasks", help="Task YAML files (default: the demo tasks).")] = None,
    graph: GraphOpt = None,
    plot: Annotated[Path | None, typer.Option(help="Write the bar + growth plot here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the Markdown table here.")] = None,
    alpha: AlphaOpt = None,
    metric: MetricOpt = None,
    top_n: TopNOpt = None,
    growth_orders: Annotated[int, typer.Option(help="Random hub orders for the growth curve.")] = 10,
    device: DeviceOpt = None,
    log: LogOpt = True,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Benchmark MLL against INB, ModelGPT and the oracles on task files."""
    a = _app(data_dir, alpha=alpha, metric=metric, top_n=top_n, device=device)

    def say(msg: str) -> None:
        if not as_json:
            console.print(msg, highlight=False)

    try:
        out = a.bench([*(tasks or []), *(more or [])], graph, growth_orders=growth_orders,
                      plot=plot,
                      markdown=markdown, log=log, say=say)
    except _known_errors(with_value_errors=True) as exc:
        _fail(str(exc))
    md = out.pop("markdown")
    plot_path = out.pop("plot")
    if as_json:
        _emit(out)
        return
    SafeConsole().print(md)
    if plot_path:
        console.print(f"plot written to {plot_path}")


def _mount_cards() -> None:
    from mll_registry.cli import card as cli_card
    cli_card.LATEST_LABEL = lambda model_ref: _app().latest_label_dir(model_ref)
    cli_card.REGISTERED = lambda name: _app().registered_ref(name)
    app.add_typer(cli_card.card_app, name="card")


_mount_cards()

query_app = typer.Typer(help="Query the registry: best models per concept, a model's label.",
                        no_args_is_help=True)
app.add_typer(query_app, name="query")


@query_app.command("best")
def query_best(
    concept: Annotated[str, typer.Option(
        "--concept", "-c", help="Synset id (dog.n.01), wnid (n02084071) or a plain word.")],
    n: Annotated[int, typer.Option("-n", help="How many models.")] = 5,
    graph: GraphOpt = None,
    refresh: Annotated[bool, typer.Option(help="Check the registry for new versions now.")] = False,
    source: Annotated[str | None, typer.Option(
        "--source", help="Measure on this sample source's images of the concept only "
                         "(a source of the graph: `mll graph info`).")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Models ranked by their measured accuracy on a concept (from the label index)."""
    a = _app(data_dir)
    try:
        q = a.query_best(concept, n, graph, refresh=refresh, source=source)
    except KeyError as exc:
        _fail(str(exc.args[0]) if exc.args else str(exc))
    except _known_errors() as exc:
        _fail(str(exc))
    if not q.models:
        _fail(f"no labelled models for graph {q.graph_version}: label some with "
              "`mll label MODEL_REF`")
    if as_json:
        _emit(q.to_dict())
        return
    if q.ambiguous:
        console.print(f"[yellow]{safe(repr(concept))} is ambiguous in this graph[/]: using "
                      f"{safe(q.concept)}; also {safe(', '.join(q.ambiguous))} (pass a synset id "
                      "to choose)", markup=True, soft_wrap=True)
    t = Table(title=f"best models for {q.concept}"
              + (f" on source {q.source}'s images" if q.source else ""))
    for col in ("model", "version", "acc@1", "acc@5", "mean own score", "images"):
        t.add_column(col)
    for h in q.models:
        t.add_row(h.name, str(h.version), f"{h.acc1:.3f}", f"{h.acc5:.3f}", f"{h.mean_own:.3f}",
                  str(h.n_images))
    SafeConsole().print(t)


@query_app.command("label")
def query_label(
    model_ref: Annotated[str, typer.Argument(help="MODEL_REF or a registered model name.")],
    graph: GraphOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A model's registered label: version, summary, strongest and weakest concepts."""
    a = _app(data_dir)
    try:
        found = a.query_label(model_ref, graph)
    except _known_errors(with_value_errors=True) as exc:
        _fail(str(exc))
    if found is None:
        _fail(f"{model_ref} has no registered label for this graph; run `mll label {model_ref}`")
    v, summary = found
    s = summary.sort_values(["acc1", "mean_own"], ascending=False)
    out = {**v.to_dict(), "mean_acc5": round(float(s["acc5"].mean()), 4),
           "strongest": s.head(10)[["node_id", "acc1", "acc5"]].round(4).to_dict("records"),
           "weakest": s.tail(10)[["node_id", "acc1", "acc5"]].round(4).to_dict("records")}
    if as_json:
        _emit(out)
        return
    console.print(f"{v.name} version {v.version} ({v.source}), graph {v.graph_version}: "
                  f"mean acc@1 {v.mean_acc1:.3f}")
    console.print("strongest: " + ", ".join(f"{r['node_id']} {r['acc1']:.2f}"
                                            for r in out["strongest"]))
    console.print("weakest: " + ", ".join(f"{r['node_id']} {r['acc1']:.2f}"
                                          for r in out["weakest"]))


registry_app = typer.Typer(help="Maintain the MLflow registry.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")


@registry_app.command("migrate")
def registry_migrate(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Bring a registry written by mll-registry 0.1 up to date (names, label-settings hashes)."""
    a = _app(data_dir)
    try:
        moved = a.registry().migrate()
    except _known_errors() as exc:
        _fail(str(exc))
    if as_json:
        _emit(moved)
        return
    for m in moved:
        console.print(f"{m['from']} -> {m['to']} ({m['versions']} version(s))")
    console.print(f"{len(moved)} registered model(s) or version(s) updated")


@graph_app.command("publish")
def graph_publish(
    bundle: Annotated[str, typer.Argument(help="Graph bundle directory, or `demo`.")] = "demo",
    default: Annotated[bool, typer.Option(
        "--default", help="Make it the default graph (what the flows use when given none).")
    ] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish a graph and its sample images to the tracking server's artifact store."""
    from rich.progress import Progress

    a = _app(data_dir)
    try:
        with Progress(console=console, transient=True, disable=as_json) as prog:
            task = prog.add_task("packing sample images", total=None)
            out = a.publish_graph(bundle, default=default,
                                  progress=lambda d, t: prog.update(task, completed=d, total=t))
    except _known_errors() as exc:
        _fail(str(exc))
    if as_json:
        _emit(out)
        return
    verb = "published" if out["created"] else "already published"
    console.print(f"graph {safe(out['graph_version'])} {verb}: registry version "
                  f"{safe(out['registry_version'])}, {out['images']} images in {out['shards']} "
                  f"shard(s) ({out['bytes'] / 1e6:.1f} MB), run {safe(out['run_id'])}"
                  + (" [bold](default)[/]" if out["default"] else ""), markup=True)


@graph_app.command("extend")
def graph_extend(
    base: Annotated[str, typer.Argument(
        help="The parent: a bundle directory, a published graph version, `default` or `demo`.")],
    source: Annotated[list[str] | None, typer.Option(
        "--source", "-s", help="New sample dataset NAME=PATH (repeatable).")] = None,
    describe: Annotated[list[str] | None, typer.Option(
        "--describe", help="A source's domain, NAME=TEXT (e.g. noto='colour emoji'): domain-aware "
        "selection weights it by its similarity to a task's domain.")] = None,
    demo: Annotated[bool, typer.Option(
        "--demo", help="Add the demo's 60 extension concepts (Noto and Symbola renders).")] = False,
    out: Annotated[Path | None, typer.Option(help="Child bundle directory to write.")] = None,
    publish: Annotated[bool, typer.Option(
        "--publish", help="Publish the child to the registry's artifact store.")] = False,
    default: Annotated[bool, typer.Option(
        "--default", help="With --publish: make the child the default graph.")] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Grow a graph with new sample sources into a child version that records its parent.

    The parent's nodes keep their images, so labels on the child are computed incrementally.
    """
    from rich.progress import Progress

    if not demo and not source:
        _fail("give at least one --source NAME=PATH, or --demo")
    a = _app(data_dir)
    try:
        with Progress(console=console, transient=True, disable=as_json) as prog:
            task = prog.add_task("drawing node images", total=None)
            out_d = a.extend_graph(base, source or [], demo=demo, out=out, publish=publish,
                                   default=default, describe=describe or [],
                                   progress=lambda d, t: prog.update(task, completed=d, total=t))
    except _known_errors() as exc:
        _fail(str(exc))
    if as_json:
        _emit(out_d)
        return
    _print_graph(out_d)
    d = out_d["delta"]
    console.print(f"child of {out_d['parent']}: +{d['n_added_nodes']} nodes, "
                  f"+{d['added_images']} images, {d['n_changed_nodes']} parent nodes gained "
                  f"images (sources {', '.join(d['added_sources'])})")
    if "published" in out_d:
        p = out_d["published"]
        console.print(f"published: registry version {safe(p['registry_version'])}"
                      + (" [bold](default)[/]" if p["default"] else ""), markup=True)


@graph_app.command("diff")
def graph_diff(
    a_spec: Annotated[str, typer.Argument(
        metavar="A", help="A graph: bundle directory, published version, `default` or `demo`.")],
    b_spec: Annotated[str, typer.Argument(metavar="B", help="Another graph, the same ways.")],
    as_json: JsonOpt = False,
) -> None:
    """What changed from graph A to graph B: nodes by id, images by content."""
    try:
        delta = _app().graph_diff(a_spec, b_spec)
    except _known_errors() as exc:
        _fail(str(exc))
    if as_json:
        _emit(delta.to_dict(full=True))
        return
    console.print(f"{delta.parent} -> {delta.child}: {delta.headline()}")
    for what in ("added_nodes", "removed_nodes", "changed_nodes"):
        nodes = getattr(delta, what)
        if nodes:
            more = f" (+{len(nodes) - 10} more)" if len(nodes) > 10 else ""
            console.print(f"{what.replace('_', ' ')}: {', '.join(nodes[:10])}{more}")
    for what in ("added_sources", "removed_sources"):
        if getattr(delta, what):
            console.print(f"{what.replace('_', ' ')}: {', '.join(getattr(delta, what))}")


@graph_app.command("list")
def graph_list(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """The graphs published in the registry (the default one marked)."""
    try:
        graphs = _app(data_dir).graphs()
    except _known_errors() as exc:
        _fail(str(exc))
    if as_json:
        _emit([g.to_dict() for g in graphs])
        return
    if not graphs:
        console.print("no published graphs: `mll graph publish PATH --default` adds one")
        return
    t = Table(title="published graphs")
    for c in ("graph version", "default", "parent", "nodes", "images", "sources", "MB",
              "published"):
        t.add_column(c)
    for g in graphs:
        t.add_row(g.graph_version, "yes" if g.default else "",
                  f"{g.parent} ({g.delta})" if g.parent else "", str(g.nodes), str(g.images),
                  ", ".join(g.sources), f"{g.bytes / 1e6:.1f}", g.published_at)
    console.print(t)


@graph_app.command("default")
def graph_default(
    version: Annotated[str, typer.Argument(help="A published graph version.")],
    data_dir: DataDirOpt = None,
) -> None:
    """Make a published graph the default one (what the flows use when given none)."""
    try:
        g = _app(data_dir).set_default_graph(version)
    except _known_errors() as exc:
        _fail(str(exc))
    console.print(f"default graph: {g.graph_version} (registry version {g.registry_version})")


@graph_app.command("info")
def graph_info(path: Annotated[str, typer.Argument(
        help="A bundle directory, a published graph version, `default` or `demo`.")],
        as_json: JsonOpt = False) -> None:
    """Show a graph's summary (verifies its version)."""
    try:
        g = _app().graph(path)
    except _known_errors() as exc:
        _fail(str(exc))
    summary = {**g.summary(), "path": str(path)}
    lineage = g.manifest.get("lineage") or {}
    if lineage.get("parent"):
        from mll_registry.graph.lineage import GraphDelta

        summary["parent"] = lineage["parent"]
        summary["delta"] = GraphDelta(**lineage["delta"]).headline()
    if as_json:
        _emit(summary)
    else:
        _print_graph(summary, verb="bundle:")
        if "parent" in summary:
            console.print(f"child of {summary['parent']}: {summary['delta']}")


_DISK_FULL = ("No space left on device", "os error 28", "Disk quota exceeded", "File too large")


def run() -> None:
    """The ``mll`` entry point: the Typer app, with a full disk reported in one line (exit 2).

    Every write goes through a temporary name that is removed when the write fails, so a full
    disk leaves the previous state; the message says what to do.
    """
    import errno

    try:
        app()
    except Exception as exc:  # noqa: BLE001 - only a full disk is handled here; the rest re-raised
        full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
                or any(m in str(exc) for m in _DISK_FULL))
        if not full:
            raise
        where = getattr(exc, "filename", None)
        SafeConsole(stderr=True).print(
            f"error: the disk is full{f' (writing {where})' if where else ''}: free some space or "
            "point MLL_DATA_DIR at a larger disk, then run the command again (nothing partial "
            "was kept; finished chunks resume)", soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":  # pragma: no cover
    run()
