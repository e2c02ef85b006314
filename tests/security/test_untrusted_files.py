"""Files from elsewhere reach no decoder or path they should not (issue #40 items 3 and 5):
only raster formats are decoded anywhere (an EPS never reaches Ghostscript), and a model folder
holding a link is refused before labelling reads it or ``--bundle`` copies it."""

from __future__ import annotations

import base64
import io
import os
import shutil
import stat
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "demo_hub" / "mll-demo"
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
       b"newpath 0 0 moveto 10 10 lineto stroke showpage\n%%EOF\n")


@pytest.fixture()
def fake_gs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `gs` first on PATH that only writes a marker: whether Pillow called Ghostscript."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "GS-RAN"
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\necho ran > {marker}\nexit 1\n")
    gs.chmod(gs.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return marker


def test_eps_never_reaches_ghostscript_from_a_file_or_bytes(tmp_path: Path, fake_gs: Path) -> None:
    from PIL import Image

    from mll_registry.errors import IMAGE_FORMATS, ImageFileError, open_image
    from mll_registry.graph.build import _check_image  # the graph's own check of a sample

    eps = tmp_path / "drawing.png"  # the name does not decide the decoder
    eps.write_bytes(EPS)
    for src in (eps, io.BytesIO(EPS), io.BytesIO(base64.b64decode(base64.b64encode(EPS)))):
        with pytest.raises(ImageFileError, match="not one of the formats decoded here"):
            open_image(src)
    assert _check_image(eps) is None  # skipped as unreadable
    assert not fake_gs.exists(), "Pillow handed the EPS to Ghostscript"
    for fmt in IMAGE_FORMATS:  # every allowed format still decodes
        buf = io.BytesIO()
        Image.new("RGB", (4, 3), (10, 20, 30)).save(buf, format=fmt)
        buf.seek(0)
        assert open_image(buf).size == (4, 3)  # type: ignore[attr-defined]


def _model_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(DEMO / "vit-animals", folder)
    return folder


@pytest.mark.parametrize("entry", ["secret-link", "weights-link", "fifo"])
def test_a_model_folder_with_a_link_or_special_file_is_refused(tmp_path: Path,
                                                             entry: str) -> None:
    from mll_registry.errors import UnsafeModelError
    from mll_registry.models.refs import resolve

    folder = _model_copy(tmp_path)
    secret = tmp_path / "mlflow.db"
    secret.write_text("the registry's database")
    if entry == "secret-link":
        (folder / "notes.txt").symlink_to(secret)
        name = "notes.txt"
    elif entry == "weights-link":
        real = tmp_path / "elsewhere.safetensors"
        shutil.move(folder / "open_clip_model.safetensors", real)
        (folder / "open_clip_model.safetensors").symlink_to(real)
        name = "open_clip_model.safetensors"
    else:
        os.mkfifo(folder / "pipe")
        name = "pipe"
    with pytest.raises(UnsafeModelError, match=f"{name} is (a link|not a regular file)"):
        resolve(f"local-dir:{folder}")


def test_mll_label_refuses_a_folder_with_a_link_in_one_line(tmp_path: Path) -> None:
    from conftest import write_png
    from typer.testing import CliRunner

    from mll_registry.cli.main import app as cli
    from mll_registry.graph.bundle import SampleDataset, build_graph

    for i in range(2):
        write_png(tmp_path / "src" / "dog.n.01" / f"{i}.png", 40 * i)
    bundle = build_graph([SampleDataset("src", tmp_path / "src")])[0].save(tmp_path / "g")
    folder = _model_copy(tmp_path)
    (folder / "zero").symlink_to("/dev/zero")
    res = CliRunner().invoke(cli, ["label", f"local-dir:{folder}", "--graph", str(bundle),
                                   "--data-dir", str(tmp_path / "d")])
    assert res.exit_code != 0
    assert "zero is a link; a model folder holds regular files only" in res.output, res.output
    assert "Traceback" not in res.output


def test_bundling_copies_the_model_files_only(tmp_path: Path) -> None:
    """What --bundle copies of a member folder: config, weights and tokenizer files, as regular
    files; a README or anything else stays behind."""
    from mll_registry.models.refs import model_files, resolve

    folder = _model_copy(tmp_path)
    (folder / "README.md").write_text("x")
    (folder / "tokenizer.json").write_text("{}")
    names = sorted(p.name for p in model_files(resolve(f"local-dir:{folder}")))
    assert names == ["open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json"]


def test_a_hub_cache_snapshot_may_link_to_its_own_blobs_only(tmp_path: Path) -> None:
    """The Hub cache's layout (snapshots/REV/FILE -> ../../blobs/SHA) is usable as local-dir:;
    a link in a snapshot to anywhere else is refused as in any folder."""
    from mll_registry.errors import UnsafeModelError
    from mll_registry.models.refs import resolve

    repo = tmp_path / "hf-cache" / "models--org--a"
    snap, blobs = repo / "snapshots" / "c0ffee", repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for f in ("open_clip_config.json", "open_clip_model.safetensors"):
        shutil.copyfile(DEMO / "vit-animals" / f, blobs / f"sha-{f}")
        (snap / f).symlink_to(Path("..") / ".." / "blobs" / f"sha-{f}")
    assert resolve(f"local-dir:{snap}").weights.name == "open_clip_model.safetensors"
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    (snap / "notes.txt").symlink_to(secret)
    with pytest.raises(UnsafeModelError, match="notes.txt is a link"):
        resolve(f"local-dir:{snap}")
