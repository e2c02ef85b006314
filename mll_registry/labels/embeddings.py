"""The embeddings a label was computed from, kept so a grown graph is labelled incrementally.

A label (:mod:`mll_registry.labels.format`) holds what selection needs; it cannot be extended to
new nodes or images without the embeddings behind it. This file keeps them, fp16, one row per
graph image and per node, keyed by *content* (docs/method.md §2, docs/architecture.md "graph
lineage"):

* ``image_emb`` (n_images, d) fp16 with ``image_digest`` (n_images, 16) uint8, the image's
  content digest (the graph's ``images.digest``): an image is the same image in any graph
  version whatever its path or row;
* ``text_emb`` (n_nodes, d) fp16 with ``text_key`` (n_nodes, 16) uint8, a digest of the node's
  prompts: a node's text embedding is reused only if its prompts are the same.

Labels are computed from these fp16 embeddings (upcast to fp32 for the similarities), so a label
computed incrementally from stored rows equals the label a full relabelling gives.

The file is safetensors (no pickle), written in one streaming pass (an image block at a time:
bounded memory at any graph size) under a temporary name and renamed when complete. Its metadata
records the model revision, pixels key, label hash, graph version and a blake2b digest of the
arrays, checked on open. It lives beside the label directory, ``<label dir>.embeddings.safetensors``,
so selection, which downloads label directories, never downloads it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mll_registry.errors import MLLError
from mll_registry.fsutil import atomic_path

FORMAT = "mll-embeddings/1"
SUFFIX = ".embeddings.safetensors"
_ORDER = ("image_digest", "text_key", "text_emb", "image_emb")  # image_emb last: streamed
_DT = {np.dtype(np.uint8): "U8", np.dtype(np.float16): "F16"}


class EmbeddingsError(MLLError, ValueError):
    """An embeddings file is missing, damaged, or does not belong to the label it is used for."""


def embeddings_path(label_dir: str | os.PathLike[str]) -> Path:
    """Where a label directory's embeddings live: its sibling ``<name>.embeddings.safetensors``."""
    p = Path(label_dir)
    return p.with_name(p.name + SUFFIX)


def text_keys(texts: Sequence[Sequence[str]]) -> np.ndarray:
    """(n, 16) uint8 digests of each node's prompts (what its text embedding depends on)."""
    out = np.empty((len(texts), 16), np.uint8)
    for i, group in enumerate(texts):
        h = hashlib.blake2b("\x1f".join(group).encode(), digest_size=16).digest()
        out[i] = np.frombuffer(h, np.uint8)
    return out


def digest_bytes(hex_digests: Iterable[str]) -> np.ndarray:
    """(n, 16) uint8 from the graph's hex image digests (blake2b-128)."""
    hexes = list(hex_digests)
    raw = bytes.fromhex("".join(hexes))
    if len(raw) != 16 * len(hexes):
        raise EmbeddingsError("image digests must be 32 hex characters (blake2b-128)")
    return np.frombuffer(raw, np.uint8).reshape(len(hexes), 16).copy()


def row_index(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """For each row of ``wanted`` (n, 16), its row in ``keys`` (m, 16), or -1 when absent."""
    if not len(wanted):
        return np.zeros(0, np.int64)
    kv = np.ascontiguousarray(keys).view("V16").ravel()
    wv = np.ascontiguousarray(wanted).view("V16").ravel()
    order = np.argsort(kv, kind="stable")
    pos = np.searchsorted(kv[order], wv)
    pos = np.minimum(pos, max(len(kv) - 1, 0))
    hit = (kv[order][pos] == wv) if len(kv) else np.zeros(len(wv), bool)
    return np.where(hit, order[pos] if len(kv) else -1, -1).astype(np.int64)


@dataclass
class LabelEmbeddings:
    """An opened embeddings file: arrays memory-mapped (nothing read until used) and its meta."""

    path: Path
    image_digest: np.ndarray
    image_emb: np.ndarray
    text_key: np.ndarray
    text_emb: np.ndarray
    meta: dict[str, Any]

    @property
    def nbytes(self) -> int:
        return int(self.path.stat().st_size)

    def matches(self, identity: dict[str, Any]) -> str | None:
        """Why these embeddings cannot stand for a model with ``identity`` (revision, pixels
        key, label hash, embed dim), or None when they can."""
        for k, want in identity.items():
            if str(self.meta.get(k)) != str(want):
                return f"{k} is {self.meta.get(k)!r}, the model has {want!r}"
        return None

    @classmethod
    def open(cls, path: str | os.PathLike[str], verify: bool = True) -> LabelEmbeddings:
        """Open and check an embeddings file (shapes; with ``verify`` the content digest).

        Raises:
            EmbeddingsError: missing, not an embeddings file, truncated or modified.
        """
        from mll_registry.labels.format import LabelError, mapped_arrays

        path = Path(path)
        if not path.is_file():
            raise EmbeddingsError(f"{path}: no embeddings file; relabel the parent with "
                                  "`mll label MODEL --force` to keep them")
        try:
            arrays, meta = mapped_arrays(path)
        except (LabelError, OSError) as exc:
            raise EmbeddingsError(f"{path}: damaged embeddings file ({exc}); delete it (the "
                                  "next label is computed in full)") from exc
        if meta.get("format") != FORMAT or any(k not in arrays for k in _ORDER):
            raise EmbeddingsError(f"{path}: not an {FORMAT} file")
        info = json.loads(meta.get("info", "{}"))
        e = cls(path, arrays["image_digest"], arrays["image_emb"], arrays["text_key"],
                arrays["text_emb"], info)
        n, d = e.image_emb.shape
        if e.image_digest.shape != (n, 16) or e.text_emb.shape[1:] != (d,) or \
                e.text_key.shape != (len(e.text_emb), 16):
            raise EmbeddingsError(f"{path}: array shapes disagree; delete the file")
        if verify and _digest(arrays[k] for k in _ORDER) != meta.get("digest"):
            raise EmbeddingsError(f"{path}: content does not match its digest (damaged or "
                                  "modified); delete it (the next label is computed in full)")
        return e


def _digest(arrays: Iterable[np.ndarray], block: int = 1 << 16) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        flat = a.reshape(len(a), -1) if a.ndim else a.reshape(1)
        for i in range(0, len(flat), block):
            h.update(np.ascontiguousarray(flat[i:i + block]).tobytes())
    return h.hexdigest()


def write_embeddings(path: str | os.PathLike[str], image_digest: np.ndarray,
                     text_key: np.ndarray, text_emb: np.ndarray, n_images: int,
                     image_blocks: Iterable[np.ndarray], info: dict[str, Any]) -> Path:
    """Write an embeddings file, image rows streamed from ``image_blocks`` (consecutive (b, d)
    arrays, any float dtype: rounded to fp16); atomic: a reader never sees a partial file."""
    d = int(text_emb.shape[1])
    arrays: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {
        "image_digest": (np.dtype(np.uint8), (n_images, 16)),
        "text_key": (np.dtype(np.uint8), tuple(text_key.shape)),
        "text_emb": (np.dtype(np.float16), tuple(text_emb.shape)),
        "image_emb": (np.dtype(np.float16), (n_images, d)),
    }
    header: dict[str, Any] = {}
    off = 0
    for name in _ORDER:
        dt, shape = arrays[name]
        size = int(np.prod(shape)) * dt.itemsize
        header[name] = {"dtype": _DT[dt], "shape": list(shape), "data_offsets": [off, off + size]}
        off += size
    path = Path(path)
    h = hashlib.blake2b(digest_size=16)
    fixed: list[np.ndarray] = [np.ascontiguousarray(image_digest, np.uint8),
                               np.ascontiguousarray(text_key, np.uint8),
                               np.ascontiguousarray(text_emb, np.float16)]
    with atomic_path(path, suffix=".safetensors") as tmp, open(tmp, "w+b") as f:
        placeholder = _header_bytes(header, "0" * 32, info)
        f.write(placeholder)
        for a in fixed:
            f.write(a.tobytes())
            h.update(a.tobytes())
        rows = 0
        for b in image_blocks:
            b16 = np.ascontiguousarray(b, np.float16)
            if b16.ndim != 2 or b16.shape[1] != d:
                raise EmbeddingsError(f"image block of shape {b16.shape}, expected (*, {d})")
            f.write(b16.tobytes())
            h.update(b16.tobytes())
            rows += len(b16)
        if rows != n_images:
            raise EmbeddingsError(f"{rows} image rows written, {n_images} expected")
        final = _header_bytes(header, h.hexdigest(), info)
        if len(final) != len(placeholder):
            raise AssertionError("embeddings header changed size")
        f.seek(0)
        f.write(final)
    return path


def _header_bytes(header: dict[str, Any], digest: str, info: dict[str, Any]) -> bytes:
    full = {"__metadata__": {"format": FORMAT, "digest": digest,
                             "info": json.dumps(info, sort_keys=True, default=str)}, **header}
    raw = json.dumps(full, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
    return len(raw).to_bytes(8, "little") + raw
