"""``mll query``: the registry's best models per concept, and a model's label."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mll_registry.cli.common import (
    DEMO_GRAPH,
    DataDirOpt,
    GraphOpt,
    JsonOpt,
    boundary,
    console,
    emit,
    fail,
    open_app,
)
from mll_registry.terminal import SafeConsole, safe

query_app = typer.Typer(help="Query the registry: best models per concept, a model's label.",
                        no_args_is_help=True)


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
    a = open_app(data_dir)
    with boundary(KeyError):  # an unknown concept or source: the key names it
        q = a.queries.best(concept, graph or DEMO_GRAPH, n, refresh=refresh, source=source)
    if not q.models:
        fail(f"no labelled models for graph {q.graph_version}: label some with "
             "`mll label MODEL_REF`")
    if as_json:
        emit(q.to_dict())
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
    ensembles: Annotated[bool, typer.Option(
        "--ensembles", help="Also list the registered ensembles that use the model (and "
        "whether they are stale); asks the registry.")] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A model's registered label: version, summary, strongest and weakest concepts."""
    a = open_app(data_dir)
    with boundary(ValueError):
        found = a.queries.label(model_ref, graph or DEMO_GRAPH)
    if found is None:
        fail(f"{model_ref} has no registered label for this graph; run `mll label {model_ref}`")
    v, summary = found
    s = summary.sort_values(["acc1", "mean_own"], ascending=False)
    out = {**v.to_dict(), "mean_acc5": round(float(s["acc5"].mean()), 4),
           "strongest": s.head(10)[["node_id", "acc1", "acc5"]].round(4).to_dict("records"),
           "weakest": s.tail(10)[["node_id", "acc1", "acc5"]].round(4).to_dict("records")}
    if ensembles:
        with boundary(ValueError):
            used = a.selection.ensembles(str(out.get("model_ref") or model_ref))
        out["ensembles"] = [{"uri": f"models:/{e['name']}/{e['version']}",
                             "aliases": e["aliases"], "stale": e["stale"]} for e in used]
    if as_json:
        emit(out)
        return
    console.print(f"{v.name} version {v.version} ({v.source}), graph {v.graph_version}: "
                  f"mean acc@1 {v.mean_acc1:.3f}")
    cost = v.cost
    console.print("inference cost: " + (
        f"{cost['gflops']:.4g} GFLOPs and {cost['ms_per_image']:.3g} ms per image (measured when "
        f"labelled), {int(cost['params']):,} parameters" if cost and len(cost) == 3 else
        "not measured (labelled before costs were recorded: `mll label REF --force`)"),
        soft_wrap=True)
    console.print("strongest: " + ", ".join(f"{r['node_id']} {r['acc1']:.2f}"
                                            for r in out["strongest"]))
    console.print("weakest: " + ", ".join(f"{r['node_id']} {r['acc1']:.2f}"
                                          for r in out["weakest"]))
    if ensembles:
        console.print("used by ensembles: " + (", ".join(
            e["uri"] + (" (stale)" if e["stale"] else "") for e in out["ensembles"]) or "none"),
            soft_wrap=True, highlight=False, markup=False)
