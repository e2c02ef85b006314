"""What every command of the ``mll`` CLI shares: the console, options, JSON output and the error
boundary.

The boundary is the one place that decides how an error reaches the user: a known error (an
:class:`~mll_registry.errors.MLLError`, a full disk, or an error kind a command names) prints one
line on stderr, credentials redacted and the text shown as is (never read as Rich markup), and
exits 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.text import Text

from mll_registry.errors import MLLError, disk_full
from mll_registry.redaction import redact
from mll_registry.settings import DEFAULTS
from mll_registry.terminal import SafeConsole, controls

if TYPE_CHECKING:
    from mll_registry.app.root import App

#: the CLI's stderr: progress, notes and errors (data is printed as text: mll_registry.terminal)
console = SafeConsole(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="MLL_DATA_DIR", help="Data directory for assets and bundles.")]
GraphOpt = Annotated[str | None, typer.Option(
    help="Graph: `default` (the registry's default graph), a published graph version (16 hex "
         "digits), `demo`, or a bundle directory written ./PATH, /PATH or ~/PATH (a bare PATH only "
         "if it is a bundle directory: the names are never folders) [default: demo].")]
#: the graph a command uses when ``--graph`` is not given (the library has no default graph)
DEMO_GRAPH = "demo"
DeviceOpt = Annotated[str | None, typer.Option(help=f"auto, cpu or cuda[:N] [default: {DEFAULTS.device}].")]

def emit(obj: Any) -> None:
    """``--json`` output: one JSON document on stdout, keys sorted."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def error_line(msg: str) -> None:
    """Print ``error: MSG`` on stderr: credentials redacted, the message never read as markup
    (``[x]`` or ``[@REVISION]`` stay), controls made visible, never wrapped."""
    line = Text.assemble(("error:", "bold red"), " ", controls(redact(msg)))  # Text drops BEL
    console.print(line, highlight=False, soft_wrap=True)


def fail(msg: str, code: int = 2) -> NoReturn:
    """Stop the command with ``msg`` as its one error line and exit ``code``."""
    error_line(msg)
    raise typer.Exit(code)


def known_message(exc: BaseException, also: tuple[type[Exception], ...] = ()) -> str | None:
    """The one line to show for ``exc``, or None when it is not a known error (a bug).

    Known: :class:`MLLError`, a full disk, and the kinds in ``also`` (a ``KeyError`` shows its
    key's text, not its repr).
    """
    if isinstance(exc, (MLLError, *also)) and not isinstance(exc, typer.Exit):
        if isinstance(exc, KeyError) and exc.args:
            return str(exc.args[0])
        return str(exc)
    if disk_full(exc):
        where = getattr(exc, "filename", None)
        # every write goes through a temporary name removed when the write fails, so a full
        # disk leaves the previous state
        return (f"the disk is full{f' (writing {where})' if where else ''}: free some space or "
                "point MLL_DATA_DIR at a larger disk, then run the command again (nothing "
                "partial was kept; finished chunks resume)")
    return None


@contextmanager
def boundary(*also: type[Exception]) -> Iterator[None]:
    """The CLI's error boundary: a known error in the block (see :func:`known_message`) becomes
    one line on stderr and exit 2; anything else propagates with its traceback.

    Args:
        also: more error kinds a command treats as known (``ValueError`` where a command's inputs
            are checked by code that raises plain ones).
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - unknown errors are re-raised unchanged
        msg = known_message(exc, also)
        if msg is None:
            raise
        fail(msg)


def open_app(data_dir: Path | None = None, **overrides: Any) -> App:
    """The assembly layer with these flags over the configured settings (None = not given)."""
    from mll_registry.app.root import App

    with boundary():
        return App.configured(data_dir=str(data_dir) if data_dir else None, **overrides)


class heartbeat:
    """While a long call runs: a live status line on a terminal, else a line every 8 s (logs)."""

    def __init__(self, what: str, every: float = 8.0) -> None:
        import threading

        self.what, self.every = what, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.status: Any = None

    def _beat(self) -> None:
        import time

        t0 = time.monotonic()
        while not self.stop.wait(self.every):
            console.print(f"{self.what}: still working ({time.monotonic() - t0:.0f} s)",
                          highlight=False)

    def __enter__(self) -> heartbeat:
        if console.is_terminal:
            self.status = console.status(f"{self.what}: working...")
            self.status.__enter__()
        else:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.status is not None:
            self.status.__exit__(None, None, None)
