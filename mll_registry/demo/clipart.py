"""Openclipart drawings as a graph sample source: clip art that no demo model was trained on.

Debian's ``openclipart-svg`` (public domain; ``/usr/share/openclipart/svg/<folder>/.../*.svg``)
is cleared for this project's graph only: never training, never tasks. Each drawing is mapped to
a WordNet noun synset from its file name and folder by one rule (:func:`synset_for`), rendered
with cairosvg on white like the emoji sources, and written as an ImageFolder by wnid (the layout
:mod:`mll_registry.graph.bundle` reads). The same rule maps ``tuxpaint-stamps-default`` stamps
(their file names and folders) for the coverage report.

File names are a title, often with the author's name and a number after it, cut to 24
characters (``chemistry_flask_matthew__02``, ``az-lizard_benji_park_01``): the rule reads the
title's words from the left as WordNet nouns (three words, then two, then one) and takes the
last noun of the first run of nouns that fits (English puts the head last: "tenor trombone" is a
trombone), a noun fitting when one of its three most frequent senses is a physical entity under
its folder's anchors (``animals``: an animal; ``food``: food or a plant part; ...), so "bat" in
``animals`` is the mammal. Folders of symbols, icons, playing cards and maps map nothing.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from mll_registry import __version__
from mll_registry.config import demo_dir
from mll_registry.errors import MLLError
from mll_registry.fsutil import atomic_dir

OPENCLIPART_SVG = Path("/usr/share/openclipart/svg")
TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
SOURCE = "openclipart"
DESCRIPTION = "clip art drawing"  # the source's domain, as a task's ``domain`` would say it
RENDER_FORMAT = "mll-clipart-render/1"
MIN_DRAWINGS = 3  # a concept counts as covered with this many drawings (issue #27)

#: folders of symbols, logos and abstract shapes: no drawing of a thing
SKIPPED_FOLDERS = frozenset({"logos", "buttons", "shapes", "signs_and_symbols", "special",
                             "symbols", "naturalforces", "geography"})
#: sub-folders of the same kinds inside other folders (any part of the path)
SKIPPED_PARTS = frozenset({"icons", "cards", "flags", "aiga-symbols"})
#: a drawing's synset must lie under one of its top folder's anchors (any physical entity when
#: the folder has none)
FOLDER_ANCHORS: dict[str, tuple[str, ...]] = {
    "animals": ("animal.n.01",),
    "food": ("food.n.01", "food.n.02", "plant_part.n.01"),
    "plants": ("plant.n.02", "plant_part.n.01"),
    "transportation": ("conveyance.n.03", "craft.n.02"),
    "vehicles": ("conveyance.n.03", "craft.n.02"),
    "tools": ("instrumentality.n.03",),
    "buildings": ("structure.n.01",),
    "electronics": ("instrumentality.n.03",),
    "computer": ("instrumentality.n.03",),
    "office": ("artifact.n.01",),
    "containers": ("artifact.n.01",),
    "household": ("artifact.n.01",),
    "clothes": ("artifact.n.01",),
    "people": ("person.n.01", "artifact.n.01"),
}

INSTALL_HINT = ("openclipart drawings not found at {path}.\n"
                "  As root on Debian/Ubuntu: apt-get install openclipart-svg")


class ClipartMissing(MLLError, RuntimeError):
    """The openclipart drawings (or the SVG renderer) are not installed."""


@dataclass(frozen=True)
class Drawing:
    """One drawing and the synset its name maps to (None: no noun of its title fits)."""

    path: Path
    folder: str
    synset: str | None


def title_words(stem: str) -> list[str]:
    """The words of a file name, lower case, without numbers (``az-lizard_benji_park_01`` ->
    ``[az, lizard, benji, park]``)."""
    return [w for w in re.split(r"[^a-z]+", stem.lower()) if w]


def _ancestors(s: Any) -> set[str]:
    return {a.name() for a in s.closure(lambda x: x.hypernyms())} | {s.name()}


def synset_for(stem: str, folder: str, senses: int = 3) -> str | None:
    """The synset a drawing named ``stem`` in top folder ``folder`` depicts (module docstring),
    or None."""
    from mll_registry.graph.wordnet import wn

    if folder in SKIPPED_FOLDERS:
        return None
    words = title_words(stem)
    anchors = FOLDER_ANCHORS.get(folder, ("physical_entity.n.01",))
    reader = wn()
    best: str | None = None
    i = 0
    while i < len(words):
        for n in (3, 2, 1):  # the longest noun starting at word i
            found = reader.synsets("_".join(words[i:i + n]), pos="n") if i + n <= len(words) \
                else []
            if found:
                break
        if not found:  # not a noun: the run of nouns, if one fitted, is over
            if best:
                break
            i += 1
            continue
        for sense in found[:senses]:
            up = _ancestors(sense)
            if "physical_entity.n.01" in up and any(a in up for a in anchors):
                best = str(sense.name())
                break
        i += n
    return best


def _files(root: Path, pattern: str) -> list[Path]:
    if not root.is_dir():
        raise ClipartMissing(INSTALL_HINT.format(path=root))
    return sorted(root.rglob(pattern))


def _drawing(path: Path, root: Path) -> Drawing:
    parts = path.relative_to(root).parts
    skipped = any(p in SKIPPED_PARTS for p in parts[:-1])
    return Drawing(path, parts[0], None if skipped else synset_for(path.stem, parts[0]))


def drawings(root: Path = OPENCLIPART_SVG) -> list[Drawing]:
    """Every openclipart SVG under ``root`` with its mapped synset (sorted by path)."""
    return [_drawing(p, root) for p in _files(root, "*.svg")]


def stamps(root: Path = TUXPAINT_STAMPS) -> list[Drawing]:
    """Every Tux Paint stamp (PNG or SVG) under ``root`` with its mapped synset."""
    return [_drawing(p, root) for p in _files(root, "*") if p.suffix in (".png", ".svg")]


def render_svg(path: str | os.PathLike[str], size: int) -> Image.Image:
    """An SVG drawn by cairosvg, cropped to its content and centred on a white ``size`` square
    (as the emoji sources are). RGB.

    Raises:
        ClipartMissing: cairosvg (or the cairo library it loads) is not installed.
        ValueError: the SVG cannot be drawn.
    """
    import io

    from mll_registry.demo.sources import _on_white

    try:
        import cairosvg
    except (ImportError, OSError) as exc:
        raise ClipartMissing(f"cannot draw SVGs: {exc}; install the project's dependencies and "
                             "Debian's libcairo2") from exc
    try:
        png = cairosvg.svg2png(url=str(path), output_width=4 * size, output_height=4 * size)
    except Exception as exc:  # cairosvg raises many kinds on malformed SVG
        raise ValueError(f"{path}: not a drawable SVG ({type(exc).__name__}: {exc})") from exc
    with Image.open(io.BytesIO(png)) as im:
        return _on_white(im, size)


def _render(args: tuple[str, str, int]) -> int:
    src, dst, size = args
    try:
        render_svg(src, size).save(dst, optimize=False)
    except ValueError:
        return 0
    return 1


def clipart_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``<data>/demo/images-clipart``: the rendered drawings, one ImageFolder per source."""
    return demo_dir(root) / "images-clipart"


@dataclass
class ClipartRender:
    """Where the drawings were rendered and whether this call did the work."""

    path: str
    concepts: int
    images: int
    failed: int
    rendered: bool
    seconds: float


def ensure_clipart_images(synsets: Iterable[str] | None = None,
                          root: str | os.PathLike[str] | None = None, size: int = 96,
                          min_drawings: int = MIN_DRAWINGS, svg_root: Path = OPENCLIPART_SVG,
                          workers: int | None = None) -> ClipartRender:
    """Render the drawings of every synset with ``min_drawings`` or more (only ``synsets``, when
    given) into ``<data>/demo/images-clipart/openclipart/<wnid>/<file>.png``. A no-op when a
    complete render with the same parameters is there; written under a temporary name and
    renamed when complete."""
    from mll_registry.graph import wordnet as W

    t0 = time.perf_counter()
    keep = set(synsets) if synsets is not None else None
    by: dict[str, list[Path]] = {}
    for d in drawings(svg_root):
        if d.synset and (keep is None or d.synset in keep):
            by.setdefault(d.synset, []).append(d.path)
    by = {s: ps for s, ps in sorted(by.items()) if len(ps) >= min_drawings}
    params = {"format": RENDER_FORMAT, "size": size, "min_drawings": min_drawings,
              "files": {s: [str(p.relative_to(svg_root)) for p in ps] for s, ps in by.items()}}
    target = clipart_root(root) / SOURCE
    mf = target / "manifest.json"
    if mf.is_file():
        done = json.loads(mf.read_text(encoding="utf-8"))
        if done.get("params") == params:
            return ClipartRender(str(target), done["concepts"], done["images"], done["failed"],
                                 False, round(time.perf_counter() - t0, 3))
    with atomic_dir(target) as tmp:
        jobs = []
        for s, ps in by.items():
            folder = tmp / W.wnid(W.synset(s))
            folder.mkdir(parents=True)
            jobs += [(str(p), str(folder / f"{p.stem}.png"), size) for p in ps]
        with ProcessPoolExecutor(max_workers=workers or min(2, os.cpu_count() or 1)) as ex:
            ok = sum(ex.map(_render, jobs, chunksize=16))
        for folder in tmp.iterdir():  # a concept whose every drawing failed leaves no folder
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        concepts = sum(1 for f in tmp.iterdir() if f.is_dir())
        (tmp / "manifest.json").write_text(json.dumps(
            {"params": params, "concepts": concepts, "images": ok, "failed": len(jobs) - ok,
             "code_version": __version__}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return ClipartRender(str(target), concepts, ok, len(jobs) - ok, True,
                         round(time.perf_counter() - t0, 3))


@dataclass
class Coverage:
    """How many task concepts a drawing set covers with ``min_drawings`` or more drawings of the
    concept or of a kind of it (its WordNet hyponyms)."""

    classes: int
    covered: list[str]
    drawings: int
    mapped: int
    min_drawings: int

    @property
    def share(self) -> float:
        return len(self.covered) / self.classes if self.classes else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "covered": len(self.covered),
                "share": round(self.share, 4), "drawings": self.drawings, "mapped": self.mapped,
                "min_drawings": self.min_drawings, "covered_classes": self.covered}


def coverage(classes: Mapping[str, str], found: Sequence[Drawing],
             min_drawings: int = MIN_DRAWINGS) -> Coverage:
    """Coverage of ``classes`` (synset -> display name) by ``found``: a drawing of synset s
    counts for every class that s is, or is a kind of."""
    from mll_registry.graph import wordnet as W

    per: Counter[str] = Counter()
    for d in found:
        if d.synset:
            per.update(_ancestors(W.synset(d.synset)))
    covered = sorted(name for s, name in classes.items() if per[s] >= min_drawings)
    return Coverage(len(classes), covered, len(found), sum(1 for d in found if d.synset),
                    min_drawings)
