"""``mll graph``: build, grow, publish and inspect semantic graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mll_registry.cli.common import DataDirOpt, JsonOpt, boundary, console, emit, fail, open_app
from mll_registry.graph.bundle import GraphConfig
from mll_registry.terminal import safe

#: how a graph is built when no flag says otherwise (the defaults shown in ``--help``)
BUILT_IN = GraphConfig()

graph_app = typer.Typer(help="Build and inspect semantic graphs.", no_args_is_help=True)


@graph_app.command("build")
def graph_build(
    source: Annotated[list[str] | None, typer.Option(
        "--source", "-s", help="Sample dataset NAME=PATH (ImageFolder by wnid or synset id).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Build the demo graph.")] = False,
    describe: Annotated[list[str] | None, typer.Option(
        "--describe", help="A source's domain, NAME=TEXT (e.g. noto='colour emoji'): domain-aware "
        "selection weights it by its similarity to a task's domain.")] = None,
    out: Annotated[Path | None, typer.Option(help="Bundle directory to write.")] = None,
    cap: Annotated[int | None, typer.Option(
        help=f"Max images per node. [default: {BUILT_IN.cap}]")] = None,
    seed: Annotated[int | None, typer.Option(
        help=f"Seed of the per-node draw. [default: {BUILT_IN.seed}]")] = None,
    caption: Annotated[str | None, typer.Option(
        help=f"Node caption template. [default: {BUILT_IN.caption_template}]")] = None,
    min_depth: Annotated[int | None, typer.Option(
        help="Leave out hypernyms shallower than this. "
             f"[default: {BUILT_IN.min_depth}]")] = None,
    expand: Annotated[bool | None, typer.Option(
        "--expand/--no-expand",
        help="Add hypernym nodes. "
             f"[default: {'expand' if BUILT_IN.expand_hypernyms else 'no-expand'}]")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a semantic graph bundle from sample datasets (or the demo's)."""
    from rich.progress import Progress

    if not demo and not source:
        fail("give --demo or at least one --source NAME=PATH")
    a = open_app(data_dir)
    cfg = graph_config(cap=cap, seed=seed, caption_template=caption, min_depth=min_depth,
                       expand_hypernyms=expand)
    with boundary(), Progress(console=console, transient=True, disable=as_json) as prog:
        task = prog.add_task("drawing node images", total=None)
        built = a.graphs.build(source or [], demo=demo, out=out, config=cfg,
                              progress=lambda d, t: prog.update(task, completed=d, total=t),
                              describe=describe or [])
    summary = built.to_dict()
    if as_json:
        emit(summary)
        return
    print_graph(summary)


def graph_config(**given: Any) -> GraphConfig:
    """A :class:`GraphConfig` with the flags given (not None) over its own defaults, which are
    the one statement of how a graph is built."""
    return GraphConfig(**{k: v for k, v in given.items() if v is not None})


def print_graph(summary: dict[str, Any], verb: str = "written to") -> None:
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

    a = open_app(data_dir)
    with boundary(), Progress(console=console, transient=True, disable=as_json) as prog:
        task = prog.add_task("packing sample images", total=None)
        out = a.graphs.publish(bundle, default=default,
                               progress=lambda d, t: prog.update(task, completed=d, total=t)
                               ).to_dict()
    if as_json:
        emit(out)
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
        fail("give at least one --source NAME=PATH, or --demo")
    a = open_app(data_dir)
    with boundary(), Progress(console=console, transient=True, disable=as_json) as prog:
        task = prog.add_task("drawing node images", total=None)
        out_d = a.graphs.extend(base, source or [], demo=demo, out=out, publish=publish,
                                default=default, describe=describe or [],
                                progress=lambda d, t: prog.update(task, completed=d, total=t)
                                ).to_dict()
    if as_json:
        emit(out_d)
        return
    print_graph(out_d)
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
    with boundary():
        delta = open_app().graphs.diff(a_spec, b_spec)
    if as_json:
        emit(delta.to_dict(full=True))
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
    with boundary():
        graphs = open_app(data_dir).graphs.list()
    if as_json:
        emit([g.to_dict() for g in graphs])
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
    with boundary():
        g = open_app(data_dir).graphs.set_default(version)
    console.print(f"default graph: {g.graph_version} (registry version {g.registry_version})")


@graph_app.command("info")
def graph_info(path: Annotated[str, typer.Argument(
        help="A bundle directory, a published graph version, `default` or `demo`.")],
        as_json: JsonOpt = False) -> None:
    """Show a graph's summary (verifies its version)."""
    with boundary():
        g = open_app().graphs.get(path)
    summary = {**g.summary(), "path": str(path)}
    lineage = g.manifest.get("lineage") or {}
    if lineage.get("parent"):
        from mll_registry.graph.lineage import GraphDelta

        summary["parent"] = lineage["parent"]
        summary["delta"] = GraphDelta(**lineage["delta"]).headline()
    if as_json:
        emit(summary)
    else:
        print_graph(summary, verb="bundle:")
        if "parent" in summary:
            console.print(f"child of {summary['parent']}: {summary['delta']}")
