"""Labels in chunks (mll-label/2) from the registry on a fresh worker: a selection fetches only
the chunks of its candidate rows, checked and cached by content; old labels read and migrate."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import label_and_register

from mll_registry.demo.archs import build_tiny
from mll_registry.graph.bundle import SampleDataset, build_graph
from mll_registry.labels import format as F
from mll_registry.labels.format import LabelError, MappedLabel, ModelLabel
from mll_registry.labels.labeller import LabelConfig
from mll_registry.models.loading import save_open_clip_dir
from mll_registry.registry.labels import Registry
from mll_registry.registry.store import RegistryLabelStore

pytestmark = pytest.mark.slow

CFG = LabelConfig(top_k=4, device="cpu")


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory):
    """(registry uri, graph, label hash, the label as labelled, the module's folder): one tiny
    model's label, in chunks of 2 images (3 chunks), registered in an embedded registry from
    data dir ``a``. Each test reads it from data dirs of its own."""
    from conftest import write_png

    tmp = tmp_path_factory.mktemp("chunks")
    for i in range(3):
        write_png(tmp / "A" / "dog.n.01" / f"{i}.png", 10 + i)
    for i in range(2):
        write_png(tmp / "A" / "n02121808" / f"{i}.png", 50 + i)
    write_png(tmp / "B" / "n02084071" / "x.png", 77)
    graph = build_graph([SampleDataset("A", tmp / "A"), SampleDataset("B", tmp / "B")])[0]
    assert len(graph.images) == 6
    m, cfg = build_tiny("tiny-vit", seed=5)
    model = save_open_clip_dir(m, cfg, tmp / "org" / "tiny")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "CHUNK_ROWS", 2)
        out = label_and_register(f"local-dir:{model}", graph, CFG, Registry(uri, root=tmp / "a"))
    assert out["status"] == "labelled"
    want = ModelLabel.load(Path(out["path"]))
    return uri, graph, CFG.label_hash(), want, tmp


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def test_a_fresh_worker_fetches_only_the_chunks_it_reads(registered, tmp_path: Path) -> None:
    uri, graph, h, want, _ = registered
    store = RegistryLabelStore(tmp_path / "b", registry=Registry(uri, root=tmp_path / "b"))
    (d,) = store.label_dirs(graph.version, h).values()
    assert _files(d) == ["meta.json"]  # nothing but meta.json until a row is read
    lab = MappedLabel.open(d, graph.version, len(graph.images), len(graph.members),
                           fetch=store.fetch_label_file)
    rows = np.empty((2, 4), want.topk_idx.dtype)
    lab.read_rows("topk_idx", np.array([4, 5]), rows)  # images 4 and 5: chunk 2 alone
    np.testing.assert_array_equal(rows, want.topk_idx[[4, 5]])
    assert _files(d) == ["meta.json", "ranks/00002.safetensors"]
    # cached by content: the blob named by its sha256 is the chunk's bytes
    data = (d / "ranks" / "00002.safetensors").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert json.loads((d / "meta.json").read_text())["checksums"]["ranks/00002.safetensors"] == sha
    assert (tmp_path / "b" / "cache" / "label-blobs" / sha[:2] / sha).read_bytes() == data
    rows = np.empty((3, 4), want.topk_idx.dtype)
    lab.read_rows("topk_idx", np.array([1, 2, 5]), rows)  # chunks 0 and 1 now, 2 again
    np.testing.assert_array_equal(rows, want.topk_idx[[1, 2, 5]])
    assert _files(d) == ["meta.json"] + [f"ranks/0000{i}.safetensors" for i in range(3)]
    full = lab.load()  # the whole label: the scores and summary fetched too
    for k in ("topk_idx", "topk_score", "member_score"):
        np.testing.assert_array_equal(getattr(full, k), getattr(want, k), err_msg=k)
    assert full.summary.equals(want.summary)


def test_a_damaged_chunk_in_the_artifact_store_is_refused_and_kept_out(
        registered, tmp_path: Path) -> None:
    uri, graph, h, _, shared = registered
    (art,) = [p for p in (shared / "a" / "mlartifacts").glob(
        "*/artifacts/label/ranks/00001.safetensors")]  # the label run's artifact
    intact = art.read_bytes()
    raw = bytearray(intact)
    raw[-1] ^= 1  # one bit of the last row: headers intact, only the checksum tells
    art.write_bytes(bytes(raw))
    try:
        store = RegistryLabelStore(tmp_path / "c", registry=Registry(uri, root=tmp_path / "c"))
        (d,) = store.label_dirs(graph.version, h).values()
        lab = MappedLabel.open(d, graph.version, fetch=store.fetch_label_file)
        with pytest.raises(LabelError,
                           match=r"ranks/00001.safetensors .*fails its checksum.*--force"):
            lab.read_rows("topk_idx", np.array([2]), np.empty((1, 4), lab.topk_idx.dtype))
    finally:
        art.write_bytes(intact)
    assert _files(d) == ["meta.json"]  # nothing placed, in the label or the content cache
    assert not list((tmp_path / "c" / "cache").glob("label-blobs/*/*"))
    assert not [p for p in (tmp_path / "c" / "cache").rglob("*") if ".tmp" in p.name]


def test_selection_from_a_fresh_worker_equals_the_local_one(registered, tmp_path: Path) -> None:
    """The same task selected through the registry on an empty data dir (chunks fetched on
    demand) and from the label on local disk: the same choice and scores."""
    from mll_registry.app.root import App
    from mll_registry.settings import Settings
    from mll_registry.task import Task

    uri, graph, _, want, _ = registered
    task = Task.from_dict({"name": "pets", "classes": ["dog", "domestic cat"]})
    reg = Registry(uri, root=tmp_path / "d")
    remote = App(Settings(top_k=4, device="cpu", data_dir=str(tmp_path / "d"),
                          label_store="registry"), registry=reg,
                 label_stores={"registry": RegistryLabelStore(tmp_path / "d", registry=reg)})
    got = remote.selection.select(task, graph).result
    ref = got.models[0]
    local = App(Settings(top_k=4, device="cpu", data_dir=str(tmp_path / "e"),
                         label_store="local"))
    want.save(tmp_path / "e" / "labels" / "x" / f"{graph.version}-{CFG.label_hash()}")
    base = local.selection.select(task, graph).result
    assert base.models == [ref] and got.chosen.tolist() == base.chosen.tolist()
    np.testing.assert_array_equal(got.score, base.score)
    assert not list((tmp_path / "d").rglob("scores.safetensors"))  # what selection never reads


def test_old_labels_select_alike_and_migrate_in_place(tmp_path: Path, registered) -> None:
    """An mll-label/1 label in the local store opens and reads as ever; `mll registry
    migrate-labels` rewrites it in chunks, the arrays unchanged; a second run has nothing to do."""
    from label_files import save_v1
    from typer.testing import CliRunner

    from mll_registry.cli.main import app

    _, graph, h, want, _ = registered
    d = save_v1(want, tmp_path / "data" / "labels" / "m" / f"{graph.version}-{h}")
    old = MappedLabel.open(d, graph.version)
    assert isinstance(old.topk_idx, np.memmap)
    np.testing.assert_array_equal(old.topk_idx, want.topk_idx)
    runner = CliRunner()
    r = runner.invoke(app, ["registry", "migrate-labels", "--data-dir", str(tmp_path / "data"),
                            "--json"])
    assert r.exit_code == 0, r.output
    assert [m["to"] for m in json.loads(r.stdout)] == ["mll-label/2"]
    assert not (d / "label.safetensors").exists() and (d / "scores.safetensors").is_file()
    got = ModelLabel.load(d, graph.version)
    for k in ("topk_idx", "topk_score", "member_score"):
        np.testing.assert_array_equal(getattr(got, k), getattr(want, k), err_msg=k)
    again = runner.invoke(app, ["registry", "migrate-labels", "--data-dir",
                                str(tmp_path / "data"), "--json"])
    assert json.loads(again.stdout) == []
    shutil.rmtree(d)
