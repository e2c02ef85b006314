"""What the registry serves is untrusted input: tags, alias targets, shard names, shard members,
image rows, sample folders and graph specs are checked before anything becomes a path or is read.

Each test plays an attacker who can write to the tracking server (here the real embedded MLflow
sqlite store and its artifact folder) and checks that nothing outside the data dir is touched,
that memory stays bounded, and that the error is one line saying what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import tracemalloc
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import write_png
from typer.testing import CliRunner

from mll_registry.app.root import App
from mll_registry.fsutil import path_under
from mll_registry.graph.bundle import GraphError, SampleDataset, build_and_save, build_graph
from mll_registry.registry.graph_store import GRAPH_MODEL
from mll_registry.settings import Settings


def _app(data: Path) -> App:
    return App(Settings(data_dir=str(data)))


@pytest.fixture()
def published(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A small graph published as the default to a shared sqlite store; where its artifacts lie."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'shared.db'}")
    g, _ = build_and_save([SampleDataset("A", tree / "A"), SampleDataset("B", tree / "B")],
                          tmp_path / "bundle")
    out = _app(tmp_path / "publisher").graphs.publish(tmp_path / "bundle", default=True).to_dict()
    art = next((tmp_path / "publisher").rglob(f"{out['run_id']}/artifacts/graph/index.json")).parent
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    return {"graph": g, "out": out, "art": art, "victim": victim,
            "worker": tmp_path / "worker", "client": _app(tmp_path / "publisher").registry.client}


def _one_line_error(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "republish" in msg, msg
    return msg


def _nothing_cached(p: dict[str, Any]) -> None:
    w = _app(p["worker"]).graph_store
    assert w.cached(p["graph"].version) is None
    assert not list(p["worker"].rglob("*.png"))


# -- directory deletion through served names ---------------------------------------------------
def test_a_graph_version_tag_that_is_a_path_deletes_no_directory(published, monkeypatch):
    """`mll.graph_version` set to an absolute path, `default` moved to that version: the fetch
    refuses it (one line, exit 2) and the directory it names is untouched."""
    p = published
    client, victim = p["client"], p["victim"]
    good = client.get_model_version(GRAPH_MODEL, str(p["out"]["registry_version"]))
    bad = client.create_model_version(GRAPH_MODEL, good.source, run_id=good.run_id,
                                      tags={**good.tags, "mll.graph_version": str(victim)})
    client.set_registered_model_alias(GRAPH_MODEL, "default", str(bad.version))
    from mll_registry.cli.main import app

    monkeypatch.setenv("MLL_DATA_DIR", str(p["worker"]))
    res = CliRunner().invoke(app, ["graph", "info", "default", "--json"])
    assert (victim / "keep.txt").read_text() == "precious"
    assert sorted(x.name for x in victim.iterdir()) == ["keep.txt"]
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "mll graph default VERSION" in " ".join(res.output.split())
    # the valid version is still listed, the bad one skipped
    assert [g.graph_version for g in _app(p["worker"]).graphs.list()] == [p["graph"].version]


def test_a_shard_name_that_is_a_path_deletes_no_directory(published):
    """An index.json shard name that is an absolute path (with the shard stored where the
    artifact store resolves that name): refused before anything is written or removed."""
    p = published
    art, victim = p["art"], p["victim"]
    index = json.loads((art / "index.json").read_text())
    shard = index["shards"][0]
    served = art / "shards" / str(victim).lstrip("/") / shard["name"]
    served.parent.mkdir(parents=True)
    served.write_bytes((art / "shards" / shard["name"]).read_bytes())
    shard["name"] = str(victim) + "/" + shard["name"]
    (art / "index.json").write_text(json.dumps(index))
    with pytest.raises(GraphError) as exc:
        _app(p["worker"]).graphs.get(p["graph"].version)
    assert "shard name" in _one_line_error(exc)
    assert (victim / "keep.txt").read_text() == "precious"
    assert sorted(x.name for x in victim.iterdir()) == ["keep.txt"]
    _nothing_cached(p)


def test_path_under_refuses_every_way_out_of_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    os.symlink(tmp_path, root / "a" / "out")  # a link inside that leads outside
    assert path_under(root, "a", "b.png") == root / "a" / "b.png"
    for parts in (("/etc",), ("..", "x"), ("a", "..", "..", "x"), ("a", "out", "x"), ("",),
                  ("a\x00b",), (".",)):
        with pytest.raises(ValueError):
            path_under(root, *parts)


# -- tar shards: bounded, streamed, regular members only ---------------------------------------
def _block(buf: bytes) -> bytes:
    return buf + b"\0" * (-len(buf) % tarfile.BLOCKSIZE)


def _sparse_member(name: str, declared: int, data: bytes) -> bytes:
    """An old-GNU sparse member ('S'): ``data`` stored, ``declared`` bytes when read."""
    ti = tarfile.TarInfo(name)
    ti.size, ti.type = len(data), tarfile.GNUTYPE_SPARSE
    h = bytearray(ti.tobuf(tarfile.GNU_FORMAT))
    h[386:398] = b"%011o\0" % 0  # one sparse entry: offset 0 ...
    h[398:410] = b"%011o\0" % len(data)  # ... len(data) bytes; the rest is a hole
    h[483:495] = b"%011o\0" % declared  # the real size
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h) + _block(data)


def _regular_member(name: str, declared: int, data: bytes) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size = declared
    return ti.tobuf(tarfile.GNU_FORMAT) + _block(data)


def _link_member(name: str) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = tarfile.SYMTYPE, "/dev/zero"
    return ti.tobuf(tarfile.GNU_FORMAT)


def _serve_shard(p: dict[str, Any], member: bytes) -> None:
    """Replace the published shards with one holding ``member``, indexed by its real sha256
    (the attacker writes both the shard and the index)."""
    art = p["art"]
    tar = member + b"\0" * (2 * tarfile.BLOCKSIZE)
    sha = hashlib.sha256(tar).hexdigest()
    for old in (art / "shards").iterdir():
        old.unlink()
    (art / "shards" / f"{sha}.tar").write_bytes(tar)
    index = json.loads((art / "index.json").read_text())
    index["shards"] = [{"name": f"{sha}.tar", "sha256": sha, "bytes": len(tar), "images": 1}]
    (art / "index.json").write_text(json.dumps(index))


def test_a_sparse_shard_member_is_refused_without_reading_its_declared_size(published):
    """10 KB served, 200 MiB declared (under the per-image bound): refused as sparse, with
    peak Python memory far below the declared size."""
    p = published
    digest = str(p["graph"].images["digest"].iloc[0])
    declared = 200 * 1024 * 1024
    _serve_shard(p, _sparse_member(f"{digest}.png", declared, b"\x89PNG" + b"x" * 508))
    tracemalloc.start()
    try:
        with pytest.raises(GraphError) as exc:
            _app(p["worker"]).graphs.get(p["graph"].version)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < declared // 8, f"peak {peak:,} bytes while refusing a {declared:,}-byte member"
    assert "sparse" in _one_line_error(exc)
    _nothing_cached(p)


def test_a_shard_member_declaring_more_than_an_image_may_have_is_refused(published):
    p = published
    digest = str(p["graph"].images["digest"].iloc[0])
    _serve_shard(p, _regular_member(f"{digest}.png", 64 * 1024 ** 3, b"x" * 512))
    with pytest.raises(GraphError) as exc:
        _app(p["worker"]).graphs.get(p["graph"].version)
    assert "declares 68,719,476,736 bytes" in _one_line_error(exc)
    _nothing_cached(p)


def test_a_link_member_in_a_shard_is_refused(published):
    p = published
    digest = str(p["graph"].images["digest"].iloc[0])
    _serve_shard(p, _link_member(f"{digest}.png"))
    with pytest.raises(GraphError) as exc:
        _app(p["worker"]).graphs.get(p["graph"].version)
    assert "is a link" in _one_line_error(exc)
    _nothing_cached(p)


# -- image rows: a path receives one digest, every file holds its row's digest -----------------
def test_two_image_rows_pointed_at_one_file_are_refused(published):
    """Paths are outside the content version: rewriting images.parquet so that row 1 names row
    0's file keeps the version; the fetch refuses it instead of serving a swapped image."""
    p = published
    f = p["art"] / "bundle" / "images.parquet"
    images = pd.read_parquet(f)
    assert images["digest"].iloc[0] != images["digest"].iloc[1]
    images.loc[1, ["source", "relpath"]] = images.loc[0, ["source", "relpath"]].to_list()
    images.to_parquet(f, index=False)
    with pytest.raises(GraphError) as exc:
        _app(p["worker"]).graphs.get(p["graph"].version)
    assert "named by two image rows" in _one_line_error(exc)
    _nothing_cached(p)


def test_a_fetched_graph_holds_each_rows_own_image(published):
    """Paths permuted between rows (no collision): every written file holds the digest of the
    row that names it, so the graph still shows each row its own image."""
    p = published
    f = p["art"] / "bundle" / "images.parquet"
    images = pd.read_parquet(f)
    images["relpath"] = images["relpath"].iloc[::-1].to_list()
    images.loc[:, "source"] = images["source"].iloc[::-1].to_list()
    images.to_parquet(f, index=False)
    got = _app(p["worker"]).graphs.get(p["graph"].version)
    assert got.version == p["graph"].version
    for path, digest in zip(got.image_paths(), got.images["digest"], strict=True):
        assert hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest() == digest


# -- registry tags ------------------------------------------------------------------------------
def test_a_non_integer_tag_is_skipped_by_list_and_valid_versions_stay_listed(published, caplog):
    p = published
    client = p["client"]
    good = client.get_model_version(GRAPH_MODEL, str(p["out"]["registry_version"]))
    client.create_model_version(GRAPH_MODEL, good.source, run_id=good.run_id, tags={
        **good.tags, "mll.graph_version": "0123456789abcdef", "mll.nodes": "many\x1b[31m"})
    with caplog.at_level(logging.WARNING, logger="mll_registry.registry.graph_store"):
        graphs = _app(p["worker"]).graphs.list()
    assert [(g.graph_version, g.default) for g in graphs] == [(p["graph"].version, True)]
    warning = [r.getMessage() for r in caplog.records if "mll.nodes" in r.getMessage()]
    assert len(warning) == 1 and "\x1b" not in warning[0], caplog.text
    with pytest.raises(GraphError, match="not published"):
        _app(p["worker"]).graphs.get("0123456789abcdef")


# -- sample folders: regular files only ----------------------------------------------------------
@pytest.mark.timeout(60)
def test_a_fifo_in_a_sample_folder_is_refused_without_hanging(tree, tmp_path, monkeypatch):
    os.mkfifo(tree / "A" / "dog.n.01" / "x.png")
    from mll_registry.cli.main import app

    monkeypatch.setenv("MLL_DATA_DIR", str(tmp_path / "data"))
    res = CliRunner().invoke(app, ["graph", "build", "--source", f"A={tree / 'A'}",
                                   "--out", str(tmp_path / "g")])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    line = " ".join(res.output.split())
    assert "x.png is a FIFO, not a regular file" in line and "remove" in line
    assert not (tmp_path / "g").exists()


@pytest.mark.timeout(60)
def test_a_link_to_dev_zero_is_refused_and_a_link_to_an_image_is_used(tree, tmp_path):
    elsewhere = write_png(tmp_path / "elsewhere" / "real.png", 200)
    os.symlink(elsewhere, tree / "A" / "dog.n.01" / "linked.png")
    g, _ = build_graph([SampleDataset("A", tree / "A")])
    assert "dog.n.01/linked.png" in set(g.images["relpath"])  # a link to a regular file is used
    os.symlink("/dev/zero", tree / "A" / "dog.n.01" / "z.png")
    with pytest.raises(GraphError) as exc:
        build_graph([SampleDataset("A", tree / "A")])
    msg = str(exc.value)
    assert "\n" not in msg and "z.png is a device, not a regular file" in msg, msg


# -- graph specs ---------------------------------------------------------------------------------
def test_graph_default_is_the_registrys_default_even_with_a_default_folder_here(
        published, tree, tmp_path, monkeypatch):
    p = published
    other, _ = build_and_save([SampleDataset("B", tree / "B")], tmp_path / "here" / "default")
    assert other.version != p["graph"].version
    monkeypatch.chdir(tmp_path / "here")
    w = _app(p["worker"])
    assert w.graphs.get("default").version == p["graph"].version
    assert w.graphs.get("./default").version == other.version  # the folder, written as a path
    assert w.graphs.get(Path("default")).version == other.version
    with pytest.raises(GraphError, match=r"no graph 'nothing': give a bundle directory as "
                                         r"\./nothing"):
        w.graphs.get("nothing")


def test_a_child_graph_with_lineage_passes_the_manifest_checks(tree, tmp_path, monkeypatch):
    """The shape checks accept what `mll graph extend` writes (parent, ancestors, delta)."""
    from mll_registry.graph.lineage import extend_and_save

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'shared.db'}")
    base, _ = build_and_save([SampleDataset("A", tree / "A")], tmp_path / "base")
    child, _, _ = extend_and_save(base, [SampleDataset("B", tree / "B")], tmp_path / "child")
    _app(tmp_path / "publisher").graphs.publish(tmp_path / "child").to_dict()
    got = _app(tmp_path / "worker").graphs.get(child.version)
    assert got.manifest["lineage"]["parent"] == base.version
    assert got.manifest["lineage"]["ancestors"] == [base.version]


# -- a label version's run id is a served name too ------------------------------------------------
@pytest.mark.parametrize("run_id", ["ABS", "../../../victim", "0" * 31 + "/"])
def test_a_label_versions_run_id_that_is_a_path_deletes_no_directory(tmp_path: Path,
                                                                     run_id: str) -> None:
    """A version whose run id is an absolute or ``..`` path (the sqlite and REST stores accept
    it) would point the label, embeddings and summary caches at any directory, which a download
    then replaces: refused by shape, the victim survives."""
    from mll_registry.labels.format import LabelError
    from mll_registry.registry.labels import LabelledVersion, Registry, run_cache_dir

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine", encoding="utf-8")
    rid = str(victim) if run_id == "ABS" else run_id
    reg = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", root=tmp_path / "data" / "a" / "b")
    v = LabelledVersion(name="m", version=1, run_id=rid, model_ref="local-dir:/x", revision="r",
                        graph_version="0" * 16, mean_acc1=0.5, source="runs:/x/label")
    for call in (reg.download_label, reg.download_embeddings, reg.download_summary):
        with pytest.raises(LabelError, match="not an MLflow run id"):
            call(v)
    assert (victim / "keep.txt").read_text(encoding="utf-8") == "mine"
    ok = "0123456789abcdef" * 2
    assert run_cache_dir("registry-labels", ok, tmp_path) == (
        tmp_path / "cache" / "registry-labels" / ok)
