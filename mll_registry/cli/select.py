"""``mll select``, ``mll reuse`` and ``mll bench``: choose models per class of a task from their
labels, run the chosen ensemble, and benchmark the choice against the baselines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    heartbeat,
    open_app,
)
from mll_registry.selection.ensemble import FROM_TASK
from mll_registry.settings import DEFAULTS
from mll_registry.terminal import SafeConsole, safe

if TYPE_CHECKING:
    from mll_registry.app.root import App

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
ReuseModeOpt = Annotated[str | None, typer.Option(
    "--reuse-mode", help="How the selected models vote: per_class (each class by its own "
    "models, the paper), pooled (every class by all selected models) or soft (pooled, weighted "
    f"by the reuse metric) [default: {DEFAULTS.reuse_mode}].")]
FallbackOpt = Annotated[str | None, typer.Option(
    "--fallback", help="margin: a class keeps its own best model only where it is ahead of the "
    "task-level model by more than --fallback-z standard errors; off: never falls back "
    f"[default: {DEFAULTS.fallback}].")]
FallbackZOpt = Annotated[float | None, typer.Option(
    "--fallback-z", help=f"The margin rule's threshold [default: {DEFAULTS.fallback_z}].")]
CalibrationOpt = Annotated[str | None, typer.Option(
    "--calibration", help="The logit scale each model's probabilities are taken at: graph (the "
    "one its label fitted on the graph's images) or none (the model's own) "
    f"[default: {DEFAULTS.calibration}].")]
SourceWeightingOpt = Annotated[str | None, typer.Option(
    "--source-weighting", help="Weigh the graph's sample sources by the similarity of their "
    "descriptions to the task's domain (domain) or all alike, as the paper (uniform) "
    f"[default: {DEFAULTS.source_weighting}].")]


def _selection_app(data_dir: Path | None, k: int | None, alpha: float | None,
                   metric: str | None, top_n: int | None, embedding_model: str | None,
                   caption_url: str | None, labels: str | None, **more: Any) -> App:
    """The assembly layer with the selection flags (None = not given) over the settings."""
    return open_app(data_dir, k=k, alpha=alpha, metric=metric, top_n=top_n,
                    embedder=embedding_model, caption_url=caption_url,
                    caption_provider="openai" if caption_url else None, label_store=labels,
                    **more)


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
    reuse_mode: ReuseModeOpt = None,
    fallback: FallbackOpt = None,
    fallback_z: FallbackZOpt = None,
    calibration: CalibrationOpt = None,
    register: Annotated[str | None, typer.Option(
        "--register", metavar="NAME",
        help="Register the selection as a new version of this MLflow model: an ensemble "
        f"`mll serve` serves and `mll predict` runs. {FROM_TASK}: the name "
        "<task>-mll-ensemble.")] = None,
    bundle: Annotated[bool, typer.Option(
        "--bundle", help="With --register: copy the members' weights into the model, so that "
        "serving needs no Hub.")] = False,
    log: LogOpt = True,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Select the best models per class of a task from their labels (no model is run)."""
    a = _selection_app(data_dir, k, alpha, metric, top_n, embedding_model, caption_url, labels,
                       unmatched=unmatched, source_weighting=source_weighting,
                       reuse_mode=reuse_mode, fallback=fallback, fallback_z=fallback_z,
                       calibration=calibration)
    with boundary(ValueError):
        sel = a.selection.select(task, graph or DEMO_GRAPH, log=log or bool(register))
        registered = a.selection.register(sel, register, bundle=bundle) if register else None
    _warn_unmatched(sel.result)
    if as_json:
        emit({**sel.to_dict(), **({"registered": registered} if registered else {})})
        return
    res = sel.result
    SafeConsole().print(res.table())
    console.print(f"{len(res.models)} labelled models considered; ensemble uses "
                  f"{len(res.selected_models())}: {', '.join(res.selected_models())}")
    if res.margins is not None:
        z = res.params.get("fallback_z")
        console.print(f"{int(res.margins.fell_back.sum())} of {len(res.classes)} classes fell "
                      "back to the task-level model "
                      f"({res.models[int(res.margins.task_order[0])]}): "
                      + (f"their own best was not ahead by more than {z} standard errors"
                         if z is not None else "fall-back off"), soft_wrap=True)
    _print_source_weights(res.params.get("source_weights"))
    uncal = res.params.get("uncalibrated_labels")
    if isinstance(uncal, list) and uncal:
        console.print("[yellow]warning:[/] calibration off for this selection: "
                      f"{len(uncal)} labels carry no calibrated "
                      "scale; relabel them (`mll label --force`)", markup=True, soft_wrap=True)
    if sel.run_id:
        console.print(f"logged to MLflow run {sel.run_id} (experiment mll-selection)")
    if registered:
        console.print(f"registered the ensemble as {registered['uri']}: `mll predict --model "
                      f"{registered['uri']} IMAGE...`, or `mll serve --model "
                      f"{registered['uri']}`", soft_wrap=True)


def predict_cmd(
    images: Annotated[list[Path], typer.Argument(help="Image files to classify.",
                                                 show_default=False)],
    model: Annotated[str, typer.Option(
        "--model", help="The ensemble: models:/NAME/VERSION, models:/NAME@ALIAS, runs:/... or a "
        "model folder.")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Classify images with a registered MLL ensemble (`mll select --register NAME`)."""
    a = open_app(data_dir)
    with boundary(ValueError):
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise ValueError(f"no such image file: {missing[0]}")
        out = a.selection.predict(model, [str(p) for p in images])
        from mll_registry.selection.ensemble import EnsembleInputError, prob_column

        if "class" not in out or any(prob_column(c) not in out for c in out["class"]):
            raise EnsembleInputError(f"{model} answered without a class and its p: column: "
                                     "not an MLL ensemble's output")
        rows = [{"image": str(p), "class": c,
                 "probability": round(float(out.iloc[i][prob_column(c)]), 4)}
                for i, (p, c) in enumerate(zip(images, out["class"], strict=True))]
    if as_json:
        emit({"model": model, "predictions": rows})
        return
    tab = Table(title=f"predictions of {model}")
    for col in ("image", "class", "probability"):
        tab.add_column(col)
    for r in rows:
        tab.add_row(str(r["image"]), str(r["class"]), f"{r['probability']:.3f}")
    SafeConsole().print(tab)


def serve_cmd(
    model: Annotated[str, typer.Option(
        "--model", help="The ensemble: models:/NAME/VERSION, models:/NAME@ALIAS, runs:/... or a "
        "model folder.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve a registered MLL ensemble over HTTP (MLflow's /invocations API), after checking
    that the version is one of this tool's own ensembles (no code, no pickle, a valid spec).
    Requests send images as base64 strings; each request is bounded by the serve_max_* settings."""
    a = open_app(data_dir)

    def ready(what: str) -> None:
        console.print(f"serving {model} ({what}) on http://{host}:{port}/invocations; checked: "
                      "the tool's own loader, no code, no pickle", soft_wrap=True)

    with boundary(ValueError):
        a.selection.serve(model, host, port, ready)


def promote_cmd(
    model: Annotated[str, typer.Option("--model", help="Registered ensemble name.")],
    version: Annotated[str, typer.Option("--version", help="The challenger's version.")],
    task: Annotated[Path | None, typer.Option(
        "--task", help="Task YAML whose labelled images decide (its `data`, or --data).")] = None,
    data: Annotated[Path | None, typer.Option(
        help="Image folder, one sub-folder per class (default: the task's `data`).")] = None,
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    margin: Annotated[float, typer.Option(
        help="Top-1 the challenger must gain over the champion to take the alias.")] = 0.0,
    force: Annotated[bool, typer.Option(
        "--force", help="Without task data: move the alias anyway.")] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Champion and challenger: move the alias to a new ensemble version only when it wins."""
    a = open_app(data_dir)
    with boundary(ValueError):
        out = a.selection.promote(model, version, task, data, alias=alias, margin=margin,
                                  force=force)
    if as_json:
        emit(out)
        return
    top = out.get("top1") or {}
    figures = ", ".join(f"v{v} {t:.3f}" for v, t in top.items())
    console.print(f"{model}@{alias}: {out['decision']}"
                  + (f" ({figures})" if figures else "")
                  + (f"; now v{version}" if out["moved"] else
                     f"; stays v{out['champion']}" if out["champion"] else ""), soft_wrap=True)


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
    reuse_mode: ReuseModeOpt = None,
    fallback: FallbackOpt = None,
    fallback_z: FallbackZOpt = None,
    calibration: CalibrationOpt = None,
    log: LogOpt = True,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Select per class, run the entropy-weighted ensemble on labelled images, measure it."""
    a = _selection_app(data_dir, k, alpha, metric, top_n, embedding_model, caption_url, labels,
                       weighting=weighting, prompts=prompt or None, device=device,
                       unmatched=unmatched, source_weighting=source_weighting,
                       reuse_mode=reuse_mode, fallback=fallback, fallback_z=fallback_z,
                       calibration=calibration)
    with boundary(ValueError), heartbeat("mll reuse"):
        r = a.selection.reuse(task, data, graph or DEMO_GRAPH, log=log)
    _warn_unmatched(r.selection.result)
    if as_json:
        emit(r.to_dict())
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
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="The demo tasks' fresh render set (new views of their art, never used "
        "for any decision) instead of their images.")] = False,
    reuse_mode: ReuseModeOpt = None,
    fallback: FallbackOpt = None,
    fallback_z: FallbackZOpt = None,
    calibration: CalibrationOpt = None,
    device: DeviceOpt = None,
    log: LogOpt = True,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Benchmark MLL against INB, ModelGPT and the oracles on task files."""
    a = open_app(data_dir, alpha=alpha, metric=metric, top_n=top_n, device=device,
                 reuse_mode=reuse_mode, fallback=fallback, fallback_z=fallback_z,
                 calibration=calibration)

    def say(msg: str) -> None:
        if not as_json:
            console.print(msg, highlight=False)

    with boundary(ValueError):
        out = a.demo.bench([*(tasks or []), *(more or [])], graph or DEMO_GRAPH,
                           growth_orders=growth_orders, plot=plot, markdown=markdown, log=log,
                           say=say, fresh=fresh).to_dict()
    md = out.pop("markdown")
    plot_path = out.pop("plot")
    if as_json:
        emit(out)
        return
    SafeConsole().print(md)
    if plot_path:
        console.print(f"plot written to {plot_path}")
