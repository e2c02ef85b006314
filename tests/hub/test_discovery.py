"""Hub discovery and download with the real huggingface_hub client against a loopback Hub."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import missing_demo_hub
from hub_server import HubHandle, open_clip_repo_files, start_hub, use_hub

from mll_registry.errors import ModelRefError, PickledWeightsRefused
from mll_registry.hub.discovery import (
    HfHubSource,
    HubModel,
    HubSourceError,
    HubUnavailable,
    LocalDirHubSource,
)
from mll_registry.models import refs as hubmod

T0 = datetime(2025, 1, 1, tzinfo=UTC)
TOKEN = "hf_mll_dummy_token_0123456789"


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubHandle]:
    """A loopback Hub with two open_clip repos and one transformers repo; 1 model per page."""
    h = start_hub({
        "org/a": open_clip_repo_files("a"),
        "org/b": open_clip_repo_files("b"),
        "other/bert": {"README.md": b"---\nlibrary_name: transformers\n---\n# bert\n",
                       "config.json": b"{}"},
    }, created_at={"org/a": T0, "org/b": T0 + timedelta(hours=1),
                   "other/bert": T0 + timedelta(hours=2)}, page_size=1)
    use_hub(monkeypatch, h, cache_dir=tmp_path / "hf-cache", token=TOKEN)
    yield h
    h.stop()


def _source(hub: HubHandle, tmp_path: Path, sleeps: list[float] | None = None) -> HfHubSource:
    return HfHubSource(hub.url, cache_dir=tmp_path / "hf-cache", base_delay=0.01,
                       sleep=(sleeps.append if sleeps is not None else lambda s: None))


def test_list_new_only_newer(hub: HubHandle, tmp_path: Path) -> None:
    src = _source(hub, tmp_path)
    first = src.list_new(None, limit=10)
    assert [m.repo_id for m in first] == ["org/a", "org/b"]  # oldest first, bert filtered out
    assert first[0].ref == f"hf-hub:org/a@{hub.head('org/a')}"
    assert first[0].sha == hub.head("org/a") and first[0].created_at == T0
    assert "open_clip" in first[0].tags and first[0].last_modified is not None

    hub.add_repo("org/c", open_clip_repo_files("c"), created_at=T0 + timedelta(hours=3))
    hub.clear_log()
    again = src.list_new(T0 + timedelta(hours=1), limit=10)
    assert [m.repo_id for m in again] == ["org/c"]
    # newest first + stop at the watermark: the page holding org/a is never requested
    listing = [r for r in hub.requests if r.path.startswith("/api/models?")]
    assert len(listing) == 2  # pages [c], [b] (<= watermark: stop); [a] is not fetched
    assert src.list_new(T0 + timedelta(hours=3), limit=10) == []


def test_list_new_pages_oldest_first_and_keeps_ties(hub: HubHandle, tmp_path: Path) -> None:
    src = _source(hub, tmp_path)
    assert [m.repo_id for m in src.list_new(T0 - timedelta(days=1), limit=1)] == ["org/a"]
    assert [m.repo_id for m in src.list_new(None, limit=1)] == ["org/b"]  # first run: newest
    tie = T0 + timedelta(hours=5)
    hub.add_repo("org/t1", open_clip_repo_files("t1"), created_at=tie)
    hub.add_repo("org/t2", open_clip_repo_files("t2"), created_at=tie)
    got = src.list_new(T0 + timedelta(hours=1), limit=1)
    assert sorted(m.repo_id for m in got) == ["org/t1", "org/t2"]  # a tie is never split


def test_fetch_downloads_only_needed_files(hub: HubHandle, tmp_path: Path) -> None:
    files = open_clip_repo_files("p", pickled=True, extra={
        "tokenizer.json": b"{}", "training_args.bin": b"\x00pickle", "samples/x.png": b"\x89PNG"})
    sha = hub.add_repo("org/p", files)
    src = _source(hub, tmp_path)
    assert src.resolve_revision("org/p") == sha
    hub.clear_log()
    path = src.fetch("org/p")
    assert path.name == sha
    assert sorted(p.name for p in path.iterdir()) == [
        "open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json"]
    assert (path / "open_clip_model.safetensors").read_bytes() == files[
        "open_clip_model.safetensors"]
    fetched = [r.path for r in hub.requests if r.method == "GET"]
    assert not any(p.endswith(".bin") or "samples" in p for p in fetched), fetched
    cdn = [r for r in hub.requests if r.host == "localhost"]
    assert cdn and not any(r.had_auth for r in cdn)  # the token never goes to the "CDN"

    # a later commit moves main; the listed sha still fetches the listed content
    hub.add_repo("org/p", {**files, "open_clip_model.safetensors": open_clip_repo_files(
        "p-v2")["open_clip_model.safetensors"]}, message="v2")
    assert src.resolve_revision("org/p") != sha
    old = src.fetch("org/p", sha)
    assert old.name == sha
    assert (old / "open_clip_model.safetensors").read_bytes() == files[
        "open_clip_model.safetensors"]


def test_listed_ref_resolves_with_mll_hub(hub: HubHandle, tmp_path: Path) -> None:
    model = _source(hub, tmp_path).list_new(None, limit=1)[0]
    res = hubmod.resolve(model.ref, cache_dir=tmp_path / "hf-cache")
    assert res.revision == model.sha and res.weights.name == "open_clip_model.safetensors"


def test_pickle_only_repo_is_refused_without_download(hub: HubHandle, tmp_path: Path) -> None:
    hub.add_repo("org/pkl", open_clip_repo_files("pkl", weights=False, pickled=True))
    hub.clear_log()
    with pytest.raises(PickledWeightsRefused, match="pickled"):
        _source(hub, tmp_path).fetch("org/pkl")
    assert not any("/resolve/" in r.path for r in hub.requests)


def test_repo_without_open_clip_config_is_a_clear_error(hub: HubHandle, tmp_path: Path) -> None:
    hub.add_repo("org/noconf", open_clip_repo_files("noconf", config=False))
    with pytest.raises(ModelRefError) as err:
        _source(hub, tmp_path).fetch("org/noconf")
    msg = str(err.value)
    assert "hf-hub:org/noconf@" in msg and "no open_clip_config.json" in msg
    assert "open_clip layout" in msg and "open_clip_model.safetensors" in msg


def test_transient_503_is_retried(hub: HubHandle, tmp_path: Path) -> None:
    sleeps: list[float] = []
    hub.fail_next("GET", r"^/api/models/org/a$", status=503, times=2)
    path = _source(hub, tmp_path, sleeps).fetch("org/a")
    assert (path / "open_clip_config.json").is_file()
    assert sleeps == [0.01, 0.02]  # exponential backoff
    statuses = [r.status for r in hub.requests if r.path == "/api/models/org/a"]
    assert statuses == [503, 503, 200]

    hub.fail_next("GET", r"^/api/models/org/b$", status=429, times=1)
    assert _source(hub, tmp_path).resolve_revision("org/b") == hub.head("org/b")


def test_persistent_failure_gives_up_with_a_clear_message(hub: HubHandle, tmp_path: Path) -> None:
    sleeps: list[float] = []
    hub.fail_next("GET", r"^/api/models/org/a", status=502, times=100)
    with pytest.raises(HubUnavailable) as err:
        _source(hub, tmp_path, sleeps).fetch("org/a")
    assert len(sleeps) == 3  # 4 tries
    assert hub.url in str(err.value) and "retry later" in str(err.value)
    assert TOKEN not in str(err.value)


def test_not_found_is_not_retried(hub: HubHandle, tmp_path: Path) -> None:
    sleeps: list[float] = []
    src = _source(hub, tmp_path, sleeps)
    with pytest.raises(HubSourceError, match="repository not found.*HF_TOKEN"):
        src.fetch("org/missing")
    with pytest.raises(HubSourceError, match="revision not found"):
        src.fetch("org/a", "0" * 40)
    with pytest.raises(ModelRefError, match="ORG/NAME"):
        src.fetch("not-a-repo-id")
    assert sleeps == []


def test_offline_mode_is_named(hub: HubHandle, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubSourceError, match="HF_HUB_OFFLINE"):
        _source(hub, tmp_path).list_new(None, limit=5)


def test_token_is_not_shown(hub: HubHandle, tmp_path: Path) -> None:
    src = HfHubSource(hub.url, token="hf_secret_in_repr_987")
    assert "hf_secret_in_repr_987" not in repr(src)
    src.list_new(None, limit=2)
    assert "hf_secret_in_repr_987" not in hub.log_text() and TOKEN not in hub.log_text()


def _local_model(root: Path, repo: str, created: str | None = None) -> Path:
    d = root / repo
    d.mkdir(parents=True)
    files = open_clip_repo_files(repo.split("/")[1], readme=(
        f"---\nlibrary_name: open_clip\ntags: [clip, local]\ncreated_at: {created}\n---\n# m\n"
        if created else None))
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def test_local_dir_source_lists_only_newer(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    a = _local_model(root, "org/a", "2025-01-01T00:00:00Z")
    b = _local_model(root, "org/b", "2025-01-02T00:00:00Z")
    _local_model(root, "org/.half-written.tmp")  # hidden: an atomic write in progress
    (root / "org" / "notes").mkdir()  # no config: not a model
    src = LocalDirHubSource(root)
    models = src.list_new(None, limit=10)
    assert [m.repo_id for m in models] == ["org/a", "org/b"]
    assert models[0].ref == f"local-dir:{a}" and models[0].sha.startswith("sha256:")
    assert models[0].created_at == T0 and models[0].tags == ("clip", "local")
    assert models[0].sha == hubmod.resolve(f"local-dir:{a}").revision
    newest = max(m.created_at for m in models)
    assert src.list_new(newest) == []
    c = _local_model(root, "org/c")  # no created_at in the card: the directory mtime
    assert [m.ref for m in src.list_new(newest)] == [f"local-dir:{c}"]
    assert src.fetch("org/b", models[1].sha) == b
    with pytest.raises(HubSourceError, match="changed since it was listed"):
        src.fetch("org/b", "sha256:0000")
    with pytest.raises(HubSourceError, match="not in the local hub"):
        src.fetch("org/zzz")


def test_local_dir_source_on_the_demo_hub() -> None:
    root = Path(__file__).resolve().parents[2] / "demo_hub"
    if not any(root.glob("*/*/open_clip_config.json")):
        missing_demo_hub()
    models = LocalDirHubSource(root).list_new(None, limit=100)
    assert models and all(m.ref.startswith("local-dir:") for m in models)
    assert all(m.repo_id.startswith("mll-demo/") and m.sha.startswith("sha256:")
               for m in models)


def test_hub_model_to_dict_writes_iso_times() -> None:
    m = HubModel("o/n", "s", T0, None, (), "hf-hub:o/n@s")
    assert m.to_dict()["created_at"] == T0.isoformat()


def test_open_clip_refs_take_safetensors_and_refuse_pickles_before_downloading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``open_clip:ARCH/TAG`` is fetched from the tag's Hub repo as safetensors; a repo with only
    pickled weights is refused without downloading them; a Hub that cannot be reached is one
    clear error naming the way out."""
    from mll_registry.errors import ModelRefError, PickledWeightsRefused
    from mll_registry.models.refs import resolve

    hub = start_hub({"timm/vit_base_patch32_clip_224.openai": {
        "open_clip_pytorch_model.bin": b"\x80\x04pickled", "README.md": b"# openai"}})
    try:
        use_hub(monkeypatch, hub, cache_dir=tmp_path / "hf")
        with pytest.raises(PickledWeightsRefused, match="--allow-pickle"):
            resolve("open_clip:ViT-B-32/openai", cache_dir=tmp_path / "hf")
        assert not any(".bin" in r.path for r in hub.requests)  # nothing pickled was fetched
        assert any("open_clip_model.safetensors" in r.path for r in hub.requests)
    finally:
        hub.stop()
    with pytest.raises(ModelRefError, match="could not be fetched.*local-dir:PATH"):
        resolve("open_clip:ViT-B-32/laion2b_s34b_b79k", cache_dir=tmp_path / "hf")


# -- the shared discovery state (tracking server) --------------------------------------------------
def _m(repo: str, minutes: int) -> dict:
    return {"ref": f"hf-hub:{repo}@{'0' * 40}", "revision": "0" * 40, "repo_id": repo,
            "created_at": (T0 + timedelta(minutes=minutes)).isoformat()}


def test_discovery_state_moves_the_watermark_and_keeps_failures_for_retry() -> None:
    from mll_registry.registry.discovery_state import DiscoveryState

    st = DiscoveryState("src")
    page = [_m("o/a", 1), _m("o/b", 2), _m("o/c", 2)]
    st.record(page, {page[0]["ref"]: "boom"})
    assert st.since() == T0 + timedelta(minutes=2)  # past the whole page, failures included
    assert st.at_watermark == ["o/b", "o/c"]
    assert [m["repo_id"] for m in st.retries(3)] == ["o/a"]
    assert st.failed[page[0]["ref"]]["attempts"] == 1 and st.failed[page[0]["ref"]]["error"]
    # retried and failed twice more: given up (reported), no longer retried
    for _ in range(2):
        st.record(st.retries(3), {page[0]["ref"]: "boom again"})
    assert st.retries(3) == [] and [f["repo_id"] for f in st.given_up(3)] == ["o/a"]
    assert st.since() == T0 + timedelta(minutes=2)  # retries never move the watermark back
    # a retry that succeeds is dropped from the failures
    st2 = DiscoveryState.from_dict(st.to_dict())
    st2.record([page[0]], {})
    assert st2.failed == {} and st2.since() == T0 + timedelta(minutes=2)


def test_the_modification_watermark_starts_where_following_begins() -> None:
    from mll_registry.registry.discovery_state import DiscoveryState

    st = DiscoveryState("src", watermark=(T0 + timedelta(minutes=5)).isoformat())
    old = DiscoveryState.from_dict({k: v for k, v in st.to_dict().items()
                                    if k != "modified_watermark"})  # a state from before
    assert old.modified_since() is None
    st.record_updates([], {}, start=T0 + timedelta(days=1))
    assert st.modified_since() == T0 + timedelta(days=1) and st.pages == 0
    upd = {**_m("o/a", 1), "modified_at": (T0 + timedelta(days=2)).isoformat()}
    st.record_updates([upd], {upd["ref"]: "boom"})  # failures kept for retry, like new models
    assert st.modified_since() == T0 + timedelta(days=2)
    assert st.since() == T0 + timedelta(minutes=5)  # the creation watermark stays
    assert [m["repo_id"] for m in st.retries(3)] == ["o/a"]
    st.record_updates([], {}, start=T0)  # never moves back
    assert st.modified_since() == T0 + timedelta(days=2)


def test_the_hub_and_local_files_give_one_content_id(hub: HubHandle, tmp_path: Path) -> None:
    """From the Hub's per-file metadata (no download) and from the downloaded files, computed
    here with hashlib: the same id; another README leaves it, other weights change it."""
    import hashlib

    from mll_registry.models.refs import content_id, local_content_id, resolve

    src = _source(hub, tmp_path)
    sha = hub.head("org/a")
    files = hub.files("org/a")
    weights = hashlib.sha256(files["open_clip_model.safetensors"]).hexdigest()
    cfg = files["open_clip_config.json"]
    blob = hashlib.sha1(b"blob %d\0" % len(cfg) + cfg).hexdigest()
    want = content_id(weights, blob)
    assert src.content_id("org/a", sha) == want
    assert local_content_id(resolve(f"local-dir:{src.fetch('org/a', sha)}")) == want
    readme = hub.add_repo("org/a", {**files, "README.md": b"# another card\n"})
    assert src.content_id("org/a", readme) == want
    other = hub.add_repo("org/a", {**files, "open_clip_model.safetensors":
                                   open_clip_repo_files("zz")["open_clip_model.safetensors"]})
    assert src.content_id("org/a", other) not in (None, want)


def test_discovery_state_round_trips_through_the_tracking_server(tmp_path: Path) -> None:
    from mll_registry.registry.discovery_state import DiscoveryLog, DiscoveryState
    from mll_registry.registry.tracking import Tracking

    log = DiscoveryLog(Tracking(f"sqlite:///{tmp_path / 'm.db'}", root=tmp_path))
    assert log.load("src").watermark is None
    st = DiscoveryState("src")
    page = [_m("o/a", 1), _m("o/b", 5)]
    st.record(page, {page[1]["ref"]: "HTTP 503"})
    log.save(st, page, {page[1]["ref"]: "HTTP 503"}, labelled=1, max_attempts=3)
    other = DiscoveryState("other")
    other.record([_m("o/z", 9)], {})
    log.save(other, [], {}, labelled=0, max_attempts=3)
    back = log.load("src")  # a fresh reader (another worker) sees the same state
    assert back.since() == T0 + timedelta(minutes=5)
    assert list(back.failed) == [page[1]["ref"]] and back.failed[page[1]["ref"]]["attempts"] == 1
    assert log.load("other").since() == T0 + timedelta(minutes=9)
