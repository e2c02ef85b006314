"""Graph images streamed to a model: decoded by DataLoader workers while the model runs.

Labelling reads every graph image once per model. Decoding (PIL + the PIL part of the model's
preprocess) runs in ``torch.utils.data.DataLoader`` worker processes, batches arrive as uint8
tensors (pinned on CUDA) while the previous batch is in the forward pass, and memory stays bounded
by ``workers x prefetch`` batches whatever the graph size.

The raw-pixel cache (:class:`PixelCache`) is an optional accelerator for several models with the
same preprocess on one graph: the decoded uint8 pixels in one memory-mapped ``.npy`` per (graph
version, preprocess). It is larger than the encoded images (224 px: 150 KB per image), so it is
used only when the user gives it a budget (``pixel_cache_gb``) that it fits; it is written while
the first model streams, and published only once complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mll_registry.config import data_dir


@dataclass
class PixelPipeline:
    """An open_clip eval transform split into its PIL part and the tensor normalisation."""

    pil: Callable[[Any], Any]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    key: str  # hash of the PIL part: which models can share prepared pixels

    @classmethod
    def from_preprocess(cls, preprocess: Any) -> PixelPipeline:
        from torchvision import transforms as T

        steps = list(getattr(preprocess, "transforms", [preprocess]))
        try:
            cut = next(i for i, t in enumerate(steps) if isinstance(t, T.ToTensor))
        except StopIteration:
            raise ValueError("preprocess has no ToTensor step; cannot split it") from None
        norm = next((t for t in steps[cut:] if isinstance(t, T.Normalize)), None)
        mean = tuple(norm.mean) if norm else (0.0, 0.0, 0.0)
        std = tuple(norm.std) if norm else (1.0, 1.0, 1.0)
        # repr() of torchvision transforms names their parameters; plain functions by name
        parts = [t.__qualname__ if isinstance(t, types.FunctionType) else repr(t)
                 for t in steps[:cut]]
        key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
        return cls(T.Compose(steps[:cut]), mean, std, key)  # type: ignore[arg-type]

    def __call__(self, path: Path, max_pixels: int | None = None) -> np.ndarray:
        """Decode one image (under ``max_pixels``, default the global pixel limit) and run the
        PIL part of the preprocess.

        Raises:
            ImageFileError: not an image, truncated, or over the pixel limit.
        """
        from mll_registry.errors import MAX_IMAGE_PIXELS, open_image

        with open_image(path, max_pixels or MAX_IMAGE_PIXELS) as im:  # type: ignore[attr-defined]
            return np.array(self.pil(im.convert("RGB")), dtype=np.uint8)  # writable: torch needs it

    def normaliser(self, device: str) -> tuple[Any, Any]:
        """(scale, bias) with ``x * scale + bias == Normalize(ToTensor(x))`` for uint8 NCHW x."""
        import torch

        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        return 1.0 / (std * 255.0), -mean / std


class DecodedImages:
    """A map-style dataset: image ``i`` decoded and PIL-preprocessed, as a uint8 HWC tensor."""

    def __init__(self, paths: Sequence[Path], pipe: PixelPipeline) -> None:
        self.paths = list(paths)
        self.pipe = pipe

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        import torch

        return i, torch.from_numpy(self.pipe(self.paths[i]))


def _worker_context() -> Any:
    """How decode workers start. A process with one thread forks them (fastest; the script need
    not guard ``__main__``). A process running other threads (a Prefect worker: its event loops
    and API clients) must not be forked half-way: measured, forked DataLoader workers die at
    shutdown under a Prefect flow. There they start from a fork server that preloads torch
    (``spawn`` where there is no fork server); the main module must then be importable without
    side effects, as for any multiprocessing start method other than fork."""
    import multiprocessing as mp
    import threading

    if threading.active_count() == 1 and "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "mll_registry.models.image_stream"])  # before it first starts
    return ctx


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # decoding is the worker's job; the forward pass owns the cores


def chunk_batches(bounds: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Batches of image indices over ``[lo, hi)`` ranges that never cross a range boundary."""
    return [list(range(b, min(b + batch_size, hi))) for lo, hi in bounds
            for b in range(lo, hi, batch_size)]


def stream(paths: Sequence[Path], pipe: PixelPipeline, batches: Sequence[Sequence[int]],
           workers: int, device: str = "cpu") -> Iterator[tuple[np.ndarray, Any]]:
    """Yield ``(indices, uint8 (B, H, W, 3) tensor)`` per batch, in order, decoded ahead.

    ``workers`` = 0 decodes in this process (no overlap). On CUDA the batches are pinned.
    A single batch is decoded in this process too: there is nothing to overlap it with, and
    starting worker processes costs more than decoding it.
    """
    from torch.utils.data import DataLoader

    if not batches:
        return
    if len(batches) == 1:
        workers = 0
    loader: DataLoader[Any] = DataLoader(
        DecodedImages(paths, pipe), batch_sampler=batches, num_workers=workers,  # type: ignore[arg-type]
        pin_memory=device.startswith("cuda"), worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None, persistent_workers=False,
        multiprocessing_context=_worker_context() if workers else None)
    for idx, x in loader:
        yield idx.numpy(), x


def decode_all(paths: Sequence[Path], pipe: PixelPipeline, workers: int = 2,
               batch_size: int = 256) -> np.ndarray:
    """Every image decoded into one in-memory uint8 (n, H, W, 3) array (small sets: task
    images, benchmarks)."""
    parts = [x.numpy() for _, x in stream(paths, pipe, chunk_batches([(0, len(paths))],
                                                                     batch_size), workers)]
    return np.concatenate(parts) if parts else np.zeros((0, 0, 0, 3), np.uint8)


# -- the optional raw-pixel cache ------------------------------------------------------------------
def pixel_cache_path(graph_version: str, pipe: PixelPipeline,
                     root: str | os.PathLike[str] | None = None) -> Path:
    return data_dir(root) / "cache" / "pixels" / f"{graph_version}-{pipe.key}.npy"


class PixelCache:
    """Decoded pixels of one graph for one preprocess, memory-mapped; complete or absent.

    ``open()`` returns the cached array when a complete, verified cache exists. ``writer()``
    allocates a temporary file the stream fills; :meth:`publish` renames it into place once every
    image is written (a crash leaves only the temporary file, removed on the next build).
    """

    def __init__(self, graph_version: str, n_images: int, pipe: PixelPipeline,
                 budget_gb: float, root: str | os.PathLike[str] | None = None) -> None:
        self.path = pixel_cache_path(graph_version, pipe, root)
        self.n = n_images
        self.budget_bytes = int(budget_gb * 1e9)
        self._tmp: Path | None = None
        self._arr: np.memmap[Any, Any] | None = None

    def fits(self, image_shape: tuple[int, ...]) -> bool:
        """Whether the cache fits the budget (0: the cache is off) and the disk's free space
        (with 10 % to spare: a memory-mapped write into a full disk is a bus error, not an
        exception)."""
        import shutil

        need = self.n * int(np.prod(image_shape))
        if not 0 < need <= self.budget_bytes:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.path.parent).free > need * 1.1

    def open(self) -> np.ndarray | None:
        if not self.path.is_file():
            return None
        try:  # verified before use: the right number of images, fully on disk
            cached = np.load(self.path, mmap_mode="r")
            if cached.shape[0] == self.n and cached.dtype == np.uint8 and cached.ndim == 4:
                return cached
        except (ValueError, OSError, EOFError):
            pass
        self.path.unlink(missing_ok=True)  # damaged or stale: rebuilt by the next writer
        return None

    def writer(self, image_shape: tuple[int, ...]) -> np.memmap[Any, Any]:
        from mll_registry.fsutil import sweep_stale_temps

        self.path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temps(self.path)  # a killed build's leftovers
        self._tmp = self.path.parent / f".{self.path.name}.{os.getpid()}.cache.tmp"
        self._arr = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.uint8,
                                              shape=(self.n, *image_shape))
        return self._arr

    def publish(self) -> None:
        """Flush the filled cache to disk and move it into place."""
        from mll_registry.fsutil import fsync_path

        assert self._arr is not None and self._tmp is not None
        self._arr.flush()
        self._arr = None
        fsync_path(self._tmp)
        os.replace(self._tmp, self.path)
        fsync_path(self.path.parent)
        self._tmp = None

    def discard(self) -> None:
        self._arr = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
