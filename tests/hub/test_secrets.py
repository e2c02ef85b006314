"""The Hub token goes to the Hub in the Authorization header and nowhere else.

The label path (download from the Hub, label, register in MLflow) and the card push run with
DEBUG logging on for every logger; then the token is searched for in the captured logs, the
process's stdout/stderr, what the Hub received outside the Authorization header (paths, other
headers, bodies), the MLflow runs' params and tags, and every file under the data directory,
the MLflow store and the Hugging Face cache.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hub_server import start_hub, use_hub

TOKEN = "hf_mllSecretToken0123456789abcdefXYZ"
DEMO = Path(__file__).resolve().parents[2] / "demo_hub" / "mll-demo" / "vit-food"


def _files_with(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.slow
def test_token_appears_nowhere_but_the_authorization_header(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str], tree: Path) -> None:
    from mll_registry.app.root import App
    from mll_registry.graph.bundle import SampleDataset, build_graph
    from mll_registry.hub.cards import push_card
    from mll_registry.labels.format import ModelLabel
    from mll_registry.registry.labels import Registry
    from mll_registry.settings import Settings

    hub = start_hub({"org/model": DEMO}, tokens=[TOKEN])
    try:
        use_hub(monkeypatch, hub, cache_dir=tmp_path / "hf-cache", token=TOKEN)
        caplog.set_level(logging.DEBUG)
        for name in ("", "huggingface_hub", "httpx", "httpcore", "urllib3", "mlflow", "filelock"):
            logging.getLogger(name).setLevel(logging.DEBUG)
        graph = build_graph([SampleDataset("A", tree / "A")])[0]
        reg = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", root=tmp_path / "data")
        app = App(Settings(top_k=4, device="cpu", data_dir=str(tmp_path / "data")), registry=reg,
                  label_stores={"registry": reg})
        out = app.labelling.label("hf-hub:org/model", graph).to_dict()
        assert out["status"] == "labelled"
        pushed = push_card("org/model", ModelLabel.load(out["path"]))
        assert pushed["pr_url"]
        seen = capfd.readouterr()
        # the Hub got it where it belongs, and only there
        auth = [v for r in hub.requests for k, v in r.headers.items()
                if k.lower() == "authorization"]
        assert f"Bearer {TOKEN}" in auth
        assert TOKEN not in hub.received_except_auth()
        assert TOKEN not in caplog.text and TOKEN not in seen.out and TOKEN not in seen.err
        assert len(caplog.records) > 50  # DEBUG logging really was on
        for run in reg.client.search_runs([reg.experiment("mll-labels")]):
            assert TOKEN not in json.dumps(run.data.params) + json.dumps(run.data.tags)
        for v in reg.versions(out["name"]):
            assert TOKEN not in json.dumps(v.tags)
        assert _files_with(tmp_path, TOKEN.encode()) == []
    finally:
        hub.stop()

