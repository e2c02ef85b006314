"""Recorded benchmark results: one Markdown table per benchmark under benchmarks/results/."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def stamp() -> str:
    """The first two cells of a row: date and machine."""
    return f"{time.strftime('%Y-%m-%d')} | {platform.node()[:12]} ({os.cpu_count()} cores)"


def append_rows(name: str, header: str, rows: Iterable[str]) -> Path:
    """Append table rows (cells without the outer pipes) to results/NAME; write HEADER if new."""
    out = RESULTS / name
    if not out.exists():
        out.write_text(header)
    with out.open("a") as f:
        for row in rows:
            f.write(f"| {row} |\n")
    return out
