"""Published graphs: a bundle and its images travel through the tracking server's artifact store."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from mll_registry.app.root import App
from mll_registry.graph.bundle import GraphError, SampleDataset, build_and_save
from mll_registry.registry.graph_store import GRAPH_MODEL, GraphStore, pack_shards
from mll_registry.settings import Settings


def _app(data: Path) -> App:
    return App(Settings(data_dir=str(data)))


@pytest.fixture()
def built(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A graph bundle built from the hand-made tree, and a publisher with its own data dir."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    g, _ = build_and_save([SampleDataset("A", tree / "A"), SampleDataset("B", tree / "B")],
                          tmp_path / "bundle")
    return g, tmp_path / "bundle"


def test_publish_then_fetch_elsewhere_gives_the_same_graph_and_image_bytes(built, tmp_path,
                                                                            monkeypatch):
    g, bundle = built
    pub = _app(tmp_path / "publisher")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'shared.db'}")
    out = pub.graphs.publish(bundle, default=True).to_dict()
    assert out["created"] and out["default"] and out["graph_version"] == g.version
    assert out["images"] == len(g.images) and out["shards"] == 1
    originals = [p.read_bytes() for p in g.image_paths()]  # in image_id order
    # the images are gone from the publisher; a worker with an empty data dir gets them back
    shutil.rmtree(tmp_path / "A", ignore_errors=True)
    shutil.rmtree(tmp_path / "B", ignore_errors=True)
    worker = _app(tmp_path / "worker")
    got = worker.graphs.get("default")
    assert got.version == g.version
    assert [p.read_bytes() for p in got.image_paths()] == originals
    assert all(str(p).startswith(str(tmp_path / "worker")) for p in got.image_paths())
    # by version, from the cache: no server needed any more
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    assert _app(tmp_path / "worker").graphs.get(g.version).version == g.version
    assert GraphStore(lambda: pytest.fail("the server was asked"),
                      tmp_path / "worker").cached(g.version) is not None


def test_publishing_twice_is_one_registry_entry_and_list_shows_the_default(built, tmp_path,
                                                                           monkeypatch):
    g, bundle = built
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'shared.db'}")
    a = _app(tmp_path / "publisher")
    first = a.graphs.publish(bundle).to_dict()
    again = a.graphs.publish(bundle).to_dict()
    assert first["created"] and not again["created"]
    assert first["registry_version"] == again["registry_version"]
    graphs = a.graphs.list()
    assert [x.graph_version for x in graphs] == [g.version]
    assert not graphs[0].default
    a.graphs.set_default(g.version)
    assert a.graphs.list()[0].default
    versions = a.registry.client.search_model_versions(f"name='{GRAPH_MODEL}'")
    assert len(versions) == 1 and versions[0].tags["mll.graph_version"] == g.version
    # a published graph is no label: label queries and selection do not see it
    assert a.registry.labelled_versions() == []
    assert a.registry.labelled_versions(g.version) == []


def test_no_default_graph_is_a_clear_error(tmp_path, monkeypatch):
    from mll_registry.app.graphs import GRAPHS

    def never(**_: object) -> None:  # a fall-back to the demo graph fails here at once
        raise AssertionError("the demo graph was built for `default`")

    GRAPHS.get("demo")  # the entry points loaded, so that the one below replaces the demo's
    monkeypatch.setitem(GRAPHS._items, "demo", never)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(GraphError, match="no default graph.*mll graph publish"):
        _app(tmp_path / "w").graphs.get("default")
    with pytest.raises(GraphError, match="not published"):
        _app(tmp_path / "w").graphs.get("0123456789abcdef")


def test_shards_are_content_addressed_and_deterministic(built, tmp_path):
    g, _ = built
    one = pack_shards(g, tmp_path / "s1", shard_bytes=200)  # tiny shards: several of them
    two = pack_shards(g, tmp_path / "s2", shard_bytes=200)
    assert one == two and len(one["shards"]) > 1
    for s in one["shards"]:
        data = (tmp_path / "s1" / s["name"]).read_bytes()
        assert s["name"] == hashlib.sha256(data).hexdigest() + ".tar"
    # every distinct image once, under its content digest, readable by plain tarfile
    seen = {}
    for s in one["shards"]:
        with tarfile.open(tmp_path / "s1" / s["name"]) as tar:
            for m in tar.getmembers():
                seen[m.name.split(".")[0]] = tar.extractfile(m).read()
    assert set(seen) == set(g.images["digest"])
    for d, data in seen.items():
        assert hashlib.blake2b(data, digest_size=16).hexdigest() == d


def test_a_changed_image_is_refused_at_publish(built, tmp_path):
    g, _ = built
    p = g.image_paths()[0]
    p.write_bytes(p.read_bytes() + b"\0")
    with pytest.raises(GraphError, match="changed since graph"):
        pack_shards(g, tmp_path / "s")


def test_a_damaged_shard_in_the_store_is_refused_and_nothing_is_cached(built, tmp_path,
                                                                      monkeypatch):
    g, bundle = built
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'shared.db'}")
    out = _app(tmp_path / "publisher").graphs.publish(bundle).to_dict()
    # damage the shard where the artifact store keeps it (embedded: under the publisher's dir)
    shard = next((tmp_path / "publisher").rglob(f"mlartifacts/**/{out['run_id']}/**/*.tar"))
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    w = _app(tmp_path / "worker")
    with pytest.raises(GraphError, match="fails its sha256"):
        w.graphs.get(g.version)
    assert w.graph_store.cached(g.version) is None
    assert not json.dumps([str(p) for p in (tmp_path / "worker").rglob("*.png")]).count(".png")
