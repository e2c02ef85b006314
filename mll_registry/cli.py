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


def _known_errors(with_value_errors: bool = False) -> tuple[type[Exception], ...]:
    """Errors whose message is the whole story: print it, exit 2 (no traceback)."""
    from mll_registry.demo.sources import SourceMissing
    from mll_registry.graph import GraphError
    from mll_registry.hub import ModelRefError
    from mll_registry.labels import LabelError
    from mll_registry.registry import RegistryError
    from mll_registry.selection import SelectionError
    from mll_registry.task import TaskError
    from mll_registry.wordnet import WordNetUnavailable

    known: tuple[type[Exception], ...] = (GraphError, WordNetUnavailable, SourceMissing,
                                          ModelRefError, LabelError, TaskError, SelectionError,
                                          RegistryError)
    return (*known, ValueError) if with_value_errors else known


def _graph_or_demo(graph: Path | None, data_dir: Path | None) -> Any:
    """Load ``graph``, or the demo graph (built on demand when absent)."""
    from mll_registry.demo.graph import demo_graph_path, load_graph

    if graph is None and not (demo_graph_path(data_dir) / "manifest.json").is_file():
        console.print(f"no --graph given: building the demo graph at {demo_graph_path(data_dir)}")
    return load_graph(graph, data_dir)


@app.command()
def demo(
    tasks: Annotated[list[str] | None, typer.Option(
        "--task", help="Demo task(s) to select for (default: pets, vehicles).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The embedded default end to end: assets, demo graph, labelling, selection, reuse."""
    import os
    import time

    t0 = time.perf_counter()
    if data_dir:
        os.environ["MLL_DATA_DIR"] = str(data_dir)
    for k, v in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
                 "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1",
                 "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
                 "PREFECT_LOGGING_LEVEL": "WARNING"}.items():
        os.environ.setdefault(k, v)
    # Prefect creates its home without parents; a fresh PREFECT_HOME=/new/dir would fail
    Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser().mkdir(parents=True,
                                                                          exist_ok=True)
    if not as_json:
        console.print("MLL demo: assets, demo graph, labelling of the demo hub, selection + "
                      "reuse on demo tasks (Prefect ephemeral mode, local MLflow)...")
    try:
        from flows.demo import demo as demo_flow

        out = demo_flow(tasks=tasks or None, device=device)
    except _known_errors(with_value_errors=True) as exc:
        _fail(str(exc))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    from mll_registry.registry import tracking_uri

    out["mlflow_tracking_uri"] = tracking_uri()
    if as_json:
        _emit(out)
        return
    _print_demo(out)


def _print_demo(out: dict[str, Any]) -> None:
    from mll_registry.config import data_dir as ddir

    g = out["graph"]
    lab = out["labelling"]
    con = Console()
    con.print(f"[bold]graph[/] {g['version']}: {g['nodes']} nodes, {g['images']} images")
    con.print(f"[bold]labelling[/]: {lab['found']} demo models found, {lab['labelled']} labelled "
              f"now ({lab['found'] - lab['labelled']} already in the registry)")
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
                  f"INB ({short(t['inb_model'])}) {t['inb_top1']:.3f}   "
                  f"oracle ({short(t['oracle_model'])}) {t['oracle_top1']:.3f}   "
                  f"[MLflow run {t['mlflow_run_id']}]")
    uri = out["mlflow_tracking_uri"]
    con.print("\n[bold]Where to look[/]")
    con.print(f"  MLflow UI:  mlflow ui --backend-store-uri {uri} --port 5000   "
              "-> http://127.0.0.1:5000 (experiments mll-labels, mll-selection; Models tab)")
    con.print("  Prefect UI: prefect server start   -> http://127.0.0.1:4200 (flow runs "
              "mll-demo, label-new-models, label-model, select-models; artifacts)")
    con.print(f"  data directory: {ddir()}")
    con.print(f"[bold]total time[/]: {out['seconds']:.1f} s")


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
    if rep.tasks:
        console.print(f"demo task files: {Path(rep.tasks[0]).parent}/ "
                      f"({', '.join(Path(p).stem for p in rep.tasks)})")


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
    register: Annotated[bool, typer.Option(
        help="Log the label to MLflow and register the model version.")] = True,
    force: Annotated[bool, typer.Option(help="Relabel even if already registered.")] = False,
    same_as: Annotated[str | None, typer.Option(
        "--same-as", help="Register a local copy under this Hub model (hf-hub:ORG/NAME[@REV]) "
        "after checking it is the Hub's bytes.")] = None,
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

            if register and out is None:
                from mll_registry.registry import label_and_register

                summary = label_and_register(model_ref, g, cfg, force=force,
                                             allow_pickle=allow_pickle, root=data_dir,
                                             progress=progress, same_as=same_as)
            else:
                run, path = label_ref(model_ref, g, cfg, out=out, root=data_dir,
                                      allow_pickle=allow_pickle, progress=progress)
                summary = {"status": "labelled", **run.summary(path)}
    except _known_errors() as exc:
        _fail(str(exc))
    if as_json:
        _emit(summary)
        return
    if summary["status"] == "skipped":
        console.print(f"{model_ref} is already labelled on graph {summary['graph_version']}: "
                      f"{summary['name']} version {summary['version']} (use --force to relabel)")
        return
    t = Table(title=f"label of {summary['model']}", show_header=False)
    for k in ("revision", "graph_version", "nodes", "images", "mean_acc1", "mean_acc5",
              "images_per_s", "bytes_per_image", "name", "version"):
        if k in summary:
            t.add_row(k.replace("_", " "), str(summary[k]))
    console.print(t)
    console.print(f"written to {summary['path']}")


def _label_paths(source: str, graph_version: str, data_dir: Path | None) -> dict[str, Path]:
    from mll_registry.labelstore import LocalLabelStore

    if source == "local":
        return LocalLabelStore(data_dir).labels_for(graph_version)
    if source != "registry":
        raise ValueError(f"--labels must be 'registry' or 'local', got {source!r}")
    from mll_registry.registry import MlflowLabelStore, Registry

    return MlflowLabelStore(Registry(root=data_dir)).labels_for(graph_version)


def _selection(task_file: Path, graph: Path | None, k: int, alpha: float, metric: str,
               top_n: int, embedding_model: str, caption_url: str | None,
               data_dir: Path | None, labels_from: str = "registry") -> tuple[Any, Any, Any]:
    """Task + graph + labels -> SelectionResult (shared by select and reuse)."""
    from mll_registry.labelstore import load_labels
    from mll_registry.matching import Embedder, OpenAICompatibleCaptions, WordNetCaptions
    from mll_registry.selection import select
    from mll_registry.task import Task

    task = Task.from_yaml(task_file)
    g = _graph_or_demo(graph, data_dir)
    labels = load_labels(_label_paths(labels_from, g.version, data_dir), g.version)
    provider = OpenAICompatibleCaptions(caption_url) if caption_url else WordNetCaptions()
    res = select(task, g, labels, k=k, alpha=alpha, metric=metric, top_n=top_n,
                 embedder=Embedder(embedding_model), provider=provider, root=data_dir)
    for cls in res.weak:
        console.print(f"[yellow]warning:[/] class {cls!r} matches no graph concept well "
                      "(best similarity below the threshold); its model choice is a weak guess",
                      soft_wrap=True)
    return task, g, res


TaskOpt = Annotated[Path, typer.Option("--task", "-t", help="Task YAML file.")]
KOpt = Annotated[int, typer.Option("-k", help="Models per class.")]
AlphaOpt = Annotated[float, typer.Option(help="Reuse-metric weight of the class's own score.")]
MetricOpt = Annotated[str, typer.Option(help="f1 or precision.")]
TopNOpt = Annotated[int, typer.Option(help="Graph nodes matched per class.")]
EmbOpt = Annotated[str, typer.Option(help="sentence-transformers model for matching.")]
CapOpt = Annotated[str | None, typer.Option(
    help="OpenAI-compatible endpoint for class descriptions (default: WordNet, no LLM).")]
LabelsOpt = Annotated[str, typer.Option(
    "--labels", help="Where labels come from: registry (MLflow) or local (data dir).")]
LogOpt = Annotated[bool, typer.Option("--log/--no-log", help="Log the run to MLflow.")]


@app.command("select")
def select_cmd(
    task: TaskOpt,
    graph: Annotated[Path | None, typer.Option(help="Graph bundle (default: demo).")] = None,
    k: KOpt = 1,
    alpha: AlphaOpt = 0.7,
    metric: MetricOpt = "f1",
    top_n: TopNOpt = 5,
    embedding_model: EmbOpt = "all-MiniLM-L6-v2",
    caption_url: CapOpt = None,
    labels: LabelsOpt = "registry",
    log: LogOpt = True,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Select the best models per class of a task from their labels (no model is run)."""
    try:
        t, g, res = _selection(task, graph, k, alpha, metric, top_n, embedding_model,
                               caption_url, data_dir, labels)
        run_id = _log_selection(t, res, None, g.version, data_dir) if log else None
    except _known_errors(with_value_errors=True) as exc:
        _fail(str(exc))
    if as_json:
        _emit({**res.to_dict(), "mlflow_run_id": run_id})
    else:
        Console().print(res.table())
        console.print(f"{len(res.models)} labelled models considered; ensemble uses "
                      f"{len(res.selected_models())}: {', '.join(res.selected_models())}")
        if run_id:
            console.print(f"logged to MLflow run {run_id} (experiment mll-selection)")


def _log_selection(task: Any, sel: Any, reuse: Any, graph_version: str,
                   data_dir: Path | None) -> str:
    from mll_registry.registry import Registry

    return Registry(root=data_dir).log_selection(task, sel, reuse, graph_version)


@app.command("reuse")
def reuse_cmd(
    task: TaskOpt,
    data: Annotated[Path | None, typer.Option(
        help="Image folder, one sub-folder per class (default: the task's `data`).")] = None,
    graph: Annotated[Path | None, typer.Option(help="Graph bundle (default: demo).")] = None,
    k: KOpt = 1,
    alpha: AlphaOpt = 0.7,
    metric: MetricOpt = "f1",
    top_n: TopNOpt = 5,
    weighting: Annotated[str, typer.Option(
        help="inverse_entropy (default), entropy (ablation) or uniform.")] = "inverse_entropy",
    prompt: Annotated[list[str] | None, typer.Option(help="Class prompt template(s).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    embedding_model: EmbOpt = "all-MiniLM-L6-v2",
    caption_url: CapOpt = None,
    labels: LabelsOpt = "registry",
    log: LogOpt = True,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Select per class, run the entropy-weighted ensemble on labelled images, measure it."""
    from mll_registry.reuse import DEFAULT_PROMPTS, evaluate

    try:
        t, g, res = _selection(task, graph, k, alpha, metric, top_n, embedding_model,
                               caption_url, data_dir, labels)
        out = evaluate(res, t, data, weighting=weighting,
                       prompts=tuple(prompt) if prompt else DEFAULT_PROMPTS, device=device)
        run_id = _log_selection(t, res, out, g.version, data_dir) if log else None
    except _known_errors(with_value_errors=True) as exc:
        _fail(str(exc))
    d = {**out.to_dict(), "selection": res.to_dict(), "mlflow_run_id": run_id}
    if as_json:
        _emit(d)
        return
    tab = Table(title=f"reuse on {t.name}: {out.n_images} images")
    tab.add_column("predictor")
    tab.add_column("top-1", justify="right")
    tab.add_column("top-5", justify="right")
    tab.add_row("MLL ensemble", f"{out.ensemble['top1']:.3f}", f"{out.ensemble['top5']:.3f}")
    for m, acc in out.per_model.items():
        tab.add_row(f"  {m.rstrip('/').rsplit('/', 1)[-1]} alone", f"{acc['top1']:.3f}",
                    f"{acc['top5']:.3f}")
    Console().print(tab)


@app.command()
def bench(
    tasks: Annotated[list[Path] | None, typer.Option(
        "--tasks", help="Task YAML files (default: the demo tasks).")] = None,
    graph: Annotated[Path | None, typer.Option(help="Graph bundle (default: demo).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the bar + growth plot here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the Markdown table here.")] = None,
    alpha: AlphaOpt = 0.7,
    metric: MetricOpt = "f1",
    top_n: TopNOpt = 5,
    growth_orders: Annotated[int, typer.Option(help="Random hub orders for the growth curve.")] = 10,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Benchmark MLL against INB, ModelGPT and the oracles on task files."""
    from mll_registry.bench import BenchConfig, log_to_mlflow, run_bench
    from mll_registry.bench import plot as draw
    from mll_registry.hub import load
    from mll_registry.labelstore import LocalLabelStore, load_labels
    from mll_registry.task import Task

    def say(msg: str) -> None:
        if not as_json:
            console.print(msg, highlight=False)

    try:
        g = _graph_or_demo(graph, data_dir)
        if tasks:
            task_list = [Task.from_yaml(t) for t in tasks]
        else:
            from mll_registry.demo.tasks import ensure_demo_tasks

            task_list = [Task.from_yaml(p) for p in ensure_demo_tasks(data_dir)]
        if graph is None:
            from mll_registry.demo.hub import ensure_demo_labels

            paths = ensure_demo_labels(g, data_dir, device=device, log=say)
        else:
            paths = LocalLabelStore(data_dir).labels_for(g.version)
        labels = load_labels(paths, g.version)
        if not labels:
            _fail(f"no labelled models for graph {g.version}: label some with `mll label`")
        cfg = BenchConfig(alpha=alpha, metric=metric, top_n=top_n, growth_orders=growth_orders)
        res = run_bench(task_list, g, labels, lambda r: load(r, device=device), cfg, log=say)
    except _known_errors(with_value_errors=True) as exc:
        _fail(str(exc))
    md = res.markdown()
    if markdown:
        from mll_registry.fsutil import write_text

        write_text(markdown, md)
    plot_path = draw(res, plot) if plot else None
    run_id = log_to_mlflow(res, md, plot_path)
    out = res.to_dict()
    out["mlflow_run_id"] = run_id
    if as_json:
        _emit(out)
        return
    Console().print(md)
    if plot_path:
        console.print(f"plot written to {plot_path}")


def _latest_registered_label(model_ref: str) -> Path | None:
    """The label directory of the newest registered version of ``model_ref`` (any graph)."""
    from mll_registry.registry import Registry

    reg = Registry()
    v = reg.latest_for(model_ref)
    return reg.download_label(v) if v is not None else None


def _mount_cards() -> None:
    from mll_registry import cli_card

    cli_card.LATEST_LABEL = _latest_registered_label
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
    graph: Annotated[Path | None, typer.Option(help="Graph bundle (default: demo).")] = None,
    refresh: Annotated[bool, typer.Option(help="Check the registry for new versions now.")] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Models ranked by their measured accuracy on a concept (from the label index)."""
    from mll_registry.registry import LabelIndex, Registry, resolve_concept

    try:
        g = _graph_or_demo(graph, data_dir)
        node, others = resolve_concept(concept, g.node_ids)
        idx = LabelIndex(Registry(root=data_dir), g.version).refresh(force_check=refresh)
        hits = idx.best(node, n)
    except KeyError as exc:
        _fail(str(exc.args[0]) if exc.args else str(exc))
    except _known_errors() as exc:
        _fail(str(exc))
    if not hits:
        _fail(f"no labelled models for graph {g.version}: label some with `mll label MODEL_REF`")
    out = {"concept": node, "query": concept, "ambiguous": others,
           "graph_version": g.version, "models": [h.to_dict() for h in hits]}
    if as_json:
        _emit(out)
        return
    if others:
        console.print(f"[yellow]{concept!r} is ambiguous in this graph[/]: using {node}; "
                      f"also {', '.join(others)} (pass a synset id to choose)", soft_wrap=True)
    t = Table(title=f"best models for {node}")
    for col in ("model", "version", "acc@1", "acc@5", "mean own score", "images"):
        t.add_column(col)
    for h in hits:
        t.add_row(h.name, str(h.version), f"{h.acc1:.3f}", f"{h.acc5:.3f}", f"{h.mean_own:.3f}",
                  str(h.n_images))
    Console().print(t)


@query_app.command("label")
def query_label(
    model_ref: Annotated[str, typer.Argument(help="MODEL_REF or a registered model name.")],
    graph: Annotated[Path | None, typer.Option(help="Graph bundle (default: demo).")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A model's registered label: version, summary, strongest and weakest concepts."""
    from mll_registry.registry import Registry

    try:
        g = _graph_or_demo(graph, data_dir)
        reg = Registry(root=data_dir)
        found = reg.latest_for(model_ref, g.version)
        if found is None:
            _fail(f"{model_ref} has no registered label for graph {g.version}; "
                  f"run `mll label {model_ref}`")
        assert found is not None
        v = found
        s = reg.download_summary(v).sort_values(["acc1", "mean_own"], ascending=False)
    except _known_errors(with_value_errors=True) as exc:
        _fail(str(exc))
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
    """Move models registered under legacy names (before 0.2) to one name per model source."""
    from mll_registry.registry import Registry

    try:
        moved = Registry(root=data_dir).migrate_names()
    except _known_errors() as exc:
        _fail(str(exc))
    if as_json:
        _emit(moved)
        return
    for m in moved:
        console.print(f"{m['from']} -> {m['to']} ({m['versions']} version(s))")
    console.print(f"{len(moved)} registered model(s) moved")


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
