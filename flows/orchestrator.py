"""How :meth:`mll_registry.app.demo.DemoService.demo` runs on Prefect: the ``prefect`` orchestrator.

Declared as an entry point (``mll_registry.orchestrators``) in pyproject.toml, so the library
finds it by name and never imports Prefect itself. Prefect is configured before it is imported
(its settings are read at import time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_demo(application: Any, tasks: list[str] | None = None) -> dict[str, Any]:
    """The ``prefect`` orchestrator of :meth:`mll_registry.app.demo.DemoService.demo` (an entry
    point): the demo flow under ``application``'s data dir, device and pixel-cache budget.

    Prefect's ephemeral mode with quiet defaults: no analytics, a start-up timeout this 2-core
    class of machine needs, and a ``PREFECT_HOME`` created with its parents.
    """
    import os

    for k, v in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
                 "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1",
                 "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
                 "PREFECT_LOGGING_LEVEL": "INFO"}.items():
        os.environ.setdefault(k, v)
    Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser().mkdir(parents=True,
                                                                          exist_ok=True)
    if application.settings.data_dir:
        os.environ["MLL_DATA_DIR"] = str(application.settings.data_dir)
    from flows.demo import demo

    s = application.settings
    return demo(tasks=tasks, device=s.device, pixel_cache_gb=s.pixel_cache_gb)
