"""The ``mll`` command: the Typer app assembled from one module per command group, and ``run()``.

Thin on purpose: every command is one call on :class:`mll_registry.app.root.App` (which a notebook can
make too). Defaults come from :mod:`mll_registry.settings` (flags > ``MLL_*`` > ``mll.toml`` /
``[tool.mll]`` > built-in); ``--json`` prints machine-readable output; known errors print one line
and exit 2 (:func:`mll_registry.cli.common.boundary`).

Commands from outside the package plug in through :data:`COMMANDS`: a ``typer.Typer`` (or a plain
command function) registered there in code, or through an entry point of another distribution::

    [project.entry-points."mll_registry.commands"]
    hello = "my_company.mll_cli:hello_app"

becomes ``mll hello ...``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from mll_registry.cli import card as card_cli
from mll_registry.cli import common
from mll_registry.cli import demo as demo_cli
from mll_registry.cli import graph as graph_cli
from mll_registry.cli import label as label_cli
from mll_registry.cli import query as query_cli
from mll_registry.cli import registry as registry_cli
from mll_registry.cli import select as select_cli
from mll_registry.cli import settings as settings_cli
from mll_registry.plugins import Plugins

#: commands from outside the package: name -> ``typer.Typer`` (a group) or a command function
COMMANDS: Plugins[typer.Typer | Callable[..., Any]] = Plugins("commands")

HELP = "MLL Registry: label, select and reuse open_clip models."


def _main(version: Annotated[bool, typer.Option(
        "--version", callback=settings_cli.version_callback, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """MLL Registry: label, select and reuse open_clip models."""


def build_app() -> typer.Typer:
    """The ``mll`` app: the built-in commands and groups, then the plugged ones of
    :data:`COMMANDS` (a plugged name never replaces a built-in one)."""
    app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False)
    app.callback()(_main)
    for name, command in (("demo", demo_cli.demo), ("version", settings_cli.version),
                          ("settings", settings_cli.settings), ("setup", demo_cli.setup),
                          ("label", label_cli.label), ("select", select_cli.select_cmd),
                          ("reuse", select_cli.reuse_cmd), ("predict", select_cli.predict_cmd),
                          ("promote", select_cli.promote_cmd), ("serve", select_cli.serve_cmd),
                          ("bench", select_cli.bench)):
        app.command(name)(command)
    card_cli.LATEST_LABEL = lambda model_ref: common.open_app().labelling.latest_label_dir(model_ref)
    card_cli.REGISTERED = lambda name: common.open_app().labelling.registered_ref(name)
    card_cli.ENSEMBLES = lambda model_ref: common.open_app().selection.ensembles(model_ref)
    for name, group in (("graph", graph_cli.graph_app), ("card", card_cli.card_app),
                        ("query", query_cli.query_app), ("registry", registry_cli.registry_app)):
        app.add_typer(group, name=name)
    _add_plugged(app)
    return app


def _add_plugged(app: typer.Typer) -> None:
    """Mount :data:`COMMANDS` on ``app``; one that cannot be loaded or takes a built-in name is
    left out with a one-line warning, so a broken plug-in never breaks the other commands."""
    taken = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    taken |= {g.name for g in app.registered_groups if g.name}
    for name in COMMANDS.names():
        try:
            item = COMMANDS.get(name)
        except Exception as exc:  # noqa: BLE001 - a stranger's package: report, keep the rest
            _warn(f"command plugin {name!r} (entry point group mll_registry.commands) not "
                  f"loaded: {type(exc).__name__}: {exc}")
            continue
        if name in taken:
            _warn(f"command plugin {name!r} left out: `mll {name}` is a built-in command")
        elif isinstance(item, typer.Typer):
            app.add_typer(item, name=name)
        elif callable(item):
            app.command(name)(item)
        else:
            _warn(f"command plugin {name!r} left out: it is a {type(item).__name__}, not a "
                  "typer.Typer or a function")


def _warn(msg: str) -> None:
    from rich.text import Text

    common.console.print(Text.assemble(("warning:", "yellow"), " ", msg), soft_wrap=True)


app = build_app()


def run() -> None:
    """The ``mll`` entry point: the Typer app behind the CLI's error boundary, so a known error
    that escapes a command (a plugged one, say) or a full disk is one line and exit 2."""
    try:
        app()
    except Exception as exc:  # noqa: BLE001 - only known errors are handled; the rest re-raised
        msg = common.known_message(exc)
        if msg is None:
            raise
        common.error_line(msg)
        raise SystemExit(2) from None


if __name__ == "__main__":  # pragma: no cover
    run()
