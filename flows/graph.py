"""The graph flows: build a semantic graph bundle from sample datasets; publish one to the registry
(tables and sample-image shards in the tracking server's artifact store) so workers that share no
disk fetch it by version."""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows._settings import app, clean_env


@task
def build(sources: list[str], demo: bool, out: str | None, cap: int, seed: int) -> dict[str, Any]:
    from mll_registry.graph.bundle import GraphConfig

    if not demo and (not sources or not out):
        raise ValueError("give sources (NAME=PATH) and out, or demo=True")
    return app().graphs.build(sources, demo=demo, out=out,
                              config=GraphConfig(cap=cap, seed=seed)).to_dict()


@flow(name="build-graph", log_prints=True, flow_run_name="build graph")
def build_graph(sources: list[str] | None = None, demo: bool = False, out: str | None = None,
                cap: int = 75, seed: int = 0) -> dict[str, Any]:
    """Build a graph bundle; its content version decides which labels stay valid."""
    clean_env()
    summary = build(sources or [], demo, out, cap, seed)
    print(f"graph {summary['version']}: {summary['nodes']} nodes, {summary['images']} images "
          f"-> {summary['path']}")
    return summary


@flow(name="publish-graph", log_prints=True, flow_run_name="publish graph {bundle}")
def publish_graph(bundle: str = "demo", default: bool = False) -> dict[str, Any]:
    """Publish a graph bundle (a directory this worker can read, or `demo`) by version."""
    clean_env()
    out = app().graphs.publish(bundle, default=default).to_dict()
    print(f"graph {out['graph_version']}: {'published' if out['created'] else 'already published'}"
          f", registry version {out['registry_version']}, {out['images']} images in "
          f"{out['shards']} shard(s){' (default)' if out['default'] else ''}")
    return out


@task(task_run_name="label {model_ref} on {graph_version}")
def label_on(model_ref: str, graph_version: str) -> dict[str, Any]:
    """Label one model on the child graph (incrementally, from its label on the parent)."""
    return app().labelling.label(model_ref, graph_version).to_dict()


@flow(name="extend-graph", log_prints=True, flow_run_name="extend graph {base}")
def extend_graph(base: str = "default", sources: list[str] | None = None, demo: bool = False,
                 default: bool = False, relabel: bool = True) -> dict[str, Any]:
    """Grow graph ``base`` with new sample sources (NAME=PATH on this worker; ``demo``: the demo's
    extension concepts), publish the child, and (``relabel``) label every model labelled on
    the parent on the child: incrementally, only new images and node texts are encoded."""
    clean_env()
    out = app().graphs.extend(base, sources or [], demo=demo, publish=True,
                              default=default).to_dict()
    d = out["delta"]
    print(f"graph {out['version']} (child of {out['parent']}): +{d['n_added_nodes']} nodes, "
          f"+{d['added_images']} images; published{' as the default' if default else ''}")
    labelled = []
    if relabel:
        for ref in app().labelling.labelled_models(out["parent"]):
            r = label_on(ref, out["version"])
            inc = r.get("incremental") or {}
            print(f"{ref}: {r['status']}, {r.get('images_encoded', 0)} images encoded"
                  + (f", {inc.get('images_reused')} reused" if inc else ""))
            labelled.append({k: r.get(k) for k in ("model", "status", "images_encoded",
                                                  "incremental", "name", "version")})
    return {**out, "labelled": labelled}
