"""The semantic graph on a hand-made tree: nodes, edges, parent filling, caps, skips, versions."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_png

from mll_registry.graph.bundle import (
    GraphConfig,
    GraphError,
    SampleDataset,
    SemanticGraph,
    build_graph,
)


def _sources(root: Path) -> list[SampleDataset]:
    return [SampleDataset("A", root / "A"), SampleDataset("B", root / "B")]


def _members_by_node(g: SemanticGraph) -> dict[str, list[str]]:
    """node -> sorted origin folder nodes of its images."""
    origin = g.images.set_index("image_id")["node_id"]
    out: dict[str, list[str]] = {}
    for n, grp in g.members.groupby("node_id"):
        out[str(n)] = sorted(origin.loc[grp["image_id"]].tolist())
    return out


def test_nodes_edges_and_parent_filling(tree: Path) -> None:
    g, rep = build_graph(_sources(tree))
    nodes = g.nodes.set_index("node_id")
    # folder nodes: wnid and synset-id folders, merged across sources
    assert nodes.loc["dog.n.01", "n_own"] == 4 and nodes.loc["dog.n.01", "wnid"] == "n02084071"
    assert nodes.loc["domestic_cat.n.01", "n_own"] == 2
    assert rep.folder_nodes == 2
    # hypernyms down to min_depth 4 (living_thing); entity/object/whole left out
    assert {"canine.n.02", "carnivore.n.01", "mammal.n.01", "living_thing.n.01"} <= set(nodes.index)
    assert not {"entity.n.01", "physical_entity.n.01", "object.n.01", "whole.n.02"} & set(nodes.index)
    assert len(g.nodes) == 14 and rep.hypernym_nodes == 12
    edges = set(zip(g.edges["parent"], g.edges["child"], strict=True))
    assert {("canine.n.02", "dog.n.01"), ("carnivore.n.01", "canine.n.02"),
            ("carnivore.n.01", "feline.n.01"), ("domestic_animal.n.01", "dog.n.01")} <= edges
    assert all(p in set(nodes.index) and c in set(nodes.index) for p, c in edges)
    # parents are filled from their descendants' images; own flags only on folder nodes
    by_node = _members_by_node(g)
    assert by_node["canine.n.02"] == ["dog.n.01"] * 4
    assert by_node["carnivore.n.01"] == ["dog.n.01"] * 4 + ["domestic_cat.n.01"] * 2
    own = g.members.groupby("node_id")["own"].sum()
    assert own["dog.n.01"] == 4 and own["carnivore.n.01"] == 0
    # each distinct image appears once in the image table
    assert len(g.images) == 6 and g.images["digest"].is_unique
    assert nodes.loc["dog.n.01", "caption"].startswith("dog which is a member of the genus Canis")


def test_skipped_items_are_counted(tree: Path) -> None:
    _, rep = build_graph(_sources(tree))
    a = rep.sources[0]
    assert (a.folders, a.unknown_folders) == (4, 2)
    assert sorted(a.unknown_examples) == ["n99999999", "not_a_synset"]
    assert (a.unreadable, a.unreadable_examples) == (1, ["n02121808/bad.png"])
    assert a.non_image_files == 1 and a.used == 5
    assert rep.sources[1].used == 1


def test_cap_draws_own_first_then_round_robin(tree: Path) -> None:
    g, _ = build_graph(_sources(tree), GraphConfig(cap=2))
    by_node = _members_by_node(g)
    assert by_node["dog.n.01"] == ["dog.n.01"] * 2
    # a parent at the cap takes one image from each descendant subtree, not two dogs
    assert by_node["carnivore.n.01"] == ["dog.n.01", "domestic_cat.n.01"]
    assert (g.nodes["n_images"] <= 2).all()


def test_seeded_draw_is_deterministic(tree: Path) -> None:
    g1, _ = build_graph(_sources(tree), GraphConfig(cap=2, seed=7))
    g2, _ = build_graph(_sources(tree), GraphConfig(cap=2, seed=7, workers=1))
    pd.testing.assert_frame_equal(g1.members, g2.members)
    assert g1.version == g2.version
    picks = {tuple(sorted(build_graph(_sources(tree), GraphConfig(cap=2, seed=s))[0]
                          .images["relpath"])) for s in range(6)}
    assert len(picks) > 1  # the seed matters


def test_version_follows_content_only(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    v0 = build_graph(_sources(tree))[0].version
    assert build_graph(_sources(tree))[0].version == v0
    # moving the whole dataset elsewhere: same content, same version
    moved = tmp_path_factory.mktemp("moved")
    shutil.copytree(tree / "A", moved / "A")
    shutil.copytree(tree / "B", moved / "B")
    assert build_graph(_sources(moved))[0].version == v0
    # renaming a file moves its image to another row of every label: a new version (labels
    # computed on the old order would describe the wrong images)
    (moved / "A" / "dog.n.01" / "0.png").rename(moved / "A" / "dog.n.01" / "renamed.png")
    assert build_graph(_sources(moved))[0].version != v0
    (moved / "A" / "dog.n.01" / "renamed.png").rename(moved / "A" / "dog.n.01" / "0.png")
    # one image's pixels change: new version
    write_png(moved / "A" / "dog.n.01" / "1.png", 200)
    assert build_graph(_sources(moved))[0].version != v0
    # captions are content too
    assert build_graph(_sources(tree), GraphConfig(caption_template="{lemma}"))[0].version != v0


def test_no_expansion_keeps_folder_nodes_only(tree: Path) -> None:
    g, _ = build_graph(_sources(tree), GraphConfig(expand_hypernyms=False))
    assert sorted(g.node_ids) == ["dog.n.01", "domestic_cat.n.01"] and g.edges.empty


def test_empty_graph_is_an_error(tmp_path: Path) -> None:
    write_png(tmp_path / "junk" / "unknown_name" / "0.png", 1)
    (tmp_path / "junk" / "n02084071").mkdir()
    (tmp_path / "junk" / "n02084071" / "broken.jpg").write_bytes(b"nope")
    with pytest.raises(GraphError, match="graph is empty"):
        build_graph([SampleDataset("junk", tmp_path / "junk")])


def test_bad_arguments(tmp_path: Path, tree: Path) -> None:
    with pytest.raises(GraphError, match="no sample dataset"):
        build_graph([])
    with pytest.raises(GraphError, match="not a directory"):
        build_graph([SampleDataset("x", tmp_path / "missing")])
    with pytest.raises(GraphError, match="unique"):
        build_graph([SampleDataset("A", tree / "A"), SampleDataset("A", tree / "B")])


def test_bundle_roundtrip_and_tamper_detection(tree: Path, tmp_path: Path) -> None:
    g, _ = build_graph(_sources(tree))
    out = g.save(tmp_path / "bundle")
    assert sorted(p.name for p in out.iterdir()) == [
        "edges.parquet", "images.parquet", "manifest.json", "members.parquet", "nodes.parquet"]
    assert not list(tmp_path.glob(".bundle*"))  # no temp leftovers
    g2 = SemanticGraph.load(out)
    assert g2.version == g.version and g2.summary() == g.summary()
    assert [p.name for p in g2.image_paths()][:1] == [Path(g.images["relpath"][0]).name]
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["config"]["cap"] == 75 and mf["sources"]["A"] == str(tree / "A")
    # a modified table no longer matches its version
    nodes = pd.read_parquet(out / "nodes.parquet")
    nodes.loc[0, "caption"] = "tampered"
    nodes.to_parquet(out / "nodes.parquet", index=False)
    with pytest.raises(GraphError, match="modified"):
        SemanticGraph.load(out)
    with pytest.raises(GraphError, match="not a graph bundle"):
        SemanticGraph.load(tmp_path)


def test_relocate_keeps_version(tree: Path, tmp_path: Path) -> None:
    g, _ = build_graph(_sources(tree))
    before = g.version
    shutil.copytree(tree / "A", tmp_path / "elsewhere")
    g.relocate({"A": tmp_path / "elsewhere"})
    assert g.version == before  # the content did not change, so neither does the version
    saved = SemanticGraph.load(g.save(tmp_path / "bundle"))
    assert saved.version == before
    paths = g.image_paths()
    assert all(p.is_file() for p in paths)
    assert any(str(p).startswith(str(tmp_path / "elsewhere")) for p in paths)
    with pytest.raises(GraphError, match="no source"):
        g.relocate({"Z": tmp_path})


def test_parse_dataset_spec(tmp_path: Path) -> None:
    assert SampleDataset.parse(f"sketch={tmp_path}") == SampleDataset("sketch", tmp_path)
    assert SampleDataset.parse(str(tmp_path)).name == tmp_path.name


def test_a_verified_bundle_is_not_hashed_again_until_its_files_change(
        tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mll_registry.graph import bundle as G
    g, _ = build_graph(_sources(tree))
    out = g.save(tmp_path / "bundle")
    calls: list[int] = []
    real = G.content_version

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(G, "content_version", counting)
    root = tmp_path / "data"
    SemanticGraph.load(out, root=root)
    SemanticGraph.load(out, root=root)
    assert len(calls) == 1  # the second load trusted the stamp of the same files
    nodes = pd.read_parquet(out / "nodes.parquet")
    nodes.loc[0, "caption"] = "tampered"
    nodes.to_parquet(out / "nodes.parquet", index=False)
    with pytest.raises(GraphError, match="modified"):
        SemanticGraph.load(out, root=root)  # rewritten files: verified again, and refused
    assert len(calls) == 2


@pytest.mark.parametrize("edit", ["lemma", "node order", "image order"])
def test_everything_a_label_depends_on_is_in_the_version(tree: Path, edit: str) -> None:
    """A lemma is the default label text; node and image order are the label's column and row
    order: changing any of them must change the version (labels are only valid for it)."""
    from mll_registry.graph.bundle import content_version

    g, _ = build_graph(_sources(tree))
    nodes, images, members = g.nodes.copy(), g.images.copy(), g.members.copy()
    if edit == "lemma":
        nodes.loc[0, "lemma"] = nodes.loc[0, "lemma"] + "s"
    elif edit == "node order":
        nodes = nodes.iloc[::-1].reset_index(drop=True)
    else:  # the same images under swapped ids, memberships following them
        swap = {0: 1, 1: 0}
        images = images.iloc[[1, 0, *range(2, len(images))]].reset_index(drop=True)
        images["image_id"] = np.arange(len(images))
        members["image_id"] = members["image_id"].map(lambda i: swap.get(i, i))
    assert content_version(g.nodes, g.edges, g.images, g.members) == g.version
    assert content_version(nodes, g.edges, images, members) != g.version
