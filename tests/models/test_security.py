"""Attacks an untrusted model or a planted file can try, each reproduced and shown to fail safely.

1. code execution from a model's config (remote-code tokenizer, local and through the loopback Hub,
   including an ``auto_map`` that points at *another* repo);
2. taking over another model's registered name;
3. a registration killed with SIGKILL (must not wedge the model);
4. a pickled label-index cache (must be refused and rebuilt).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import label_and_register
from hub_server import HubHandle, start_hub, use_hub

from mll_registry.errors import ModelRefError, UnsafeModelError
from mll_registry.models.config import validate_config
from mll_registry.models.loading import load
from mll_registry.models.refs import resolve

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo_hub" / "mll-demo"


def _evil_code(marker: Path) -> bytes:
    """A tokenizer module whose import creates ``marker`` (what an attacker's payload would do)."""
    return textwrap.dedent(f"""
        import pathlib
        pathlib.Path({str(marker)!r}).write_text("pwned")
        from transformers import PreTrainedTokenizerFast as EvilTokenizer
    """).encode()


def _evil_repo_files(marker: Path, auto_map_target: str, with_code: bool) -> dict[str, bytes]:
    """A real demo model whose config asks for a remote-code HF tokenizer."""
    src = DEMO / "vit-food"
    cfg = json.loads((src / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"].update(
        hf_tokenizer_name="bert-base-uncased", tokenizer_kwargs={"trust_remote_code": True})
    files = {p.name: p.read_bytes() for p in src.iterdir() if p.is_file()}
    files["open_clip_config.json"] = json.dumps(cfg).encode()
    files["tokenizer_config.json"] = json.dumps({
        "auto_map": {"AutoTokenizer": [auto_map_target, None]},
        "model_max_length": 32}).encode()
    if with_code:
        files["tokenization_evil.py"] = _evil_code(marker)
    return files


def _write(d: Path, files: dict[str, bytes]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


# -- 1. no code from a model's files ------------------------------------------------------------
def test_remote_code_tokenizer_in_local_dir_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    d = _write(tmp_path / "evil" / "vit-food",
               _evil_repo_files(marker, "tokenization_evil.EvilTokenizer", with_code=True))
    with pytest.raises(UnsafeModelError, match="trust_remote_code"):
        load(f"local-dir:{d}", device="cpu")
    assert not marker.exists()


def test_auto_map_without_trust_flag_is_refused(tmp_path: Path) -> None:
    """Even with benign tokenizer kwargs, a tokenizer_config naming code is not followed."""
    marker = tmp_path / "pwned"
    files = _evil_repo_files(marker, "tokenization_evil.EvilTokenizer", with_code=True)
    cfg = json.loads(files["open_clip_config.json"])
    cfg["model_cfg"]["text_cfg"]["tokenizer_kwargs"] = {"clean": "whitespace"}
    files["open_clip_config.json"] = json.dumps(cfg).encode()
    d = _write(tmp_path / "evil2" / "m", files)
    with pytest.raises(UnsafeModelError, match="auto_map"):
        load(f"local-dir:{d}", device="cpu")
    assert not marker.exists()


@pytest.fixture()
def evil_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[HubHandle, Path]]:
    marker = tmp_path / "pwned-through-hub"
    hub = start_hub({
        "mallory/code": {"tokenization_evil.py": _evil_code(marker),
                         "README.md": b"---\nlicense: mit\n---\n"},
        "mallory/victim": _evil_repo_files(
            marker, "mallory/code--tokenization_evil.EvilTokenizer", with_code=False),
    })
    use_hub(monkeypatch, hub, cache_dir=tmp_path / "hf-cache")
    yield hub, marker
    hub.stop()


def test_cross_repo_auto_map_through_the_hub_is_refused(evil_hub: tuple[HubHandle, Path]) -> None:
    hub, marker = evil_hub
    with pytest.raises(UnsafeModelError):
        load("hf-hub:mallory/victim", device="cpu")
    assert not marker.exists()
    assert "mallory/code" not in hub.log_text()  # the other repo was never even asked


def test_cross_repo_auto_map_is_refused_even_without_the_trust_flag(
        evil_hub: tuple[HubHandle, Path], tmp_path: Path) -> None:
    hub, marker = evil_hub
    files = hub.files("mallory/victim")
    cfg = json.loads(files["open_clip_config.json"])
    cfg["model_cfg"]["text_cfg"].pop("tokenizer_kwargs")
    files["open_clip_config.json"] = json.dumps(cfg).encode()
    hub.add_repo("mallory/victim2", files)
    with pytest.raises(UnsafeModelError, match="auto_map"):
        load("hf-hub:mallory/victim2", device="cpu")
    assert not marker.exists()
    assert "mallory/code" not in hub.log_text()


@pytest.mark.parametrize(("section", "key", "value", "why"), [
    ("text_cfg", "hf_model_name", "attacker/text-tower", "another repository"),
    ("text_cfg", "hf_model_pretrained", True, "safetensors"),
    ("vision_cfg", "timm_model_pretrained", True, "wrong type"),
    ("vision_cfg", "timm_model_name", "hf-hub:attacker/x", "wrong type"),
    ("text_cfg", "tokenizer_kwargs", {"bpe_path": "/etc/passwd"}, "outside"),
    ("text_cfg", "tokenizer_kwargs", {"cache_dir": "/tmp"}, "outside"),
    ("text_cfg", "tokenizer_kwargs", {"revision": "other"}, "another revision"),
    ("vision_cfg", "surprise", 1, "unknown key"),
    ("vision_cfg", "width", "128", "wrong type"),
    ("vision_cfg", "width", True, "wrong type"),
    ("model", "multimodal_cfg", {}, "CoCa"),
])
def test_config_allow_list_refuses(section: str, key: str, value: object, why: str) -> None:
    cfg = json.loads((DEMO / "vit-food" / "open_clip_config.json").read_text())
    target = cfg["model_cfg"] if section == "model" else cfg["model_cfg"][section]
    target[key] = value
    with pytest.raises(UnsafeModelError, match=why):
        validate_config(cfg, "test")


def test_every_allowed_key_is_a_real_open_clip_option() -> None:
    """The allow-list names only fields open_clip knows (a typo would be a silent hole)."""
    import dataclasses

    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    from mll_registry.models.config import TEXT_KEYS, VISION_KEYS

    assert set(VISION_KEYS) <= {f.name for f in dataclasses.fields(CLIPVisionCfg)}
    assert set(TEXT_KEYS) <= {f.name for f in dataclasses.fields(CLIPTextCfg)}


def test_demo_models_pass_validation_and_load() -> None:
    for d in sorted(DEMO.iterdir()):
        lm = load(f"local-dir:{d}", device="cpu")
        assert lm.tokenizer(["a dog"]).shape == (1, 32)


def test_local_hf_tokenizer_from_the_repo_itself_loads(tmp_path: Path) -> None:
    """A legitimate HF tokenizer (files in the repo, built-in class) still works."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    d = tmp_path / "org" / "hf-tok"
    shutil.copytree(DEMO / "vit-food", d)
    vocab = {"[PAD]": 0, "[UNK]": 1, "a": 2, "dog": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "[PAD]",
        "unk_token": "[UNK]"}))
    cfg = json.loads((d / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"].update(hf_tokenizer_name="org/hf-tok",
                                        tokenizer_kwargs={"clean": "whitespace"})
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    lm = load(f"local-dir:{d}", device="cpu")
    ids = lm.tokenizer(["a dog"])
    assert ids.shape == (1, 32) and ids[0, :2].tolist() == [2, 3]


def test_non_ascii_hub_names_do_not_fold_into_another_name() -> None:
    with pytest.raises(ModelRefError):
        resolve("hf-hub:mll-demo/vit-fööd")
    with pytest.raises(ModelRefError):
        resolve("hf-hub:mll--demo/vit-food")


# -- 2-4: the registry ---------------------------------------------------------------------------
@pytest.fixture()
def graph(tree: Path):
    from mll_registry.graph.bundle import SampleDataset, build_graph

    return build_graph([SampleDataset("A", tree / "A"), SampleDataset("B", tree / "B")])[0]


@pytest.fixture()
def registry(tmp_path: Path):
    from mll_registry.registry.labels import Registry

    return Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", root=tmp_path / "data")


def _cfg():
    from mll_registry.labels.labeller import LabelConfig

    return LabelConfig(top_k=4, device="cpu")


@pytest.mark.slow
def test_name_takeover_by_a_local_copy_fails(registry, graph, tmp_path: Path) -> None:
    from mll_registry.models.refs import registered_name
    from mll_registry.registry.labels import ALIAS

    real = f"local-dir:{DEMO / 'vit-food'}"
    fake_dir = tmp_path / "any" / "where" / "mll-demo" / "vit-food"
    shutil.copytree(DEMO / "vit-animals", fake_dir)  # another model's bytes under the same name
    mine = label_and_register(real, graph, _cfg(), registry, root=registry.root)
    theirs = label_and_register(f"local-dir:{fake_dir}", graph, _cfg(), registry,
                                root=registry.root)
    assert mine["name"] != theirs["name"]
    assert registered_name("hf-hub:mll-demo/vit-food") not in {mine["name"], theirs["name"]}
    c = registry.client
    alias = c.get_model_version_by_alias(mine["name"], ALIAS)
    assert alias.run_id == mine["run_id"] and int(alias.version) == mine["version"] == 1
    assert len(registry.versions(mine["name"])) == 1
    by_ref = {v.model_ref: v.run_id for v in registry.latest_per_model(graph.version)}
    assert by_ref[real] == mine["run_id"]  # the real model is still selectable with its label
    assert registry.latest_for(real).run_id == mine["run_id"]


@pytest.mark.slow
def test_legacy_shared_name_is_split_by_migration(registry, graph, tmp_path: Path) -> None:
    """A registry written by the old naming (two sources under one name) migrates apart."""
    import unittest.mock as um

    from mll_registry.models.refs import registered_name
    from mll_registry.models.schemes import LocalDirScheme
    from mll_registry.registry import labels as R

    real = f"local-dir:{DEMO / 'vit-food'}"
    fake_dir = tmp_path / "x" / "mll-demo" / "vit-food"
    shutil.copytree(DEMO / "vit-animals", fake_dir)
    legacy = R.legacy_registered_name(real)
    assert legacy == R.legacy_registered_name(f"local-dir:{fake_dir}") == "mll-demo--vit-food"
    with um.patch.object(LocalDirScheme, "registered_name",
                         lambda self, ref: R.legacy_registered_name(ref)):
        a = label_and_register(real, graph, _cfg(), registry, root=registry.root)
        b = label_and_register(f"local-dir:{fake_dir}", graph, _cfg(), registry,
                               root=registry.root)
    assert a["name"] == b["name"] == legacy and (a["version"], b["version"]) == (1, 2)
    registry.client.delete_registered_model_tag(legacy, "mll.naming")  # as old releases wrote it
    # even before migrating, both sources are visible (grouped by source, not by name)
    assert {v.model_ref for v in registry.latest_per_model(graph.version)} == {
        real, f"local-dir:{fake_dir}"}
    moved = registry.migrate_names()
    assert sorted(m["to"] for m in moved) == sorted([registered_name(real),
                                                     registered_name(f"local-dir:{fake_dir}")])
    assert registry.migrate_names() == []  # idempotent
    v = registry.client.get_model_version_by_alias(registered_name(real), R.ALIAS)
    assert v.run_id == a["run_id"] and v.tags["mll.status"] == "ready"
    assert registry.versions(legacy) == []


def _kill_during_registration(tmp_path: Path, uri: str, graph_dir: Path, ref: str) -> int:
    """Label + register in a child that SIGKILLs itself right after the version is created."""
    script = textwrap.dedent(f"""
        import os, signal
        from mlflow import MlflowClient
        from mll_registry.graph.bundle import SemanticGraph
        from mll_registry.app.root import App
        from mll_registry.registry.labels import Registry
        from mll_registry.settings import Settings
        real = MlflowClient.create_model_version
        def create_then_die(self, *a, **k):
            v = real(self, *a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        MlflowClient.create_model_version = create_then_die
        reg = Registry({uri!r}, root={str(tmp_path / 'data')!r})
        App(Settings(top_k=4, device="cpu", data_dir=str(reg.root)), registry=reg,
            label_stores={{"registry": reg}}).labelling.label(
            {ref!r}, SemanticGraph.load({str(graph_dir)!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ})
    return proc.returncode


@pytest.mark.slow
def test_kill_during_registration_does_not_wedge(registry, graph, tmp_path: Path) -> None:
    from mll_registry.models.refs import registered_name
    from mll_registry.registry.labels import ALIAS

    ref = f"local-dir:{DEMO / 'vit-symbols'}"
    graph_dir = graph.save(tmp_path / "graph")
    rc = _kill_during_registration(tmp_path, registry.uri, graph_dir, ref)
    assert rc == -signal.SIGKILL
    name = registered_name(ref)
    left = registry.versions(name)
    assert [v.tags["mll.status"] for v in left] == ["registering"]  # the wedge, reproduced
    out = label_and_register(ref, graph, _cfg(), registry, root=registry.root)
    assert out["status"] == "labelled"
    versions = {int(v.version): v.tags["mll.status"] for v in registry.versions(name)}
    assert versions == {out["version"]: "ready"}  # the stale one is gone, ours is ready
    assert not {"mll.lease_owner", "mll.lease_until"} & set(registry.versions(name)[0].tags)
    alias = registry.client.get_model_version_by_alias(name, ALIAS)
    assert int(alias.version) == out["version"]
    assert registry.latest_for(ref, graph.version).version == out["version"]
    again = label_and_register(ref, graph, _cfg(), registry, root=registry.root)
    assert again["status"] == "skipped" and again["version"] == out["version"]


def test_live_lease_is_respected_and_expired_or_dead_ones_are_not() -> None:
    import time

    from mll_registry.registry.labels import lease_stale, lease_tags

    mine = lease_tags(60)
    assert not lease_stale(mine)  # this process, lease running
    assert lease_stale({**mine, "mll.lease_until": str(time.time() - 1)})  # expired
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = mine["mll.lease_owner"].split(":")[0]
    assert lease_stale({**mine, "mll.lease_owner": f"{host}:{dead.pid}:1"})  # owner gone
    assert not lease_stale({**mine, "mll.lease_owner": f"other-host:{dead.pid}:1"})
    assert lease_stale({})  # a legacy version without a lease


@pytest.mark.slow
def test_pickled_label_index_is_refused_and_rebuilt(registry, graph, tmp_path: Path) -> None:
    from mll_registry.registry.label_index import LabelIndex

    ref = f"local-dir:{DEMO / 'vit-food'}"
    out = label_and_register(ref, graph, _cfg(), registry, root=registry.root)
    idx = LabelIndex(registry, graph.version, max_age=3600).refresh()
    node = idx.nodes[0]
    expect = [(h.model_ref, h.acc1) for h in idx.best(node)]
    marker = tmp_path / "pwned-by-pickle"
    payload = tmp_path / "payload.py"
    payload.write_text(textwrap.dedent(f"""
        import os
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        import payload as evil  # type: ignore[import-not-found]

        bad = np.empty(1, dtype=object)
        bad[0] = evil.Evil()
        np.savez(idx.path / "index.npz", acc1=bad, acc5=bad, own=bad, n_images=bad, nodes=bad)
    finally:
        sys.path.remove(str(tmp_path))
    fresh = LabelIndex(registry, graph.version, max_age=3600).refresh()
    assert not marker.exists()
    assert [(h.model_ref, h.acc1) for h in fresh.best(node)] == expect
    assert fresh.versions[0].run_id == out["run_id"]
    with np.load(fresh.path / "index.npz", allow_pickle=False) as z:  # rewritten, pickle-free
        assert {k: z[k].dtype.kind for k in z.files} == {  # no object array among them
            "acc1": "f", "acc5": "f", "own": "f", "n_images": "i", "src_n": "i", "src_ok": "b",
            "signature": "U"}


def test_absurd_config_is_refused_before_allocation(tmp_path: Path) -> None:
    """A config whose estimate is ~100 GB is refused by load(), before open_clip builds it."""
    import resource

    from mll_registry.models.config import estimate_bytes

    d = tmp_path / "huge" / "m"
    shutil.copytree(DEMO / "vit-food", d)
    cfg = json.loads((d / "open_clip_config.json").read_text())
    cfg["model_cfg"]["vision_cfg"].update(width=13_000, layers=12, head_width=64)
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    params, acts = estimate_bytes(cfg["model_cfg"])
    assert 80e9 < params + acts < 200e9  # the estimate this test is about: ~100 GB
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UnsafeModelError, match=r"about [0-9,.]+ GB .* over the limit of 16 GB"):
        load(f"local-dir:{d}", device="cpu")
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert grew_mb < 500, grew_mb  # nothing near the model's size was allocated
    # a genuine large model passes with a raised limit (only the estimate is checked here)
    from mll_registry.models.config import check_size

    assert check_size(cfg["model_cfg"], "m", max_gb=1e4) > 16


def test_real_architectures_are_estimated_within_a_few_percent() -> None:
    import open_clip

    from mll_registry.models.config import estimate_bytes

    for arch, real_m in (("ViT-B-32", 151.28), ("RN50", 102.01)):  # open_clip's own counts
        est_m = estimate_bytes(open_clip.get_model_config(arch))[0] / 4 / 1e6
        assert abs(est_m - real_m) / real_m < 0.03, (arch, est_m)
