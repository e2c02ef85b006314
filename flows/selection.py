"""The selection flow: what a user triggers from the Prefect UI.

Fill in the task (name, classes, domain, task type), k and alpha, and optionally a folder of
labelled images: the flow selects models per class from the registry's labels, evaluates the
ensemble if data was given, logs an MLflow run, and leaves Prefect artifacts (the selection table
and a link to the MLflow run).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import TaskRunContext
from pydantic import Field

from flows._settings import app, clean_env
from mll_registry.redaction import redact
from mll_registry.settings import DEFAULTS


@task
def run_selection(task_name: str, classes: list[str], domain: str, task_type: str, k: int,
                  alpha: float, metric: str, top_n: int, graph: str,
                  unmatched: str, source_weighting: str = DEFAULTS.source_weighting,
                  reuse_mode: str = DEFAULTS.reuse_mode, fallback: str = DEFAULTS.fallback,
                  fallback_z: float = DEFAULTS.fallback_z,
                  calibration: str = DEFAULTS.calibration) -> Any:
    from mll_registry.task import Task, TaskClass

    t = Task(task_name, [TaskClass(c) for c in classes], domain=domain or "photo",
             task=task_type, domain_given=bool(domain))
    return app(k=k, alpha=alpha, metric=metric, top_n=top_n, unmatched=unmatched,
               source_weighting=source_weighting, reuse_mode=reuse_mode, fallback=fallback,
               fallback_z=fallback_z, calibration=calibration).selection.select(t, graph)


def _stable_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    """Content key: task, selection (rounded), data, device; measured accuracy when logging.

    Recomputed embeddings can differ in the last float bits between processes; the rounded
    selection does not, so an identical selection on identical data hits the cache.
    """
    import hashlib
    import json

    from mll_registry.registry.tracking import tracking_uri

    sel = params["sel"]
    parts = {"fn": ctx.task.name, "task": sel.task.to_dict(),
             "selection": sel.result.to_dict(), "graph_version": sel.graph.version,
             "mlflow": tracking_uri()}
    for k in ("data_path", "device", "graph_version"):
        if k in params:
            parts[k] = params[k]
    reuse = params.get("reuse")
    if reuse is not None:
        parts["reuse"] = {"top1": round(reuse.ensemble["top1"], 6), "n": reuse.n_images}
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"{ctx.task.name}-{hashlib.sha256(blob).hexdigest()[:32]}"


# the same selection on the same data gives the same measurement: cached across flow runs
# persisted results are JSON: a pickled result file would run code when read back
@task(cache_key_fn=_stable_key, persist_result=True, result_serializer="json",
      cache_expiration=timedelta(days=7))
def evaluate_ensemble(sel: Any, data_path: str, device: str) -> dict[str, Any]:
    from mll_registry.selection.reuse import evaluate

    s = app(device=device).settings
    return evaluate(sel.result, sel.task, data_path, weighting=s.weighting, prompts=s.prompts,
                    device=s.device).to_json()


@task(cache_key_fn=_stable_key, persist_result=True, result_serializer="json",
      cache_expiration=timedelta(days=7))
def log_run(sel: Any, reuse: Any) -> dict[str, str]:
    a = app()
    rid = a.selection.log(sel, reuse)
    reg = a.registry
    exp = reg.experiment("mll-selection")
    uri = redact(reg.uri)  # the link is shown in the UI: no credentials in it
    link = (f"{uri.rstrip('/')}/#/experiments/{exp}/runs/{rid}"
            if uri.startswith("http") else
            f"run `{rid}` in experiment mll-selection (see it with `mlflow ui --backend-store-uri "
            f"{uri}`)")
    return {"run_id": rid, "link": link}


def source_weights_markdown(sw: dict[str, Any]) -> str:
    """The sample-source weights a selection used, as a Markdown table (or why uniform)."""
    if not sw:
        return ""
    head = (f"Sample sources weighted **{sw.get('mode')}** for domain "
            f"*{sw.get('domain') or '(none given)'}*"
            + (f" (uniform: {sw['reason']})" if sw.get("reason") else
               f", temperature {sw.get('temperature')}") + ":\n\n")
    rows = "".join(f"| {src} | {w:.3f} | {sw.get('similarity', {}).get(src, float('nan')):.3f} |\n"
                   for src, w in sorted(sw.get("weights", {}).items(), key=lambda kv: -kv[1]))
    return head + "| source | weight | similarity to the domain |\n|---|---:|---:|\n" + rows + "\n"


@flow(name="select-models", log_prints=True, flow_run_name="select {task_name}")
def select_models(
    task_name: Annotated[str, Field(description="Name of the task (run names, MLflow)")],
    classes: Annotated[list[str], Field(
        min_length=1, description="Class names, as you would write them")],
    domain: Annotated[str, Field(
        description='The images\' domain: words for "the {domain} of {class}", e.g. "pet '
                    'photograph"; compared with the graph\'s source descriptions to weigh '
                    'them (empty: none given, sources weigh alike)')] = "photo",
    task_type: Annotated[str, Field(description="e.g. image classification")] =
        "image classification",
    k: Annotated[int, Field(ge=1, le=20, description="Models per class")] = DEFAULTS.k,
    alpha: Annotated[float, Field(
        ge=0.0, le=1.0, description="Weight of the class's own score in the reuse metric")] =
        DEFAULTS.alpha,
    data_path: Annotated[str | None, Field(
        description="Optional image folder, one sub-folder per class, to measure the "
                    "ensemble")] = None,
    metric: Annotated[Literal["f1", "precision"], Field(
        description="Per-class score of a model")] = DEFAULTS.metric,
    top_n: Annotated[int, Field(ge=1, le=50, description="Graph concepts matched per class")] =
        DEFAULTS.top_n,
    unmatched: Annotated[Literal["fallback", "drop", "fail"], Field(
        description="Classes with no good match in the graph: best general models, leave "
                    "them out, or fail")] = DEFAULTS.unmatched,
    graph: Annotated[str, Field(
        description="Graph: a published graph version, `default` (the registry's default graph) "
                    "or a bundle directory the worker can read (/PATH or ./PATH)")] = "default",
    device: Annotated[str, Field(description="auto, cpu or cuda[:N]")] = DEFAULTS.device,
    source_weighting: Annotated[Literal["domain", "uniform"], Field(
        description="How the graph's sample sources count: by the similarity of their "
                    "descriptions to the domain, or all alike (the paper)")] =
        DEFAULTS.source_weighting,
    reuse_mode: Annotated[Literal["per_class", "pooled", "soft"], Field(
        description="How the selected models vote: each class by its own models (the paper), "
                    "every class by all of them, or all weighted by their reuse metric")] =
        DEFAULTS.reuse_mode,
    fallback: Annotated[Literal["margin", "off"], Field(
        description="margin: a class keeps its own best model only where it is clearly ahead "
                    "of the task-level model; off: never falls back")] = DEFAULTS.fallback,
    fallback_z: Annotated[float, Field(
        ge=0.0, description="How clearly: standard errors of the class-score margin")] =
        DEFAULTS.fallback_z,
    calibration: Annotated[Literal["graph", "none"], Field(
        description="graph: each model's probabilities at the logit scale its label fitted on "
                    "the graph's images (like with like); none: the model's own")] =
        DEFAULTS.calibration,  # type: ignore[assignment]
    register: Annotated[str, Field(
        description="Register the selection as a new version of this MLflow model (an "
                    "ensemble that `mll serve` serves); @task: the name "
                    "<task>-mll-ensemble; empty: do not register")] = "",
) -> dict[str, Any]:
    """Select models per class for a task; evaluate the ensemble when data is given; register
    it as a deployable ensemble when ``register`` names a model."""
    from mll_registry.selection.reuse import ReuseResult

    clean_env()
    selection = run_selection(task_name, classes, domain, task_type, k, alpha, metric, top_n,
                              graph, unmatched, source_weighting, reuse_mode, fallback,
                              fallback_z, calibration)
    reuse = (ReuseResult.from_json(evaluate_ensemble(selection, data_path, device))
             if data_path else None)
    logged = log_run(selection, reuse)
    registered = (register_ensemble(selection, logged["run_id"], register) if register
                  else None)
    sel = selection.result  # type: ignore[attr-defined]  # a sync task returns its value
    rows = [{"class": c["class"], "models": ", ".join(m["model"].rsplit("/", 1)[-1]
                                                      for m in c["models"]),
             "reuse score": c["models"][0]["reuse"], "top node": c["nodes"][0]["node"],
             "similarity": c["nodes"][0]["similarity"],
             "good match in the graph": "no: best general models" if c["fallback"] else
             "no" if c["weak_match"] else "yes",
             "own best model": str(c.get("own_model", "")).rsplit("/", 1)[-1],
             "margin (se)": (f"{c['margin']:+.3f} ({c['margin_se']:.3f})"
                             if c.get("own_model") != c.get("task_model") else "-"),
             "fell back to the task's model": "yes" if c.get("fell_back") else "no"}
            for c in sel.per_class()]
    key = re.sub(r"[^a-z0-9-]", "-", f"selection-{task_name}".lower())[:60]
    create_table_artifact(rows, key=key, description=(
        f"MLL selection for {task_name} (k={k}, reuse {sel.params.get('reuse_mode')}, "
        f"calibration {sel.params.get('calibration')}, fall back below "
        f"z={sel.params.get('fallback_z')}: {sel.params.get('fell_back')} classes)"))
    summary = f"### MLL selection for `{task_name}`\n\nMLflow: {logged['link']}\n\n"
    summary += source_weights_markdown(sel.params.get("source_weights") or {})
    if reuse is not None:
        summary += (f"Ensemble top-1 **{reuse.ensemble['top1']:.3f}**, top-5 "
                    f"{reuse.ensemble['top5']:.3f} on {reuse.n_images} images; alone: " +
                    ", ".join(f"{m.rsplit('/', 1)[-1]} {a['top1']:.3f}"
                              for m, a in reuse.per_model.items()))
    if registered:
        summary += (f"\n\nRegistered as `{registered['uri']}`: serve it with `mlflow models "
                    f"serve -m {registered['uri']} --env-manager local`.")
    create_markdown_artifact(summary, key=f"{key}-run")
    get_run_logger().info("selection logged: %s", logged["link"])
    return {"mlflow_run_id": logged["run_id"], "selection": sel.to_dict(),
            "reuse": reuse.to_dict() if reuse is not None else None,
            "registered": registered}


@task
def register_ensemble(selection: Any, run_id: str, name: str) -> dict[str, str]:
    """The selection registered as a new version of ensemble ``name`` with its run."""
    selection.run_id = run_id
    return app().selection.register(selection, name)


@flow(name="promote-ensemble", log_prints=True,
      flow_run_name="promote {name} v{version}")
def promote_ensemble(
    name: Annotated[str, Field(description="Registered ensemble (mll select --register NAME)")],
    version: Annotated[str, Field(description="The challenger's version")],
    task_name: Annotated[str, Field(description="Task whose labelled images decide")] = "",
    classes: Annotated[list[str], Field(description="Its class names, as in the task")] = [],  # noqa: B006
    data_path: Annotated[str, Field(
        description="Image folder on the worker, one sub-folder per class; empty: no "
                    "measurement (the alias moves only for the first version, or with force)")]
        = "",
    alias: Annotated[str, Field(description="The alias to move")] = "champion",
    margin: Annotated[float, Field(
        ge=0.0, description="Top-1 the challenger must gain over the champion")] = 0.0,
    force: Annotated[bool, Field(description="Without data: move the alias anyway")] = False,
) -> dict[str, Any]:
    """Champion and challenger: measure a new ensemble version against the one holding the
    alias on the task's images and move the alias only when it wins (App.selection.promote)."""
    from mll_registry.task import Task, TaskClass

    clean_env()
    task = (Task(task_name or name, [TaskClass(c) for c in classes]) if data_path and classes
            else None)
    out = app().selection.promote(name, version, task, data_path or None, alias=alias,
                                  margin=margin, force=force)
    get_run_logger().info("%s@%s: %s (%s)", name, alias, out["decision"], out.get("top1"))
    return out
