"""The embedded-default demo as one flow: set-up, graph, labelling, selection, summary.

Runs the real flows as subflows (Prefect ephemeral mode when no PREFECT_API_URL is set) against
the local MLflow in the data directory. Everything already done is skipped: assets and the graph
are cached by content, labels are registered once per (revision, graph version), and the
ensemble evaluation is cached per (task, graph, model versions).
"""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.context import TaskRunContext

from flows._settings import app, clean_env
from flows.labeling import label_new_models
from flows.selection import select_models
from mll_registry.settings import DEFAULTS

DEMO_TASKS = ("pets", "vehicles")


@task
def setup_assets() -> dict[str, Any]:
    return app().setup().to_dict()


@task
def ensure_graph() -> dict[str, Any]:
    """The demo graph: loaded if built, else built (rendering the sample styles if needed)."""
    from mll_registry.demo.graph import demo_graph_path

    g = app().graphs.get("demo")
    return {**g.summary(), "path": str(demo_graph_path())}


def _labels_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    """Cache key: task file content + graph + the registry's labelled versions."""
    versions = sorted((v.name, v.version) for v in app().registry.labelled_versions())
    blob = Path(params["task_file"]).read_bytes() + params["graph_path"].encode() + \
        repr(versions).encode()
    return "demo-baselines-" + hashlib.sha256(blob).hexdigest()[:24]


@task(cache_key_fn=_labels_key, persist_result=True, result_serializer="json",
      cache_expiration=timedelta(days=7))
def baselines(task_file: str, graph_path: str) -> dict[str, Any]:
    """INB (best mean label accuracy) and the single-model oracle, measured on the task."""
    from mll_registry.evaluation.baselines import best_of, inb_scores
    from mll_registry.evaluation.bench import single_model_top1
    from mll_registry.models.loading import load
    from mll_registry.task import Task

    a = app()
    labels = a.selection.labels(a.graphs.get(Path(graph_path)))
    t = Task.from_yaml(task_file)
    top1 = single_model_top1(t, sorted(labels), lambda r: load(r, device=a.settings.device))
    inb = best_of(inb_scores(labels))
    oracle = best_of(top1)
    return {"inb_model": inb, "inb_top1": top1[inb], "oracle_model": oracle,
            "oracle_top1": top1[oracle], "models": len(labels)}


@flow(name="mll-demo", log_prints=True, flow_run_name="mll demo")
def demo(tasks: list[str] | None = None, device: str = DEFAULTS.device,
         pixel_cache_gb: float | None = None) -> dict[str, Any]:
    """The whole embedded-default demo; returns the summary the CLI prints. ``pixel_cache_gb``:
    the labelling runs' raw-pixel cache budget (None: the settings')."""
    import yaml

    from mll_registry.demo.graph import demo_graph_path
    from mll_registry.demo.hub import demo_hub_dir
    from mll_registry.demo.tasks import tasks_dir

    clean_env()
    t0 = time.perf_counter()
    setup_assets()
    graph = ensure_graph()
    graph_path = str(demo_graph_path())
    labelled = label_new_models(source="local", local_root=str(demo_hub_dir()),
                                graph=graph_path, device=device,
                                pixel_cache_gb=pixel_cache_gb)
    out: dict[str, Any] = {"graph": graph, "labelling": {k: labelled[k] for k in
                                                        ("found", "labelled")}, "tasks": []}
    for name in tasks or list(DEMO_TASKS):
        f = tasks_dir() / f"{name}.yaml"
        spec = yaml.safe_load(f.read_text())
        sel = select_models(task_name=name, classes=spec["classes"], domain=spec["domain"],
                            task_type=spec["task"], data_path=spec["data"],
                            graph=graph_path, device=device)
        base = baselines(str(f), graph_path)
        out["tasks"].append({"task": name, "mlflow_run_id": sel["mlflow_run_id"],
                             "ensemble_top1": sel["reuse"]["ensemble"]["top1"],
                             "selected_models": sel["selection"]["selected_models"],
                             "classes": sel["selection"]["classes"], **base})
    out["seconds"] = round(time.perf_counter() - t0, 1)
    from prefect.runtime import flow_run

    out["prefect_flow_run_id"] = str(flow_run.id) if flow_run.id else None
    return out

