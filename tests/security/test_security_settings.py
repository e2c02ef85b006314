"""Settings that direct a secret come from the user, and credentials never appear in error lines.

* A project config (``mll.toml`` in the working directory, e.g. a cloned repository) cannot point
  the caption provider, and with it the caption API key, at its own host: a real loopback HTTP
  server records what reaches it. Trusted by the user, the same directory may.
* The key is never sent over plain http to another host: refused before any connection.
* A down tracking server or Hub whose URL carries credentials: the CLI's error line (a real
  ``mll`` process, its stderr) names the host and the fix, never the password.
* A caption endpoint's error status or malformed answer is one line naming the endpoint.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import mll_registry
from mll_registry.task import Task, TaskClass

KEY = "sk-mllCaptionKey0123456789abcdefXYZ"
ROOT = Path(mll_registry.__file__).resolve().parents[1]


class _Captions:
    """A loopback ``/chat/completions`` server recording each request's Authorization header."""

    def __init__(self) -> None:
        self.auth: list[str | None] = []
        self.status = 200
        self.body: bytes = json.dumps({"choices": [{"message": {
            "content": "1. a furry pet\n- a loyal animal\n"}}]}).encode()
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                me.auth.append(self.headers.get("Authorization"))
                self.send_response(me.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(me.body)))
                self.end_headers()
                self.wfile.write(me.body)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def captions() -> Iterator[_Captions]:
    srv = _Captions()
    yield srv
    srv.stop()


@pytest.fixture()
def user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No settings from the person running the tests: an empty XDG config home, no MLL_* keys
    that direct the key; the caption key set. Returns the user's config file path."""
    for k in ("MLL_CONFIG", "MLL_CAPTION_URL", "MLL_CAPTION_PROVIDER", "MLL_TRUST_PROJECT_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return tmp_path / "xdg" / "mll" / "config.toml"


class _Embedder:
    """Deterministic text embeddings (a hash), so matching needs no sentence model."""

    name = key = "hash"

    def encode(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        import hashlib

        e = np.stack([np.frombuffer(hashlib.sha256(t.encode()).digest(), np.uint8)[:8]
                      for t in texts]).astype(np.float32) + 1.0
        return e / np.linalg.norm(e, axis=1, keepdims=True)


def _describe_as_selection_does(root: Path) -> list[list[str]]:
    """The configured caption provider describing a task, as `mll select` asks it."""
    from mll_registry.app.root import App
    from mll_registry.selection.matching import describe_task

    provider = App.configured().caption_provider
    task = Task("pets", [TaskClass("dog"), TaskClass("cat")], "pet photograph")
    return describe_task(task, provider, _Embedder(), root=root).descriptions


def _project(tmp_path: Path, url: str, extra: str = "") -> Path:
    proj = tmp_path / "cloned-task-repo"
    (proj / "sub").mkdir(parents=True)
    (proj / "mll.toml").write_text(
        f'caption_provider = "openai"\ncaption_url = "{url}"\nalpha = 0.8\n{extra}')
    return proj


def test_project_config_cannot_send_the_caption_key_elsewhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captions: _Captions, user_env: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from typer.testing import CliRunner

    from mll_registry.cli.main import app
    from mll_registry.settings import load_settings

    proj = _project(tmp_path, captions.url)
    monkeypatch.chdir(proj / "sub")  # found upwards, as ruff/pytest find theirs
    caplog.set_level(logging.WARNING)
    _describe_as_selection_does(tmp_path / "cache")
    assert captions.auth == []  # nothing reached the project's host, key or no key
    s = load_settings()
    assert (s.caption_provider, s.caption_url, s.alpha) == ("wordnet", None, 0.8)
    assert s.sources["alpha"] == str(proj / "mll.toml")  # the rest of the file still applies
    for key in ("caption_url", "caption_provider"):
        warned = [r.getMessage() for r in caplog.records if f"ignored {key} " in r.getMessage()]
        assert len(warned) == 1, caplog.text
        assert str(proj / "mll.toml") in warned[0] and "MLL_TRUST_PROJECT_CONFIG=1" in warned[0]
        assert "trusted_dirs" in warned[0] and str(user_env) in warned[0]
    res = CliRunner().invoke(app, ["settings", "--json"])
    assert res.exit_code == 0, res.output
    origins = json.loads(res.stdout)["origins"]
    assert origins["caption_url"] == f"default (ignored in the untrusted {proj / 'mll.toml'})"
    assert origins["alpha"] == str(proj / "mll.toml")


def test_a_project_cannot_trust_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       captions: _Captions, user_env: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """``trusted_dirs`` counts only in the user's own config."""
    from mll_registry.settings import load_settings

    proj = _project(tmp_path, captions.url, f"trusted_dirs = ['.', '{tmp_path}', '/']\n")
    monkeypatch.chdir(proj)
    caplog.set_level(logging.WARNING)
    assert load_settings().caption_url is None
    _describe_as_selection_does(tmp_path / "cache")
    assert captions.auth == []
    assert f"ignored trusted_dirs from the project config {proj / 'mll.toml'}" in caplog.text


@pytest.mark.parametrize("how", ["trusted_dirs", "env"])
def test_a_trusted_project_may_direct_the_key_to_loopback_http(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captions: _Captions, user_env: Path,
        how: str) -> None:
    from mll_registry.settings import load_settings

    proj = _project(tmp_path, captions.url)
    if how == "env":
        monkeypatch.setenv("MLL_TRUST_PROJECT_CONFIG", "1")
    else:
        user_env.parent.mkdir(parents=True)
        user_env.write_text(f"trusted_dirs = ['{proj}']\nk = 2\n")
    monkeypatch.chdir(proj / "sub")
    s = load_settings()
    assert (s.caption_provider, s.caption_url) == ("openai", captions.url)
    assert s.k == (2 if how == "trusted_dirs" else 1)
    got = _describe_as_selection_does(tmp_path / "cache")
    assert got == [["a furry pet", "a loyal animal"]] * 2
    assert captions.auth == [f"Bearer {KEY}"] * 2  # plain http is fine to this machine


def test_the_users_own_config_chooses_the_endpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captions: _Captions,
        user_env: Path) -> None:
    from mll_registry.settings import load_settings

    user_env.parent.mkdir(parents=True)
    user_env.write_text(f'caption_provider = "openai"\ncaption_url = "{captions.url}"\n')
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert (s.caption_url, s.sources["caption_url"]) == (captions.url, str(user_env))
    _describe_as_selection_does(tmp_path / "cache")
    assert captions.auth == [f"Bearer {KEY}"] * 2


def test_plain_http_to_another_host_is_refused_before_connecting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_env: Path) -> None:
    from mll_registry.app.root import App
    from mll_registry.selection.matching import OpenAICompatibleCaptions
    from mll_registry.settings import SettingsError, load_settings

    looked_up: list[object] = []

    def no_network(*a: object, **kw: object) -> object:
        looked_up.append(a[0] if a else kw)
        raise OSError("the test allows no lookup or connection")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.chdir(tmp_path)
    url = "http://user:pw0rd@captions.invalid/v1"
    app = App(load_settings({"caption_provider": "openai", "caption_url": url}))
    with pytest.raises(SettingsError) as err:
        _ = app.caption_provider
    msg = str(err.value)
    assert "https://" in msg and "$OPENAI_API_KEY" in msg and "captions.invalid" in msg
    assert "pw0rd" not in msg and KEY not in msg and "\n" not in msg
    task = Task("pets", [TaskClass("dog")], "pet photograph")
    for bad in (url, "ftp://captions.invalid/v1", "HTTP://captions.invalid./v1"):
        with pytest.raises(SettingsError, match="https://"):
            OpenAICompatibleCaptions(bad).describe(task.classes[0], task)
    assert looked_up == []
    OpenAICompatibleCaptions("https://captions.invalid/v1").check_transport()  # allowed
    monkeypatch.delenv("OPENAI_API_KEY")
    OpenAICompatibleCaptions(url).check_transport()  # no key: nothing secret to protect


@pytest.mark.parametrize(("status", "body", "says"), [
    (500, b'{"error": "boom"}', "answered HTTP 500"),
    (200, b"<html>not json</html>", "answered HTTP 200 with no chat completion"),
    (200, b'{"choices": []}', "answered HTTP 200 with no chat completion"),
    (200, b'{"choices": [{"message": {"content": 42}}]}', "answered HTTP 200 with no chat"),
])
def test_caption_endpoint_failures_are_one_line(
        captions: _Captions, user_env: Path, status: int, body: bytes, says: str) -> None:
    from mll_registry.cli.common import known_message
    from mll_registry.errors import CaptionProviderError
    from mll_registry.selection.matching import OpenAICompatibleCaptions

    captions.status, captions.body = status, body
    url = captions.url + "?api_key=qtoken0123456789"
    task = Task("pets", [TaskClass("dog")], "pet photograph")
    with pytest.raises(CaptionProviderError) as err:
        OpenAICompatibleCaptions(url).describe(task.classes[0], task)
    msg = str(err.value)
    assert msg.startswith(f"caption provider at {captions.url}?api_key=***") and says in msg
    assert "\n" not in msg and "qtoken0123456789" not in msg and KEY not in msg
    assert err.value.__cause__ is None  # no chained traceback either
    assert err.value.__context__ is None or err.value.__suppress_context__
    assert known_message(err.value) == msg  # the CLI prints it as one line, exit 2


def test_caption_endpoint_timeout_is_one_line(user_env: Path) -> None:
    from mll_registry.errors import CaptionProviderError
    from mll_registry.selection.matching import OpenAICompatibleCaptions

    silent = socket.socket()  # accepts the connection (backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        task = Task("pets", [TaskClass("dog")], "pet photograph")
        with pytest.raises(CaptionProviderError, match=r"did not answer within 0.3 s") as err:
            OpenAICompatibleCaptions(url, timeout=0.3).describe(task.classes[0], task)
        assert str(err.value).startswith(f"caption provider at {url} ")
    finally:
        silent.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mll(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A real ``mll`` process (this checkout's code) with a short retry budget."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MLL_", "HF_", "MLFLOW_"))}
    e.update(PYTHONPATH=str(ROOT), MLL_DATA_DIR=str(tmp_path / "data"), MLL_RETRY_BUDGET_S="1",
             XDG_CONFIG_HOME=str(tmp_path / "xdg"), HF_HOME=str(tmp_path / "hf"), **env)
    return subprocess.run([sys.executable, "-c", "from mll_registry.cli.main import run; run()", *args],
                          cwd=tmp_path, env=e, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("password", ["s3cret/h1dden", "s3cret:h1dden@v4lue", "s3cret"])
def test_down_tracking_server_error_shows_no_credentials(tmp_path: Path, password: str) -> None:
    port = _closed_port()
    out = _mll(["registry", "migrate"], tmp_path,
               MLFLOW_TRACKING_URI=f"http://mlluser:{password}@127.0.0.1:{port}")
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "Traceback" not in text
    for secret in ("mlluser", password, "s3cret", "h1dden", "v4lue"):
        assert secret not in text, text
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out.stderr
    assert f"http://***@127.0.0.1:{port}" in errors[0] and "MLFLOW_TRACKING_URI" in errors[0]


def test_hub_error_shows_no_endpoint_credentials(tree: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mll_registry.cli.main import app

    graph = tmp_path / "g"
    res = CliRunner().invoke(app, ["graph", "build", "-s", f"A={tree / 'A'}", "--out", str(graph)])
    assert res.exit_code == 0, res.output
    port = _closed_port()
    endpoint = f"http://u:hubsecret@127.0.0.1:{port}"
    out = _mll(["label", "hf-hub:org/model", "--graph", str(graph), "--out", str(tmp_path / "o"),
                "--device", "cpu"], tmp_path, HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="0",
               HF_TOKEN="hf_mllHubToken0123456789abcdefXYZ")
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "hubsecret" not in text and "u:" not in text and "hf_mllHubToken" not in text
    assert "Traceback" not in text
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"http://***@127.0.0.1:{port}" in errors[0], out.stderr
    assert "HF_ENDPOINT" in errors[0]


def test_hub_source_shows_no_endpoint_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's own error, repr and state key (a tag of the discovery runs), not only the
    CLI's line: a Prefect worker logs them."""
    from huggingface_hub import constants

    from mll_registry.hub.discovery import HfHubSource, HubUnavailable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    port = _closed_port()
    src = HfHubSource(f"http://u:hubsecret@127.0.0.1:{port}", tries=2, base_delay=0.01)
    plain = HfHubSource(f"http://127.0.0.1:{port}")
    with pytest.raises(HubUnavailable) as err:
        src.fetch_files("org/model")
    shown = [str(e) for e in (err.value, err.value.__cause__) if e is not None]
    shown += [repr(src), src.key]
    assert all("hubsecret" not in t for t in shown), shown
    assert f"http://***@127.0.0.1:{port}" in str(err.value)
    assert src.key == plain.key  # the same server keeps its discovery state
