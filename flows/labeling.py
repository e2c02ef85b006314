"""Labelling flows: discover new open_clip models, label each once, register it, push its card.

``label-new-models`` runs on a schedule: it lists models published since the last watermark, skips
those already labelled for this graph, and fans out one ``label-model`` run per model through
``run_deployment`` (to the GPU work pool) when it runs as a deployment, or runs them in-process as
subflows when run locally. Only paths and refs travel between tasks, never tensors.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.runtime import deployment
from pydantic import Field

from flows._settings import app, clean_env, progress_logger
from mll_registry.settings import DEFAULTS


# Retries: one layer per remote service, in the library (mll_registry.retries: the Hub and
# MLflow calls retry transient failures with backoff); tasks here do not retry on top of it.
@task
def discover(source: str, local_root: str | None, limit: int,
             watermark_path: str | None) -> list[dict[str, Any]]:
    """New models since the watermark, as refs (Hub listing is I/O: retried)."""
    return app().discover(source, local_root=local_root, limit=limit,
                          watermark_path=watermark_path)


@task
def unlabelled(models: list[dict[str, Any]], graph_path: str | None) -> list[dict[str, Any]]:
    """Drop the models whose label key (revision, graph, settings) is already registered."""
    return app().unlabelled(models, graph_path)


@task
def label_and_register_task(model_ref: str, graph_path: str | None, device: str,
                            force: bool) -> dict[str, Any]:
    """Download, label and register one model (idempotent: a rerun is safe)."""
    import os

    a = app(device=device)
    out = a.label(model_ref, graph_path, force=force, progress=progress_logger(model_ref))
    out["worker"] = os.environ.get("MLL_WORKER_NAME", "")
    if out.get("run_id") and out["worker"]:
        a.registry().client.set_tag(out["run_id"], "mll.worker", out["worker"])
    return out


@task
def push_card_task(model_ref: str, label_path: str, create_pr: bool) -> dict[str, Any]:
    """Push the label section and table to the model's Hub card (a pull request by default)."""
    from mll_registry.cards import push_card
    from mll_registry.label_format import ModelLabel
    from mll_registry.model_refs import ModelRef

    ref = ModelRef.parse(model_ref)
    return push_card(ref.name, ModelLabel.load(label_path), create_pr=create_pr)


@flow(name="label-model", log_prints=True, flow_run_name="label {model_ref}")
def label_model(
    model_ref: Annotated[str, Field(description="hf-hub:ORG/NAME[@REVISION], local-dir:PATH or "
                                                "open_clip:ARCH/TAG")],
    graph_path: Annotated[str | None, Field(description="Graph bundle (default: the demo "
                                                        "graph)")] = None,
    device: Annotated[str, Field(description="auto, cpu or cuda[:N]")] = DEFAULTS.device,
    force: Annotated[bool, Field(description="Relabel even if registered")] = False,
    push_card: Annotated[bool, Field(description="Open a card PR on the Hub")] = False,
) -> dict[str, Any]:
    """Label one model on the graph and register it in MLflow; optionally push its card."""
    clean_env()
    out = label_and_register_task(model_ref, graph_path, device, force)
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


@flow(name="label-new-models", log_prints=True,
      flow_run_name="label new models from {source}")
def label_new_models(
    source: Annotated[Literal["hf", "local"], Field(
        description="hf: the Hub (or HF_ENDPOINT); local: a folder of ORG/NAME models")] = "hf",
    local_root: Annotated[str | None, Field(description="The folder, for source=local")] = None,
    limit: Annotated[int, Field(ge=1, le=10_000, description="Models per run")] = 100,
    graph_path: Annotated[str | None, Field(description="Graph bundle")] = None,
    device: Annotated[str, Field(description="auto, cpu or cuda[:N]")] = DEFAULTS.device,
    deployment_name: Annotated[str, Field(
        description="Deployment that labels one model")] = "label-model/label-model-gpu",
    watermark_path: Annotated[str | None, Field(description="Watermark file")] = None,
    push_card: Annotated[bool, Field(description="Open card PRs on the Hub")] = False,
) -> dict[str, Any]:
    """Discover newly published models, skip the labelled ones, label the rest once each."""
    clean_env()
    log = get_run_logger()
    found = discover(source, local_root, limit, watermark_path)
    todo = unlabelled(found, graph_path)
    log.info("%d new models, %d to label", len(found), len(todo))
    params = [{"model_ref": m["ref"], "graph_path": graph_path, "device": device,
               "push_card": push_card} for m in todo]
    if deployment.id is not None and todo:  # a deployment: fan out to the work pool
        from prefect.deployments import run_deployment

        runs = [run_deployment(deployment_name, parameters=p, timeout=0,
                               flow_run_name=f"label {p['model_ref'].rsplit('/', 1)[-1]}")
                for p in params]
        done = _wait_all([r.id for r in runs])  # type: ignore[union-attr]  # sync call
        states = {str(r.name): r.state.type.value if r.state else "?" for r in done}
        failed = [n for n, s in states.items() if s != "COMPLETED"]
        if failed:
            raise RuntimeError(f"label-model failed for {failed}")
        results: list[Any] = list(states.items())
    else:  # local: in-process subflows
        results = [label_model(**p) for p in params]
    if watermark_path and found:
        app().advance_watermark(watermark_path, found)
    return {"found": len(found), "labelled": len(todo), "results": results}
