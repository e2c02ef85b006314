"""Damaged files on disk: caches repair themselves, bundles and labels say what to rebuild."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mll_registry.demo.archs import build_tiny
from mll_registry.graph.bundle import GraphError, SampleDataset, SemanticGraph, build_graph
from mll_registry.labels.format import LabelError, ModelLabel, files_look_whole
from mll_registry.labels.labeller import LabelConfig, clear_checkpoints, label_model
from mll_registry.models.image_stream import PixelPipeline, pixel_cache_path
from mll_registry.models.loading import load, save_open_clip_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    model, cfg = build_tiny("tiny-vit", seed=5)
    d = save_open_clip_dir(model, cfg, tmp_path_factory.mktemp("hub") / "tiny-vit")
    return load(f"local-dir:{d}", device="cpu")


@pytest.fixture()
def graph(tree: Path):
    return build_graph([SampleDataset("A", tree / "A"), SampleDataset("B", tree / "B")])[0]


def _truncate(f: Path, keep: float = 0.5) -> None:
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * keep)])


def _same(a: ModelLabel, b: ModelLabel) -> None:
    for k in ("topk_idx", "topk_score", "member_score"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert a.summary.equals(b.summary)


def test_truncated_pixel_cache_is_rebuilt(tiny, graph) -> None:
    cfg = LabelConfig(top_k=4, pixel_cache_gb=1.0)
    clear_checkpoints(tiny, graph)
    first = label_model(tiny, graph, cfg)
    cache = pixel_cache_path(graph.version, PixelPipeline.from_preprocess(tiny.preprocess))
    assert first.pixel_source in ("stream+cache", "cache") and cache.is_file()
    _truncate(cache)
    clear_checkpoints(tiny, graph)
    again = label_model(tiny, graph, cfg)  # was: ValueError: mmap length is greater than file
    assert again.pixels_built and again.pixel_source == "stream+cache"
    _same(first.label, again.label)


def test_truncated_checkpoint_is_recomputed_not_read(tiny, graph) -> None:
    cfg = LabelConfig(top_k=4, batch_size=2, chunk_size=2)  # 6 images -> 3 chunks
    clear_checkpoints(tiny, graph)

    class Stop(Exception):
        pass

    def stop_after_two(chunk: int) -> None:
        if chunk == 1:
            raise Stop

    with pytest.raises(Stop):
        label_model(tiny, graph, cfg, on_chunk=stop_after_two)
    from mll_registry.labels.labeller import _work_dir

    chunk = _work_dir(tiny, graph, None) / "chunk-00001.npy"
    _truncate(chunk, 0.8)  # a partial file left as if complete
    resumed = label_model(tiny, graph, cfg)
    assert (resumed.chunks_reused, resumed.chunks_computed) == (1, 2)
    clear_checkpoints(tiny, graph)
    _same(resumed.label, label_model(tiny, graph, cfg).label)


@pytest.mark.parametrize("victim", ["ranks.safetensors", "scores.safetensors",
                                    "summary.parquet", "meta.json"])
def test_damaged_label_files_name_the_file_and_the_fix(tiny, graph, tmp_path: Path,
                                                       victim: str) -> None:
    path = label_model(tiny, graph, LabelConfig(top_k=4)).label.save(tmp_path / "label")
    assert files_look_whole(path)
    _truncate(path / victim)
    assert not files_look_whole(path)
    with pytest.raises(LabelError, match=r"damaged.*mll label \S+ --force"):
        ModelLabel.load(path)


@pytest.mark.parametrize("victim", ["nodes.parquet", "members.parquet", "manifest.json"])
def test_damaged_graph_bundle_names_the_file_and_the_fix(graph, tmp_path: Path,
                                                         victim: str) -> None:
    path = graph.save(tmp_path / "g")
    _truncate(path / victim)
    with pytest.raises(GraphError, match=rf"{victim} is damaged.*mll graph build"):
        SemanticGraph.load(path)


def test_damaged_cached_registry_label_is_fetched_again(tiny, graph, tmp_path: Path) -> None:
    from conftest import label_and_register

    from mll_registry.registry.labels import Registry

    reg = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", root=tmp_path / "data")
    label_and_register(f"local-dir:{tiny.resolved.path}", graph, LabelConfig(top_k=4, device="cpu"),
                       reg)
    (v,) = reg.latest_per_model(graph.version)
    cached = reg.download_label(v)
    want = ModelLabel.load(cached)
    _truncate(cached / "ranks" / "00000.safetensors")
    again = reg.download_label(v)  # was: the damaged copy was used forever
    _same(ModelLabel.load(again), want)
    _scribble(again / "scores.safetensors")  # same size, headers intact: only the sums tell
    with pytest.raises(LabelError, match="does not match its checksum"):
        ModelLabel.load(again)
    _same(ModelLabel.load(reg.download_label(v)), want)  # was: accepted silently


def _scribble(f: Path) -> None:
    """Overwrite bytes in the middle of the arrays, keeping the size and the header."""
    data = bytearray(f.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little") if f.suffix == ".safetensors" else 0
    mid = (start + len(data)) // 2
    data[mid:mid + 16] = bytes((b + 1) % 256 for b in data[mid:mid + 16])
    f.write_bytes(bytes(data))


def test_scribbled_label_is_refused_by_its_checksum(tiny, graph, tmp_path: Path) -> None:
    path = label_model(tiny, graph, LabelConfig(top_k=4)).label.save(tmp_path / "label")
    ModelLabel.load(path)
    for f in ("ranks.safetensors", "scores.safetensors", "summary.parquet"):
        original = (path / f).read_bytes()
        _scribble(path / f)
        with pytest.raises(LabelError, match=f"{f} does not match its checksum"):
            ModelLabel.load(path)
        (path / f).write_bytes(original)


def test_atomic_writes_fsync_the_file_then_its_directory(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from mll_registry import fsutil

    synced: list[tuple[str, bool]] = []
    real = os.fsync

    def spy(fd: int) -> None:
        p = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((p, (tmp_path / "out.txt").exists()))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    fsutil.write_text(tmp_path / "out.txt", "hello")
    (tmp_file, renamed_yet), (directory, renamed) = synced
    assert Path(tmp_file).name.startswith(".out.txt.") and not renamed_yet  # data first
    assert Path(directory) == tmp_path and renamed  # then the rename itself
    synced.clear()
    with fsutil.atomic_dir(tmp_path / "bundle") as d:
        (d / "a.bin").write_bytes(b"x")
    assert [Path(p).name for p, _ in synced][-1] == tmp_path.name  # the parent, last
    assert any(Path(p).name == "a.bin" for p, _ in synced)


def test_bad_task_images_are_named_not_tracebacks(tmp_path: Path) -> None:
    """A text file named .png, a truncated PNG and a decompression bomb: one clear error each."""
    from PIL import Image

    from mll_registry.errors import ImageFileError
    from mll_registry.labels.labeller import PixelPipeline

    good = tmp_path / "good.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(good)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:60])
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)  # 81 Mpx, a few kB on disk
    from torchvision import transforms as T

    pipe = PixelPipeline.from_preprocess(T.Compose([T.Resize(16), T.ToTensor()]))
    assert pipe(good).shape == (16, 16, 3)
    for bad, why in ((text, "not a readable image"), (cut, "not a readable image"),
                     (bomb, "larger than")):
        with pytest.raises(ImageFileError, match=why) as info:
            pipe(bad)
        assert str(bad) in str(info.value)


def test_atomic_dir_keeps_the_old_content_when_writing_fails(tmp_path: Path) -> None:
    from mll_registry.fsutil import atomic_dir

    target = tmp_path / "bundle"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("old")

    class Crash(Exception):
        pass

    with pytest.raises(Crash), atomic_dir(target) as d:
        (d / "a.txt").write_text("half-")
        raise Crash
    assert (target / "a.txt").read_text() == "old"  # the reader still sees the whole old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary left


def test_label_for_another_graph_size_is_refused(tiny, graph, tmp_path: Path) -> None:
    lab = label_model(tiny, graph, LabelConfig(top_k=4)).label
    with pytest.raises(LabelError, match=f"label has {len(graph.images)} images, graph has"):
        lab.validate(n_images=len(graph.images) + 1)
    with pytest.raises(LabelError, match="memberships"):
        lab.validate(n_members=len(graph.members) - 1)


@pytest.mark.parametrize("damage", ["truncated", "other architecture"])
def test_damaged_model_weights_are_one_clear_error(graph, tmp_path: Path, damage: str) -> None:
    from typer.testing import CliRunner

    from mll_registry.cli.main import app
    from mll_registry.errors import ModelRefError

    model, cfg = build_tiny("tiny-vit", seed=2)
    d = save_open_clip_dir(model, cfg, tmp_path / "m")
    w = d / "open_clip_model.safetensors"
    if damage == "truncated":
        _truncate(w)
    else:  # a well-formed file holding another model's tensors
        other, ocfg = build_tiny("tiny-resnet", seed=2)
        w.write_bytes((save_open_clip_dir(other, ocfg, tmp_path / "o") /
                       "open_clip_model.safetensors").read_bytes())
    with pytest.raises(ModelRefError, match="is damaged or does not match the model config"):
        load(f"local-dir:{d}", device="cpu")
    bundle = graph.save(tmp_path / "g")
    res = CliRunner().invoke(app, ["label", f"local-dir:{d}", "--graph", str(bundle), "--out",
                                   str(tmp_path / "label")])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "open_clip_model.safetensors is damaged" in res.output


#: run in a child before its code: the first step of atomic_dir's swap (an exchange, or the
#: first of two renames, the only way where ``argv[1]`` is "two-renames") is its last act
KILL_AT_SWAP = r"""
import os, signal, sys
from mll_registry import fsutil

def _die():
    os.kill(os.getpid(), signal.SIGKILL)

_replace = os.replace
def _replace_then_die(a, b):
    _replace(a, b)
    _die()
os.replace = _replace_then_die
if hasattr(fsutil, "exchange"):
    if sys.argv[1] == "two-renames":
        fsutil.exchange = lambda a, b: False  # as where the OS cannot exchange
    else:
        _exchange = fsutil.exchange
        def _exchange_then_die(a, b):
            _exchange(a, b)
            _die()
        fsutil.exchange = _exchange_then_die
"""
SWAPS = ["exchange", "two-renames"]


def _killed_at_swap(code: str, mode: str, *args: str) -> None:
    """Run ``code`` in a child python (this checkout's package first) killed at the swap."""
    import os
    import signal
    import subprocess
    import sys

    import mll_registry

    src = str(Path(mll_registry.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", KILL_AT_SWAP + code, mode, *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def _tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): p.read_text() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("mode", SWAPS)
def test_a_writer_killed_inside_the_swap_leaves_the_old_or_the_new_directory(
        tmp_path: Path, mode: str) -> None:
    """SIGKILL right after the swap's first step: ``target`` is whole, old or new, at once
    (an exchange) or on its next open (two renames: the old one goes back); the next write
    leaves no leftover beside it."""
    from mll_registry.fsutil import atomic_dir, sweep_stale_temps

    target = tmp_path / "bundle"
    old = {"a.txt": "old a", "sub/b.txt": "old b"}
    new = {"a.txt": "new a", "sub/b.txt": "new b"}
    with atomic_dir(target) as d:
        for name, text in old.items():
            (d / name).parent.mkdir(exist_ok=True)
            (d / name).write_text(text)
    _killed_at_swap(
        "from pathlib import Path\n"
        "with fsutil.atomic_dir(Path(sys.argv[2])) as d:\n"
        "    (d / 'sub').mkdir()\n"
        f"    for name, text in {new!r}.items():\n"
        "        (d / name).write_text(text)\n", mode, str(target))
    if mode == "exchange":  # whole without any recovery: the new one
        assert _tree(target) == new
    sweep_stale_temps(target)  # what the next atomic_dir / atomic_path does first
    assert _tree(target) in (old, new)
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("third")
    assert _tree(target) == {"a.txt": "third"}
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no leftover of either writer


@pytest.mark.parametrize("mode", SWAPS)
def test_a_migration_killed_inside_the_swap_loses_no_label_and_migrates_no_leftover(
        tmp_path: Path, mode: str) -> None:
    """``mll registry migrate-labels`` killed between the swap's steps: the store still lists
    the label, whole (mll-label/2 or the mll-label/1 it was), and the next migration rewrites
    that label only, never a hidden leftover of the killed one."""
    import pandas as pd
    from label_files import save_v1

    from mll_registry.labels.format import FORMAT, FORMAT_V1
    from mll_registry.labels.stores import LocalLabelStore

    idx = np.array([[0, 1], [1, 0], [2, 1]], np.uint16)
    ref = "local-dir:/models/m"
    lab = ModelLabel(idx, np.full(idx.shape, 0.5, np.float16), np.arange(3, dtype=np.float16),
                     pd.DataFrame({"node_id": list("abc"), "acc1": [1.0, 0.5, 0.0]}),
                     {"graph_version": "gv1", "model_ref": ref})
    store = LocalLabelStore(tmp_path / "data")
    dest = store.base / "local-dir+m" / "gv1-h"
    save_v1(lab, dest)
    _killed_at_swap("from mll_registry.labels.stores import LocalLabelStore\n"
                    "LocalLabelStore(sys.argv[2]).migrate()\n", mode, str(tmp_path / "data"))
    assert store.list_labels("gv1") == {ref: dest}  # was: {} - the model dropped out
    _same(ModelLabel.load(dest, "gv1"), lab)
    fmt = ModelLabel.load(dest).meta["format"]
    assert fmt == (FORMAT if mode == "exchange" else FORMAT_V1)
    moved = store.migrate()  # was: the hidden .old-PID leftover was migrated
    assert [m["path"] for m in moved] == ([str(dest)] if fmt == FORMAT_V1 else [])
    assert ModelLabel.load(dest).meta["format"] == FORMAT
    assert store.list_labels("*") == {ref: dest}
    if moved:  # a write sweeps what the killed writer left
        assert [p.name for p in dest.parent.iterdir()] == [dest.name]


def test_exchange_swaps_two_directories_and_says_when_it_cannot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One step both ways; where the kernel or file system cannot exchange (EINVAL, or no
    renameat2 at all) nothing changes and atomic_dir replaces by its two renames."""
    import ctypes
    import errno

    from mll_registry import fsutil

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "f").write_text(d.name)
    if not fsutil.exchange(a, b):
        pytest.skip("this file system cannot exchange")
    assert ((a / "f").read_text(), (b / "f").read_text()) == ("b", "a")
    with pytest.raises(FileNotFoundError):
        fsutil.exchange(a, tmp_path / "missing")

    def einval(*_: object) -> int:
        ctypes.set_errno(errno.EINVAL)
        return -1

    for unable in (lambda: einval, lambda: None):
        monkeypatch.setattr(fsutil, "_renameat2", unable)
        assert not fsutil.exchange(a, b) and (a / "f").read_text() == "b"
        with fsutil.atomic_dir(a) as d:
            (d / "g").write_text("new")
        assert [p.name for p in a.iterdir()] == ["g"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
        (a / "g").rename(a / "f")
        (a / "f").write_text("b")
