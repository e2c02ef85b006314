"""`mll demo` end to end (reduced: two demo models, one task), and its quick second run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import missing_demo_hub, missing_sources

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_mll_demo_then_quick_second_run(tmp_path: Path, data_root: Path) -> None:
    from mll_registry.demo import sources as S
    from mll_registry.demo.hub import demo_model_dirs

    if S.missing_sources():
        missing_sources()
    try:
        dirs = demo_model_dirs()
    except FileNotFoundError:
        missing_demo_hub()
    hub = tmp_path / "hub" / "mll-demo"
    for d in [d for d in dirs if d.name in ("vit-all-colour", "vit-animals")] or dirs[:2]:
        shutil.copytree(d, hub / d.name)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING"))}
    env.update(MLL_DEMO_HUB=str(tmp_path / "hub"), MLL_DATA_DIR=str(data_root),
               PREFECT_HOME=str(tmp_path / "prefect-home"))
    cmd = [str(Path(sys.executable).parent / "mll"), "demo", "--task", "pets", "--device", "cpu",
           "--json"]

    def run() -> tuple[dict, float, list[float]]:
        """Run the demo; return its JSON, wall time and when each stderr line arrived."""
        import threading

        t0 = time.monotonic()
        p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        arrivals: list[float] = []
        lines: list[str] = []

        def read_err() -> None:
            for line in p.stderr:  # type: ignore[union-attr]
                arrivals.append(time.monotonic() - t0)
                lines.append(line)

        reader = threading.Thread(target=read_err)
        reader.start()
        stdout = p.stdout.read()  # type: ignore[union-attr]
        p.wait(timeout=900)
        reader.join()
        assert p.returncode == 0, "".join(lines)[-3000:]
        return json.loads(stdout), time.monotonic() - t0, arrivals

    first, t1, seen = run()
    # a person can follow it: something on stderr at least every 10 s, from start to end
    gaps = [b - a for a, b in zip([0.0, *seen], [*seen, t1], strict=True)]
    assert max(gaps) <= 10.0, f"silent for {max(gaps):.1f} s"
    assert first["labelling"] == {"found": 2, "labelled": 2}
    assert first["graph"]["folder_nodes"] >= 400
    (task,) = first["tasks"]
    assert task["task"] == "pets" and task["models"] == 2
    assert 0 < task["ensemble_top1"] <= 1 and task["oracle_top1"] >= task["inb_top1"]
    assert len(task["classes"]) == 12
    assert first["mlflow_tracking_uri"] == f"sqlite:///{data_root / 'mlflow.db'}"
    # deep links to what it made: the selection run and the Prefect flow run
    run_link = first["links"]["mlflow"]["selection run pets"]
    assert run_link.endswith(f"/runs/{task['mlflow_run_id']}")
    assert first["links"]["prefect"]["this demo run"].endswith(first["prefect_flow_run_id"])

    second, t2, _ = run()
    assert second["labelling"] == {"found": 0, "labelled": 0}  # past the watermark: nothing new
    assert second["tasks"][0]["mlflow_run_id"] == task["mlflow_run_id"]  # cached, not re-logged
    assert second["tasks"][0]["ensemble_top1"] == task["ensemble_top1"]
    assert t2 < t1
