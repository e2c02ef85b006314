"""Environment hygiene shared by the flows, and the assembly layer they call.

Deployment job variables are templated at deploy time (``{{ $MLFLOW_TRACKING_URI }}``); a variable
that was unset then arrives empty or as the literal placeholder. Treat both as unset so the
library's own defaults apply (embedded MLflow in the data directory, the public Hub).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mll_registry.app.root import App

SETTINGS = ("MLFLOW_TRACKING_URI", "HF_ENDPOINT", "MLL_DATA_DIR", "HF_HOME")


def clean_env() -> None:
    for key in SETTINGS:
        value = os.environ.get(key)
        if value is not None and (not value.strip() or value.strip().startswith("{{")):
            del os.environ[key]


def app(**overrides: object) -> App:
    """The assembly layer over the worker's settings (flags > MLL_* > mll.toml > defaults)."""
    from mll_registry.app.root import App

    clean_env()
    return App.configured(**overrides)


def progress_logger(what: str, every: float = 2.0) -> Callable[[str, int, int], None]:
    """A labelling progress callback that logs to the flow run (at most every ``every`` s)."""
    import time

    from prefect import get_run_logger

    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - last[0] >= every:
            last[0] = now
            get_run_logger().info("%s: %s %d/%d", what, {"images": "encoding images"}.get(
                stage, stage), done, total)

    return progress
