"""The library's error base, and errors about models that callers catch by kind.

Every error this library raises on purpose is an :class:`MLLError`; the CLI prints one as one line
and exits 2 (``mll_registry.cli.common.boundary``).
"""

from __future__ import annotations

from collections.abc import Iterator


class MLLError(Exception):
    """Base of every error this library raises on purpose.

    Its message is one line naming the problem and the fix, so it is shown as is (no traceback).
    Each subclass keeps a built-in base too (``ValueError``, ``RuntimeError``, ...), so callers
    that catch those keep working.
    """


#: how a full disk shows in messages of libraries that do not keep the OSError (Rust, MLflow)
_DISK_FULL = ("No space left on device", "os error 28", "Disk quota exceeded", "File too large")


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a full disk (or quota, or file-size limit): never worth a retry."""
    import errno

    return (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            or any(m in str(exc) for m in _DISK_FULL))


class ModelRefError(MLLError, ValueError):
    """A model reference is malformed, or names something that is not a loadable open_clip model."""


class PickledWeightsRefused(ModelRefError):
    """Only pickled weights exist and the caller did not opt in."""


class UnsafeModelError(ModelRefError):
    """A model's files ask for something an untrusted model may not do (run code, fetch elsewhere)."""


class CaptionProviderError(MLLError, RuntimeError):
    """A caption endpoint did not answer, answered an error, or not a chat completion."""


class ImageFileError(MLLError, ValueError):
    """An image file cannot be used (not an image, truncated, or larger than the pixel limit)."""


#: PIL's decompression-bomb limit, set deliberately (PIL's own default is 89 Mpx with a warning):
#: no sample or task image needs more than 64 Mpx, and a bomb is refused before it is decoded
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
#: the only image formats decoded anywhere (graph samples, task images, shots, served requests):
#: raster formats with decoders inside Pillow. Any other (EPS, which hands the bytes to
#: Ghostscript; PDF; plugins that shell out) is refused before its decoder is reached.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


def open_image(path: object, max_pixels: int = MAX_IMAGE_PIXELS) -> object:
    """``PIL.Image.open`` of one of :data:`IMAGE_FORMATS` under ``max_pixels``, errors turned
    into :class:`ImageFileError`."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # PIL's own check, as a backstop
    try:
        im = Image.open(path, formats=IMAGE_FORMATS)  # type: ignore[arg-type]  # header only
        if im.width * im.height > max_pixels:
            raise Image.DecompressionBombError(f"{im.width}x{im.height}")
        im.load()
        return im
    except Image.DecompressionBombError as exc:
        raise ImageFileError(f"{path}: larger than {max_pixels:,} pixels (a decompression "
                             "bomb, or a scan): shrink or remove it") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageFileError(f"{path}: not a readable image (not one of the formats decoded "
                             f"here: {', '.join(IMAGE_FORMATS)}); convert it to PNG, or remove "
                             "it") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ImageFileError(f"{path}: not a readable image ({first}); replace or remove "
                             "it") from exc


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes (``__cause__``, else ``__context__``), each once."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__
