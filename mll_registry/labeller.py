"""Model labelling (docs/method.md §2): encode node texts and graph images, keep a compact label.

Work is organised so that several models on one graph cost little more than their forward passes:

* images are decoded and run through the PIL part of the preprocess **once per (graph version,
  preprocess)**; the uint8 pixels are kept in a memory-mapped ``.npy`` cache and shared by every
  model with the same preprocess (``ToTensor`` + ``Normalize`` run on the device, per batch);
* node texts are encoded once per model (templates averaged, configurable and recorded);
* image embeddings are computed in fixed chunks, each checkpointed atomically, so an interrupted
  run resumes without recomputing finished chunks and ends with the identical label;
* similarities, top-K, own-node scores and per-node accuracy are computed in blocks with torch.

On CUDA, image and text encoding run under autocast (fp16); CPU runs fp32.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import types
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mll_registry import __version__
from mll_registry.config import data_dir
from mll_registry.fsutil import atomic_path, write_json
from mll_registry.graph import SemanticGraph
from mll_registry.label_format import ModelLabel
from mll_registry.model_loading import LoadedModel
from mll_registry.model_refs import ResolvedModel
from mll_registry.settings import DEFAULTS, Settings, label_identity_hash


@dataclass(frozen=True)
class LabelConfig:
    """How a label is computed; recorded in the label's metadata.

    The fields and their defaults are :class:`mll_registry.settings.Settings`' (stated there);
    templates, text source and top-K make up the label's identity (:meth:`label_hash`), the
    others only decide how fast it is computed.
    """

    templates: tuple[str, ...] = DEFAULTS.templates
    text_source: str = DEFAULTS.text_source
    top_k: int = DEFAULTS.top_k
    batch_size: int = DEFAULTS.batch_size
    chunk_size: int = DEFAULTS.chunk_size
    device: str = DEFAULTS.device
    max_model_gb: float = DEFAULTS.max_model_gb

    @classmethod
    def from_settings(cls, s: Settings) -> LabelConfig:
        return cls(templates=s.templates, text_source=s.text_source, top_k=s.top_k,
                   batch_size=s.batch_size, chunk_size=s.chunk_size, device=s.device,
                   max_model_gb=s.max_model_gb)

    def label_hash(self) -> str:
        """The hash of the label-content settings (part of the label key)."""
        return label_identity_hash(self.templates, self.text_source, self.top_k)

    def __post_init__(self) -> None:
        if self.text_source not in ("lemma", "caption"):
            raise ValueError(f"text_source must be 'lemma' or 'caption', got {self.text_source!r}")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError("each template must contain '{}' where the node text goes")
        if self.top_k < 1 or self.batch_size < 1 or self.chunk_size < 1:
            raise ValueError("top_k, batch_size and chunk_size must be >= 1")


# -- text side ------------------------------------------------------------------------------------
def node_texts(graph: SemanticGraph, cfg: LabelConfig) -> list[list[str]]:
    """Prompts per node, in node order."""
    base = graph.nodes["lemma" if cfg.text_source == "lemma" else "caption"].tolist()
    return [[t.format(b) for t in cfg.templates] for b in base]


def encode_texts(lm: LoadedModel, texts: Sequence[Sequence[str]], batch_size: int = 512) -> Any:
    """Mean of each group's normalised text embeddings, renormalised: (groups, d) fp32 tensor."""
    import torch

    flat = [t for group in texts for t in group]
    per = len(texts[0]) if texts else 1
    if any(len(g) != per for g in texts):
        raise ValueError("every node must have the same number of prompts")
    out = []
    with torch.inference_mode(), _autocast(lm.device):
        for i in range(0, len(flat), batch_size):
            tok = lm.tokenizer(flat[i:i + batch_size]).to(lm.device)
            out.append(lm.model.encode_text(tok, normalize=True).float())
    emb = torch.cat(out).reshape(len(texts), per, -1).mean(1)
    return torch.nn.functional.normalize(emb, dim=-1)


def _autocast(device: str) -> Any:
    import contextlib

    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


# -- pixels: decode once per (graph, preprocess) -------------------------------------------------
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

    def __call__(self, path: Path) -> np.ndarray:
        """Decode one image (under the pixel limit) and run the PIL part of the preprocess.

        Raises:
            ImageFileError: not an image, truncated, or over the pixel limit.
        """
        from mll_registry.errors import open_image

        with open_image(path) as im:  # type: ignore[attr-defined]
            return np.asarray(self.pil(im.convert("RGB")), dtype=np.uint8)


def pixel_cache_path(graph: SemanticGraph, pipe: PixelPipeline,
                     root: str | os.PathLike[str] | None = None) -> Path:
    return data_dir(root) / "cache" / "pixels" / f"{graph.version}-{pipe.key}.npy"


def prepare_pixels(graph: SemanticGraph, pipe: PixelPipeline,
                   root: str | os.PathLike[str] | None = None, workers: int = 4,
                   progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, bool]:
    """Decoded + PIL-preprocessed uint8 pixels (n, H, W, 3), memory-mapped; built on first use.

    Returns:
        (pixels, built_now)
    """
    path = pixel_cache_path(graph, pipe, root)
    if path.is_file():
        try:  # a cache is verified before use: the right number of images, fully on disk
            cached = np.load(path, mmap_mode="r")
            if cached.shape[0] == len(graph.images) and cached.dtype == np.uint8:
                return cached, False
        except (ValueError, OSError, EOFError):
            pass
        path.unlink(missing_ok=True)  # damaged or stale: rebuilt below
    paths = graph.image_paths()
    first = pipe(paths[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npy") as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(len(paths), *first.shape))
        step = 256
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i in range(0, len(paths), step):
                block = list(pool.map(pipe, paths[i:i + step]))
                arr[i:i + len(block)] = np.stack(block)
                if progress:
                    progress(i + len(block), len(paths))
        arr.flush()
        del arr
    return np.load(path, mmap_mode="r"), True


# -- image side -----------------------------------------------------------------------------------
def encode_pixels(lm: LoadedModel, pixels: np.ndarray, pipe: PixelPipeline,
                  batch_size: int) -> np.ndarray:
    """Normalised image embeddings (n, d) fp32 for uint8 pixels (n, H, W, 3)."""
    import warnings

    import torch

    dev = lm.device
    # (x/255 - mean)/std == x * scale + bias: one fused pass after the uint8 -> float conversion
    scale = 1.0 / (torch.tensor(pipe.std, device=dev).view(1, 3, 1, 1) * 255.0)
    bias = -torch.tensor(pipe.mean, device=dev).view(1, 3, 1, 1) / torch.tensor(
        pipe.std, device=dev).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode(), _autocast(dev), warnings.catch_warnings():
        # a read-only memmap view is fine: .float() makes a new tensor, nothing writes into it
        warnings.simplefilter("ignore", UserWarning)
        for i in range(0, len(pixels), batch_size):
            x = torch.from_numpy(pixels[i:i + batch_size])
            if dev.startswith("cuda"):
                x = x.pin_memory().to(dev, non_blocking=True)
            x = torch.addcmul(bias, x.permute(0, 3, 1, 2).float(), scale)  # ToTensor+Normalize
            out.append(lm.model.encode_image(x, normalize=True).float().cpu())
    return torch.cat(out).numpy()


# -- compact label from embeddings ---------------------------------------------------------------
def compact_label(img_emb: np.ndarray, txt_emb: np.ndarray, graph: SemanticGraph, top_k: int,
                  block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Top-K nodes per image, exact member scores, and the per-node summary.

    Returns:
        (topk_idx, topk_score fp16, member_score fp16, summary)
    """
    import torch

    n_nodes = txt_emb.shape[0]
    k = min(top_k, n_nodes)
    T = torch.from_numpy(np.ascontiguousarray(txt_emb, dtype=np.float32))
    m_node, m_img = graph.member_arrays()
    order = np.argsort(m_img, kind="stable")
    bounds = np.searchsorted(m_img[order], np.arange(0, len(img_emb) + block, block))
    idx_dtype = np.uint16 if n_nodes < 2**16 else np.int32
    topk_idx = np.empty((len(img_emb), k), idx_dtype)
    topk_score = np.empty((len(img_emb), k), np.float16)
    member = np.empty(len(m_img), np.float32)
    kth = np.empty((len(m_img), 2), np.float32)  # the row image's 1st and 5th best scores
    k5 = min(5, n_nodes) - 1
    for b, start in enumerate(range(0, len(img_emb), block)):
        S = torch.from_numpy(np.ascontiguousarray(img_emb[start:start + block], np.float32)) @ T.T
        val, ix = torch.topk(S, max(k, k5 + 1), dim=1)
        topk_idx[start:start + len(S)] = ix[:, :k].numpy().astype(idx_dtype)
        topk_score[start:start + len(S)] = val[:, :k].numpy().astype(np.float16)
        rows = order[bounds[b]:bounds[b + 1]]
        li = torch.from_numpy(m_img[rows] - start)
        member[rows] = S[li, torch.from_numpy(m_node[rows])].numpy()
        kth[rows, 0] = val[li, 0].numpy()
        kth[rows, 1] = val[li, k5].numpy()
    # rank = #nodes scoring strictly higher; rank < r  <=>  own score >= the r-th best score
    top1 = member >= kth[:, 0]
    top5 = member >= kth[:, 1]
    counts = np.bincount(m_node, minlength=n_nodes).astype(np.float64)
    safe = np.maximum(counts, 1)
    summary = pd.DataFrame({
        "node_id": graph.nodes["node_id"].to_numpy(),
        "n_images": counts.astype(np.int64),
        "acc1": np.bincount(m_node, weights=top1, minlength=n_nodes) / safe,
        "acc5": np.bincount(m_node, weights=top5, minlength=n_nodes) / safe,
        "mean_own": np.bincount(m_node, weights=member, minlength=n_nodes) / safe,
    })
    return topk_idx, topk_score, member.astype(np.float16), summary


def dense_similarities(img_emb: np.ndarray, txt_emb: np.ndarray) -> np.ndarray:
    """The full (images x nodes) similarity matrix, fp32 (for measuring the compact label)."""
    return np.asarray(img_emb, np.float32) @ np.asarray(txt_emb, np.float32).T


# -- the whole labelling run -------------------------------------------------------------------
@dataclass
class LabelRun:
    """A finished labelling: the label plus what this run did (for logs and benchmarks)."""

    label: ModelLabel
    chunks_total: int
    chunks_computed: int
    chunks_reused: int
    pixels_built: bool
    seconds: dict[str, float]

    def summary(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """What ``mll label`` prints: the label's headline, where it went, timings, size."""
        return {**self.label.headline(), "path": str(path), "seconds": self.seconds,
                "bytes_per_image": round(self.label.bytes_per_image(), 1)}


def _work_dir(lm: LoadedModel, graph: SemanticGraph, root: Any) -> Path:
    rev = lm.resolved.revision.replace(":", "-")[:24]
    return data_dir(root) / "work" / "labeling" / lm.resolved.ref.key / f"{graph.version}-{rev}"


def label_model(
    lm: LoadedModel,
    graph: SemanticGraph,
    cfg: LabelConfig | None = None,
    root: str | os.PathLike[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> LabelRun:
    """Label ``lm`` on ``graph``; resumable from checkpointed chunks.

    Args:
        lm: a loaded model (see :func:`mll_registry.model_loading.load`).
        graph: the semantic graph (its version is recorded in the label).
        cfg: labelling parameters.
        root: data directory (caches and checkpoints).
        progress: ``progress(stage, done, total)`` for ``pixels`` and ``images``.
        on_chunk: called after each chunk is checkpointed (tests inject interruptions here).
    """
    import torch

    cfg = cfg or LabelConfig()
    t0 = time.perf_counter()
    pipe = PixelPipeline.from_preprocess(lm.preprocess)
    pixels, built = prepare_pixels(
        graph, pipe, root, progress=(lambda d, t: progress("pixels", d, t)) if progress else None)
    t_pix = time.perf_counter()

    texts = node_texts(graph, cfg)
    txt = encode_texts(lm, texts).cpu().numpy()
    t_txt = time.perf_counter()

    work = _work_dir(lm, graph, root)
    state = {"graph_version": graph.version, "revision": lm.resolved.revision,
             "pixels": pipe.key, "chunk_size": cfg.chunk_size, "batch_size": cfg.batch_size,
             "device": lm.device, "torch": torch.__version__}
    sf = work / "state.json"
    if sf.is_file() and json.loads(sf.read_text()) != state:
        for old in work.glob("chunk-*.npy"):  # checkpoints from other settings are not reused
            old.unlink()
    write_json(sf, state)
    n = len(pixels)
    n_chunks = (n + cfg.chunk_size - 1) // cfg.chunk_size
    embs, computed, reused = [], 0, 0
    for c in range(n_chunks):
        f = work / f"chunk-{c:05d}.npy"
        lo, hi = c * cfg.chunk_size, min(n, (c + 1) * cfg.chunk_size)
        if f.is_file():
            try:  # a checkpoint is used only if it is whole: readable, right shape, finite
                e = np.load(f)
                whole = (e.ndim == 2 and e.shape[0] == hi - lo and e.dtype == np.float32
                         and bool(np.isfinite(e).all()))
            except (ValueError, OSError, EOFError):
                whole = False
            if whole:
                embs.append(e)
                reused += 1
                if progress:
                    progress("images", hi, n)
                continue
        e = encode_pixels(lm, pixels[lo:hi], pipe, cfg.batch_size)
        with atomic_path(f, suffix=".npy") as tmp:
            np.save(tmp, e)
        embs.append(e)
        computed += 1
        if progress:
            progress("images", hi, n)
        if on_chunk:
            on_chunk(c)
    img = np.concatenate(embs) if embs else np.zeros((0, txt.shape[1]), np.float32)
    t_img = time.perf_counter()

    topk_idx, topk_score, member, summary = compact_label(img, txt, graph, cfg.top_k)
    t_end = time.perf_counter()
    seconds = {"pixels": round(t_pix - t0, 3), "text": round(t_txt - t_pix, 3),
               "images": round(t_img - t_txt, 3), "compact": round(t_end - t_img, 3),
               "total": round(t_end - t0, 3)}
    meta = {
        "model_ref": str(lm.resolved.ref), "revision": lm.resolved.revision,
        "source": lm.resolved.ref.source, "label_hash": cfg.label_hash(),
        "architecture": lm.resolved.architecture, "weights_file": lm.resolved.weights.name,
        "preprocess": lm.preprocess_cfg, "pixels_key": pipe.key,
        "label_config": asdict(cfg), "logit_scale": float(lm.model.logit_scale.exp().item()),
        "graph_version": graph.version, "code_version": __version__, "device": lm.device,
        "embed_dim": int(txt.shape[1]), "top_k": int(topk_idx.shape[1]),
        "timings": {**seconds, "images_per_s": round(n / max(seconds["total"], 1e-9), 1)},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    label = ModelLabel(topk_idx, topk_score, member, summary, meta)
    label.validate(n_images=len(graph.images), n_nodes=len(graph.nodes),
                   n_members=len(graph.members))
    return LabelRun(label, n_chunks, computed, reused, built, seconds)


def default_label_path(lm_ref_key: str, graph_version: str, label_hash: str,
                       root: str | os.PathLike[str] | None = None) -> Path:
    """Where labels go by default: ``<data>/labels/<model key>/<graph version>-<label hash>``
    (the layout :class:`mll_registry.label_stores.LocalLabelStore` reads)."""
    return data_dir(root) / "labels" / lm_ref_key / f"{graph_version}-{label_hash}"


def clear_checkpoints(lm: LoadedModel, graph: SemanticGraph,
                      root: str | os.PathLike[str] | None = None) -> None:
    """Remove a finished run's chunk checkpoints (the label holds what is needed)."""
    import shutil

    shutil.rmtree(_work_dir(lm, graph, root), ignore_errors=True)


def label_ref(
    ref: str | ResolvedModel,
    graph: SemanticGraph,
    cfg: LabelConfig | None = None,
    out: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    allow_pickle: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[LabelRun, Path]:
    """Resolve (unless given resolved), load and label a model on ``graph``; write the label
    atomically.

    Returns:
        (the run, the label directory). Checkpoints are removed once the label is written.
    """
    from mll_registry.model_loading import load

    cfg = cfg or LabelConfig()
    lm = load(ref, device=cfg.device, allow_pickle=allow_pickle, max_model_gb=cfg.max_model_gb,
              batch_size=cfg.batch_size)
    run = label_model(lm, graph, cfg, root=root, progress=progress)
    path = Path(out) if out else default_label_path(lm.resolved.ref.key, graph.version,
                                                    cfg.label_hash(), root)
    run.label.save(path)
    clear_checkpoints(lm, graph, root)
    return run, path
