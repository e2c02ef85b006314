"""One MLflow request never outlasts the retry budget: a tracking server that holds every request
(as `mlflow server` does for ~100 s while it retries a database that is down) is given up on
within MLL_RETRY_BUDGET_S, with one line naming the timeout. A loopback HTTP server that
accepts each request and answers nothing for 60 s stands in for it, deterministically (the
PostgreSQL outage test can see either a held request or fast 5xx answers)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOLD_S = 60.0


class _Holding(BaseHTTPRequestHandler):
    def _hold(self) -> None:
        self.server.held.set()  # type: ignore[attr-defined]
        self.server.stop.wait(HOLD_S)  # type: ignore[attr-defined]

    do_GET = do_POST = _hold  # noqa: N815 - http.server's names

    def log_message(self, *args: object) -> None:
        pass


def test_a_held_request_ends_within_the_retry_budget(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Holding)
    server.daemon_threads = True
    server.held, server.stop = threading.Event(), threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, MLL_RETRY_BUDGET_S="2", MLL_DATA_DIR=str(tmp_path / "d"),
               HOME=str(tmp_path))
    try:
        t0 = time.monotonic()
        start = subprocess.run([sys.executable, "-m", "mll_registry.cli", "--version"], env=env,
                               capture_output=True, text=True, timeout=120)
        start_s = time.monotonic() - t0
        assert start.returncode == 0, start.stderr
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "mll_registry.cli", "graph", "list"], env=env,
                           capture_output=True, text=True, timeout=HOLD_S + 60)
        took = time.monotonic() - t0
    finally:
        server.stop.set()  # type: ignore[attr-defined]
        server.shutdown()
    assert server.held.is_set(), "the CLI never asked the server"  # type: ignore[attr-defined]
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    last = [line for line in r.stderr.splitlines() if line.strip()][-1]
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" in last and uri in last, last
    # the budget (2 s, one request bounded by it, retries within it) plus the process start and
    # slack for a loaded 2-core box; without the bound one request waits the 60 s hold
    assert took < start_s + 2 + 20, (took, start_s)
