"""Model labelling (docs/method.md §2): encode node texts and graph images, keep a compact label.

Work is organised so that labelling costs little more than the model's forward passes, in bounded
memory and disk whatever the graph size:

* graph images are streamed (:mod:`mll_registry.models.image_stream`): DataLoader workers decode and run
  the PIL part of the preprocess ahead of the forward pass; ``ToTensor`` + ``Normalize`` run on
  the device, per batch. With a ``pixel_cache_gb`` budget, decoded pixels are also kept in a
  memory-mapped cache shared by every model with the same preprocess (an opt-in accelerator);
* node texts are encoded once per model (templates averaged, configurable and recorded);
* image embeddings are computed in fixed chunks, each checkpointed atomically, so an interrupted
  run resumes without recomputing finished chunks and ends with the identical label;
* the embeddings are rounded to fp16 and written beside the label
  (:mod:`mll_registry.labels.embeddings`); similarities, top-K, own-node scores and per-node
  accuracy are computed from them block by block with torch, on the model's device;
* with the embeddings of the model's label on an ancestor graph (``reuse``), only the images and
  node texts they do not hold are encoded: the label equals a full one (graph growth).

On CUDA, image and text encoding run under autocast (fp16) and batches are pinned; CPU runs fp32.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mll_registry import __version__
from mll_registry.config import data_dir
from mll_registry.fsutil import atomic_path, write_json
from mll_registry.graph.bundle import SemanticGraph
from mll_registry.labels.embeddings import (
    LabelEmbeddings,
    digest_bytes,
    embeddings_path,
    row_index,
    text_keys,
    write_embeddings,
)
from mll_registry.labels.format import ModelLabel, graph_sources, source_column
from mll_registry.models.cost import measure_cost
from mll_registry.models.image_stream import PixelCache, PixelPipeline, chunk_batches, stream
from mll_registry.models.loading import LoadedModel
from mll_registry.models.refs import (
    ResolvedModel,
    config_digest,
    local_content_id,
    weights_digest,
)
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
    decode_workers: int = DEFAULTS.decode_workers
    pixel_cache_gb: float = DEFAULTS.pixel_cache_gb

    @classmethod
    def from_settings(cls, s: Settings) -> LabelConfig:
        """The labelling fields of ``s`` (already validated there)."""
        return cls(**{f.name: getattr(s, f.name) for f in fields(cls)})

    def label_hash(self) -> str:
        """The hash of the label-content settings (part of the label key)."""
        return label_identity_hash(self.templates, self.text_source, self.top_k)

    def __post_init__(self) -> None:
        """Validated by :class:`Settings`, the one validator: its checks and error messages
        (:class:`mll_registry.settings.SettingsError`, a ``ValueError``)."""
        Settings(**{f.name: getattr(self, f.name) for f in fields(self)})


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


# -- image side -----------------------------------------------------------------------------------
def encode_batch(lm: LoadedModel, x: Any, norm: tuple[Any, Any]) -> Any:
    """Normalised image embeddings (B, d) fp32 on the CPU for a uint8 (B, H, W, 3) tensor."""
    import torch

    scale, bias = norm
    if lm.device.startswith("cuda"):
        x = (x if x.is_pinned() else x.pin_memory()).to(lm.device, non_blocking=True)
    with torch.inference_mode(), _autocast(lm.device):
        x = torch.addcmul(bias, x.permute(0, 3, 1, 2).float(), scale)  # ToTensor + Normalize
        return lm.model.encode_image(x, normalize=True).float().cpu()


def encode_pixels(lm: LoadedModel, pixels: np.ndarray, pipe: PixelPipeline,
                  batch_size: int) -> np.ndarray:
    """Normalised image embeddings (n, d) fp32 for decoded uint8 pixels (n, H, W, 3) in memory."""
    import warnings

    import torch

    norm = pipe.normaliser(lm.device)
    out = []
    with warnings.catch_warnings():
        # a read-only memmap view is fine: .float() makes a new tensor, nothing writes into it
        warnings.simplefilter("ignore", UserWarning)
        for i in range(0, len(pixels), batch_size):
            out.append(encode_batch(lm, torch.from_numpy(pixels[i:i + batch_size]), norm))
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


# -- compact label from embeddings ---------------------------------------------------------------
def compact_label(img_emb: np.ndarray | Sequence[np.ndarray], txt_emb: np.ndarray,
                  graph: SemanticGraph, top_k: int, block: int = 2048, device: str = "cpu",
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Top-K nodes per image, exact member scores, and the per-node summary.

    ``img_emb`` is one (n, d) array or its consecutive row blocks (e.g. memory-mapped chunk
    checkpoints: only one block is in memory at a time). The similarities are computed in fp32 on
    ``device`` (the model's: at the paper's scale this stage is 680,000 x 9,000 x d
    multiply-adds per model, which a GPU does in seconds).

    Returns:
        (topk_idx, topk_score fp16, member_score fp16, summary): the summary's pooled columns,
        then each sample source's counts (:func:`source_counts`), from which any pooling of
        sources can be computed without the label's arrays.
    """
    import torch

    if isinstance(img_emb, np.ndarray):
        blocks = [img_emb[i:i + block] for i in range(0, len(img_emb), block)]
    else:
        blocks = list(img_emb)
    n_img = sum(len(b) for b in blocks)
    starts = np.cumsum([0] + [len(b) for b in blocks])
    n_nodes = txt_emb.shape[0]
    k = min(top_k, n_nodes)
    T = torch.from_numpy(np.ascontiguousarray(txt_emb, dtype=np.float32)).to(device)
    m_node, m_img = graph.member_arrays()
    order = np.argsort(m_img, kind="stable")
    bounds = np.searchsorted(m_img[order], starts)
    idx_dtype = np.uint16 if n_nodes < 2**16 else np.int32
    topk_idx = np.empty((n_img, k), idx_dtype)
    topk_score = np.empty((n_img, k), np.float16)
    member = np.empty(len(m_img), np.float32)
    kth = np.empty((len(m_img), 2), np.float32)  # the row image's 1st and 5th best scores
    k5 = min(5, n_nodes) - 1
    for b, (start, emb) in enumerate(zip(starts, blocks, strict=False)):
        # a copy: chunks may be read-only
        S = torch.from_numpy(np.array(emb, np.float32)).to(device) @ T.T
        val, ix = torch.topk(S, max(k, k5 + 1), dim=1)
        topk_idx[start:start + len(S)] = ix[:, :k].cpu().numpy().astype(idx_dtype)
        topk_score[start:start + len(S)] = val[:, :k].cpu().numpy().astype(np.float16)
        rows = order[bounds[b]:bounds[b + 1]]
        li = torch.from_numpy(m_img[rows] - start).to(device)
        member[rows] = S[li, torch.from_numpy(m_node[rows]).to(device)].cpu().numpy()
        kth[rows, 0] = val[li, 0].cpu().numpy()
        kth[rows, 1] = val[li, k5].cpu().numpy()
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
    per_source = source_counts(graph, m_node, m_img, {"n_images": None, "hits1": top1,
                                                       "hits5": top5, "sum_own": member})
    return topk_idx, topk_score, member.astype(np.float16), pd.concat([summary, per_source], axis=1)


def source_counts(graph: SemanticGraph, m_node: np.ndarray, m_img: np.ndarray,
                  weights: dict[str, np.ndarray | None]) -> pd.DataFrame:
    """Per node and sample source, the sum of each membership-row weight (None: the row count):
    the columns ``<stat>@<source>`` of the label summary (label_format); counts (weights None
    or bool) as int64, other sums float64."""
    sources = graph_sources(graph)
    src = pd.Categorical(graph.images["source"].astype(str), categories=sources).codes
    n_nodes, n_src = len(graph.nodes), len(sources)
    cell = m_node * n_src + src.astype(np.int64)[m_img]  # (node, source of the row's image)
    cols: dict[str, np.ndarray] = {}
    for stat, w in weights.items():
        sums = np.bincount(cell, weights=w, minlength=n_nodes * n_src).reshape(n_nodes, n_src)
        if w is None or w.dtype == bool:
            sums = np.rint(sums).astype(np.int64)
        for j, s in enumerate(sources):
            cols[source_column(stat, s)] = sums[:, j]
    return pd.DataFrame(cols, index=range(n_nodes))


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
    seconds: dict[str, float]
    pixel_source: str = "stream"  # stream | cache (read the raw-pixel cache) | stream+cache (built it)
    embeddings: Path | None = None  # the fp16 embeddings file (moved beside the label)
    images_encoded: int = 0  # images this run put through the image tower

    @property
    def pixels_built(self) -> bool:
        """Whether this run built the raw-pixel cache."""
        return self.pixel_source == "stream+cache"

    def summary(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """What ``mll label`` prints: the label's headline, where it went, timings, size."""
        return {**self.label.headline(), "path": str(path), "seconds": self.seconds,
                "bytes_per_image": round(self.label.bytes_per_image(), 1),
                "images_encoded": self.images_encoded,
                "incremental": self.label.meta.get("incremental"),
                "embeddings": str(self.embeddings) if self.embeddings else None}


def _work_dir(lm: LoadedModel, graph: SemanticGraph, root: Any) -> Path:
    rev = lm.resolved.revision.replace(":", "-")[:24]
    return data_dir(root) / "work" / "labeling" / lm.resolved.ref.key / f"{graph.version}-{rev}"


def _whole_checkpoint(f: Path, rows: int) -> bool:
    """A checkpoint is used only if it is whole: readable, the right shape, finite."""
    if not f.is_file():
        return False
    try:
        e = np.load(f, mmap_mode="r")
        return bool(e.ndim == 2 and e.shape[0] == rows and e.dtype == np.float32
                    and np.isfinite(e).all())
    except (ValueError, OSError, EOFError):
        return False


@dataclass
class _Consumer:
    """One model's share of a pass over the graph images: the chunks it still needs, where
    each chunk's embeddings go, and the embeddings of the chunk being filled."""

    lm: LoadedModel
    norm: tuple[Any, Any]
    want: set[int]
    ckpt: list[Path]
    parts: list[Any] = field(default_factory=list)


def _encode_chunks(consumers: list[_Consumer], graph: SemanticGraph, pipe: PixelPipeline,
                   cfg: LabelConfig, root: Any, bounds: list[tuple[int, int]], n: int,
                   progress: Callable[[str, int, int], None] | None,
                   on_chunk: Callable[[int], None] | None) -> str:
    """Encode each consumer's chunks, decoding every image once for all of them, and
    checkpoint each model's chunk as it completes; returns where the pixels came from.

    Every model sees the same batches in the same order (``chunk_batches`` of the chunks being
    decoded): its embeddings are those of a pass of its own. Pixels come from the raw-pixel
    cache when one is complete, else from the decoding stream; with a ``pixel_cache_gb`` budget
    that the graph fits, the stream also fills the cache (every chunk is then decoded, finished
    ones are not encoded again). ``progress("images", done, total)`` counts image encodings
    summed over the models (total = n per model).
    """
    import warnings

    import torch

    cache = PixelCache(graph.version, n, pipe, cfg.pixel_cache_gb, root)
    cached = cache.open() if cfg.pixel_cache_gb > 0 else None
    sizes = [hi - lo for lo, hi in bounds]
    done_rows = sum(n - sum(sizes[c] for c in u.want) for u in consumers)
    total = n * len(consumers)
    todo = sorted(set().union(*(u.want for u in consumers)))

    def encode(c: int, x: Any) -> None:
        for u in consumers:
            if c in u.want:
                u.parts.append(encode_batch(u.lm, x, u.norm))

    def finish(c: int) -> None:
        nonlocal done_rows
        for u in consumers:
            if c not in u.want:
                continue
            with atomic_path(u.ckpt[c], suffix=".npy") as tmp:
                np.save(tmp, torch.cat(u.parts).numpy())
            u.parts = []
            done_rows += sizes[c]
            if progress:
                progress("images", done_rows, total)
            if on_chunk:
                on_chunk(c)

    if cached is not None:
        with warnings.catch_warnings():  # read-only memmap: .float() copies, nothing writes
            warnings.simplefilter("ignore", UserWarning)
            for c in todo:
                lo, hi = bounds[c]
                for i in range(lo, hi, cfg.batch_size):
                    encode(c, torch.from_numpy(cached[i:min(i + cfg.batch_size, hi)]))
                finish(c)
        return "cache"
    if not todo:
        return "stream"
    paths = graph.image_paths()
    writer = None
    if cfg.pixel_cache_gb > 0:
        shape = pipe(paths[0]).shape
        writer = cache.writer(shape) if cache.fits(shape) else None
    chunks = range(len(bounds)) if writer is not None else todo
    want = set(todo)
    c_of = np.repeat(np.arange(len(bounds)), sizes)
    device = consumers[0].lm.device
    try:
        for idx, x in stream(paths, pipe, chunk_batches([bounds[c] for c in chunks],
                                                        cfg.batch_size),
                             cfg.decode_workers, device):
            if writer is not None:
                writer[idx[0]:idx[-1] + 1] = x.numpy()
            c = int(c_of[idx[0]])
            if c not in want:
                continue
            encode(c, x)
            if idx[-1] + 1 == bounds[c][1]:
                finish(c)
        if writer is not None:
            cache.publish()
    finally:
        cache.discard()
    return "stream+cache" if writer is not None else "stream"


def embeddings_identity(lm: LoadedModel, pipe: PixelPipeline, cfg: LabelConfig) -> dict[str, Any]:
    """What stored embeddings must match to be reused for ``lm``: same weights, same pixels,
    same prompts settings."""
    return {"revision": lm.resolved.revision, "pixels_key": pipe.key,
            "label_hash": cfg.label_hash()}


def _encode_rows(lm: LoadedModel, graph: SemanticGraph, pipe: PixelPipeline, cfg: LabelConfig,
                 rows: np.ndarray, progress: Callable[[str, int, int], None] | None) -> np.ndarray:
    """Embeddings (len(rows), d) fp32 of the graph images at ``rows`` (streamed, in order)."""
    import torch

    paths = graph.image_paths()
    norm = pipe.normaliser(lm.device)
    batches = [rows[i:i + cfg.batch_size].tolist() for i in range(0, len(rows), cfg.batch_size)]
    out: list[Any] = []
    done = 0
    for _, x in stream(paths, pipe, batches, cfg.decode_workers, lm.device):
        out.append(encode_batch(lm, x, norm))
        done += len(x)
        if progress:
            progress("images", done, len(rows))
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def _reused_blocks(reuse: LabelEmbeddings, rows: np.ndarray, new_emb: np.ndarray,
                   block: int = 8192) -> Any:
    """Child image rows in order: stored rows where ``rows`` >= 0, else the next new row."""
    new_at = np.cumsum(rows < 0) - 1  # position in new_emb of each new row
    for lo in range(0, len(rows), block):
        r = rows[lo:lo + block]
        out = np.empty((len(r), reuse.image_emb.shape[1]), np.float16)
        have = r >= 0
        if have.any():
            out[have] = reuse.image_emb[r[have]]
        if (~have).any():
            out[~have] = new_emb[new_at[lo:lo + block][~have]]
        yield out


def _lineage(graph: SemanticGraph) -> dict[str, Any]:
    """The graph's parent and delta headline, for the label's meta and registry tags."""
    lin = graph.manifest.get("lineage") or {}
    if not lin.get("parent"):
        return {}
    from mll_registry.graph.lineage import GraphDelta

    return {"graph_parent": lin["parent"], "graph_delta": GraphDelta(**lin["delta"]).headline()}


@dataclass
class _Job:
    """One model's labelling within a pass: its prompts' embeddings, its work dir, its images'
    embeddings once encoded (``enc``) and its timings."""

    lm: LoadedModel
    pipe: PixelPipeline
    identity: dict[str, Any]
    reuse: LabelEmbeddings | None
    reuse_note: str | None
    n_texts: int
    keys: np.ndarray
    txt16: np.ndarray
    new_t: np.ndarray
    work: Path
    seconds: dict[str, float] = field(default_factory=dict)
    enc: _Encoded | None = None
    pass_models: int = 1


def _prepare(lm: LoadedModel, graph: SemanticGraph, cfg: LabelConfig,
             reuse: LabelEmbeddings | None, root: Any) -> _Job:
    """A model's text side (node prompts encoded, or taken from ``reuse``) and its job."""
    t0 = time.perf_counter()
    pipe = PixelPipeline.from_preprocess(lm.preprocess)
    texts = node_texts(graph, cfg)
    keys = text_keys(texts)
    identity = embeddings_identity(lm, pipe, cfg)
    reuse_note = reuse.matches(identity) if reuse is not None else None
    if reuse_note is not None:  # embeddings of other weights or settings: label in full
        reuse = None
    txt16, new_t = _text_embeddings(lm, texts, keys, reuse)
    return _Job(lm, pipe, identity, reuse, reuse_note, len(texts), keys, txt16, new_t,
                _work_dir(lm, graph, root), {"text": round(time.perf_counter() - t0, 3)})


def label_model(
    lm: LoadedModel,
    graph: SemanticGraph,
    cfg: LabelConfig | None = None,
    root: str | os.PathLike[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
    reuse: LabelEmbeddings | None = None,
) -> LabelRun:
    """Label ``lm`` on ``graph``; resumable from checkpointed chunks, incremental with ``reuse``.

    Args:
        lm: a loaded model (see :func:`mll_registry.models.loading.load`).
        graph: the semantic graph (its version is recorded in the label).
        cfg: labelling parameters.
        root: data directory (caches and checkpoints).
        progress: ``progress("images", done, total)`` as chunks finish.
        on_chunk: called after each chunk is checkpointed (tests inject interruptions here).
        reuse: the embeddings of this model's label on another graph version (the parent): only
            images and node texts they do not hold are encoded; the label equals a full one.
            Embeddings of another revision, preprocess or prompt settings are not used.
    """
    return label_models([lm], graph, cfg, root, progress, on_chunk, [reuse])[0]


def label_models(
    lms: Sequence[LoadedModel],
    graph: SemanticGraph,
    cfg: LabelConfig | None = None,
    root: str | os.PathLike[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
    reuse: Sequence[LabelEmbeddings | None] | None = None,
) -> list[LabelRun]:
    """Label several resident models in one pass over the graph: each batch of images is
    decoded once and encoded by every model that shares its preprocess (models with another
    preprocess get a pass of their own). Each model's chunks are checkpointed in its own work
    dir, so an interrupted pass resumes per model; every label equals the one
    :func:`label_model` computes alone, byte for byte. Arguments as :func:`label_model`'s,
    ``reuse`` one entry per model; the runs come back in the order of ``lms``.

    Memory: the models stay resident together (the caller groups them,
    ``Settings.pass_model_gb``); activations are one batch of one model at a time.
    """
    cfg = cfg or LabelConfig()
    reuses = list(reuse) if reuse is not None else [None] * len(lms)
    if len(reuses) != len(lms):
        raise ValueError(f"{len(reuses)} reuse entries for {len(lms)} models")
    jobs = [_prepare(lm, graph, cfg, r, root) for lm, r in zip(lms, reuses, strict=True)]
    n = len(graph.images)
    digests = digest_bytes(graph.images["digest"])
    bounds = [(lo, min(n, lo + cfg.chunk_size)) for lo in range(0, n, cfg.chunk_size)]
    groups: dict[str, list[_Job]] = {}
    for j in jobs:
        if j.reuse is not None:  # incremental: only the new images, streamed for this model
            t = time.perf_counter()
            j.enc = _embed_incremental(j.lm, graph, j.pipe, cfg, j.reuse, digests, j.work,
                                       progress)
            j.seconds["images"] = round(time.perf_counter() - t, 3)
        else:
            groups.setdefault(j.pipe.key, []).append(j)
    for group in groups.values():
        t = time.perf_counter()
        _embed_in_chunks(group, graph, cfg, root, bounds, progress, on_chunk)
        for j in group:
            j.seconds["images"] = round(time.perf_counter() - t, 3)
            j.pass_models = len(group)
    return [_finish(j, graph, cfg, digests, bounds) for j in jobs]


def _finish(j: _Job, graph: SemanticGraph, cfg: LabelConfig, digests: np.ndarray,
            bounds: list[tuple[int, int]]) -> LabelRun:
    """Write a job's embeddings file, compute its compact label from it, and the label's meta."""
    assert j.enc is not None
    t = time.perf_counter()
    lm, n = j.lm, len(graph.images)
    emb_file = j.work / "embeddings.safetensors"
    info = {**j.identity, "graph_version": graph.version, "embed_dim": int(j.txt16.shape[1]),
            "model_ref": str(lm.resolved.ref)}
    write_embeddings(emb_file, digests, j.keys, j.txt16, n, j.enc.blocks, info)
    # the label is computed from the fp16 embeddings just written (what a later incremental
    # label reuses), read one block at a time
    emb = LabelEmbeddings.open(emb_file, verify=False)
    blocks = [emb.image_emb[lo:lo + 8192] for lo in range(0, n, 8192)] or \
        [np.zeros((0, j.txt16.shape[1]), np.float16)]
    topk_idx, topk_score, member, summary = compact_label(blocks, j.txt16.astype(np.float32),
                                                          graph, cfg.top_k, device=lm.device)
    calibration = _calibrate(blocks, j.txt16, graph)
    seconds = {**j.seconds, "compact": round(time.perf_counter() - t, 3)}
    seconds["total"] = round(seconds["text"] + seconds["images"] + seconds["compact"], 3)
    enc, reuse = j.enc, j.reuse
    incremental = None
    if reuse is not None:
        incremental = {"from_graph": reuse.meta.get("graph_version"),
                       "images_reused": int(n - enc.n_encoded), "images_encoded": int(enc.n_encoded),
                       "texts_reused": int(j.n_texts - len(j.new_t)),
                       "texts_encoded": int(len(j.new_t))}
    meta = {
        "model_ref": str(lm.resolved.ref), "revision": lm.resolved.revision,
        "source": lm.resolved.ref.source, "label_hash": cfg.label_hash(),
        "architecture": lm.resolved.architecture, "weights_file": lm.resolved.weights.name,
        "weights_sha256": weights_digest(lm.resolved.weights, str(lm.resolved.ref),
                                         cfg.max_model_gb),
        "content": local_content_id(lm.resolved, cfg.max_model_gb),
        "config_sha256": config_digest(lm.resolved),
        "cost": measure_cost(lm.model, lm.device).to_json(),
        "preprocess": lm.preprocess_cfg, "pixels_key": j.pipe.key,
        "label_config": asdict(cfg), "logit_scale": float(lm.model.logit_scale.exp().item()),
        "calibration": calibration,
        "graph_version": graph.version, "code_version": __version__, "device": lm.device,
        "embed_dim": int(j.txt16.shape[1]), "top_k": int(topk_idx.shape[1]),
        "timings": {**seconds, "images_per_s": round(n / max(seconds["total"], 1e-9), 1),
                    "pass_models": j.pass_models},
        "embeddings": {"dtype": "float16", "bytes": emb.nbytes},
        "incremental": incremental,
        **_lineage(graph),
        **({"incremental_skipped": j.reuse_note} if j.reuse_note else {}),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    label = ModelLabel(topk_idx, topk_score, member, summary, meta)
    label.validate(n_images=len(graph.images), n_nodes=len(graph.nodes),
                   n_members=len(graph.members))
    return LabelRun(label, len(bounds), len(enc.todo), len(enc.done), seconds, enc.pixels,
                    emb_file, int(enc.n_encoded))


def _text_embeddings(lm: LoadedModel, texts: list[list[str]], keys: np.ndarray,
                     reuse: LabelEmbeddings | None) -> tuple[np.ndarray, np.ndarray]:
    """The node texts' fp16 embeddings (those ``reuse`` holds taken from it) and the indices of
    the texts encoded now."""
    if reuse is None:
        return (encode_texts(lm, texts).cpu().numpy().astype(np.float16),
                np.arange(len(texts)))
    ti = row_index(reuse.text_key, keys)
    new_t = np.flatnonzero(ti < 0)
    txt16 = np.empty((len(texts), reuse.text_emb.shape[1]), np.float16)
    txt16[ti >= 0] = reuse.text_emb[ti[ti >= 0]]
    if len(new_t):
        txt16[new_t] = encode_texts(lm, [texts[i] for i in new_t]).cpu().numpy()
    return txt16, new_t


@dataclass
class _Encoded:
    """The graph images' embeddings as one strategy produced them: ``blocks`` in image order
    (written to the label's embeddings file), and what was encoded now."""

    blocks: Iterable[np.ndarray]
    n_encoded: int
    todo: list[int]  # chunks encoded now (full labels)
    done: set[int]  # chunks resumed from checkpoints (full labels)
    pixels: str  # where the pixels came from (stream, cache)


def _embed_in_chunks(jobs: list[_Job], graph: SemanticGraph, cfg: LabelConfig,
                     root: str | os.PathLike[str] | None, bounds: list[tuple[int, int]],
                     progress: Callable[[str, int, int], None] | None,
                     on_chunk: Callable[[int], None] | None) -> None:
    """Full labels of models sharing one preprocess: every image encoded in checkpointed
    chunks, in one pass for all of them (:func:`_encode_chunks`), each model resuming whole
    checkpoints of its own settings (checkpoints of other settings are deleted, never reused).
    Sets each job's ``enc``."""
    import torch

    n = len(graph.images)
    consumers = []
    for j in jobs:
        lm = j.lm
        state = {"graph_version": graph.version, "revision": lm.resolved.revision,
                 "pixels": j.pipe.key, "chunk_size": cfg.chunk_size,
                 "batch_size": cfg.batch_size, "device": lm.device, "torch": torch.__version__}
        sf = j.work / "state.json"
        if sf.is_file() and json.loads(sf.read_text()) != state:
            for old in j.work.glob("chunk-*.npy"):
                old.unlink()
        write_json(sf, state)
        ckpt = [j.work / f"chunk-{c:05d}.npy" for c in range(len(bounds))]
        done = {c for c, (lo, hi) in enumerate(bounds) if _whole_checkpoint(ckpt[c], hi - lo)}
        todo = [c for c in range(len(bounds)) if c not in done]
        consumers.append(_Consumer(lm, j.pipe.normaliser(lm.device), set(todo), ckpt))
        # chunk embeddings memory-mapped from their checkpoints, rounded to fp16 block by block
        j.enc = _Encoded((np.load(f, mmap_mode="r") for f in ckpt),
                         sum(bounds[c][1] - bounds[c][0] for c in todo), todo, done, "stream")
    resumed = sum(n - sum(bounds[c][1] - bounds[c][0] for c in u.want) for u in consumers)
    if progress and resumed:
        progress("images", resumed, n * len(consumers))
    pixels = _encode_chunks(consumers, graph, jobs[0].pipe, cfg, root, bounds, n, progress,
                            on_chunk)
    for j in jobs:
        assert j.enc is not None
        j.enc.pixels = pixels


def _embed_incremental(lm: LoadedModel, graph: SemanticGraph, pipe: PixelPipeline,
                       cfg: LabelConfig, reuse: LabelEmbeddings, digests: np.ndarray,
                       work: Path, progress: Callable[[str, int, int], None] | None) -> _Encoded:
    """Incremental labels: images matched by content digest taken from ``reuse``, only the
    others encoded (streamed, no checkpoints: they are few)."""
    work.mkdir(parents=True, exist_ok=True)
    rows = row_index(reuse.image_digest, digests)
    new_i = np.flatnonzero(rows < 0)
    new_emb = _encode_rows(lm, graph, pipe, cfg, new_i, progress)
    return _Encoded(_reused_blocks(reuse, rows, new_emb), len(new_i), [], set(), "stream")


def default_label_path(lm_ref_key: str, graph_version: str, label_hash: str,
                       root: str | os.PathLike[str] | None = None) -> Path:
    """Where labels go by default: ``<data>/labels/<model key>/<graph version>-<label hash>``
    (the layout :class:`mll_registry.labels.stores.LocalLabelStore` reads)."""
    return data_dir(root) / "labels" / lm_ref_key / f"{graph_version}-{label_hash}"


def clear_checkpoints(lm: LoadedModel, graph: SemanticGraph,
                      root: str | os.PathLike[str] | None = None) -> None:
    """Remove a finished run's chunk checkpoints (the label holds what is needed)."""
    import shutil

    shutil.rmtree(_work_dir(lm, graph, root), ignore_errors=True)


def _calibrate(blocks: Sequence[np.ndarray], txt16: np.ndarray, graph: SemanticGraph
               ) -> dict[str, Any] | None:
    """The model's logit scale fitted on the graph's images (``meta["calibration"]``; None for
    a graph with fewer than two folder nodes)."""
    from mll_registry.labels.calibration import calibrate_on_graph, own_nodes

    own = own_nodes(graph.members, len(graph.images), graph.node_index())
    cal = calibrate_on_graph(blocks, txt16.astype(np.float32), own, np.unique(own[own >= 0]))
    return cal.to_dict() if cal else None


def label_ref(
    ref: str | ResolvedModel,
    graph: SemanticGraph,
    cfg: LabelConfig | None = None,
    out: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    allow_pickle: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    reuse: LabelEmbeddings | None = None,
    keep_embeddings: bool = True,
) -> tuple[LabelRun, Path]:
    """Resolve (unless given resolved), load and label a model on ``graph``; write the label
    atomically, and (``keep_embeddings``) its embeddings beside it (:func:`embeddings_path`).

    Returns:
        (the run, the label directory). Checkpoints are removed once the label is written.
    """
    return label_refs([ref], graph, cfg, [out], root, allow_pickle, progress, [reuse],
                      keep_embeddings)[0]


def label_refs(
    refs: Sequence[str | ResolvedModel | LoadedModel],
    graph: SemanticGraph,
    cfg: LabelConfig | None = None,
    outs: Sequence[str | os.PathLike[str] | None] | None = None,
    root: str | os.PathLike[str] | None = None,
    allow_pickle: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    reuse: Sequence[LabelEmbeddings | None] | None = None,
    keep_embeddings: bool = True,
) -> list[tuple[LabelRun, Path]]:
    """:func:`label_ref` for several models in one pass (:func:`label_models`: the graph's
    images decoded once for all). The models are loaded together and stay resident for the
    pass: callers group them first (:func:`pass_groups`); a ref already loaded is used as it
    is. ``outs`` and ``reuse``: one entry per ref (None: the default label path, no reuse)."""
    from mll_registry.models.loading import load

    cfg = cfg or LabelConfig()
    lms = [r if isinstance(r, LoadedModel) else
           load(r, device=cfg.device, allow_pickle=allow_pickle, max_model_gb=cfg.max_model_gb,
                batch_size=cfg.batch_size) for r in refs]
    runs = label_models(lms, graph, cfg, root=root, progress=progress, reuse=reuse)
    done = []
    for lm, run, out in zip(lms, runs, outs or [None] * len(lms), strict=True):
        path = Path(out) if out else default_label_path(lm.resolved.ref.key, graph.version,
                                                        cfg.label_hash(), root)
        run.label.meta["embeddings"]["kept"] = keep_embeddings
        run.label.save(path)
        dest = embeddings_path(path)
        if run.embeddings is not None and keep_embeddings:
            import shutil

            shutil.move(str(run.embeddings), str(dest))  # a rename on one file system
            run.embeddings = dest
        else:
            dest.unlink(missing_ok=True)  # an older label's embeddings are not this label's
            run.embeddings = None
        clear_checkpoints(lm, graph, root)
        done.append((run, path))
    return done


def pass_groups(weights_bytes: Sequence[int], budget_gb: float) -> list[list[int]]:
    """Indices of models grouped for labelling passes, in order: consecutive models join a
    group while their weight files sum to at most ``budget_gb`` (a model above the budget
    alone makes a group of one)."""
    budget = budget_gb * 1e9
    groups: list[list[int]] = []
    used = 0.0
    for i, b in enumerate(weights_bytes):
        if groups and used + b <= budget:
            groups[-1].append(i)
            used += b
        else:
            groups.append([i])
            used = float(b)
    return groups
