"""Demo sample data: the curated mapping, deterministic renders, the demo graph via the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conftest import missing_sources
from typer.testing import CliRunner

from mll_registry.cli.main import app
from mll_registry.demo import sources as S
from mll_registry.demo.data import augment, load_concepts, render_style
from mll_registry.graph import wordnet as W

GROUPS = {"animal", "plant", "food", "object", "clothing", "vehicle", "place", "nature", "sport",
          "music", "symbol", "body", "group"}


def test_mapping_is_curated_and_unique() -> None:
    concepts = load_concepts()
    assert len(concepts) >= 450
    assert len({c.synset for c in concepts}) == len(concepts), "one emoji per synset"
    assert len({c.codepoint for c in concepts}) == len(concepts)
    assert {c.group for c in concepts} <= GROUPS
    for c in concepts:
        assert W.synset(c.synset).name() == c.synset  # every synset exists in WordNet 3.0
        assert chr(c.codepoint) == c.emoji
    by_name = {c.name: c.synset for c in concepts}
    # first senses that are wrong for the picture were overridden
    if "bat" in by_name:
        assert by_name["bat"] == "bat.n.01"  # the animal, not the club
    if "computer mouse" in by_name:
        assert W.synset(by_name["computer mouse"]).lexname() == "noun.artifact"
    if "mouse face" in by_name or "mouse" in by_name:
        assert W.synset(by_name.get("mouse", by_name.get("mouse face", ""))).lexname() == \
            "noun.animal"


def test_every_concept_renders_in_every_style() -> None:
    if S.missing_sources():
        missing_sources(str(S.missing_sources()))
    concepts = load_concepts()
    for style in S.ALL_STYLES:
        missing = [c.name for c in concepts if not S.available(c.codepoint, style)]
        assert missing == [], f"{style} lacks {missing[:5]}"


def test_each_demo_task_has_a_reference_style_of_other_art_where_one_exists() -> None:
    from mll_registry.demo.tasks import DEMO_TASKS, reference_style

    got = {t.name: reference_style(t) for t in DEMO_TASKS}
    assert got == {"pets": "emojione", "animals": "twemoji", "food": "emojione",
                   "tools": "twemoji", "vehicles": "emojione", "mixed": "sketch",
                   "line-art": "emojione"}
    for t in DEMO_TASKS:  # never a style of the task's own images
        assert got[t.name] not in t.styles


def test_a_reference_set_holds_the_tasks_classes_in_its_reference_style(tmp_path: Path) -> None:
    from PIL import Image

    from mll_registry.demo.data import IMAGE_SIZE, TARGET_VIEWS
    from mll_registry.demo.tasks import DEMO_TASKS, display_name, ensure_reference, task_concepts
    from mll_registry.task import Task, TaskClass, data_folders

    if S.missing_sources():
        missing_sources()
    pets = next(t for t in DEMO_TASKS if t.name == "pets")
    folder = ensure_reference(pets, tmp_path)
    classes = [display_name(c) for c in task_concepts(pets, load_concepts())]
    folders = data_folders(Task("pets", [TaskClass(c) for c in classes]), folder)
    for c, d in folders.items():
        assert sorted(p.name for p in d.iterdir()) == \
            [f"emojione-{v:02d}.png" for v in range(TARGET_VIEWS)], c
    cp = next(x.codepoint for x in load_concepts() if display_name(x) == classes[0])
    clean = folders[classes[0]] / "emojione-00.png"
    assert Image.open(clean).tobytes() == S.render(cp, "emojione", IMAGE_SIZE).tobytes()
    before = clean.stat().st_mtime_ns
    assert ensure_reference(pets, tmp_path) == folder  # a rerun renders nothing
    assert clean.stat().st_mtime_ns == before


def test_sample_training_and_target_styles() -> None:
    assert not set(S.SAMPLE_STYLES) & set(S.TARGET_STYLES)
    assert not set(S.TRAINING_STYLES) & set(S.TARGET_STYLES)
    assert set(S.SAMPLE_STYLES) | set(S.TARGET_STYLES) == set(S.ALL_STYLES)
    assert set(S.SOURCE_DESCRIPTIONS) == set(S.SAMPLE_STYLES)
    # the graph and training draw on the Noto and Symbola glyphs only; target art stays out
    assert {S.GLYPHS[st] for st in S.SAMPLE_STYLES + S.TRAINING_STYLES} == {"noto", "symbola"}
    # both kinds of look are labelled, so line-art target tasks have labels to select on
    assert set(S.SAMPLE_STYLES) & S.COLOUR_STYLES and set(S.SAMPLE_STYLES) & S.LINE_ART_STYLES


def test_render_and_augment_are_deterministic(tmp_path: Path) -> None:
    if S.missing_sources():
        missing_sources()
    img = S.render(0x1F436, "noto", 96)
    assert img.size == (96, 96) and img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)  # white background
    a, b = augment(img, "noto:1F436:3"), augment(img, "noto:1F436:3")
    assert a.tobytes() == b.tobytes()
    assert augment(img, "noto:1F436:4").tobytes() != a.tobytes()
    concepts = load_concepts()[:5]
    r1 = render_style("sketch", concepts, tmp_path / "one", views=3, workers=1)
    r2 = render_style("sketch", concepts, tmp_path / "two", views=3, workers=2)
    assert r1.images == r2.images == 15 and r1.rendered

    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob("*.png")):
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
        return h.hexdigest()

    assert digest(Path(r1.path)) == digest(Path(r2.path))
    again = render_style("sketch", concepts, tmp_path / "one", views=3)
    assert not again.rendered  # up to date: a no-op


def test_graph_build_demo_cli_twice_same_version() -> None:
    if S.missing_sources():
        missing_sources()
    runner = CliRunner()
    first = runner.invoke(app, ["graph", "build", "--demo", "--json"])
    assert first.exit_code == 0, first.output
    s1 = json.loads(first.stdout)
    assert s1["folder_nodes"] >= 400 and s1["hypernym_nodes"] > 100
    assert s1["nodes"] == s1["folder_nodes"] + s1["hypernym_nodes"]
    assert set(s1["images_per_source"]) == set(S.SAMPLE_STYLES)  # never a target style
    n = len(load_concepts())
    assert all(v == n * 8 for v in s1["images_per_source"].values())
    second = runner.invoke(app, ["graph", "build", "--demo", "--json"])
    assert json.loads(second.stdout)["version"] == s1["version"]
    info = runner.invoke(app, ["graph", "info", s1["path"], "--json"])
    assert json.loads(info.stdout)["nodes"] == s1["nodes"]


def test_graph_images_share_no_bytes_and_no_render_with_training_or_task_images() -> None:
    """The images models are labelled on are never renders they were trained on, nor task
    images: by recipe (glyph + transformation + view) for every concept, and by decoded pixels
    for a seeded sample of concepts."""
    import random

    import numpy as np

    from mll_registry.demo.data import draw, graph_renders
    from mll_registry.demo.tasks import DEMO_TASKS, task_renders
    from mll_registry.demo.train import DEMO_SPECS, training_renders

    if S.missing_sources():
        missing_sources()
    concepts = load_concepts()
    trained_styles = sorted({st for spec in DEMO_SPECS for st in spec.styles})
    graph = set(graph_renders(concepts))
    train = set(training_renders(concepts, trained_styles))
    tasks = {r for t in DEMO_TASKS for r in task_renders(t, concepts)}
    fresh = {r for t in DEMO_TASKS for r in task_renders(t, concepts, fresh=True)}
    assert len(fresh) == len(tasks) and not fresh & tasks  # new views of the same art
    tasks |= fresh
    assert len(graph) == len(concepts) * len(S.SAMPLE_STYLES) * 8
    assert not graph & train and not graph & tasks
    # the glyphs are shared (Noto, Symbola) but never with the same transformation and view
    assert {(r.glyph, r.codepoint) for r in graph} & {(r.glyph, r.codepoint) for r in train}
    assert not {r.glyph for r in tasks} & {r.glyph for r in graph}  # target art stays out

    def pixels(recipes: set) -> set[bytes]:
        return {hashlib.sha256(np.asarray(draw(r)).tobytes()).digest() for r in recipes}

    some = {c.codepoint for c in random.Random(0).sample(concepts, 12)}
    pick = {r for r in graph if r.codepoint in some}
    g_px = pixels(pick)
    # distinct views (a glyph drawn in black, as the telephone receiver, is its own greyscale)
    assert len(g_px) >= 0.97 * len(pick)
    t_px = pixels({r for r in train if r.codepoint in some})
    k_px = pixels({r for r in tasks if r.codepoint in some})
    assert not g_px & t_px and not g_px & k_px
