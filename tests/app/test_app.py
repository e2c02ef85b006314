"""The composition root: an App built from parts passed in, its services, the typed results'
JSON, graph specs resolved through the GRAPHS table, and the label-store port."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mll_registry.app.root import App
from mll_registry.graph.bundle import SemanticGraph
from mll_registry.labels.format import ModelLabel
from mll_registry.labels.stores import LabelKey, LocalLabelStore
from mll_registry.paths import Paths
from mll_registry.settings import DEFAULTS, Settings
from mll_registry.task import Task, TaskClass

REPO = Path(__file__).resolve().parents[2]
NODES = ("dog.n.01", "cat.n.01", "car.n.01", "tree.n.01")


def _graph() -> SemanticGraph:
    """Four nodes; images 0,1 are of dog, 2,3 of cat (made by hand, no WordNet)."""
    nd = pd.DataFrame({"node_id": list(NODES), "caption": ["dog", "cat", "car", "tree"]})
    im = pd.DataFrame({"image_id": np.arange(4), "source": "s",
                       "relpath": [f"{i}.png" for i in range(4)], "node_id": "x",
                       "digest": [str(i) for i in range(4)]})
    mem = pd.DataFrame([("dog.n.01", 0), ("dog.n.01", 1), ("cat.n.01", 2), ("cat.n.01", 3)],
                       columns=["node_id", "image_id"]).assign(own=True)
    return SemanticGraph(nd, pd.DataFrame({"parent": [], "child": []}), im, mem,
                         {"version": "ab" * 8, "sources": {"s": "/"}, "config": {"cap": 75}})


class WordEmbedder:
    """A text embedder of the test's own: one axis per word it knows (dog, cat, car, tree)."""

    name = "words"
    key = "words"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts, batch_size: int = 128) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), 4), np.float32)
        for i, t in enumerate(texts):
            for j, w in enumerate(("dog", "cat", "car", "tree")):
                out[i, j] = t.lower().count(w)
        out[:, :] += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@dataclass
class NameCaptions:
    """Describes a class by its name only."""

    name: str = "names"

    def describe(self, cls, task, **_) -> list[str]:
        return [cls.name]


def _store_label(store: LocalLabelStore, ref: str, topk: list[list[int]],
                 member: list[float], graph: SemanticGraph, h: str) -> Path:
    """A label of ``ref`` written where the local store keeps it (meta as the labeller's)."""
    idx = np.array(topk, np.uint16)
    summary = pd.DataFrame({"node_id": list(NODES), "acc1": [0.5] * 4})
    lab = ModelLabel(idx, np.zeros(idx.shape, np.float16), np.array(member, np.float16), summary,
                     {"graph_version": graph.version, "label_hash": h, "model_ref": ref,
                      "source": ref, "revision": "r1"})
    key = LabelKey(ref, "r1", graph.version, h)
    return lab.save(store.path(key, ref))


def test_an_app_from_parts_selects_with_them(tmp_path: Path) -> None:
    g = _graph()
    # the per-class choice itself (4 images are too few for the margin rule to keep it)
    s = Settings(k=1, top_n=2, label_store="local", data_dir=str(tmp_path / "data"),
                 fallback="off")
    h = s.label_hash()
    store = LocalLabelStore(tmp_path / "mine")
    # m1 recognises the dogs, m2 the cats: each image's top-2 nodes (positions in NODES)
    _store_label(store, "local-dir:/m1", [[0, 2], [0, 3], [2, 1], [3, 1]], [.9, .9, .1, .1], g, h)
    _store_label(store, "local-dir:/m2", [[2, 0], [3, 0], [1, 2], [1, 3]], [.1, .1, .9, .9], g, h)
    emb = WordEmbedder()
    a = App(s, paths=Paths.of(tmp_path / "data"), label_stores={"local": store},
            embedder=emb, caption_provider=NameCaptions())
    assert a.label_store() is store and a.embedder is emb
    sel = a.selection.select(Task("pets", [TaskClass("dog"), TaskClass("cat")]), g)
    # dog: m1 has TP 2 FP 0 (f1 1), m2 TP 0 -> m1; cat: the other way round
    assert sel.result.per_class()[0]["models"][0]["model"] == "local-dir:/m1"
    assert sel.result.per_class()[1]["models"][0]["model"] == "local-dir:/m2"
    assert sel.result.params["embedding_model"] == "words" and emb.calls > 0
    assert sel.result.params["caption_provider"] == "names"
    assert sel.to_dict() == {**sel.result.to_dict(), "mlflow_run_id": None}
    assert a.labelling.labelled_models(g.version) == ["local-dir:/m1", "local-dir:/m2"]
    assert not (tmp_path / "data" / "labels").exists()  # the store passed in, not the default


def test_stores_come_from_the_table_once_per_name(tmp_path: Path) -> None:
    from mll_registry.labels.stores import LABEL_STORES
    from mll_registry.registry.store import RegistryLabelStore

    a = App(Settings(data_dir=str(tmp_path)))
    local = a.label_store("local")
    assert isinstance(local, LocalLabelStore) and a.label_store("local") is local
    assert local.base == tmp_path.resolve() / "labels" == a.paths.labels
    reg = a.label_store("registry")
    assert isinstance(reg, RegistryLabelStore) and reg is a.label_store()  # the default setting
    assert "registry" not in reg.__dict__  # no MLflow client until a store call needs one
    assert LABEL_STORES.get("registry") is RegistryLabelStore


def test_the_local_store_finds_a_models_newest_label_on_any_graph(tmp_path: Path) -> None:
    import os

    g = _graph()
    store = LocalLabelStore(tmp_path)
    old = _store_label(store, "local-dir:/m1", [[0, 1]] * 4, [.5] * 4, g, "h1")
    g2 = SemanticGraph(g.nodes, g.edges, g.images, g.members, {**g.manifest, "version": "cd" * 8})
    new = _store_label(store, "local-dir:/m1", [[0, 1]] * 4, [.5] * 4, g2, "h1")
    os.utime(old / "meta.json", (1, 1))
    assert store.latest_label_dir("local-dir:/m1") == new
    assert store.latest_ref("local-dir:/m1") == "local-dir:/m1"
    assert store.latest_ref("local-dir:/other") is None
    key = LabelKey("local-dir:/m1", "r1", g.version, "h1")
    assert store.find(key, "local-dir:/m1") == {
        "source": "local-dir:/m1", "revision": "r1", "graph_version": g.version,
        "label_hash": "h1", "content": "", "model_ref": "local-dir:/m1", "path": str(old)}
    assert store.find(LabelKey("local-dir:/m1", "r2", g.version, "h1"), "x") is None
    assert store.label_dirs(g.version, "h1") == {"local-dir:/m1": old}


def test_select_options_come_from_the_settings() -> None:
    from mll_registry.selection.select import SelectOptions

    s = Settings(k=7, alpha=0.3, metric="precision", top_n=4, unmatched="drop",
                 weak_similarity=0.2, source_weighting="uniform", source_temperature=0.5)
    assert SelectOptions.from_settings(s) == SelectOptions(7, 0.3, "precision", 4, "drop", 0.2,
                                                           "uniform", 0.5)
    d = SelectOptions()
    assert (d.k, d.alpha, d.top_n, d.match_similarity) == (
        DEFAULTS.k, DEFAULTS.alpha, DEFAULTS.top_n, DEFAULTS.weak_similarity)
    with pytest.raises(ValueError, match="fallback, drop or fail"):
        SelectOptions(unmatched="skip")


def test_paths_are_the_data_dirs_folders(tmp_path: Path) -> None:
    from mll_registry.config import demo_dir, graphs_dir

    p = Paths.of(tmp_path / "d")
    assert p.data == (tmp_path / "d").resolve() and p.data.is_dir()
    assert (p.demo, p.graphs) == (demo_dir(tmp_path / "d"), graphs_dir(tmp_path / "d"))
    assert (p.labels, p.cache, p.root) == (p.data / "labels", p.data / "cache", str(p.data))


def test_results_give_the_json_of_the_use_cases() -> None:
    from mll_registry.app.results import DemoReport, LabelOutcome

    skipped = LabelOutcome("skipped", "h", {"top_k": 4}, {"name": "n", "version": 2},
                           reason="already labelled with these settings")
    assert list(skipped.to_dict()) == ["status", "reason", "label_hash", "label_settings",
                                       "name", "version"]
    done = LabelOutcome("labelled", "h", {}, {"path": "p"}, {"path": "q", "seconds": 1.0})
    assert done.to_dict() == {"status": "labelled", "label_hash": "h", "label_settings": {},
                              "path": "q", "seconds": 1.0}
    rep = DemoReport({"graph": {}, "tasks": [], "seconds": 9.0, "prefect_flow_run_id": None},
                     3.5, "sqlite:///x")
    assert list(rep.to_dict()) == ["graph", "tasks", "seconds", "prefect_flow_run_id",
                                   "mlflow_tracking_uri"]
    assert rep.to_dict()["seconds"] == 3.5


def test_a_named_graph_resolves_through_the_graphs_table(tmp_path: Path) -> None:
    from mll_registry.app.graphs import GRAPHS

    g = _graph()
    asked: list[object] = []
    GRAPHS.register("toy", lambda root: asked.append(root) or g)
    try:
        a = App(Settings(data_dir=str(tmp_path)))
        assert a.graphs.get("toy") is g and asked == [a.root]
        assert "demo" in GRAPHS.names()  # from the demo's entry point
    finally:
        GRAPHS.unregister("toy")


def test_a_graph_plugin_from_another_package_is_found_by_name(tmp_path: Path) -> None:
    """A separate distribution's ``mll_registry.graphs`` entry point names a graph the App
    resolves (and publishes from a bundle it writes) without the library being edited."""
    site = tmp_path / "site"
    (site / "acme_graphs").mkdir(parents=True)
    (site / "acme_graphs" / "__init__.py").write_text(textwrap.dedent('''
        import numpy as np
        import pandas as pd
        from mll_registry.graph.bundle import SemanticGraph, content_version

        def company_graph(root=None):
            nd = pd.DataFrame({"node_id": ["dog.n.01"], "caption": ["dog"]})
            im = pd.DataFrame({"image_id": np.arange(1), "source": "s", "relpath": ["0.png"],
                               "node_id": "dog.n.01", "digest": ["0"]})
            mem = pd.DataFrame({"node_id": ["dog.n.01"], "image_id": [0], "own": [True]})
            ed = pd.DataFrame({"parent": pd.Series([], dtype=str),
                               "child": pd.Series([], dtype=str)})
            return SemanticGraph(nd, ed, im, mem, {
                "version": content_version(nd, ed, im, mem), "sources": {"s": "/"},
                "config": {"cap": 75}, "root_seen": str(root)})
    '''))
    info = site / "acme_graphs-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-graphs\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[mll_registry.graphs]\ncompany = acme_graphs:company_graph\n")
    code = f"""
        import json
        from mll_registry.app.graphs import GRAPHS
        from mll_registry.app.root import App
        from mll_registry.settings import Settings
        a = App(Settings(data_dir={str(tmp_path / 'data')!r}))
        g = a.graphs.get("company")
        print(json.dumps({{"names": GRAPHS.names(), "nodes": list(g.node_ids),
                          "root": g.manifest["root_seen"], "data": a.root}}))
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, cwd=site, env={"PYTHONPATH": f"{site}:{REPO}",
                                                   "PATH": "/usr/bin:/bin", "HOME": str(site)})
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["names"] == ["company", "demo"]
    assert got["nodes"] == ["dog.n.01"] and got["root"] == got["data"]
