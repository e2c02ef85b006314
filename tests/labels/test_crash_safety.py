"""A labelling process killed (SIGKILL, no cleanup) at several points, then run again.

Each kill happens in a real child process running ``App.label`` into a real MLflow registry:
mid-chunk (during a forward pass), mid-write of a chunk checkpoint, mid-write of the label, after
the label run but before the model version, and after the version is created but before it is
marked ready. The rerun must end with exactly one ready version whose label equals an
uninterrupted run's, and nothing partial may have been read as complete.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png

pytestmark = pytest.mark.slow

CHILD = r"""
import json, os, signal, sys
point, data, graph, ref = sys.argv[1:5]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "mid-chunk":  # the second batch is the first of chunk 1: chunk 0 is checkpointed
    import mll_registry.labels.labeller as L
    real, n = L.encode_batch, [0]
    def enc(*a, **k):
        n[0] += 1
        if n[0] == 2:
            die()
        return real(*a, **k)
    L.encode_batch = enc
elif point == "mid-checkpoint-write":
    import numpy as np
    real_save = np.save
    def half(file, arr, *a, **k):
        real_save(file, arr, *a, **k)
        size = os.path.getsize(file)
        with open(file, "r+b") as f:
            f.truncate(size // 2)
        die()
    np.save = half
elif point == "mid-label-write":
    import safetensors.numpy as sn
    real_file = sn.save_file
    def half_label(tensors, filename, metadata=None):
        real_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        die()
    sn.save_file = half_label
elif point == "before-version":
    from mll_registry.registry.labels import Registry
    Registry._register_version = lambda self, *a, **k: die()
elif point == "before-ready":
    from mlflow.tracking import MlflowClient
    real_tag = MlflowClient.set_model_version_tag
    def tag(self, name, version, key, value):
        if key == "mll.status" and value == "ready":
            die()
        return real_tag(self, name, version, key, value)
    MlflowClient.set_model_version_tag = tag

from mll_registry.app.root import App
from mll_registry.registry.labels import Registry
from mll_registry.settings import Settings

reg = Registry(f"sqlite:///{data}/mlflow.db", root=data)
app = App(Settings(top_k=4, device="cpu", batch_size=2, chunk_size=2, decode_workers=0,
                   data_dir=data), registry=reg,
          label_stores={"registry": reg})
out = app.labelling.label(ref, graph).to_dict()
print(json.dumps({"status": out["status"], "name": out["name"], "version": out["version"]}))
"""

POINTS = ("mid-chunk", "mid-checkpoint-write", "mid-label-write", "before-version",
          "before-ready")


def _run(point: str, data: Path, world: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, point, str(data), str(world["graph"]),
                           f"local-dir:{world['model']}"], capture_output=True, text=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from mll_registry.demo.archs import build_tiny
    from mll_registry.graph.bundle import SampleDataset, build_and_save
    from mll_registry.models.loading import save_open_clip_dir

    tmp = tmp_path_factory.mktemp("crash")
    for i in range(3):
        write_png(tmp / "A" / "dog.n.01" / f"{i}.png", 10 + i)
        write_png(tmp / "A" / "n02121808" / f"{i}.png", 50 + i)
    build_and_save([SampleDataset("A", tmp / "A")], tmp / "graph")
    model, cfg = build_tiny("tiny-vit", seed=11)
    save_open_clip_dir(model, cfg, tmp / "model")
    ref = _run("none", tmp / "reference", {"graph": tmp / "graph", "model": tmp / "model"})
    assert ref.returncode == 0, ref.stderr[-3000:]
    return {"graph": tmp / "graph", "model": tmp / "model", "tmp": tmp,
            "reference": Path(tmp / "reference")}


def _ready_label(data: Path) -> tuple[list[int], Path]:
    from mll_registry.registry.labels import Registry

    reg = Registry(f"sqlite:///{data}/mlflow.db", root=data)
    versions = reg.labelled_versions()
    return [v.version for v in versions], reg.download_label(versions[0]) if versions else data


@pytest.mark.parametrize("point", POINTS)
def test_killed_then_rerun_equals_an_uninterrupted_run(point: str, world: dict[str, Path],
                                                       tmp_path: Path) -> None:
    from mll_registry.labels.format import ModelLabel

    data = tmp_path / "data"
    killed = _run(point, data, world)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    again = _run("none", data, world)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["status"] == "labelled"
    versions, label_dir = _ready_label(data)
    assert len(versions) == 1  # exactly one ready version, whatever the kill left behind
    got = ModelLabel.load(label_dir)
    want = ModelLabel.load(_ready_label(world["reference"])[1])
    for k in ("topk_idx", "topk_score", "member_score"):
        np.testing.assert_array_equal(getattr(got, k), getattr(want, k), err_msg=k)
    assert got.summary.equals(want.summary)
    # what the killed writer left behind was swept by the rerun: no temporaries, no partial label
    assert [str(p) for p in (data / "labels").rglob(".*")] == []
    local = list((data / "labels").rglob("scores.safetensors"))
    assert len(local) == 1 and ModelLabel.load(local[0].parent).graph_version == got.graph_version


def _small_disk(path: Path, size: str) -> bool:
    """Mount a size-limited tmpfs at ``path`` (needs root, as on this project's machines)."""
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_full_disk_stops_labelling_with_one_line_and_no_partial_file(
        world: dict[str, Path], tmp_path: Path) -> None:
    """`mll label` into a data dir on a 1 MB disk: the checkpoints fit, the label does not. The
    command says so in one line (exit 2) and leaves no temporary or partial file; on a larger
    disk the same command then finishes."""
    import os

    disk = tmp_path / "disk"
    if not _small_disk(disk, "600k"):
        from conftest import missing_asset

        missing_asset("a size-limited disk (mount -t tmpfs needs root)", "run the tests as root")
    try:
        env = {**os.environ, "MLL_DATA_DIR": str(disk), "MLL_TOP_K": "4", "MLL_DECODE_WORKERS": "0"}
        env.pop("MLFLOW_TRACKING_URI", None)
        mll = str(Path(sys.executable).parent / "mll")
        # pad the disk so that the label cannot be written
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "ballast").write_bytes(b"\0" * max(0, free - 8192))
        p = subprocess.run([mll, "label", f"local-dir:{world['model']}", "--graph",
                            str(world["graph"]), "--no-register", "--device", "cpu"],
                           env=env, capture_output=True, text=True)
        assert p.returncode == 2, p.stderr[-3000:]
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "the disk is full" in lines[0] and "Traceback" not in p.stderr
        leftovers = [str(f) for f in disk.rglob("*") if f.name.startswith(".") or
                     f.name.endswith(".tmp") or ".tmp" in f.name]
        assert leftovers == []
        assert not list(disk.rglob("scores.safetensors"))  # no label, not even a partial one
        assert not list(disk.rglob("ranks"))
        (disk / "ballast").unlink()
        ok = subprocess.run([mll, "label", f"local-dir:{world['model']}", "--graph",
                             str(world["graph"]), "--no-register", "--device", "cpu"],
                            env=env, capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr[-3000:]
        assert len(list(disk.rglob("scores.safetensors"))) == 1
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
