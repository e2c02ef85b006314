"""One pipeline for build and extend (mll_registry.graph.build): the same bundles as before it.

The expected versions and file digests were computed by the two separate implementations the
pipeline replaced (build_graph and extend_graph before issue #26): a change to any step (listing,
draw, hypernyms, fill, table order, manifest) shows here. File digests are of the parquet bytes
under the locked pandas/pyarrow; the manifest digest leaves out paths, timings and created_at.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png
from PIL import Image

from mll_registry.graph.build import Parent, collect, expand
from mll_registry.graph.bundle import GraphConfig, SampleDataset, SemanticGraph, build_graph
from mll_registry.graph.lineage import extend_graph

#: name -> (version, manifest digest, {parquet file: digest}), from the code before the pipeline
EXPECTED = {
    "tree": ("58771677498d3e28", "6baf6521108c4171", {
        "edges.parquet": "4be17064b1d47e52", "images.parquet": "4a2a318b7bbe17ef",
        "members.parquet": "c3f30dbaaa3e130e", "nodes.parquet": "ca8829f30a14c288"}),
    "tree_cap2": ("d61537f5d6ca29ca", "d0c0238da46dda0c", {
        "edges.parquet": "4be17064b1d47e52", "images.parquet": "b455ce0e0370c6ff",
        "members.parquet": "8335c98a534765e8", "nodes.parquet": "0b6836ba21ba5d68"}),
    "tree_nohyp": ("5b7dc6941ccdd054", "8eb1a19672e006be", {
        "edges.parquet": "f9dfbcbe70eaadab", "images.parquet": "4a2a318b7bbe17ef",
        "members.parquet": "c902616bc399e8de", "nodes.parquet": "58d95bbcf6067541"}),
    "tree_nofill": ("4fd6063f411f4a17", "91a5cd1902444a93", {
        "edges.parquet": "f9dfbcbe70eaadab", "images.parquet": "4a2a318b7bbe17ef",
        "members.parquet": "c902616bc399e8de", "nodes.parquet": "a62920654e5ba1af"}),
    "parent": ("890f1c0b3664447d", "3247a5a49b4d0814", {
        "edges.parquet": "206990a664ef77c9", "images.parquet": "306e0dfa4f79f6f9",
        "members.parquet": "5f9fb802c5dca575", "nodes.parquet": "71389e69fa187092"}),
    "child": ("c8b3fd837132024f", "cf2b28b4be5892c3", {
        "edges.parquet": "f14d82c500ef4778", "images.parquet": "7a639016d23308a7",
        "members.parquet": "c238b42fbe2b0f09", "nodes.parquet": "0a8fb1b25fa711d9"}),
    "grand": ("89de940d19664e2a", "5536bdc1d700369d", {
        "edges.parquet": "dd529c354860284b", "images.parquet": "5b6980e15d76e5e9",
        "members.parquet": "617bcfb71531ccc7", "nodes.parquet": "f39496e898ad6762"}),
    "parent_default": ("f0a928eccff4e22b", "82a82f5953d67539", {
        "edges.parquet": "206990a664ef77c9", "images.parquet": "306e0dfa4f79f6f9",
        "members.parquet": "8862406af9649a05", "nodes.parquet": "e79eb660a83a66e2"}),
    "child_default": ("9db594ad95e8801b", "da85b6d22484499b", {
        "edges.parquet": "dd529c354860284b", "images.parquet": "d4be86a1ea72d0cf",
        "members.parquet": "ac658c5183065617", "nodes.parquet": "884c9e316130b630"}),
}


def _noise(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def _digests(g: SemanticGraph, out: Path) -> tuple[str, str, dict[str, str]]:
    g.save(out)
    files = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:16]
             for f in sorted(out.glob("*.parquet"))}
    m = dict(g.manifest)
    m.pop("created_at")
    m.pop("sources")
    m["report"] = [{k: v for k, v in r.items() if k != "root"} for r in m["report"]]
    m["counts"] = {k: v for k, v in m["counts"].items() if k != "seconds"}
    return g.version, hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()[:16], files


@pytest.fixture()
def growth(tmp_path: Path) -> Path:
    """base (dogs, cats, a sparrow), more (new concepts, a new dog, a dog the parent has),
    third (cars, and more sparrows than the cap leaves room for)."""
    b = tmp_path / "grow"
    for i in range(4):
        _noise(b / "base" / "dog.n.01" / f"{i}.png", i)
        _noise(b / "base" / "domestic_cat.n.01" / f"{i}.png", 100 + i)
    _noise(b / "base" / "sparrow.n.01" / "0.png", 200)
    for i in range(3):
        _noise(b / "more" / "horse.n.01" / f"{i}.png", 300 + i)
        _noise(b / "more" / "trout.n.01" / f"{i}.png", 400 + i)
    for i in range(2):
        _noise(b / "more" / "goldfish.n.01" / f"{i}.png", 600 + i)
    _noise(b / "more" / "dog.n.01" / "new.png", 500)
    _noise(b / "more" / "dog.n.01" / "same-bytes.png", 0)
    for i in range(3):
        _noise(b / "third" / "car.n.01" / f"{i}.png", 700 + i)
    for i in range(80):
        _noise(b / "third" / "sparrow.n.01" / f"{i}.png", 800 + i)
    return b


def test_builds_give_the_bundles_of_before(tree: Path, tmp_path: Path) -> None:
    sources = [SampleDataset("A", tree / "A"), SampleDataset("B", tree / "B", "pencil")]
    configs = {"tree": GraphConfig(), "tree_cap2": GraphConfig(cap=2, seed=7),
               "tree_nohyp": GraphConfig(expand_hypernyms=False),
               "tree_nofill": GraphConfig(fill_from_descendants=False, min_depth=2,
                                          caption_template="{lemmas}")}
    for name, cfg in configs.items():
        assert _digests(build_graph(sources, cfg)[0], tmp_path / name) == EXPECTED[name], name


def test_extensions_give_the_bundles_of_before(growth: Path, tmp_path: Path) -> None:
    parent = build_graph([SampleDataset("base", growth / "base")], GraphConfig(cap=6))[0]
    assert _digests(parent, tmp_path / "parent") == EXPECTED["parent"]
    child = extend_graph(parent, [SampleDataset("more", growth / "more", "noise")])[0]
    assert _digests(child, tmp_path / "child") == EXPECTED["child"]
    grand = extend_graph(SemanticGraph.load(tmp_path / "child"),
                         [SampleDataset("third", growth / "third")])[0]
    assert _digests(grand, tmp_path / "grand") == EXPECTED["grand"]
    assert grand.manifest["lineage"]["ancestors"] == [child.version, parent.version]
    parent = build_graph([SampleDataset("base", growth / "base")])[0]
    assert _digests(parent, tmp_path / "pd") == EXPECTED["parent_default"]
    child = extend_graph(parent, [SampleDataset("more", growth / "more"),
                                  SampleDataset("third", growth / "third")])[0]
    assert _digests(child, tmp_path / "cd") == EXPECTED["child_default"]


def test_a_build_keeps_an_unreadable_folder_above_a_drawn_one_at_any_depth(tmp_path: Path) -> None:
    """``whole.n.02`` (depth 3 < min_depth 4) names a folder with no readable image: a build keeps
    it as a node over the drawn dog (as the build always did); a growth does not."""
    write_png(tmp_path / "S" / "dog.n.01" / "0.png", 3)
    (tmp_path / "S" / "whole.n.02").mkdir()
    (tmp_path / "S" / "whole.n.02" / "bad.png").write_bytes(b"not a png")
    g, _ = build_graph([SampleDataset("S", tmp_path / "S")])
    assert "whole.n.02" in g.node_ids and "object.n.01" not in g.node_ids
    assert g.nodes.set_index("node_id").loc["whole.n.02", "n_own"] == 0
    from mll_registry.graph import wordnet as W

    own = {"dog.n.01": [(0, "dog.n.01/0.png")]}
    col = collect([SampleDataset("S", tmp_path / "S")])
    assert col.folder_nodes == ["dog.n.01", "whole.n.02"]
    cfg = GraphConfig()
    assert "whole.n.02" in expand(Parent(), own, cfg, W.wn(), set(col.folder_nodes))
    assert "whole.n.02" not in expand(Parent(), own, cfg, W.wn(), set())
