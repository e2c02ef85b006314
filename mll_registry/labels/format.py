"""The model label format: compact per-image similarities plus a per-node summary.

The dense label of a model is S (images x nodes), S[x, u] = cos(I(x), T(text_u)); at paper scale
that is 10^6 x 9x10^3 per model. We keep what selection needs (docs/method.md §2-3):

* ``topk_idx``/``topk_score``: each image's K most similar nodes, best first (scores fp16);
* ``member_score``: S[x, v] for every membership row (image x represents node v) of the graph,
  in the graph's ``members`` order, so the own-node score of every image of every node is exact.

The per-source columns were added without a format bump: a label written before them loads and
selects as ever; only a per-source read (:func:`source_summary`) refuses it, naming the fix.

For a candidate set V_T, the argmax of S[x, .] over V_T is exact whenever some candidate is in x's
top-K; otherwise it is taken over the candidates whose exact score we hold (the nodes x belongs
to). ``benchmarks/bench_label_compact.py`` measures how often that changes selection.

On disk a label is a directory (written atomically, validated on read). Format
``mll-label/2``, the one written, keeps the rows a selection reads apart from the rest, in chunks
a selection fetches alone (from the artifact store: only those of its candidate images)::

    ranks/00000.safetensors ...  ``topk_idx`` rows in chunks of :data:`CHUNK_ROWS` images
    scores.safetensors           ``topk_score`` and ``member_score`` (selection does not read them)
    summary.parquet     node_id, n_images, acc1, acc5, mean_own  (accuracy over all nodes),
                        then per sample source S of the graph, counts (not ratios, so sources
                        pool with any weights): n_images@S, hits1@S, hits5@S (int64) and
                        sum_own@S (float64, the sum of own-node scores of S's images)
    meta.json           model ref + revision, architecture, preprocess, templates, logit scale,
                        graph version, code version, timings, K, ``layout`` (images, chunk rows,
                        chunks, index dtype, memberships) and the sha256 of every other file

``mll-label/1`` (read, never written; ``mll label migrate`` rewrites it) held the three arrays in
one ``label.safetensors``: a selection on a fresh worker had to download all of it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mll_registry.errors import MLLError
from mll_registry.fsutil import atomic_dir, read_json_object, sha256_file

if TYPE_CHECKING:
    from mll_registry.graph.bundle import SemanticGraph

FORMAT = "mll-label/2"
#: the format before ranks were chunked: read as ever, migrated by ``mll label migrate``
FORMAT_V1 = "mll-label/1"
_ARRAYS = ("topk_idx", "topk_score", "member_score")
#: image rows per ranks chunk in an artifact store: 64 KiB at K=64 (uint16), about 7 nodes of 75
#: images; the unit a remote selection fetches, one request each. 2,048 was fixed first; at
#: it a 20-class task touched 54 of a 2,000-node graph's 74 chunks (candidates scatter over
#: the node order), so 512 (benchmarks/results/selection_remote.md)
CHUNK_ROWS = 512
#: requests in flight when one label's absent chunks are fetched from a remote store
FETCH_THREADS = 8
V1_FILE = "label.safetensors"
RANKS_FILE = "ranks.safetensors"
SCORES_FILE = "scores.safetensors"
SUMMARY_FILE = "summary.parquet"
#: the files meta.json may name (a checksum key is a path: nothing else is ever opened)
_FILE_NAME = re.compile(r"(label\.safetensors|ranks\.safetensors|scores\.safetensors|"
                        r"summary\.parquet|"
                        r"ranks/[0-9]{5}\.safetensors)")
_INDEX_DTYPES = {"uint16": np.uint16, "int32": np.int32}
#: bounds on an ``mll-label/2`` layout (:func:`layout`), checked before anything is allocated
#: or looped over by it: a crafted meta.json must not make a reader build a 10^11-entry list.
#: Chunk files are named with five digits (:func:`chunk_file`)
MAX_CHUNKS = 100_000
#: image rows per chunk: 2,048 in the first chunked labels, :data:`CHUNK_ROWS` now
MAX_CHUNK_ROWS = 8_192
#: images per label: what :data:`MAX_CHUNKS` chunks of :data:`CHUNK_ROWS` hold (51.2 M, 50x
#: the paper's 10^6)
MAX_IMAGES = MAX_CHUNKS * CHUNK_ROWS
#: nodes kept per image: what a uint16 index addresses (the labeller keeps min(K, nodes))
MAX_TOP_K = 1 << 16
#: membership rows: an image is its own node's member and at most a fill of each of its
#: ancestors (a WordNet noun has far fewer than 64)
MAX_MEMBERSHIPS = 64 * MAX_IMAGES
_LAYOUT_BOUNDS = {"images": MAX_IMAGES, "top_k": MAX_TOP_K, "chunk_rows": MAX_CHUNK_ROWS,
                  "chunks": MAX_CHUNKS, "memberships": MAX_MEMBERSHIPS}


def chunk_file(i: int) -> str:
    """The file of ranks chunk ``i`` (image rows ``i * chunk_rows`` on), relative to the label."""
    return f"ranks/{i:05d}.safetensors"


def label_files(meta: dict[str, Any]) -> list[str]:
    """The files of a label on disk besides meta.json, by its meta.json: for ``mll-label/2``
    the ranks, the scores and the summary; for ``mll-label/1`` its two files.

    Raises:
        LabelError: meta.json names an unknown format or a malformed layout.
    """
    if meta.get("format") == FORMAT_V1:
        return [V1_FILE, SUMMARY_FILE]
    layout(meta)
    return [RANKS_FILE, SCORES_FILE, SUMMARY_FILE]


def stored_files(meta: dict[str, Any]) -> list[str]:
    """The files of a label in an artifact store besides meta.json: for ``mll-label/2`` the
    ranks as chunks (:func:`chunk_file`: what a remote selection fetches one by one), the
    scores and the summary; for ``mll-label/1`` :func:`label_files`."""
    if meta.get("format") == FORMAT_V1:
        return label_files(meta)
    lay = layout(meta)
    return [chunk_file(i) for i in range(lay["chunks"])] + [SCORES_FILE, SUMMARY_FILE]


def whole_files(path: Path, meta: dict[str, Any]) -> list[str]:
    """The files that make the label at ``path`` whole: :func:`label_files`, or, where the
    ranks came as chunks (a label fetched from an artifact store), :func:`stored_files`.

    Raises:
        LabelError: meta.json names a malformed or unbounded layout (naming ``path``).
    """
    if meta.get("format") != FORMAT_V1:
        layout(meta, path)
    if meta.get("format") == FORMAT_V1 or (path / RANKS_FILE).is_file():
        return label_files(meta)
    return stored_files(meta)


def chunk_bytes(idx: np.ndarray, c: int, graph_version: str, per: int) -> bytes:
    """Ranks chunk ``c`` (rows ``c * per`` on) of ``idx`` as a safetensors file's bytes, as
    :func:`write_chunks` writes it and meta.json's checksum covers it."""
    rows = idx[c * per:(c + 1) * per]
    return (_chunk_header(len(rows), idx.shape[1], idx.dtype.name, graph_version)
            + np.ascontiguousarray(rows).tobytes())


def write_chunks(label_dir: Path, dest: Path) -> list[str]:
    """Write the ranks of the ``mll-label/2`` label at ``label_dir`` as chunk files under
    ``dest`` (what an artifact store holds: :func:`stored_files`), each checked against
    meta.json's checksum. Returns their names."""
    meta = read_json_object(label_dir / "meta.json")
    lay = layout(meta)
    arrays, _ = mapped_arrays(label_dir / RANKS_FILE, relabel_fix(meta))
    ranks = arrays["topk_idx"]
    names = []
    (dest / "ranks").mkdir(parents=True, exist_ok=True)
    per = int(lay["chunk_rows"])
    for c in range(lay["chunks"]):
        data = chunk_bytes(ranks, c, meta["graph_version"], per)
        name = chunk_file(c)
        if hashlib.sha256(data).hexdigest() != (meta.get("checksums") or {}).get(name):
            raise LabelError(f"{label_dir}: chunk {c} does not match its checksum in meta.json; "
                             f"{relabel_fix(meta)}")
        (dest / name).write_bytes(data)
        names.append(name)
    return names


def layout(meta: dict[str, Any], path: Path | None = None, images: int | None = None,
           memberships: int | None = None, nodes: int | None = None) -> dict[str, Any]:
    """The checked ``layout`` of an ``mll-label/2`` meta.json: images, top_k, chunk_rows,
    chunks (= ceil(images / chunk_rows)), index_dtype, memberships. Every count is bounded
    (:data:`MAX_IMAGES` and the rest) and, where the caller knows the graph, equal to its
    ``images`` and ``memberships``, with ``top_k`` at most its ``nodes``: nothing is sized by
    a count before it passes here. ``path``: the label directory, named in the error.

    Raises:
        LabelError: a missing, inconsistent or unbounded field, or another graph's size (a
            crafted or damaged meta.json), named.
    """
    lay = meta.get("layout")
    where = f"{path / 'meta.json'}" if path is not None else "meta.json"
    fix = relabel_fix(meta)
    if not isinstance(lay, dict) or not all(
            isinstance(lay.get(k), int) and not isinstance(lay.get(k), bool) and lay[k] >= 0
            for k in _LAYOUT_BOUNDS) or lay.get("index_dtype") not in _INDEX_DTYPES:
        raise LabelError(f"{where} has a malformed layout {str(lay)[:200]}; {fix}")
    for k, most in _LAYOUT_BOUNDS.items():
        if lay[k] > most:
            raise LabelError(f"{where}: layout {k}={lay[k]} is more than a label holds (at most "
                             f"{most:,}); {fix}")
    if lay["chunk_rows"] < 1 or lay["chunks"] != -(-lay["images"] // lay["chunk_rows"]):
        raise LabelError(f"{where}: layout chunks={lay['chunks']} is not ceil(images / "
                         f"chunk_rows) for images={lay['images']}, chunk_rows="
                         f"{lay['chunk_rows']}; {fix}")
    for k, want in (("images", images), ("memberships", memberships)):
        if want is not None and lay[k] != want:
            raise LabelError(f"{where}: label has {lay[k]} {k}, graph has {want}; {fix}")
    if nodes is not None and lay["top_k"] > nodes:
        raise LabelError(f"{where}: layout top_k={lay['top_k']} is more than the label's "
                         f"{nodes} nodes; {fix}")
    return dict(lay)


def selection_ready(path: Path) -> bool:
    """Whether label dir ``path`` is an ``mll-label/2`` label a selection can open: its
    meta.json is there (the files it reads are fetched or opened when first read)."""
    try:
        return read_json_object(path / "meta.json").get("format") == FORMAT
    except (OSError, ValueError):
        return False


def label_digest(meta: dict[str, Any]) -> str | None:
    """One digest of a label's content, from its meta.json (what an ensemble pins): the sha256
    of ``label.safetensors`` for ``mll-label/1``; for ``mll-label/2`` the sha256 of its files'
    sorted checksums."""
    sums = meta.get("checksums") or {}
    if meta.get("format") == FORMAT_V1 or V1_FILE in sums:
        return sums.get(V1_FILE)
    if not sums:
        return None
    return hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()


def checksum_mismatch(path: str | os.PathLike[str], meta: dict[str, Any] | None = None
                      ) -> str | None:
    """The first label file whose sha256 differs from meta.json's record, else None (labels
    written before checksums were recorded have none to check)."""
    path = Path(path)
    if meta is None:
        meta = read_json_object(path / "meta.json")
    sums = meta.get("checksums") or {}
    if meta.get("format") == FORMAT:
        for f in whole_files(path, meta):  # every file is summed
            if f not in sums or not (path / f).is_file() or sha256_file(path / f) != sums[f]:
                return f
        return None
    for f in sorted(sums):
        if not isinstance(f, str) or not _FILE_NAME.fullmatch(f):
            return str(f)[:100]  # not a label file name: never opened
        if not (path / f).is_file() or sha256_file(path / f) != sums[f]:
            return f
    return None


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def files_look_whole(path: Path) -> bool:
    """Cheap check that a label directory's files are complete (headers and footers parse),
    without reading the arrays: for caches, which are fetched again when this fails."""
    try:
        from pyarrow.parquet import read_metadata
        from safetensors import safe_open

        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        for name in whole_files(path, meta):
            if name.endswith(".parquet"):
                read_metadata(path / name)
            else:
                with safe_open(str(path / name), "np") as f:
                    f.metadata()
        return True
    except Exception:  # noqa: BLE001 - any failure means: not whole
        return False


def _canonical_header(path: Path) -> None:
    """Rewrite a safetensors file's JSON header with its keys sorted, in place: safetensors
    writes its metadata map in hash order, so two saves of one label would differ in bytes.
    Same tensors, same data offsets (the header keeps its length)."""
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        text = json.dumps(json.loads(f.read(n)), sort_keys=True, separators=(",", ":")).encode()
        if len(text) > n:  # the same JSON, reordered, is never longer
            raise LabelError(f"{path}: unexpected safetensors header; relabel the model")
        f.seek(8)
        f.write(text.ljust(n))


def _chunk_header(rows: int, k: int, dtype: str, graph_version: str) -> bytes:
    """The first bytes :meth:`ModelLabel.save` writes for a ranks chunk of ``rows`` rows:
    safetensors' length prefix and header (padded as it pads), keys sorted."""
    code = {"uint16": "U16", "int32": "I32"}[dtype]
    size = rows * k * np.dtype(dtype).itemsize
    header = {"__metadata__": {"format": FORMAT, "graph_version": graph_version},
              "topk_idx": {"dtype": code, "shape": [rows, k], "data_offsets": [0, size]}}
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


class LabelError(MLLError, ValueError):
    """A label file is missing, malformed, or for another graph version."""


#: the per-source summary counts, each a column ``<stat>@<source>`` (module docstring)
SOURCE_STATS = ("n_images", "hits1", "hits5", "sum_own")


def source_column(stat: str, source: str) -> str:
    """The summary column of ``stat`` (one of :data:`SOURCE_STATS`) for ``source``'s images."""
    return f"{stat}@{source}"


def graph_sources(graph: SemanticGraph) -> list[str]:
    """A graph's sample sources, sorted: those of its manifest and of its images."""
    return sorted(set(graph.manifest.get("sources", {})) | set(graph.images["source"].astype(str)))


def summary_sources(summary: pd.DataFrame) -> list[str]:
    """The sources a summary holds per-source counts for (none: written before they existed)."""
    head = source_column("n_images", "")
    return [str(c)[len(head):] for c in summary.columns if str(c).startswith(head)]


def no_source_counts(model_refs: Sequence[str]) -> LabelError:
    """The error of a per-source read of labels written before per-source counts existed."""
    refs = list(model_refs) or ["MODEL_REF"]
    fix = "; ".join(f"`mll label {r} --force`" for r in refs[:5])
    more = f" (and {len(refs) - 5} more)" if len(refs) > 5 else ""
    return LabelError(f"the label of {', '.join(refs[:5])}{more} has no per-source counts "
                      f"(labelled before they existed); relabel: {fix}")


def source_summary(summary: pd.DataFrame, source: str,
                   model_ref: str | None = None) -> pd.DataFrame:
    """Per node, the figures of ``source``'s images only: node_id, n_images, hits1, hits5,
    acc1, acc5, mean_own (ratios NaN where the node has no image from ``source``).

    Raises:
        LabelError: the summary predates per-source counts (the message names the relabelling).
        KeyError: ``source`` is not one of the summary's sources.
    """
    have = summary_sources(summary)
    if not have:
        raise no_source_counts([model_ref] if model_ref else [])
    if source not in have:
        raise KeyError(f"no sample source {source!r} in this label's graph; its sources: "
                       f"{', '.join(have)}")
    n = summary[source_column("n_images", source)].to_numpy(np.int64)
    out = {"node_id": summary["node_id"].to_numpy(), "n_images": n}
    with np.errstate(invalid="ignore", divide="ignore"):
        for stat, ratio in (("hits1", "acc1"), ("hits5", "acc5"), ("sum_own", "mean_own")):
            v = summary[source_column(stat, source)].to_numpy()
            if stat != "sum_own":
                out[stat] = v.astype(np.int64)
            out[ratio] = np.where(n > 0, v / np.maximum(n, 1), np.nan)
    return pd.DataFrame(out)


@dataclass
class ModelLabel:
    """A model's label on one graph version."""

    topk_idx: np.ndarray  # (n_images, K) uint16/int32 node positions, best first
    topk_score: np.ndarray  # (n_images, K) float16
    member_score: np.ndarray  # (n_memberships,) float16, graph.members order
    summary: pd.DataFrame  # per node: node_id, n_images, acc1, acc5, mean_own, per source
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def graph_version(self) -> str:
        return str(self.meta["graph_version"])

    @property
    def k(self) -> int:
        return int(self.topk_idx.shape[1])

    @property
    def label_hash(self) -> str:
        """Hash of the settings the label was computed with (part of its key)."""
        from mll_registry.settings import DEFAULTS, label_identity_hash

        if self.meta.get("label_hash"):
            return str(self.meta["label_hash"])
        cfg = self.meta.get("label_config", {})
        return label_identity_hash(cfg.get("templates", DEFAULTS.templates),
                                   cfg.get("text_source", DEFAULTS.text_source), self.k)

    def headline(self) -> dict[str, Any]:
        """The figures a person reads first."""
        s = self.summary
        return {
            "model": self.meta.get("model_ref"),
            "revision": self.meta.get("revision"),
            "graph_version": self.graph_version,
            "nodes": int(len(s)),
            "images": int(self.topk_idx.shape[0]),
            "mean_acc1": round(float(s["acc1"].mean()), 4),
            "mean_acc5": round(float(s["acc5"].mean()), 4),
            "images_per_s": self.meta.get("timings", {}).get("images_per_s"),
        }

    def source_summary(self, source: str) -> pd.DataFrame:
        """Per node, the figures of ``source``'s images only (:func:`source_summary`)."""
        ref = self.meta.get("model_ref")
        return source_summary(self.summary, source, str(ref) if ref else None)

    def bytes_per_image(self) -> float:
        n = max(1, self.topk_idx.shape[0])
        return (self.topk_idx.nbytes + self.topk_score.nbytes + self.member_score.nbytes) / n

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically in :data:`FORMAT`: a reader sees the old label or the complete new
        one. Two saves of one label are byte-identical (canonical headers, sorted JSON)."""
        from safetensors.numpy import save_file

        path = Path(path)
        idx = np.ascontiguousarray(self.topk_idx)
        if idx.dtype.name not in _INDEX_DTYPES:
            raise LabelError(f"topk_idx must be uint16 or int32, not {idx.dtype}")
        header = {"format": FORMAT, "graph_version": self.graph_version}
        n = int(idx.shape[0])
        chunks = -(-n // CHUNK_ROWS)
        with atomic_dir(path) as tmp:
            save_file({"topk_idx": idx}, str(tmp / RANKS_FILE), metadata=header)
            _canonical_header(tmp / RANKS_FILE)
            save_file({k: np.ascontiguousarray(getattr(self, k)) for k in _ARRAYS[1:]},
                      str(tmp / SCORES_FILE), metadata=header)
            _canonical_header(tmp / SCORES_FILE)
            self.summary.to_parquet(tmp / SUMMARY_FILE, index=False)
            lay = {"images": n, "top_k": int(idx.shape[1]), "chunk_rows": CHUNK_ROWS,
                   "chunks": chunks, "index_dtype": idx.dtype.name,
                   "memberships": int(len(self.member_score))}
            meta = {k: v for k, v in self.meta.items() if k not in ("checksums", "layout")}
            # the general score selection orders fallback models by, without the summary
            meta.update(format=FORMAT, layout=lay)
            if "acc1" in self.summary.columns and len(self.summary):
                meta["mean_acc1"] = float(self.summary["acc1"].mean())
            meta["checksums"] = {f: sha256_file(tmp / f) for f in label_files(meta)}
            meta["checksums"].update({chunk_file(c): hashlib.sha256(chunk_bytes(
                idx, c, self.graph_version, CHUNK_ROWS)).hexdigest() for c in range(chunks)})
            (tmp / "meta.json").write_text(
                json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n",
                encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], graph_version: str | None = None) -> ModelLabel:
        """Read and validate a label (either format); with ``graph_version`` it must match.

        Raises:
            LabelError: missing files, malformed arrays, or another graph version.
        """
        from safetensors import safe_open
        from safetensors.numpy import load_file

        path = Path(path)
        if not (path / "meta.json").is_file():
            raise LabelError(f"{path} is not a model label (missing meta.json); label the model "
                             "with `mll label MODEL_REF`")
        try:
            meta = read_json_object(path / "meta.json")
        except ValueError as exc:
            raise LabelError(f"{path}: meta.json is damaged ({exc}); relabel the model with "
                             "`mll label MODEL_REF --force`") from exc
        if meta.get("format") not in (FORMAT, FORMAT_V1):
            raise LabelError(f"{path}: label format {meta.get('format')!r}, expected {FORMAT!r}; "
                             "relabel the model")
        files = whole_files(path, meta)
        for f in files:
            if not (path / f).is_file():
                raise LabelError(f"{path} is not a whole model label (missing {f}); "
                                 f"{relabel_fix(meta)}")
        tensors = [f for f in files if f.endswith(".safetensors")]
        for f in tensors:
            try:
                with safe_open(str(path / f), "np") as fh:
                    header = fh.metadata() or {}
            except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
                raise LabelError(f"{path}: {f} is damaged ({_first(exc)}); "
                                 f"{relabel_fix(meta)}") from exc
            if header.get("graph_version") != meta.get("graph_version"):
                raise LabelError(f"{path}: {f} and meta.json disagree on the graph version; "
                                 "relabel")
        if graph_version is not None and meta["graph_version"] != graph_version:
            raise LabelError(
                f"{path} was computed on graph version {meta['graph_version']}, not {graph_version}; "
                "labels are only valid for their graph: relabel the model on this graph")
        bad = checksum_mismatch(path, meta)
        if bad:
            raise LabelError(f"{path}: {bad} does not match its checksum in meta.json (damaged "
                             f"or modified); {relabel_fix(meta)}")
        if meta["format"] == FORMAT:
            _check_arrays(path, meta, tensors)
        try:
            arrays: dict[str, np.ndarray] = {}
            parts: list[np.ndarray] = []
            for f in tensors:
                got = load_file(str(path / f))
                if f.startswith("ranks"):  # the ranks whole, or in chunks
                    parts.append(got["topk_idx"])
                else:
                    arrays.update(got)
            if meta["format"] == FORMAT:
                lay = layout(meta)
                arrays["topk_idx"] = (np.concatenate(parts) if parts else np.zeros(
                    (0, lay["top_k"]), _INDEX_DTYPES[lay["index_dtype"]]))
            summary = pd.read_parquet(path / SUMMARY_FILE)
            lab = cls(**{k: arrays[k] for k in _ARRAYS}, summary=summary, meta=meta)
        except (Exception) as exc:  # noqa: BLE001 - truncated safetensors / parquet
            raise LabelError(f"{path}: the label files are damaged ({_first(exc)}); "
                             f"{relabel_fix(meta)}") from exc
        lab.validate()
        if meta["format"] == FORMAT:
            lay = layout(meta, path, nodes=len(lab.summary))
            if (lay["images"], lay["top_k"], lay["memberships"]) != (
                    lab.topk_idx.shape[0], lab.k, len(lab.member_score)) or \
                    lab.topk_idx.dtype.name != lay["index_dtype"]:
                raise LabelError(f"{path}: the arrays disagree with meta.json's layout; "
                                 f"{relabel_fix(meta)}")
        return lab

    def validate(self, n_images: int | None = None, n_nodes: int | None = None,
                 n_members: int | None = None) -> None:
        """Check shapes and ranges (optionally against a graph's sizes)."""
        if self.topk_idx.ndim != 2 or self.member_score.ndim != 1:
            raise LabelError(f"malformed arrays (topk_idx {self.topk_idx.shape}, member_score "
                             f"{self.member_score.shape}); {relabel_fix(self.meta)}")
        n, k = self.topk_idx.shape
        if self.topk_score.shape != (n, k):
            raise LabelError(f"topk_score shape {self.topk_score.shape} != topk_idx {(n, k)}")
        nn = len(self.summary)
        if n and (self.topk_idx.max() >= nn or self.topk_idx.min() < 0):
            raise LabelError("topk_idx refers to nodes outside the summary; the label is corrupt")
        for want, got, what in ((n_images, n, "images"), (n_nodes, nn, "nodes"),
                                (n_members, len(self.member_score), "memberships")):
            if want is not None and want != got:
                raise LabelError(f"label has {got} {what}, graph has {want}; relabel the model")


def _check_arrays(path: Path, meta: dict[str, Any], files: Sequence[str]) -> None:
    """Refuse an ``mll-label/2`` label whose safetensors headers (``files``: the ranks, whole
    or in chunks, and the scores) declare other arrays, shapes or dtypes than its layout:
    checked on the headers alone, before any array is read or allocated.

    Raises:
        LabelError: the first file that disagrees, named.
    """
    lay, fix = layout(meta, path), relabel_fix(meta)
    n, k, per = lay["images"], lay["top_k"], lay["chunk_rows"]
    index = (_INDEX_DTYPES[lay["index_dtype"]],)
    for f in files:
        want: dict[str, tuple[tuple[int, ...], tuple[Any, ...]]]
        if f == SCORES_FILE:
            want = {"topk_score": ((n, k), _SCORE_DTYPES),
                    "member_score": ((lay["memberships"],), _SCORE_DTYPES)}
        elif f == RANKS_FILE:
            want = {"topk_idx": ((n, k), index)}
        else:  # ranks/NNNNN.safetensors
            first = int(f[6:11]) * per
            want = {"topk_idx": ((min(per, n - first), k), index)}
        specs, _, _ = _header(path / f, fix)
        if set(specs) != set(want) or any(
                specs[a][1] != shape or specs[a][0] not in dtypes
                for a, (shape, dtypes) in want.items()):
            got = {a: list(spec[1]) for a, spec in specs.items()}
            described = {a: list(w[0]) for a, w in want.items()}
            raise LabelError(f"{path / f}: arrays {str(got)[:200]}, not the {described} "
                             f"meta.json's layout describes; {fix}")


def relabel_fix(meta: dict[str, Any]) -> str:
    """The command that rebuilds a damaged label, naming its model when meta.json does."""
    ref = meta.get("model_ref")
    ref = ref if isinstance(ref, str) and ref.isprintable() and ref else "MODEL_REF"
    return f"relabel the model with `mll label {ref[:300]} --force`"


_SCORE_DTYPES = (np.float16, np.float32)
_DTYPES = {"U8": np.uint8, "U16": np.uint16, "I32": np.int32, "I64": np.int64, "F16": np.float16,
           "F32": np.float32}
#: bounds on a safetensors header read for selection: what no label or embeddings file exceeds
MAX_HEADER_BYTES = 100 << 20
MAX_TENSORS = 1024
MAX_DIMS = 8
RELABEL = "relabel the model with `mll label MODEL_REF --force`"


def _ints(value: object, n: int | None = None) -> list[int] | None:
    """``value`` as a list of non-negative ints (JSON integers, not bools or floats), else None."""
    if not isinstance(value, list) or (n is not None and len(value) != n):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return None
    return list(value)


def _tensor_specs(header: object, path: Path, data_bytes: int, fix: str
                  ) -> dict[str, tuple[Any, tuple[int, ...], int, int]]:
    """name -> (dtype, shape, start, end) of every tensor in a parsed safetensors header, each
    checked: field types, known dtype, size = shape x itemsize (exact integers), the byte range
    inside the data section, no two ranges overlapping (a crafted header must not make one
    array read another's bytes, or the header's).

    Raises:
        LabelError: the first problem found, naming ``path`` and ``fix``.
    """
    def bad(what: str) -> LabelError:
        return LabelError(f"{path}: {what}; {fix}")

    if not isinstance(header, dict):
        raise bad("the safetensors header is not a JSON object")
    meta = header.get("__metadata__", {})
    if meta is not None and not (isinstance(meta, dict) and all(
            isinstance(v, str) for v in meta.values())):
        raise bad("the safetensors __metadata__ is not a map of strings")
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(entries) > MAX_TENSORS:
        raise bad(f"the header declares {len(entries)} arrays (at most {MAX_TENSORS})")
    out: dict[str, tuple[Any, tuple[int, ...], int, int]] = {}
    for name, spec in entries.items():
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"array {name!r} has a malformed header entry (dtype, shape, data_offsets)")
        raw_dtype = spec["dtype"]
        dtype = _DTYPES.get(raw_dtype) if isinstance(raw_dtype, str) else None
        if dtype is None:
            raise bad(f"array {name!r} has unsupported dtype {str(raw_dtype)[:20]!r}")
        shape, offsets = _ints(spec["shape"]), _ints(spec["data_offsets"], 2)
        if shape is None or len(shape) > MAX_DIMS:
            raise bad(f"array {name!r} has a malformed shape (at most {MAX_DIMS} non-negative "
                      "integers)")
        if offsets is None or offsets[0] > offsets[1]:
            raise bad(f"array {name!r} has malformed data_offsets (two non-negative integers, "
                      "start <= end)")
        lo, hi = offsets
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize  # Python ints: no overflow
        if hi > data_bytes or hi - lo != nbytes:
            raise bad(f"array {name!r} is truncated or inconsistent with its header "
                      f"({nbytes} bytes declared by its shape, bytes {lo}-{hi} of {data_bytes})")
        out[name] = (dtype, tuple(shape), lo, hi)
    spans = sorted((lo, hi, name) for name, (_, _, lo, hi) in out.items() if hi > lo)
    for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise bad(f"arrays {a!r} and {b!r} overlap in the file")
    return out


def _header(path: Path, fix: str) -> tuple[dict[str, tuple[Any, tuple[int, ...], int, int]],
                                             dict[str, str], int]:
    """(checked tensor specs, metadata, byte offset of the data section) of a safetensors file:
    the header is read and checked (:func:`_tensor_specs`), no data."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 0 or n > min(size - 8, MAX_HEADER_BYTES):
            raise LabelError(f"{path}: not a safetensors file (header length {n}); {fix}")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise LabelError(f"{path}: damaged safetensors header ({_first(exc)}); "
                             f"{fix}") from exc
    specs = _tensor_specs(header, path, size - 8 - n, fix)
    return specs, header.get("__metadata__") or {}, 8 + n


def mapped_arrays(path: str | os.PathLike[str], fix: str = RELABEL
                  ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays of a safetensors file memory-mapped (nothing read until used), and its
    metadata. The header is checked before anything is mapped (:func:`_tensor_specs`): a
    truncated or crafted file is refused with one line naming it and ``fix``.

    Raises:
        LabelError: not a safetensors file, truncated, a malformed header, or an unexpected dtype.
    """
    path = Path(path)
    specs, meta, base = _header(path, fix)
    out = {}
    for name, (dtype, shape, lo, hi) in specs.items():
        out[name] = (np.memmap(path, dtype=dtype, mode="r", offset=base + lo, shape=shape)
                     if hi > lo else np.zeros(shape, dtype))
    return out, meta


def _runs(rows: np.ndarray, per: int | None = None) -> tuple[list[int], list[int]]:
    """(starts, ends) positions in sorted ``rows`` of each run of consecutive rows (cut also
    where ``rows // per`` changes, when ``per`` is given)."""
    if not len(rows):
        return [], []
    brk = np.diff(rows) != 1
    if per is not None:
        brk |= np.diff(rows // per) != 0
    cut = (np.flatnonzero(brk) + 1).tolist()
    return [0, *cut], [*cut, len(rows)]


def _pread_into(fd: int, buf: memoryview, off: int) -> None:
    done = 0
    while done < len(buf):
        got = os.preadv(fd, [buf[done:]], off + done)
        if got <= 0:
            raise LabelError(f"label file ended early at byte {off + done}; fetch or relabel")
        done += got


def _read_runs(fd: int, base: int, row_bytes: int, rows: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = file row rows[i]`` for sorted ``rows``: one positioned read per run of
    consecutive rows (a task's candidate images are mostly whole nodes: long runs).

    When the first run is not in the page cache (a non-blocking read says so), every run is
    announced to the kernel first (``POSIX_FADV_WILLNEED``): the disk then has them all in its
    queue instead of one read at a time (benchmarks/results/selection_disk.md)."""
    flat = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    starts, ends, offs = _announce(fd, base, row_bytes, rows, flat)
    for s0, e0, off in zip(starts, ends, offs, strict=True):
        _pread_into(fd, flat[s0 * row_bytes:e0 * row_bytes], off)


def _announce(fd: int, base: int, row_bytes: int, rows: np.ndarray, flat: memoryview | None
              ) -> tuple[list[int], list[int], list[int]]:
    """The runs of ``rows`` (starts, ends, file offsets), each announced to the kernel
    (``POSIX_FADV_WILLNEED``) when the first is not in the page cache. ``flat``: where the
    first run may be read without waiting (None: a scratch buffer)."""
    starts, ends = _runs(rows)
    offs = (base + rows[starts] * row_bytes).tolist() if starts else []
    if offs:
        n = (ends[0] - starts[0]) * row_bytes
        buf = flat[starts[0] * row_bytes:ends[0] * row_bytes] if flat is not None else \
            memoryview(bytearray(n))
        if _is_cold(fd, buf, offs[0]):
            for s0, e0, off in zip(starts, ends, offs, strict=True):
                os.posix_fadvise(fd, off, (e0 - s0) * row_bytes, os.POSIX_FADV_WILLNEED)
    return starts, ends, offs


def _is_cold(fd: int, buf: memoryview, off: int) -> bool:
    """Whether reading ``buf`` at ``off`` would wait for the disk (``RWF_NOWAIT``; where the
    kernel lacks it, False: nothing is announced)."""
    flag = getattr(os, "RWF_NOWAIT", None)
    if flag is None or not len(buf):
        return False
    try:
        return os.preadv(fd, [buf], off, flag) < len(buf)
    except BlockingIOError:
        return True
    except OSError:  # EOPNOTSUPP on some file systems: read as before
        return False


#: fetch(label_dir, name): put the label file ``name`` (a :func:`label_files` name) into
#: ``label_dir``, checked against meta.json's checksum (a store whose labels are remote)
Fetch = Callable[[Path, str], None]


@dataclass(frozen=True)
class _Span:
    """Where an array's rows lie in a label file: for positioned reads."""

    file: Path
    offset: int
    row_bytes: int
    rows: int
    dtype: Any


@dataclass
class MappedLabel:
    """A label opened for selection: its header checked, nothing of its arrays read, summary
    read on first use.

    ``mll-label/1``: the arrays are read-only memory maps of ``label.safetensors``.
    ``mll-label/2``: ``topk_idx`` and ``member_score`` carry only shape and dtype (zero-copy
    views of one zero); their rows are in the chunk and scores files, opened (and, with
    ``fetch``, fetched) when :meth:`read_rows` first needs them. Either way :meth:`read_rows`
    reads just a task's candidate rows, so opening 1,000 labels costs their meta.json (or
    headers): benchmarks/results/selection_disk.md. Same attributes as :class:`ModelLabel`
    for what selection uses.
    """

    path: Path
    topk_idx: np.ndarray
    member_score: np.ndarray
    meta: dict[str, Any]
    fetch: Fetch | None = None
    _spans: dict[str, _Span] = field(default_factory=dict, repr=False)
    _chunk_headers: dict[int, bytes] = field(default_factory=dict, repr=False)

    @property
    def chunked(self) -> bool:
        return self.meta.get("format") == FORMAT

    def read_rows(self, name: str, rows: np.ndarray, out: np.ndarray) -> None:
        """Read rows ``rows`` (sorted) of array ``name`` into ``out`` (C-contiguous) with
        positioned reads: no page of the file is mapped into the process (a memory map would
        count every touched page, and its read-ahead, in the resident set)."""
        arr = getattr(self, name)
        if out.dtype != arr.dtype or out.shape != (len(rows), *arr.shape[1:]):
            raise ValueError(f"out must be {arr.dtype}{(len(rows), *arr.shape[1:])}")
        rows = np.asarray(rows, np.int64)
        if not self.chunked:
            if not isinstance(arr, np.memmap):
                out[...] = np.take(arr, rows, axis=0)
                return
            self._read(_Span(self.path / V1_FILE, int(arr.offset), int(arr.strides[0]),
                             arr.shape[0], arr.dtype), rows, out)
            return
        if len(rows) and (rows[0] < 0 or rows[-1] >= arr.shape[0]):
            raise IndexError(f"rows outside 0..{arr.shape[0] - 1}")
        if name == "member_score":
            self._read(self._span(SCORES_FILE, "member_score"), rows, out)
            return
        if self._ranks_whole():
            self._read(self._span(RANKS_FILE, "topk_idx"), rows, out)
            return
        lay = self.meta["layout"]
        per, k = int(lay["chunk_rows"]), int(lay["top_k"])
        rb = k * np.dtype(lay["index_dtype"]).itemsize
        starts, ends = _runs(rows, per)
        first = rows[starts].tolist() if starts else []
        chunk = [r // per for r in first]
        self._fetch_all([chunk_file(c) for c in dict.fromkeys(chunk)])
        flat = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        i = 0
        while i < len(starts):  # one open per chunk, one read per run in it
            c, j = chunk[i], i
            while j < len(starts) and chunk[j] == c:
                j += 1
            fd, base = self._open_chunk(c)
            try:
                for r in range(i, j):
                    _pread_into(fd, flat[starts[r] * rb:ends[r] * rb],
                                base + (first[r] - c * per) * rb)
            finally:
                os.close(fd)
            i = j

    def _open_chunk(self, c: int) -> tuple[int, int]:
        """(open fd, data offset) of ranks chunk ``c``: its header compared with the one
        :meth:`ModelLabel.save` writes for that shape (bytes, no JSON); any other header is
        parsed and checked in full (:func:`_tensor_specs`). A remote label's absent chunk is
        fetched first."""
        name = chunk_file(c)
        try:
            fd = os.open(self.path / name, os.O_RDONLY)
        except FileNotFoundError:
            self._file(name)  # fetched when remote, else the missing file is named
            fd = os.open(self.path / name, os.O_RDONLY)
        try:
            lay = self.meta["layout"]
            n = min(int(lay["chunk_rows"]), int(lay["images"]) - c * int(lay["chunk_rows"]))
            want = self._chunk_headers.get(n)
            if want is None:
                want = self._chunk_headers[n] = _chunk_header(
                    n, int(lay["top_k"]), str(lay["index_dtype"]), self.graph_version)
            rb = int(lay["top_k"]) * np.dtype(lay["index_dtype"]).itemsize
            if os.pread(fd, len(want), 0) == want:
                if os.fstat(fd).st_size != len(want) + n * rb:
                    raise LabelError(f"{self.path / name}: the chunk is truncated; "
                                     f"{relabel_fix(self.meta)}")
                return fd, len(want)
            span = self._span(name, "topk_idx")  # checked in full, or refused
            if span.row_bytes != rb:
                raise LabelError(f"{span.file}: rows of {span.row_bytes} bytes, not {rb}; "
                                 f"{relabel_fix(self.meta)}")
            return fd, span.offset
        except BaseException:
            os.close(fd)
            raise

    def prefetch(self, name: str, rows: np.ndarray) -> None:
        """Announce rows ``rows`` (sorted) of array ``name`` to the kernel when they are not in
        the page cache, so that the disk reads them while other labels are scanned (a label
        whose ranks are remote chunks: nothing to do here)."""
        arr = getattr(self, name)
        rows = np.asarray(rows, np.int64)
        if not self.chunked:
            if not isinstance(arr, np.memmap):
                return
            span = _Span(self.path / V1_FILE, int(arr.offset), int(arr.strides[0]),
                         arr.shape[0], arr.dtype)
        elif name == "topk_idx" and self._ranks_whole():
            span = self._span(RANKS_FILE, "topk_idx")
        else:
            return
        fd = os.open(span.file, os.O_RDONLY)
        try:
            _announce(fd, span.offset, span.row_bytes, rows, None)
        finally:
            os.close(fd)

    def _ranks_whole(self) -> bool:
        """Whether the ranks are on disk as one file (a local label), not as fetched chunks."""
        return f"{RANKS_FILE}:topk_idx" in self._spans or (self.path / RANKS_FILE).is_file()

    def _read(self, span: _Span, rows: np.ndarray, out: np.ndarray) -> None:
        fd = os.open(span.file, os.O_RDONLY)
        try:
            _read_runs(fd, span.offset, span.row_bytes, rows, out)
        finally:
            os.close(fd)

    def _fetch_all(self, names: list[str]) -> None:
        """Fetch the absent files of ``names`` at once (:data:`FETCH_THREADS` requests in
        flight): a remote label's chunks come one request each."""
        if self.fetch is None:
            return
        missing = [n for n in names if not (self.path / n).is_file()]
        if len(missing) > 1:
            from concurrent.futures import ThreadPoolExecutor

            fetch, path = self.fetch, self.path
            with ThreadPoolExecutor(min(FETCH_THREADS, len(missing))) as pool:
                list(pool.map(lambda n: fetch(path, n), missing))

    def _file(self, name: str) -> Path:
        """The label file ``name``, fetched first when absent and the label is remote."""
        f = self.path / name
        if not f.is_file():
            if self.fetch is None:
                raise LabelError(f"{self.path}: {name} is missing; {relabel_fix(self.meta)}")
            self.fetch(self.path, name)
        return f

    def _span(self, name: str, array: str) -> _Span:
        """The checked position of ``array`` in file ``name`` (its header read once)."""
        key = f"{name}:{array}"
        got = self._spans.get(key)
        if got is not None:
            return got
        f, fix = self._file(name), relabel_fix(self.meta)
        specs, head, base = _header(f, fix)
        lay = self.meta["layout"]
        if name == RANKS_FILE:
            want: tuple[int, ...] = (int(lay["images"]), int(lay["top_k"]))
            want_dtype: tuple[Any, ...] = (_INDEX_DTYPES[lay["index_dtype"]],)
        elif array == "topk_idx":
            first = int(name[6:11]) * int(lay["chunk_rows"])
            want = (min(int(lay["chunk_rows"]), int(lay["images"]) - first), int(lay["top_k"]))
            want_dtype = (_INDEX_DTYPES[lay["index_dtype"]],)
        else:
            want, want_dtype = (int(lay["memberships"]),), _SCORE_DTYPES
        spec = specs.get(array)
        if (spec is None or spec[1] != want or spec[0] not in want_dtype
                or head.get("graph_version") != self.graph_version):
            raise LabelError(f"{f}: not the {array} rows meta.json describes ({want}); {fix}")
        dtype, shape, lo, _ = spec
        got = _Span(f, base + lo, int(np.dtype(dtype).itemsize * math.prod(shape[1:])),
                    shape[0], np.dtype(dtype))
        self._spans[key] = got
        return got

    @property
    def graph_version(self) -> str:
        return str(self.meta["graph_version"])

    @functools.cached_property
    def summary(self) -> pd.DataFrame:
        """The per-node summary (read on first use; a damaged one is a :class:`LabelError`)."""
        f = self._file(SUMMARY_FILE)
        try:
            summary = pd.read_parquet(f)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises its own error types
            raise LabelError(f"{f}: the label summary is damaged ({_first(exc)}); "
                             f"{relabel_fix(self.meta)}") from exc
        if "acc1" not in summary.columns:
            raise LabelError(f"{f}: not a label summary (no acc1 column); "
                             f"{relabel_fix(self.meta)}")
        return summary

    def load(self) -> ModelLabel:
        """The whole label, read and validated (a remote one is fetched whole first)."""
        for name in whole_files(self.path, self.meta):
            self._file(name)
        return ModelLabel.load(self.path, self.graph_version)

    @classmethod
    def open(cls, path: str | os.PathLike[str], graph_version: str | None = None,
             n_images: int | None = None, n_members: int | None = None,
             fetch: Fetch | None = None) -> MappedLabel:
        """Open a label directory; shapes are checked against the graph's sizes when given.
        An ``mll-label/2`` label needs only its meta.json here: ``fetch`` gets the rest when
        first read.

        Raises:
            LabelError: missing or damaged files, another graph version, wrong shapes.
        """
        path = Path(path)
        try:
            meta = read_json_object(path / "meta.json")
        except (OSError, ValueError) as exc:
            raise LabelError(f"{path}: meta.json is missing or damaged ({_first(exc)}); relabel "
                             "the model with `mll label MODEL_REF --force`") from exc
        if meta.get("format") not in (FORMAT, FORMAT_V1):
            raise LabelError(f"{path}: label format {meta.get('format')!r}, expected {FORMAT!r}; "
                             "relabel the model")
        if graph_version is not None and meta.get("graph_version") != graph_version:
            raise LabelError(
                f"{path} was computed on graph version {meta.get('graph_version')}, not "
                f"{graph_version}; labels are only valid for their graph: relabel the model")
        if meta["format"] == FORMAT:
            lay = layout(meta, path, n_images, n_members)
            meta["layout"] = lay
            idx = np.broadcast_to(np.zeros((), _INDEX_DTYPES[lay["index_dtype"]]),
                                  (lay["images"], lay["top_k"]))
            member = np.broadcast_to(np.zeros((), np.float16), (lay["memberships"],))
        else:
            idx, member = cls._open_v1(path, meta)
        for want, got, what in ((n_images, idx.shape[0], "images"),
                                (n_members, len(member), "memberships")):
            if want is not None and want != got:
                raise LabelError(f"{path}: label has {got} {what}, graph has {want}; relabel")
        return cls(path, idx, member, meta, fetch)

    @staticmethod
    def _open_v1(path: Path, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        fix = relabel_fix(meta)
        try:
            arrays, header = mapped_arrays(path / V1_FILE, fix)
        except OSError as exc:
            raise LabelError(f"{path}: label.safetensors is missing ({_first(exc)}); "
                             f"{fix}") from exc
        if header.get("graph_version") != meta.get("graph_version"):
            raise LabelError(f"{path}: arrays and meta.json disagree on the graph version; relabel")
        missing = [k for k in _ARRAYS if k not in arrays]
        if missing:
            raise LabelError(f"{path}: label.safetensors lacks {missing}; relabel the model")
        idx, member, score = arrays["topk_idx"], arrays["member_score"], arrays["topk_score"]
        if (idx.ndim != 2 or idx.dtype not in (np.uint16, np.int32) or member.ndim != 1
                or member.dtype not in _SCORE_DTYPES or score.dtype not in _SCORE_DTYPES
                or score.shape != idx.shape):
            raise LabelError(f"{path}: malformed arrays (topk_idx {idx.dtype}{idx.shape}, "
                             f"topk_score {score.dtype}{score.shape}, member_score "
                             f"{member.dtype}{member.shape}); {fix}")
        return idx, member
