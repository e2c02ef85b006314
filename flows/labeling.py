"""Labelling flows: discover new open_clip models, label each once, register it, push its card.

``label-new-models`` runs on a schedule: page after page, it lists the models published since the
watermark (kept in the tracking server), skips those already labelled for this graph, fans out one
``label-models`` run per group of ``models_per_run`` models (labelled in shared passes: each graph
image decoded once per pass) through ``run_deployment`` (to the GPU work pool) when it runs as a
deployment (in-process subflows when run locally), and records the page: the watermark moves on and
the failures are kept for the next runs. Only refs and versions travel between tasks, never tensors
or paths: a worker gets the graph by version from the registry.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.runtime import deployment
from pydantic import Field

from flows._settings import app, clean_env, progress_logger
from mll_registry.registry.graph_store import is_graph_version
from mll_registry.settings import DEFAULTS

GraphParam = Annotated[str, Field(
    description="Graph: a published graph version, `default` (the registry's default graph) or a "
                "bundle directory the worker can read (/PATH or ./PATH)")]
DeviceParam = Annotated[str, Field(description="auto, cpu or cuda[:N]")]
ForceParam = Annotated[bool, Field(description="Relabel even if registered")]
PushCardParam = Annotated[bool, Field(description="Open card PRs on the Hub")]
PixelCacheParam = Annotated[float | None, Field(
    ge=0.0, description="Raw-pixel cache budget in GB (empty: the worker's setting)")]


# Retries: one layer per remote service, in the library (mll_registry.retries: the Hub and
# MLflow calls retry transient failures with backoff); tasks here do not retry on top of it.
@task
def graph_version(graph: str) -> str:
    """The graph version every page and worker of this run uses (fetched and cached here)."""
    return app().graphs.get(graph).version


@task
def discovery_state(source: str, local_root: str | None, version: str) -> dict[str, Any]:
    """Where discovery of the source for the graph version stands (in the tracking server,
    shared by every worker)."""
    return app().discovery.state(source, local_root, version).to_dict()


@task
def discover(source: str, local_root: str | None, page_size: int, state: dict[str, Any],
             retry_failed: bool) -> list[dict[str, Any]]:
    """The next page of new models after the watermark (and the failed ones to retry)."""
    return app().discovery.page(source, local_root, page_size, state, retry_failed=retry_failed)


@task
def unlabelled(models: list[dict[str, Any]], graph: str) -> list[dict[str, Any]]:
    """Drop the models whose label key (revision, graph, settings) is already registered."""
    return app().discovery.unlabelled(models, graph)


@task
def discover_updates(source: str, local_root: str | None, page_size: int,
                     state: dict[str, Any]) -> dict[str, Any]:
    """Models labelled before that changed since the last run (the Hub's lastModified)."""
    return app().discovery.updates(source, local_root, state, page_size)


@task
def record_updates(source: str, local_root: str | None, state: dict[str, Any],
                   updates: list[dict[str, Any]], errors: dict[str, str], labelled: int,
                   newest: str | None) -> dict[str, Any]:
    """Move the modification watermark past the listing (the first run starts following)."""
    return app().discovery.record_updates(source, local_root, state, updates, errors,
                                          labelled, newest).to_dict()


@task
def record_page(state: dict[str, Any], page: list[dict[str, Any]], errors: dict[str, str],
                labelled: int) -> dict[str, Any]:
    """Move the watermark past the page and keep its failures for the next runs."""
    return app().discovery.record(state, page, errors, labelled).to_dict()


@task
def label_and_register_task(model_ref: str, graph: str, device: str, force: bool,
                            pixel_cache_gb: float | None = None) -> dict[str, Any]:
    """Download, label and register one model (idempotent: a rerun is safe)."""
    import os

    a = app(device=device, pixel_cache_gb=pixel_cache_gb)
    out = a.labelling.label(model_ref, graph, force=force,
                            progress=progress_logger(model_ref)).to_dict()
    out["worker"] = os.environ.get("MLL_WORKER_NAME", "")
    if out.get("run_id") and out["worker"]:
        a.registry.client.set_tag(out["run_id"], "mll.worker", out["worker"])
    return out


@task
def push_card_task(model_ref: str, label_path: str, create_pr: bool) -> dict[str, Any]:
    """Push the label section and table to the model's Hub card (a pull request by default)."""
    from mll_registry.hub.cards import push_card
    from mll_registry.labels.format import ModelLabel
    from mll_registry.models.refs import ModelRef

    ref = ModelRef.parse(model_ref)
    return push_card(ref.name, ModelLabel.load(label_path), create_pr=create_pr)


@task
def label_and_register_many_task(model_refs: list[str], graph: str, device: str, force: bool,
                                 pixel_cache_gb: float | None = None) -> dict[str, Any]:
    """Label and register several models in shared passes (each graph image decoded once per
    pass); a model that fails fails alone: ``failed`` maps its ref to its error."""
    import os

    a = app(device=device, pixel_cache_gb=pixel_cache_gb)
    outcomes, failed = a.labelling.label_many(model_refs, graph, force=force,
                                              progress=progress_logger(
                                                  f"{len(model_refs)} models"))
    worker = os.environ.get("MLL_WORKER_NAME", "")
    labels = []
    for o in outcomes:
        out = o.to_dict()
        out["worker"] = worker
        if out.get("run_id") and worker:
            a.registry.client.set_tag(out["run_id"], "mll.worker", worker)
        labels.append(out)
    return {"labels": labels, "failed": failed}


def _models_run_name() -> str:
    from prefect.runtime import flow_run

    return _run_name(list(flow_run.parameters.get("model_refs") or []))


@flow(name="label-models", log_prints=True, flow_run_name=_models_run_name)
def label_models(
    model_refs: Annotated[list[str], Field(min_length=1, description=(
        "Models to label together: hf-hub:ORG/NAME[@REVISION], local-dir:PATH or "
        "open_clip:ARCH/TAG"))],
    graph: GraphParam = "default",
    device: DeviceParam = DEFAULTS.device,
    force: ForceParam = False,
    push_card: PushCardParam = False,
    pixel_cache_gb: PixelCacheParam = None,
) -> dict[str, Any]:
    """Label several models on the graph in shared passes (the worker's ``pass_model_gb``
    decides how many are resident at once) and register each; optionally push their cards.
    The run fails, after registering the others, when a model fails."""
    clean_env()
    out = label_and_register_many_task(model_refs, graph, device, force, pixel_cache_gb)
    log = get_run_logger()
    for lab in out["labels"]:
        ref = lab.get("model_ref") or lab.get("model", "")
        log.info("%s: %s (version %s)", ref, lab["status"], lab.get("version"))
        if push_card and str(ref).startswith("hf-hub:") and lab["status"] == "labelled":
            lab["card"] = push_card_task(ref, lab["path"], create_pr=True)
    if out["failed"]:
        raise RuntimeError(f"{len(out['failed'])} of {len(model_refs)} models failed: "
                           + "; ".join(f"{r}: {e}" for r, e in sorted(out["failed"].items())))
    return out


@flow(name="label-model", log_prints=True, flow_run_name="label {model_ref}")
def label_model(
    model_ref: Annotated[str, Field(description="hf-hub:ORG/NAME[@REVISION], local-dir:PATH or "
                                                "open_clip:ARCH/TAG")],
    graph: GraphParam = "default",
    device: DeviceParam = DEFAULTS.device,
    force: ForceParam = False,
    push_card: PushCardParam = False,
    pixel_cache_gb: PixelCacheParam = None,
) -> dict[str, Any]:
    """Label one model on the graph and register it in MLflow; optionally push its card."""
    clean_env()
    out = label_and_register_task(model_ref, graph, device, force, pixel_cache_gb)
    get_run_logger().info("%s: %s (version %s)", model_ref, out["status"], out.get("version"))
    if push_card and model_ref.startswith("hf-hub:") and out["status"] == "labelled":
        out["card"] = push_card_task(model_ref, out["path"], create_pr=True)
    return out


def _wait_all(run_ids: list[Any], timeout: float = 6 * 3600, poll: float = 2.0) -> list[Any]:
    from prefect.client.orchestration import get_client

    pending = set(run_ids)
    finished = {}
    t0 = time.monotonic()
    with get_client(sync_client=True) as client:
        while pending and time.monotonic() - t0 < timeout:
            for rid in list(pending):
                fr = client.read_flow_run(rid)
                if fr.state is not None and fr.state.is_final():
                    finished[rid] = fr
                    pending.discard(rid)
            if pending:
                time.sleep(poll)
    if pending:
        raise TimeoutError(f"{len(pending)} label-model runs did not finish in {timeout} s")
    return [finished[r] for r in run_ids]


def _label_page(models: list[dict[str, Any]], common: dict[str, Any], deployment_name: str,
                per_run: int) -> dict[str, str]:
    """Label a page of models, ``per_run`` per ``label-models`` run; returns ref -> error of
    the models a failed run left unlabelled (all of its models when it left none)."""
    if not models:
        return {}
    groups = [models[i:i + per_run] for i in range(0, len(models), per_run)]
    params = [{"model_refs": [m["ref"] for m in g], **common} for g in groups]
    if deployment.id is not None:  # a deployment: fan out to the work pool
        from prefect.deployments import run_deployment

        runs = [run_deployment(deployment_name, parameters=p, timeout=0,
                               flow_run_name=_run_name(p["model_refs"])) for p in params]
        done = _wait_all([r.id for r in runs])  # type: ignore[union-attr]  # sync call
        states = [fr.state for fr in done]
    else:  # local: in-process subflows
        states = [label_models(**p, return_state=True) for p in params]
    errors: dict[str, str] = {}
    for g, state in zip(groups, states, strict=True):
        if state is not None and state.is_completed():
            continue
        msg = f"{state.type.value if state else '?'}: {(state.message if state else '') or ''}"
        missing = unlabelled(g, common["graph"]) or g
        errors.update({m["ref"]: msg[:500] for m in missing})
    return errors


def _run_name(refs: list[str]) -> str:
    names = [r.rsplit("/", 1)[-1] for r in refs]
    return "label " + (", ".join(names) if len(names) <= 3 else
                       f"{', '.join(names[:2])} and {len(names) - 2} more")


@flow(name="label-new-models", log_prints=True,
      flow_run_name="label new models from {source}")
def label_new_models(
    source: Annotated[Literal["hf", "local"], Field(
        description="hf: the Hub (or HF_ENDPOINT); local: a folder of ORG/NAME models")] = "hf",
    local_root: Annotated[str | None, Field(description="The folder, for source=local")] = None,
    page_size: Annotated[int, Field(ge=1, le=10_000, description=(
        "Models listed, labelled and recorded per page"))] = DEFAULTS.discovery_page_size,
    max_pages: Annotated[int, Field(ge=1, description="Pages per run at most")] = 1000,
    graph: GraphParam = "default",
    device: DeviceParam = DEFAULTS.device,
    deployment_name: Annotated[str, Field(
        description="Deployment that labels a group of models")] = "label-models/label-models-gpu",
    models_per_run: Annotated[int | None, Field(ge=1, description=(
        "Models per labelling run (empty: the setting models_per_run)"))] = None,
    push_card: PushCardParam = False,
    pixel_cache_gb: PixelCacheParam = None,
) -> dict[str, Any]:
    """Label every model published since the last run, a page at a time, each once.

    The watermark and the failed models live in the tracking server: every page moves the
    watermark; a model that fails is reported and retried by the next runs.
    """
    clean_env()
    log = get_run_logger()
    version = graph_version(graph)
    # `default` is pinned to the version it names now (the pointer may move during the run)
    spec = version if is_graph_version(graph) else graph
    state = discovery_state(source, local_root, version)
    found = labelled = 0
    failed: dict[str, str] = {}
    cache = {} if pixel_cache_gb is None else {"pixel_cache_gb": pixel_cache_gb}
    common = {"graph": spec, "device": device, "push_card": push_card, **cache}
    per_run = models_per_run or app().settings.models_per_run
    for n in range(max_pages):
        page = discover(source, local_root, page_size, state, retry_failed=n == 0)
        if not page:
            break
        todo = unlabelled(page, spec)
        errors = _label_page(todo, common, deployment_name, per_run)
        state = record_page(state, page, errors, len(todo) - len(errors))
        found += len(page)
        labelled += len(todo) - len(errors)
        failed.update(errors)
        log.info("page %d: %d models, %d labelled, %d failed; watermark %s", n + 1, len(page),
                 len(todo) - len(errors), len(errors), state["watermark"])
    # models found before whose newest commit is newer than the last run's: relabelled only
    # when their weights or config changed (a README edit is recorded, not relabelled)
    updated = 0
    for _ in range(max_pages):
        batch = discover_updates(source, local_root, page_size, state)
        changed = batch["models"]
        todo = unlabelled(changed, spec) if changed else []
        errors = _label_page(todo, common, deployment_name, per_run)
        if batch["listed"] or state.get("modified_watermark") is None:  # else nothing moved
            state = record_updates(source, local_root, state, changed, errors,
                                   len(todo) - len(errors), batch["newest"])
        updated += len(todo) - len(errors)
        failed.update(errors)
        if changed:
            log.info("%d models modified since the last run, %d relabelled, %d failed",
                     len(changed), len(todo) - len(errors), len(errors))
        if batch["listed"] < page_size:
            break
    out = {"graph_version": version, "found": found, "labelled": labelled,
           "updated": updated, "failed": failed, "given_up": state.get("given_up", []),
           "watermark": state["watermark"],
           "modified_watermark": state.get("modified_watermark")}
    if failed:  # recorded first: the next runs retry them; the run shows red
        raise RuntimeError(f"{len(failed)} of {found} models failed to label and will be "
                           f"retried by the next runs: {sorted(failed)[:10]}")
    return out
