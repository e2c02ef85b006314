"""Integration: a real `prefect server`, work pools, `prefect deploy --all`, two process workers.

`label-new-models` (cpu pool) fans out one `label-model` run per demo model to the gpu pool, where
two workers with --limit 1 each take work; every model ends up labelled exactly once. Then a
`select-models` run triggered with parameters completes, logs an MLflow run and leaves a Prefect
artifact.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, missing_demo_hub, write_png

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited: {log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"{url} not up after {timeout} s: {log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen, signals: int = 2) -> None:
    for _ in range(signals):  # a worker needs two signals
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                continue
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_deploy_workers_label_once_and_select(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from mll_registry.demo.hub import demo_model_dirs

    try:
        dirs = demo_model_dirs()[:3]
    except FileNotFoundError:
        missing_demo_hub()
    hub = tmp_path / "hub" / "mll-demo"
    for d in dirs:
        shutil.copytree(d, hub / d.name)
    for i in range(3):
        write_png(tmp_path / "src" / "dog.n.01" / f"{i}.png", 10 + i)
        write_png(tmp_path / "src" / "n02121808" / f"{i}.png", 60 + i)
    data = tmp_path / "data"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_TRACKING"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="true",
               PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="false", MLL_DATA_DIR=str(data),
               MLFLOW_DISABLE_TELEMETRY="true", HF_HUB_OFFLINE="1")
    procs: list[subprocess.Popen] = []

    def start(args: list[str], name: str, extra: dict[str, str] | None = None) -> subprocess.Popen:
        log = tmp_path / f"{name}.log"
        p = subprocess.Popen(args, cwd=ROOT, env={**env, **(extra or {})},
                             stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                             start_new_session=True)
        procs.append(p)
        return p

    def cli(*args: str, timeout: float = 300) -> str:
        r = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=env, timeout=timeout,
                           capture_output=True, text=True)
        assert r.returncode == 0, f"prefect {' '.join(args)}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
        return r.stdout

    def mll(*args: str) -> dict:
        r = subprocess.run([str(BIN / "mll"), *args, "--json"], cwd=ROOT, env=env, timeout=300,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout)

    try:
        server = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                        "--port", str(port)], "server")
        _wait_http(f"{api}/health", server, tmp_path / "server.log")
        graph = mll("graph", "build", "-s", f"toy={tmp_path / 'src'}", "--out",
                    str(tmp_path / "graph"))
        # one migration before several writers (the library does this under a lock too)
        from mll_registry.mlflow_labels import Registry
        from mll_registry.model_refs import registered_name

        monkeypatch.setenv("MLL_DATA_DIR", str(data))
        Registry(f"sqlite:///{data / 'mlflow.db'}", root=data)
        cli("work-pool", "create", "gpu", "--type", "process")
        cli("work-pool", "create", "cpu", "--type", "process")
        out = cli("--no-prompt", "deploy", "--all")
        for name in ("label-new-models-hourly", "label-model-gpu", "label-model-cpu",
                     "select-models", "build-graph"):
            assert name in out
        for w in ("w1", "w2"):
            start([str(BIN / "prefect"), "worker", "start", "--pool", "gpu", "--name", w,
                   "--limit", "1"], w, {"MLL_WORKER_NAME": w})
        start([str(BIN / "prefect"), "worker", "start", "--pool", "cpu", "--name", "wc"], "wc")
        cli("deployment", "run", "label-new-models/label-new-models-hourly",
            "--param", "source=local", "--param", f"local_root={tmp_path / 'hub'}",
            "--param", f"graph={graph['path']}", "--param", "device=cpu",
            "--watch", "--watch-timeout", "900", timeout=960)
        reg = Registry(f"sqlite:///{data / 'mlflow.db'}", root=data)
        versions = reg.labelled_versions(graph["version"])
        assert sorted(v.name for v in versions) == sorted(
            registered_name(f"local-dir:{hub / d.name}") for d in dirs)
        for v in versions:  # exactly once: one version per model, one label run each
            assert len(reg.versions(v.name)) == 1
        workers = {reg.client.get_run(v.run_id).data.tags.get("mll.worker") for v in versions}
        assert workers == {"w1", "w2"}, workers

        data_dir = tmp_path / "sel"
        from mll_registry.demo.tasks import ensure_demo_tasks

        src = ensure_demo_tasks(data, names=["pets"])[0].parent / "pets"
        for c in ("dog", "cat"):
            shutil.copytree(src / c, data_dir / c)
        cli("deployment", "run", "select-models/select-models",
            "--param", "task_name=deployed-pets", "--param", 'classes=["dog", "cat"]',
            "--param", "domain=cartoon emoji", "--param", f"data_path={data_dir}",
            "--param", f"graph={graph['path']}", "--param", "device=cpu",
            "--watch", "--watch-timeout", "600", timeout=660)
        runs = reg.client.search_runs([reg.experiment("mll-selection")],
                                      "params.task = 'deployed-pets'")
        assert len(runs) == 1 and "top1" in runs[0].data.metrics
        req = urllib.request.Request(f"{api}/artifacts/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        keys = {a["key"] for a in json.loads(urllib.request.urlopen(req, timeout=10).read())}
        assert {"selection-deployed-pets", "selection-deployed-pets-run"} <= keys
    finally:
        for p in reversed(procs):
            _stop(p, signals=2)
