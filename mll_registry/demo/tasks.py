"""Demo target tasks: task files with image folders rendered from the *target* styles only.

Target styles (EmojiOne, Twemoji, Twemoji-derived sketches) are never graph or training images, so
every accuracy measured on these tasks is on images labelling never saw. Classes are drawn with a
fixed seed per task, fixed before any model was evaluated, and named as a user would write them
("hot dog", "rowing boat"), not by synset.

``ensure_demo_tasks()`` writes ``<data>/demo/tasks/<name>.yaml`` (with an absolute ``data:``) and
``<data>/demo/tasks/<name>/<class>/<style>-<view>.png``; a rerun with the same definitions is a
no-op. ``ensure_demo_references()`` renders each task's classes in another target style
(:func:`reference_style`) under ``<data>/demo/tasks-reference/<name>/``: the benchmark's
attainable references choose on those, never on the task's images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from mll_registry.config import demo_dir
from mll_registry.demo import sources as S
from mll_registry.demo.data import (
    IMAGE_SIZE,
    TARGET_VIEWS,
    Concept,
    Render,
    augment,
    load_concepts,
)
from mll_registry.fsutil import atomic_dir, write_text

# CLDR names that read oddly as class names
DISPLAY_NAMES = {
    "hourglass done": "hourglass", "hourglass not done": "sand timer",
    "magnifying glass tilted left": "magnifying glass", "locked": "padlock",
    "person rowing boat": "rowing boat", "cooking": "frying pan", "timer clock": "timer",
    "balance scale": "scales", "closed mailbox with raised flag": "mailbox",
    "building construction": "construction crane", "atm sign": "cash machine",
    "fork and knife": "cutlery", "fork and knife with plate": "plate", "japanese dolls": "dolls",
    "control knobs": "knobs", "film frames": "film", "crossed swords": "swords",
    "wheelchair symbol": "wheelchair", "atom symbol": "atom", "globe with meridians": "globe",
    "black nib": "nib", "red paper lantern": "lantern", "umbrella on ground": "beach umbrella",
    "ping pong": "ping pong paddle", "ballot box with ballot": "ballot box",
    "left luggage": "luggage", "clinking glasses": "champagne glasses", "high voltage": "lightning",
    "hot beverage": "coffee", "spiral shell": "seashell", "goal net": "goal",
}


def display_name(c: Concept) -> str:
    """How a user would write the class: CLDR name, tidied."""
    name = DISPLAY_NAMES.get(c.name, c.name)
    for suffix in (" face",):
        if name.endswith(suffix) and name != suffix.strip():
            name = name[: -len(suffix)]
    return name


def _is_tool(c: Concept) -> bool:
    from mll_registry.graph import wordnet as W
    if c.group != "object":
        return False
    anc = {a.name() for a in W.synset(c.synset).closure(lambda s: s.hypernyms())}
    return bool(anc & {"implement.n.01", "tool.n.01", "device.n.01", "utensil.n.01"})


PET_SYNSETS = ("dog.n.01", "cat.n.01", "rabbit.n.01", "hamster.n.01", "mouse.n.01", "fish.n.01",
               "turtle.n.02", "snake.n.01", "horse.n.01", "chicken.n.02", "bird.n.01",
               "poodle.n.01", "lizard.n.01", "rat.n.01", "chipmunk.n.01", "duck.n.01")


@dataclass(frozen=True)
class DemoTask:
    """A demo task definition: which concepts, which target styles, which domain words."""

    name: str
    domain: str
    styles: tuple[str, ...]
    pick: Callable[[Concept], bool]
    n: int | None  # classes drawn (seeded); None = all that pass ``pick``
    seed: int
    description: str


DEMO_TASKS: tuple[DemoTask, ...] = (
    DemoTask("pets", "cartoon emoji", ("twemoji",), lambda c: c.synset in PET_SYNSETS, 12, 21,
             "12 pets and farm animals (Twemoji)"),
    DemoTask("animals", "cartoon emoji", ("emojione",), lambda c: c.group == "animal", 40, 22,
             "40 animals (EmojiOne)"),
    DemoTask("food", "cartoon emoji", ("twemoji",), lambda c: c.group == "food", 40, 23,
             "40 foods and drinks (Twemoji)"),
    DemoTask("tools", "cartoon emoji", ("emojione",), _is_tool, 30, 24,
             "30 tools, devices and implements (EmojiOne)"),
    DemoTask("vehicles", "cartoon emoji", ("twemoji",), lambda c: c.group == "vehicle", None, 25,
             "all vehicles (Twemoji)"),
    DemoTask("mixed", "cartoon emoji", ("emojione", "twemoji"), lambda c: True, 120, 26,
             "120 concepts of every kind (EmojiOne and Twemoji)"),
    DemoTask("line-art", "line drawing", ("sketch",), lambda c: True, 50, 27,
             "50 concepts of every kind as line drawings"),
)


def task_concepts(t: DemoTask, concepts: Sequence[Concept]) -> list[Concept]:
    """The task's classes: a seeded draw from the concepts that pass ``pick`` (codepoint order)."""
    pool = [c for c in concepts if t.pick(c)]
    if t.n is not None and t.n < len(pool):
        pool = sorted(random.Random(t.seed).sample(pool, t.n), key=lambda c: c.codepoint)
    names = [display_name(c) for c in pool]
    if len(set(names)) != len(names):
        raise ValueError(f"demo task {t.name}: duplicate display names {names}")
    return pool


def target_seed(style: str, codepoint: int, view: int) -> str | None:
    """Augmentation seed of task view ``view`` (view 0 is the clean render)."""
    return None if view == 0 else f"target:{style}:{codepoint:X}:{view}"


def task_views(fresh: bool = False) -> range:
    """The views of a task's images: 0 (clean) .. TARGET_VIEWS - 1; ``fresh``: the next
    TARGET_VIEWS views, new augmentations of the same art (the fresh render set, rendered only
    to be reported, never used for any decision)."""
    return range(TARGET_VIEWS, 2 * TARGET_VIEWS) if fresh else range(TARGET_VIEWS)


def task_renders(t: DemoTask, concepts: Sequence[Concept] | None = None,
                 fresh: bool = False) -> list[Render]:
    """The recipe of every image of demo task ``t`` (what :func:`ensure_task` draws)."""
    return [Render(S.GLYPHS[st], c.codepoint, st, target_seed(st, c.codepoint, v))
            for c in task_concepts(t, concepts or load_concepts()) for st in t.styles
            for v in task_views(fresh)]


def tasks_dir(root: str | os.PathLike[str] | None = None, fresh: bool = False) -> Path:
    return demo_dir(root) / ("tasks-fresh" if fresh else "tasks")


def _params(t: DemoTask, concepts: Sequence[Concept], fresh: bool = False) -> str:
    views: int | list[int] = TARGET_VIEWS if not fresh else list(task_views(fresh))
    blob = json.dumps({"name": t.name, "domain": t.domain, "styles": t.styles, "views":
                       views, "size": IMAGE_SIZE, "classes": [
                           (display_name(c), c.codepoint) for c in concepts], "v": 1})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def reference_style(t: DemoTask) -> str:
    """The target style of task ``t``'s reference set (:func:`ensure_reference`), fixed by one
    rule before anything was measured: the first target style drawn from other art than every
    style of the task (Twemoji -> EmojiOne, EmojiOne -> Twemoji, sketches (drawn from Twemoji)
    -> EmojiOne); where none is (the mixed task draws both cartoon sets), the first target style
    the task does not use (sketches)."""
    arts = {S.GLYPHS[st] for st in t.styles}
    unused = [st for st in S.TARGET_STYLES if st not in t.styles]
    other_art = [st for st in unused if S.GLYPHS[st] not in arts]
    return (other_art or unused)[0]


def _render_folder(img_dir: Path, chosen: Sequence[Concept], styles: Sequence[str],
                   views: range, stamp: str) -> None:
    """Write ``img_dir/<class>/<style>-<view>.png`` for every concept, style and view (at
    once: a folder is complete or absent)."""
    S.require_sources()
    with atomic_dir(img_dir) as tmp:
        for c in chosen:
            d = tmp / display_name(c)
            d.mkdir()
            for st in styles:
                img = S.render(c.codepoint, st, IMAGE_SIZE)
                for v in views:
                    seed = target_seed(st, c.codepoint, v)
                    (img if seed is None else augment(img, seed)).save(d / f"{st}-{v:02d}.png")
        (tmp / ".params").write_text(stamp)


def _current(img_dir: Path, stamp: str) -> bool:
    return (img_dir / ".params").is_file() and (img_dir / ".params").read_text() == stamp


def ensure_task(t: DemoTask, root: str | os.PathLike[str] | None = None,
                concepts: Sequence[Concept] | None = None, fresh: bool = False) -> Path:
    """Render one demo task (if missing or stale) and return its task file (``fresh``: its
    fresh render set, :func:`task_views`)."""
    chosen = task_concepts(t, concepts or load_concepts())
    base = tasks_dir(root, fresh)
    yml = base / f"{t.name}.yaml"
    img_dir = base / t.name
    stamp = _params(t, chosen, fresh)
    if yml.is_file() and _current(img_dir, stamp):
        return yml
    _render_folder(img_dir, chosen, t.styles, task_views(fresh), stamp)
    body = {"name": t.name, "domain": t.domain, "task": "image classification",
            "classes": [display_name(c) for c in chosen], "data": str(img_dir)}
    header = (f"# MLL demo task: {t.description}"
              f"{' (fresh render set: new views, only reported)' if fresh else ''}.\n"
              f"# Images: target styles {', '.join(t.styles)} only (never labelling or training "
              "images).\n")
    write_text(yml, header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    return yml


def ensure_reference(t: DemoTask, root: str | os.PathLike[str] | None = None,
                     concepts: Sequence[Concept] | None = None) -> Path:
    """Render task ``t``'s reference set (if missing or stale) and return its folder: the
    task's classes in :func:`reference_style`, the same views. The benchmark's attainable
    references choose models on it and are scored on the task's own images (and on its fresh
    render set, which shares its classes)."""
    chosen = task_concepts(t, concepts or load_concepts())
    style = reference_style(t)
    img_dir = demo_dir(root) / "tasks-reference" / t.name
    stamp = _params(dataclasses.replace(t, styles=(style,)), chosen)
    if not _current(img_dir, stamp):
        _render_folder(img_dir, chosen, (style,), task_views(), stamp)
    return img_dir


def ensure_demo_tasks(root: str | os.PathLike[str] | None = None,
                      names: Sequence[str] | None = None, fresh: bool = False) -> list[Path]:
    """Render the demo tasks (all, or ``names``; ``fresh``: their fresh render sets) and return
    their task files."""
    concepts = load_concepts()
    known = {t.name: t for t in DEMO_TASKS}
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise ValueError(f"unknown demo task(s) {unknown}; known: {sorted(known)}")
    return [ensure_task(known[n], root, concepts, fresh) for n in (names or list(known))]


def ensure_demo_references(root: str | os.PathLike[str] | None = None,
                           names: Sequence[str] | None = None) -> dict[str, Path]:
    """Render the demo tasks' reference sets (all, or ``names``): task name -> folder."""
    concepts = load_concepts()
    return {t.name: ensure_reference(t, root, concepts) for t in DEMO_TASKS
            if names is None or t.name in names}
