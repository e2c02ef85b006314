"""Opt-in: the real Hugging Face Hub (needs HF_TOKEN and MLL_LIVE_TESTS=1; read-only)."""

from __future__ import annotations

import os

import pytest

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not (os.environ.get("HF_TOKEN") and os.environ.get("MLL_LIVE_TESTS") == "1"),
                       reason="live Hub test: set HF_TOKEN and MLL_LIVE_TESTS=1"),
]


def test_list_open_clip_models_and_read_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi, constants

    from mll_registry.hub.discovery import HfHubSource

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest sets offline mode
    endpoint = "https://huggingface.co"
    models = HfHubSource(endpoint).list_new(None, limit=3)
    assert 1 <= len(models) <= 3
    assert [m.created_at for m in models] == sorted(m.created_at for m in models)
    assert all(m.ref == f"hf-hub:{m.repo_id}@{m.sha}" and len(m.sha) == 40 for m in models)
    info = HfApi(endpoint=endpoint).model_info(models[-1].repo_id, revision=models[-1].sha)
    assert info.sha == models[-1].sha and info.created_at is not None
