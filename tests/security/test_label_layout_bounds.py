"""A crafted ``mll-label/2`` layout is refused before anything is sized by it (issue #40, 6).

meta.json's ``layout`` (images, top_k, chunk_rows, chunks, memberships) is read before any
array: ``images=chunks=10**11, chunk_rows=1`` made a full read list 10^11 chunk files
(MemoryError at a 3 GB cap) in ``mll card render``, from a local label and from the registry's
copy. Every count is bounded, and checked against the graph where the reader knows it, and the
files' headers against the layout, all before an array is read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mll_registry.labels import format as F
from mll_registry.labels.format import LabelError, MappedLabel, ModelLabel, layout

REF = "local-dir:/models/m"
FIX = f"`mll label {REF} --force`"
#: the finding: 10^11 images in 10^11 chunks of one row
HUGE = {"images": 10**11, "chunks": 10**11, "chunk_rows": 1}


def _label() -> ModelLabel:
    """A small real label: 3 images, K=2, 3 nodes, 3 memberships."""
    idx = np.array([[0, 1], [1, 0], [2, 1]], np.uint16)
    return ModelLabel(idx, np.full(idx.shape, 0.5, np.float16), np.arange(3, dtype=np.float16),
                      pd.DataFrame({"node_id": list("abc"), "acc1": [1.0, 0.5, 0.0]}),
                      {"graph_version": "gv1", "model_ref": REF})


def _saved(path: Path, chunked: bool = False) -> Path:
    """The label saved at ``path``; ``chunked``: its ranks in chunks, as a label fetched from
    the registry's artifact store holds them (no ``ranks.safetensors``)."""
    _label().save(path)
    if chunked:
        F.write_chunks(path, path)
        (path / F.RANKS_FILE).unlink()
        assert F.checksum_mismatch(path) is None
    return path


def _set_layout(path: Path, **fields: int) -> None:
    """Rewrite meta.json's layout as an attacker would (the other files' checksums, all meta.json
    holds, stay true: nothing else changes)."""
    meta = json.loads((path / "meta.json").read_text())
    meta["layout"].update(fields)
    (path / "meta.json").write_text(json.dumps(meta))


#: run under an address-space cap of what the child has mapped plus 1 GiB: each read of the
#: crafted labels, by the entry points ``mll card render`` and a selection use
CAPPED = r"""
import json, os, resource, sys, time
from pathlib import Path

from typer.testing import CliRunner

from mll_registry.cli.card import card_app
from mll_registry.labels.format import MappedLabel, ModelLabel, checksum_mismatch, stored_files

mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (mapped + (1 << 30), resource.getrlimit(
    resource.RLIMIT_AS)[1]))
out = {}
for label in sys.argv[2:]:
    p = Path(label)
    meta = json.loads((p / "meta.json").read_text())
    for what, read in (("load", lambda: ModelLabel.load(p)),
                       ("checksums", lambda: checksum_mismatch(p)),
                       ("stored files", lambda: stored_files(meta)),
                       ("open", lambda: MappedLabel.open(p).load())):
        t = time.perf_counter()
        try:
            read()
            got = ["returned", ""]
        except BaseException as exc:  # MemoryError included
            got = [type(exc).__name__, (str(exc).splitlines() or [""])[0]]
        out[f"{p.name}: {what}"] = [*got, time.perf_counter() - t]
    t = time.perf_counter()
    res = CliRunner().invoke(card_app, ["render", sys.argv[1], "--label", str(p)])
    out[f"{p.name}: card render"] = [res.exit_code, " ".join(res.output.split()),
                                     time.perf_counter() - t]
print(json.dumps(out))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="needs Linux /proc")
def test_an_unbounded_layout_is_refused_fast_under_a_memory_cap(tmp_path: Path) -> None:
    """The finding, both ways a label lies on disk: every full read, and ``mll card render``,
    refuse it at once with one line naming the field, the label and the fix, under a cap far
    below what the 10^11-entry list needs."""
    import mll_registry

    labels = [_saved(tmp_path / "whole"), _saved(tmp_path / "chunked", chunked=True)]
    for p in labels:
        _set_layout(p, **HUGE)
    src = str(Path(mll_registry.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", CAPPED, f"local-dir:{tmp_path}",
                           *map(str, labels)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got: dict[str, list[Any]] = json.loads(proc.stdout.splitlines()[-1])
    assert len(got) == 10
    for what, (kind, msg, seconds) in got.items():
        p = tmp_path / what.split(":")[0]
        if what.endswith("card render"):
            assert kind == 2, (what, msg)  # one line, exit 2 (was: MemoryError)
        else:
            assert kind == "LabelError", (what, kind, msg)
        assert "layout images=100000000000 is more than a label holds" in msg, (what, msg)
        if not what.endswith("stored files"):  # no path given there: meta.json alone
            assert str(p) in msg and FIX in msg, (what, msg)
        assert seconds < 5, (what, seconds)


#: field -> a crafted layout over that field's bound (the others as the label has them)
OVER = {
    "images": HUGE,
    "chunks": {"images": 10**7, "chunks": 10**7, "chunk_rows": 1},  # each chunk one image
    "chunk_rows": {"chunk_rows": 10**6},
    "top_k": {"top_k": 2**40},
    "memberships": {"memberships": 10**13},
}


@pytest.mark.parametrize("field", sorted(OVER))
def test_every_layout_field_is_bounded(tmp_path: Path, field: str) -> None:
    path = _saved(tmp_path / "label")
    _set_layout(path, **OVER[field])
    meta = json.loads((path / "meta.json").read_text())
    with pytest.raises(LabelError, match=rf"layout {field}=\d+ is more than a label holds"):
        layout(meta)
    with pytest.raises(LabelError, match=rf"meta.json: layout {field}=") as e:
        MappedLabel.open(path, "gv1")  # what a selection opens each label with
    assert "\n" not in str(e.value) and FIX in str(e.value)


@pytest.mark.parametrize("rows", [1, 2, 3, F.CHUNK_ROWS, 2048])
def test_real_layouts_pass(tmp_path: Path, rows: int) -> None:
    """Chunks of the rows labels were written with (2,048 before 512; tests use 2 and 3)."""
    path = _saved(tmp_path / "label")
    _set_layout(path, chunk_rows=rows, chunks=-(-3 // rows))
    assert layout(json.loads((path / "meta.json").read_text()), images=3, memberships=3,
                  nodes=3)["chunk_rows"] == rows
    assert layout({"layout": {"images": 0, "top_k": 0, "chunk_rows": F.CHUNK_ROWS, "chunks": 0,
                              "index_dtype": "uint16", "memberships": 0}})["chunks"] == 0


def test_the_layout_is_checked_against_the_graph_where_it_is_known(tmp_path: Path) -> None:
    path = _saved(tmp_path / "label")
    with pytest.raises(LabelError, match="label has 3 images, graph has 4"):
        MappedLabel.open(path, "gv1", n_images=4)
    with pytest.raises(LabelError, match="label has 3 memberships, graph has 2"):
        MappedLabel.open(path, "gv1", n_images=3, n_members=2)
    meta = json.loads((path / "meta.json").read_text())
    with pytest.raises(LabelError, match="layout top_k=2 is more than the label's 1 nodes"):
        layout(meta, path, nodes=1)
    assert MappedLabel.open(path, "gv1", 3, 3).topk_idx.shape == (3, 2)


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
@pytest.mark.parametrize("field", ["memberships", "top_k", "images"])
def test_headers_that_disagree_with_the_layout_are_refused_before_any_array_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, chunked: bool) -> None:
    """A layout within its bounds but not the files' shapes: refused on the headers, naming
    the file, before one array is read (was: after all of them were)."""
    import safetensors.numpy

    path = _saved(tmp_path / "label", chunked)
    lay = json.loads((path / "meta.json").read_text())["layout"]
    _set_layout(path, **{field: lay[field] - 1})
    read: list[str] = []
    real = safetensors.numpy.load_file
    monkeypatch.setattr(safetensors.numpy, "load_file", lambda f, *a, **k: (
        read.append(str(f)), real(f, *a, **k))[1])
    with pytest.raises(LabelError, match=r"safetensors: arrays .* meta.json's layout "
                                         r"describes") as e:
        ModelLabel.load(path)
    assert read == [] and str(path) in str(e.value) and FIX in str(e.value)
