"""The output boundary of the CLI: text from models, files and the Hub is shown, never obeyed.

Model folder names, class names, paths and the messages that quote them are data, often written
by a stranger. Rich reads ``[link=...]`` in such text as markup (and fails on ``[/x]``), and a
terminal obeys raw ESC/OSC sequences in it (clear the screen, set the window title, hidden
hyperlinks); bidi overrides reorder what is shown. So every console of the CLI is a
:class:`SafeConsole`: markup and emoji codes off unless a call asks for them, and control
characters written as visible escapes (``\\x1b``) in everything it prints. Data put into one of
our own styled lines (``markup=True``) goes through :func:`safe`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.markup import escape
from rich.segment import Segment
from rich.text import Text

#: C0 controls but tab and newline, DEL, C1 controls, and the bidi / line-separator characters
#: that make a terminal show text other than what it holds
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                      "\u202a-\u202e\u2066-\u2069]")


def _visible(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def controls(text: object) -> str:
    """``text`` with its control characters written as visible escapes (``\\x1b``, ``\\u202e``).

    Tab and newline stay (Rich lays them out); the result holds no character a terminal obeys.
    """
    return _CONTROL.sub(_visible, str(text))


def safe(text: object) -> str:
    """``text`` fit for a line printed with Rich markup: controls made visible, markup escaped."""
    return escape(controls(text))


class SafeConsole(Console):
    """A Rich console that prints data as text: no markup or emoji codes unless a call passes
    ``markup=True``, and no raw control character in its output."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        kwargs.setdefault("emoji", False)
        super().__init__(**kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        """Strings (lines, table cells, titles): controls made visible before they are laid out."""
        return super().render_str(controls(text), **kwargs)

    def render(self, renderable: RenderableType,
               options: ConsoleOptions | None = None) -> Iterable[Segment]:
        """The last wall, for ``Text`` objects built elsewhere: no segment carries a raw control
        character (Rich's own control segments, cursor moves of a live display, are kept)."""
        for seg in super().render(renderable, options):
            if seg.control or not _CONTROL.search(seg.text):
                yield seg
            else:
                yield Segment(controls(seg.text), seg.style)
