"""Screenshots of what a user sees in the MLflow and Prefect UIs after a labelling run.

Starts a real `mlflow server` and `prefect server` on loopback in a temporary directory, labels
one demo model through the `label-model` flow against both, then has headless Chromium render
(and dump the DOM of) two pages:

* the MLflow model-version page of the labelled model (it links the label run);
* the Prefect flow-run page of the labelling (named from its parameters, with its INFO logs).

    uv run python scripts/ui_screenshots.py --out ui-shots   # needs Debian's chromium

Writes ``mlflow-model-version.png``/``.html`` and ``prefect-flow-run.png``/``.html`` and prints
a JSON summary (URLs, what was found on each page). Exit 2 with a clear message when chromium
is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"{url} not up after {timeout} s")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return str(shutil.which(name))
    sys.stderr.write("error: no chromium on PATH; install Debian's `chromium` package "
                     "(bash scripts/bootstrap.sh does as root)\n")
    raise SystemExit(2)


def render(url: str, out: Path, profile: Path, wait_ms: int = 20000) -> str:
    """Screenshot ``url`` to ``out``.png and return its DOM after scripts ran."""
    exe = chromium()
    base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1440,1000",
            f"--virtual-time-budget={wait_ms}"]
    subprocess.run([*base, f"--screenshot={out.with_suffix('.png')}", url], check=True,
                   capture_output=True, timeout=180)
    dom = subprocess.run([*base, "--dump-dom", url], check=True, capture_output=True,
                         text=True, timeout=180).stdout
    out.with_suffix(".html").write_text(dom, encoding="utf-8")
    return dom


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("ui-shots"))
    ap.add_argument("--model", default="vit-animals", help="demo model to label")
    args = ap.parse_args()
    chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mll-ui-"))
    mport, pport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{mport}",
               PREFECT_API_URL=f"http://127.0.0.1:{pport}/api", PREFECT_HOME=str(work / "ph"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="true",
               MLFLOW_DISABLE_TELEMETRY="true", PREFECT_LOGGING_LEVEL="INFO",
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", HF_HUB_OFFLINE="1",
               MLL_DATA_DIR=os.environ.get("MLL_DATA_DIR") or str(work / "data"))
    procs = []
    try:
        for cmd, name in (
                ([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mport),
                  "--workers", "1", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
                  "--artifacts-destination", str(work / "artifacts")], "mlflow"),
                ([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                  str(pport)], "prefect")):
            log = work / f"{name}.log"
            procs.append((subprocess.Popen(cmd, env=env, stdout=open(log, "w"),  # noqa: SIM115
                                           stderr=subprocess.STDOUT, start_new_session=True),
                          log))
        wait_http(f"http://127.0.0.1:{mport}/health", *procs[0])
        wait_http(f"http://127.0.0.1:{pport}/api/health", *procs[1])
        script = f"""
import json
from pathlib import Path
from conftest_free import build_small_graph
from flows.labeling import label_model
g = build_small_graph(Path({str(work)!r}))
out = label_model(model_ref="local-dir:{ROOT / 'demo_hub' / 'mll-demo' / args.model}",
                  graph=str(g), device="cpu", return_state=True)
from prefect.runtime import flow_run
res = out.result()
print("RESULT " + json.dumps({{"flow_run_id": str(out.state_details.flow_run_id),
                              "name": res["name"], "version": res["version"],
                              "run_id": res["run_id"]}}))
"""
        helper = work / "conftest_free.py"
        helper.write_text(
            "from pathlib import Path\n"
            "def build_small_graph(work: Path) -> Path:\n"
            "    import numpy as np\n"
            "    from PIL import Image\n"
            "    from mll_registry.app.root import App\n"
            "    App.configured().setup(demo=False)\n"
            "    for syn, base in (('dog.n.01', 10), ('n02121808', 120), ('car.n.01', 200)):\n"
            "        for i in range(3):\n"
            "            p = work / 'src' / syn / f'{i}.png'\n"
            "            p.parent.mkdir(parents=True, exist_ok=True)\n"
            "            Image.fromarray(np.full((32, 32, 3), base + 10 * i, np.uint8)).save(p)\n"
            "    return App.configured().graphs.build(['toy=' + str(work / 'src')],\n"
            "                                        out=work / 'graph').path\n")
        r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                           text=True, timeout=600,
                           env={**env, "PYTHONPATH": f"{work}{os.pathsep}{ROOT}"})
        if r.returncode != 0:
            raise RuntimeError(f"the labelling flow failed: {r.stderr[-3000:]}")
        res = json.loads(next(ln[7:] for ln in r.stdout.splitlines() if ln.startswith("RESULT ")))
        profile = work / "chromium"
        pages = {
            "mlflow-model-version": (f"http://127.0.0.1:{mport}/#/models/{res['name']}/versions/"
                                     f"{res['version']}", [res["name"], "Source Run", "Source Model",
                                                            "labeled"]),
            "prefect-flow-run": (f"http://127.0.0.1:{pport}/runs/flow-run/{res['flow_run_id']}",
                                 ["label local-dir:", "encoding images", "Completed"]),
        }
        summary: dict[str, object] = {"result": res, "pages": {}}
        for name, (url, wants) in pages.items():
            dom = render(url, args.out / name, profile)
            summary["pages"][name] = {"url": url, "found": {w: w in dom for w in wants},  # type: ignore[index]
                                      "png": str((args.out / name).with_suffix(".png"))}
        print(json.dumps(summary, indent=2))
    finally:
        for p, _ in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
