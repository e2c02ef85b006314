"""Bad input gives one line naming the problem and the fix, never a traceback or a silent misread.

1. crafted label headers on the selection path (wrong types, overlapping arrays, offsets outside
   the data, shapes whose size overflows) and damaged summaries: one-line LabelError;
2. local-dir weights: a file over ``max_model_gb`` is refused before it is read, and an
   unchanged file is hashed once across discovery listings (a changed one again);
3. Hub ids differing only in case are one model under one registered name;
4. two registrations racing with different label settings leave ``labeled`` on the version
   with the default settings.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_png

from mll_registry.errors import UnsafeModelError
from mll_registry.labels.format import LabelError

DEMO = Path(__file__).resolve().parents[2] / "demo_hub" / "mll-demo"


# -- shared: a real graph, a real tiny model and its real label --------------------------------
@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory):
    from mll_registry.graph.bundle import SampleDataset, build_graph

    root = tmp_path_factory.mktemp("samples")
    for i in range(3):
        write_png(root / "A" / "dog.n.01" / f"{i}.png", 10 + i)
    for i in range(2):
        write_png(root / "A" / "n02121808" / f"{i}.png", 50 + i)
    write_png(root / "B" / "n02084071" / "x.png", 77)
    return build_graph([SampleDataset("A", root / "A"), SampleDataset("B", root / "B")])[0]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mll_registry.demo.archs import build_tiny
    from mll_registry.models.loading import save_open_clip_dir

    m, cfg = build_tiny("tiny-vit", seed=3)
    return save_open_clip_dir(m, cfg, tmp_path_factory.mktemp("models") / "org" / "tiny")


def _app(data: Path, **kw: Any):
    from mll_registry.app.root import App
    from mll_registry.settings import Settings

    return App(Settings(top_k=4, device="cpu", data_dir=str(data), label_store="local", **kw))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory, graph, tiny_model: Path) -> Path:
    """A data dir whose local label store holds the tiny model's real label."""
    data = tmp_path_factory.mktemp("labelled")
    out = _app(data).labelling.label(f"local-dir:{tiny_model}", graph).to_dict()
    assert out["status"] == "labelled"
    return data


@pytest.fixture()
def label_copy(labelled: Path, tmp_path: Path, graph, tiny_model: Path):
    """(app, label dir, model ref) on a private copy of the labelled data dir; the copy opens
    for selection as it is (so what a test breaks is what it corrupts)."""
    shutil.copytree(labelled / "labels", tmp_path / "data" / "labels")
    app = _app(tmp_path / "data")
    ref = f"local-dir:{tiny_model}"
    opened = app.selection.mapped_labels(graph)
    assert list(opened) == [ref]
    return app, opened[ref].path, ref


def _edit_header(f: Path, edit: Callable[[dict[str, Any], int], Any]) -> None:
    """Rewrite a safetensors file with ``edit(header, data_bytes)`` applied to its JSON header
    (the data bytes after it are kept as they are)."""
    raw = f.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
    header = edit(header, len(data)) or header
    h = json.dumps(header).encode()
    f.write_bytes(len(h).to_bytes(8, "little") + h + data)


def _set(name: str, key: str, value: Any) -> Callable[[dict[str, Any], int], None]:
    def edit(h: dict[str, Any], _: int) -> None:
        h[name][key] = value(h) if callable(value) else value
    return edit


def _offsets_of(other: str) -> Callable[[dict[str, Any]], list[int]]:
    return lambda h: list(h[other]["data_offsets"])


def _into_header(h: dict[str, Any], _: int) -> None:
    lo, hi = h["member_score"]["data_offsets"]
    h["member_score"]["data_offsets"] = [lo - hi, 0]  # the bytes just before the data: header


def _past_end(h: dict[str, Any], size: int) -> None:
    lo, hi = h["member_score"]["data_offsets"]
    h["member_score"]["data_offsets"] = [size, size + hi - lo]


def _negative_shape(h: dict[str, Any], _: int) -> None:
    n, k = h["topk_idx"]["shape"]
    lo, hi = h["topk_idx"]["data_offsets"]
    h["topk_idx"].update(shape=[-n, k], data_offsets=[hi, lo])  # size -n*k*2 = lo - hi


def _huge_wrapping(h: dict[str, Any], _: int) -> None:
    lo = h["topk_idx"]["data_offsets"][0]
    # 2**32 * 2**32 wraps to 0 in int64: a size-0 array "of" 16 EiB
    h["topk_idx"].update(shape=[2**32, 2**32], data_offsets=[lo, lo])


CRAFTED = {
    "header-not-an-object": lambda h, _: [h],
    "metadata-not-strings": lambda h, _: {**h, "__metadata__": ["graph_version"]},
    "entry-not-an-object": lambda h, _: {**h, "topk_score": [h["topk_score"]]},
    "offsets-a-string": _set("topk_idx", "data_offsets", "0,16"),
    "shape-null": _set("topk_idx", "shape", None),
    "shape-floats": _set("member_score", "shape", lambda h: [float(h["member_score"]["shape"][0])]),
    "dtype-a-list": _set("topk_score", "dtype", ["F16"]),
    "scores-read-as-integers": _set("member_score", "dtype", "U16"),
    "arrays-overlap": _set("topk_score", "data_offsets", _offsets_of("topk_idx")),
    "offset-into-the-header": _into_header,
    "offset-past-the-end": _past_end,
    "negative-shape": _negative_shape,
    "shape-overflows-int64": _set("topk_idx", "shape", [2**64, 1]),
    "shape-wraps-to-zero": _huge_wrapping,
}


def _one_line_naming(exc: BaseException, path: Path, ref: str) -> None:
    msg = str(exc)
    assert "\n" not in msg and str(path) in msg, msg
    assert f"`mll label {ref} --force`" in msg, msg


def _as_v1(path: Path) -> None:
    """Rewrite the label at ``path`` in the format before chunks (``mll-label/1``)."""
    from label_files import save_v1

    from mll_registry.labels.format import ModelLabel

    lab = ModelLabel.load(path)
    shutil.rmtree(path)
    save_v1(lab, path)


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_label_headers_give_one_line_label_errors_on_the_selection_path(
        label_copy, graph, case: str) -> None:
    """mll-label/1: the one file's header is checked when the label is opened."""
    app, path, ref = label_copy
    _as_v1(path)
    _edit_header(path / "label.safetensors", CRAFTED[case])
    with pytest.raises(LabelError) as e:
        app.selection.mapped_labels(graph)  # what App.select opens its labels with
    _one_line_naming(e.value, path, ref)


@pytest.mark.parametrize("case", sorted(set(CRAFTED) - {"arrays-overlap"}))
def test_crafted_chunk_and_scores_headers_give_one_line_label_errors_when_read(
        label_copy, graph, case: str) -> None:
    """mll-label/2: the ranks' or the scores file's header is checked when a selection first
    reads its rows (the edit goes to the file holding the arrays it names)."""
    from mll_registry.selection.select import candidate_set, gather

    app, path, ref = label_copy
    try:
        _edit_header(path / "ranks.safetensors", CRAFTED[case])
    except KeyError:  # an edit of topk_score or member_score
        _edit_header(path / "scores.safetensors", CRAFTED[case])
    mapped = app.selection.mapped_labels(graph)[ref]  # opened by its meta.json: nothing read
    with pytest.raises(LabelError) as e:
        gather(candidate_set(graph, np.arange(len(graph.nodes))), [mapped], members=True)
    _one_line_naming(e.value, path, ref)


def test_an_intact_label_still_opens_and_counts(label_copy, graph) -> None:
    """The checks refuse nothing real: the label's arrays read back as saved."""
    from mll_registry.labels.format import ModelLabel
    from mll_registry.selection.select import count_all

    app, path, ref = label_copy
    mapped = app.selection.mapped_labels(graph)[ref]
    full = ModelLabel.load(path, graph.version)
    n, k = full.topk_idx.shape
    idx, member = np.empty((n, k), full.topk_idx.dtype), np.empty(len(full.member_score),
                                                                  full.member_score.dtype)
    mapped.read_rows("topk_idx", np.arange(n), idx)
    mapped.read_rows("member_score", np.arange(len(member)), member)
    np.testing.assert_array_equal(idx, full.topk_idx)
    np.testing.assert_array_equal(member, full.member_score)
    cand = np.arange(len(graph.nodes))
    for got, want in zip(count_all(graph, [mapped], cand), count_all(graph, [full], cand),
                         strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("damage", ["garbage", "no-acc1"])
def test_a_damaged_summary_is_a_one_line_label_error_where_selection_reads_it(
        label_copy, graph, damage: str) -> None:
    import pandas as pd

    from mll_registry.selection.select import general_order

    app, path, ref = label_copy
    f = path / "summary.parquet"
    mean_acc1, intact = float(pd.read_parquet(f)["acc1"].mean()), f.read_bytes()
    if damage == "garbage":
        f.write_bytes(b"PAR1 not really parquet PAR1")
    else:
        pd.read_parquet(f).drop(columns=["acc1"]).to_parquet(f)
    # mll-label/2 records the general score in meta.json: its summary is not read for it
    (mapped,) = app.selection.mapped_labels(graph).values()
    assert mapped.meta["mean_acc1"] == mean_acc1
    assert general_order([mapped]).tolist() == [0]
    damaged = f.read_bytes()
    f.write_bytes(intact)
    _as_v1(path)  # mll-label/1 (no recorded score): the summary is read, and refused
    f.write_bytes(damaged)
    labels = app.selection.mapped_labels(graph)  # opened by their headers: the summary is lazy
    with pytest.raises(LabelError) as e:
        general_order(list(labels.values()))  # the fallback order of unmatched classes
    _one_line_naming(e.value, f, ref)


# -- 2. local-dir weights ----------------------------------------------------------------------
def _model_dir(root: Path, src: Path) -> Path:
    d = root / "org" / src.name
    d.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, d / f.name)
    return d


@pytest.fixture()
def counted_hashes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """Every weights file hashed from now on (the digest cache is in a fresh data dir)."""
    from mll_registry.models import refs as model_refs
    monkeypatch.setenv("MLL_DATA_DIR", str(tmp_path / "data"))
    calls: list[Path] = []
    real = model_refs.file_digest

    def counting(path: Any) -> str:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(model_refs, "file_digest", counting)
    return calls


def test_weights_over_max_model_gb_are_refused_before_hashing(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch,
        counted_hashes: list[Path], caplog: pytest.LogCaptureFixture) -> None:
    from mll_registry.hub.discovery import LocalDirHubSource
    from mll_registry.models.refs import resolve

    d = _model_dir(tmp_path / "hub", tiny_model)
    w = d / "open_clip_model.safetensors"
    with w.open("r+b") as f:
        f.truncate(4 << 30)  # 4 GiB, sparse: no disk used
    assert w.stat().st_blocks * 512 < 64 << 20
    monkeypatch.setenv("MLL_MAX_MODEL_GB", "0.001")
    t0 = time.perf_counter()
    with pytest.raises(UnsafeModelError) as e:
        resolve(f"local-dir:{d}")
    took = time.perf_counter() - t0
    msg = str(e.value)
    assert "\n" not in msg and w.name in msg and "4.295 GB" in msg, msg
    assert "max_model_gb limit of 0.001 GB" in msg and "MLL_MAX_MODEL_GB" in msg, msg
    assert counted_hashes == [] and took < 1.0, (counted_hashes, took)
    with caplog.at_level("WARNING", logger="mll_registry.hub.discovery"):
        t0 = time.perf_counter()
        assert LocalDirHubSource(tmp_path / "hub").list_new() == []  # skipped, named
        assert time.perf_counter() - t0 < 1.0
    assert "max_model_gb" in caplog.text and counted_hashes == []


def test_unchanged_weights_are_hashed_once_across_listings_and_changed_ones_again(
        tmp_path: Path, tiny_model: Path, counted_hashes: list[Path]) -> None:
    import hashlib

    from mll_registry.hub.discovery import LocalDirHubSource

    d = _model_dir(tmp_path / "hub", tiny_model)
    w = d / "open_clip_model.safetensors"
    src = LocalDirHubSource(tmp_path / "hub")

    def revision() -> str:
        (m,) = src.list_new()
        return m.sha

    want = "sha256:" + hashlib.sha256(w.read_bytes()).hexdigest()[:16]
    assert revision() == want and revision() == want
    assert counted_hashes == [w]  # two listings, one read of the weights
    st = w.stat()
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: same bytes
    assert revision() == want and len(counted_hashes) == 2
    assert revision() == want and len(counted_hashes) == 2
    # rewritten in place with the same size, mtime set back: ctime still tells
    st = w.stat()
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert w.stat().st_size == st.st_size and w.stat().st_mtime_ns == st.st_mtime_ns
    new = "sha256:" + hashlib.sha256(bytes(data)).hexdigest()[:16]
    assert revision() == new != want and len(counted_hashes) == 3
    # a planted cache entry (right file, wrong digest) for another identity is not trusted
    (cache,) = (tmp_path / "data" / "cache" / "weights-digests").glob("*.json")
    entry = json.loads(cache.read_text())
    cache.write_text(json.dumps({**entry, "id": [0, 0, 0, 0, 0], "sha256": "0" * 64}))
    assert revision() == new and len(counted_hashes) == 4


# -- 3. Hub ids differing only in case ----------------------------------------------------------
@pytest.mark.slow
def test_hub_ids_differing_in_case_are_one_registered_model(
        tmp_path: Path, graph, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import label_and_register
    from hub_server import start_hub, use_hub

    from mll_registry.labels.labeller import LabelConfig
    from mll_registry.models.refs import registered_name, resolve
    from mll_registry.registry.labels import Registry

    with start_hub({"MLL-Org/Tiny-Clip": tiny_model}) as hub:
        use_hub(monkeypatch, hub, cache_dir=tmp_path / "hf-cache")
        sha = hub.head("MLL-Org/Tiny-Clip")
        for typed in ("MLL-Org/Tiny-Clip", "mll-org/tiny-clip", "MLL-ORG/TINY-CLIP"):
            res = resolve(f"hf-hub:{typed}")
            assert (res.ref.name, res.revision) == ("MLL-Org/Tiny-Clip", sha), typed
        reg = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", root=tmp_path / "data")
        cfg = LabelConfig(top_k=4, device="cpu")
        first = label_and_register("hf-hub:mll-org/tiny-clip", graph, cfg, reg)
        again = label_and_register("hf-hub:MLL-Org/Tiny-Clip", graph, cfg, reg)
    assert first["status"] == "labelled" and again["status"] == "skipped"
    assert first["name"] == again["name"] == registered_name("hf-hub:MLL-Org/Tiny-Clip")
    assert [m.name for m in reg.client.search_registered_models()] == [first["name"]]
    ((v),) = reg.latest_per_model(graph.version)
    assert (v.model_ref, v.revision) == ("hf-hub:MLL-Org/Tiny-Clip", sha)


# -- 4. the `labeled` alias under a forced race -------------------------------------------------
@pytest.mark.slow
def test_labeled_stays_on_the_default_settings_version_under_a_forced_race(
        tmp_path: Path, graph, tiny_model: Path) -> None:
    """B (other label settings) reads the versions before A (default settings) is registered;
    A then registers completely and moves ``labeled`` to itself; only then does B write the
    aliases it computed. ``labeled`` must end on A, ``labeled-<hash>`` on each own version."""
    import dataclasses

    from mll_registry.labels.labeller import LabelConfig, label_model
    from mll_registry.models.loading import load
    from mll_registry.models.refs import registered_name, resolve
    from mll_registry.registry.labels import ALIAS, Registry
    from mll_registry.settings import DEFAULTS

    res = resolve(f"local-dir:{tiny_model}")
    base = label_model(load(res, device="cpu"), graph, LabelConfig(top_k=4)).label
    default_hash, other_hash = DEFAULTS.label_hash(), "0123456789abcdef"
    assert base.label_hash != default_hash
    labels = {}
    for who, h in (("A", default_hash), ("B", other_hash)):
        lab = dataclasses.replace(base, meta={**base.meta, "label_hash": h})
        labels[who] = (lab, lab.save(tmp_path / who))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reg_a, reg_b = Registry(uri, root=tmp_path / "a"), Registry(uri, root=tmp_path / "b")
    real_set = reg_b.client.set_registered_model_alias
    done: dict[str, Any] = {}

    def a_registers_first(name: str, alias: str, version: Any) -> None:
        if "A" not in done:  # B has read the versions; A registers completely, then B writes
            done["A"] = reg_a.register_label(res, *labels["A"])[0]
        real_set(name, alias, version)

    reg_b.client.set_registered_model_alias = a_registers_first  # type: ignore[method-assign]
    b = reg_b.register_label(res, *labels["B"])[0]
    a = done["A"]
    name = registered_name(res.ref)
    assert a.name == b.name == name and (b.version, a.version) == (1, 2)
    c = reg_a.client
    assert int(c.get_model_version_by_alias(name, ALIAS).version) == a.version
    assert int(c.get_model_version_by_alias(name, f"{ALIAS}-{default_hash}").version) == a.version
    assert int(c.get_model_version_by_alias(name, f"{ALIAS}-{other_hash}").version) == b.version
