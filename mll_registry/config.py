"""Where things live: the per-user data directory and the environment variables we honour.

Assets (WordNet corpus, rendered demo images, graph bundles, caches) go to a data directory,
never into the installed package. ``MLL_DATA_DIR`` overrides it; otherwise we follow the XDG
convention (``$XDG_DATA_HOME/mll-registry``, default ``~/.local/share/mll-registry``).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA_DIR = "MLL_DATA_DIR"


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the data directory (created on first use).

    Args:
        override: explicit directory; wins over ``MLL_DATA_DIR`` and the XDG default.
    """
    if override is not None:
        path = Path(override)
    elif os.environ.get(ENV_DATA_DIR):
        path = Path(os.environ[ENV_DATA_DIR])
    else:
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        path = Path(xdg) / "mll-registry"
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def demo_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Directory of the rendered demo sample and target images."""
    return data_dir(override) / "demo"


def graphs_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Directory where graph bundles are written by default."""
    return data_dir(override) / "graphs"
