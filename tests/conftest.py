"""Shared fixtures. Everything is offline and real: real nltk WordNet, real PIL images."""

from __future__ import annotations

import os

# Offline, no telemetry: set before any library import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh data directory for the whole session (provisioning is part of what we test).

    ``MLL_TEST_DATA_DIR`` reuses a directory across runs (faster local iterations).
    """
    root = Path(os.environ.get("MLL_TEST_DATA_DIR") or tmp_path_factory.mktemp("mll-data"))
    os.environ["MLL_DATA_DIR"] = str(root)
    return root


def write_png(path: Path, value: int, size: int = 8) -> Path:
    """A tiny solid-colour PNG whose content is determined by ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value % 256, np.uint8)).save(path)
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A small hand-made sample-dataset tree.

    A/dog.n.01/0..2.png        3 dog images (folder named by synset id)
    A/n02121808/0..1.png       2 domestic cat images (folder named by wnid)
    A/n02121808/bad.png        unreadable
    A/n02121808/notes.txt      not an image
    A/not_a_synset/0.png       unknown folder name
    A/n99999999/0.png          wnid-shaped but no such synset
    B/n02084071/x.png          1 more dog image, in another source, named by wnid
    """
    for i in range(3):
        write_png(tmp_path / "A" / "dog.n.01" / f"{i}.png", 10 + i)
    for i in range(2):
        write_png(tmp_path / "A" / "n02121808" / f"{i}.png", 50 + i)
    (tmp_path / "A" / "n02121808" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "A" / "n02121808" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "A" / "not_a_synset" / "0.png", 99)
    write_png(tmp_path / "A" / "n99999999" / "0.png", 98)
    write_png(tmp_path / "B" / "n02084071" / "x.png", 77)
    return tmp_path


def missing_asset(what: str, provide: str) -> None:
    """An asset a test needs is missing: skip on a developer's machine, fail in CI (``CI=true``),
    where a green run must mean the test ran. ``provide`` is the command that provides it."""
    msg = f"{what} missing; provide it with: {provide}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def missing_sources(detail: str = "") -> None:
    missing_asset(f"demo image sources {detail}".strip(),
                  "bash scripts/bootstrap.sh env (as root it installs fonts-noto-color-emoji, "
                  "fonts-symbola and ruby-gemojione)")


def missing_demo_hub() -> None:
    missing_asset("the demo hub", "a clone of the repository (demo_hub/), MLL_DEMO_HUB, or "
                  "uv run python scripts/train_demo_hub.py")


def label_and_register(ref: str, graph, cfg, registry, force: bool = False,
                       same_as: str | None = None, **_: object) -> dict:
    """Label ``ref`` with ``cfg`` (a LabelConfig) into ``registry`` through the assembly layer."""
    from mll_registry.app.root import App
    from mll_registry.settings import Settings

    s = Settings(templates=cfg.templates, text_source=cfg.text_source, top_k=cfg.top_k,
                 device=cfg.device, data_dir=str(registry.root) if registry.root else None)
    a = App(s, registry=registry, label_stores={"registry": registry})
    return a.labelling.label(ref, graph, force=force, same_as=same_as).to_dict()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` on loopback (sqlite backend, proxied artifacts), for the session."""
    import subprocess
    import sys
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    exe = Path(sys.executable).parent / "mlflow"
    log = open(root / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("mlflow server did not start in 120 s")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


# one production stack (deploy/ scripts, both servers authenticated) per session, shared by the
# modules that use the fixture `production_stack` (tests/production_stack.py)
from production_stack import production_stack_fixture  # noqa: E402

production_stack = production_stack_fixture()
