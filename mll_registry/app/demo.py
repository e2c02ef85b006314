"""The benchmark and the embedded-default demo.

``mll demo`` runs its steps through an orchestrator found by name (:data:`ORCHESTRATORS`;
``prefect`` runs them as Prefect flows, ``flows/``, declared as an entry point in
pyproject.toml): the library never imports Prefect itself. The links into the MLflow and
Prefect UIs are the callers' to build (the CLI's ``demo`` command).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mll_registry.app.results import BenchReport, DemoReport
from mll_registry.plugins import Plugins

if TYPE_CHECKING:
    from mll_registry.app.graphs import GraphService, GraphSpec
    from mll_registry.app.parts import Parts

#: how ``mll demo`` runs its steps: name -> callable(app, tasks) -> the summary dict
ORCHESTRATORS: Plugins[Callable[..., dict[str, Any]]] = Plugins("orchestrators")


class DemoService:
    """The bench and demo use cases over an App's :class:`~mll_registry.app.parts.Parts` and its
    graphs."""

    def __init__(self, parts: Parts, graphs: GraphService) -> None:
        self.app = parts
        self.graphs = graphs

    def bench(self, tasks: Sequence[str | os.PathLike[str]] = (), graph: GraphSpec = "demo", *,
              growth_orders: int = 10, plot: str | os.PathLike[str] | None = None,
              markdown: str | os.PathLike[str] | None = None, log: bool = True,
              say: Callable[[str], None] = lambda s: None, fresh: bool = False) -> BenchReport:
        """MLL against INB, ModelGPT and the oracles on task files (default: the demo tasks,
        with their reference sets: the attainable references).
        On the ``demo`` graph the demo models are labelled first (once); on another graph the
        local store's labels are used. ``fresh``: the demo tasks' fresh render set (new views,
        rendered only to be reported) instead of their images."""
        from mll_registry.evaluation.bench import BenchConfig, run_bench
        from mll_registry.evaluation.bench import plot as draw
        from mll_registry.labels.embeddings import embeddings_path
        from mll_registry.labels.stores import LocalLabelStore, load_labels
        from mll_registry.models.loading import load
        from mll_registry.task import Task

        a = self.app
        g = self.graphs.get(graph)
        if tasks:
            task_list = [Task.from_yaml(t) for t in tasks]
        else:
            from mll_registry.demo.tasks import ensure_demo_references, ensure_demo_tasks

            refs = ensure_demo_references(a.root)  # the attainable references choose on these
            task_list = [dataclasses.replace(t, reference=refs[t.name]) for t in
                         (Task.from_yaml(p) for p in ensure_demo_tasks(a.root, fresh=fresh))]
        if graph == "demo":
            from mll_registry.demo.hub import ensure_demo_labels

            # the 10 demo models share one preprocess: one pass decodes each image once
            paths: dict[str, Path] = ensure_demo_labels(g, a.label_config(), a.root, log=say)
        else:
            paths = LocalLabelStore(a.root).list_labels(g.version, a.settings.label_hash())
        labels = load_labels(paths, g.version)
        if not labels:
            raise ValueError(f"no labelled models for graph {g.version}: label some with "
                             "`mll label`")
        s = a.settings
        cfg = BenchConfig(alpha=s.alpha, metric=s.metric, top_n=s.top_n, weighting=s.weighting,
                          source_weighting=s.source_weighting,
                          source_temperature=s.source_temperature, reuse_mode=s.reuse_mode,
                          fallback_z=s.fallback_z_or_none(), calibration=s.calibration,
                          growth_orders=growth_orders)
        res = run_bench(task_list, g, labels, lambda r: load(r, device=s.device), cfg, log=say,
                        embeddings={r: embeddings_path(p) for r, p in paths.items()})
        md = res.markdown()
        if markdown:
            from mll_registry.fsutil import write_text

            write_text(markdown, md)
        plot_path = draw(res, plot) if plot else None
        run_id = a.registry.log_bench(res, md, plot_path, s.recorded()) if log else None
        return BenchReport(res, md, plot_path, run_id)

    def demo(self, tasks: Sequence[str] | None = None, orchestrator: str = "prefect"
             ) -> DemoReport:
        """The embedded-default demo end to end, run by ``orchestrator`` (see ORCHESTRATORS):
        its 10 models are labelled in one pass (each graph image decoded once)."""
        from mll_registry.redaction import redact
        from mll_registry.registry.tracking import tracking_uri

        t0 = time.perf_counter()
        out = ORCHESTRATORS.get(orchestrator)(self.app, list(tasks) if tasks else None)
        return DemoReport(out, round(time.perf_counter() - t0, 1),
                          redact(tracking_uri(self.app.root)))
