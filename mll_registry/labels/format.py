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

On disk a label is a directory (written atomically, validated on read)::

    label.safetensors   the arrays (safetensors: no pickle)
    summary.parquet     node_id, n_images, acc1, acc5, mean_own  (accuracy over all nodes),
                        then per sample source S of the graph, counts (not ratios, so sources
                        pool with any weights): n_images@S, hits1@S, hits5@S (int64) and
                        sum_own@S (float64, the sum of own-node scores of S's images)
    meta.json           model ref + revision, architecture, preprocess, templates, logit scale,
                        graph version, code version, timings, K
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mll_registry.errors import MLLError
from mll_registry.fsutil import atomic_dir, read_json_object, sha256_file

if TYPE_CHECKING:
    from mll_registry.graph.bundle import SemanticGraph

FORMAT = "mll-label/1"
_ARRAYS = ("topk_idx", "topk_score", "member_score")
_CHECKED = ("label.safetensors", "summary.parquet")  # sha256 recorded in meta.json


def checksum_mismatch(path: str | os.PathLike[str], meta: dict[str, Any] | None = None
                      ) -> str | None:
    """The first label file whose sha256 differs from meta.json's record, else None (labels
    written before checksums were recorded have none to check)."""
    path = Path(path)
    if meta is None:
        meta = read_json_object(path / "meta.json")
    sums = meta.get("checksums") or {}
    for f in _CHECKED:
        if f in sums and (not (path / f).is_file() or sha256_file(path / f) != sums[f]):
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

        json.loads((path / "meta.json").read_text(encoding="utf-8"))
        with safe_open(str(path / "label.safetensors"), "np") as f:
            f.metadata()
        read_metadata(path / "summary.parquet")
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
        """Write atomically: a reader sees the old label or the complete new one."""
        from safetensors.numpy import save_file

        path = Path(path)
        with atomic_dir(path) as tmp:
            save_file({k: np.ascontiguousarray(getattr(self, k)) for k in _ARRAYS},
                      str(tmp / "label.safetensors"),
                      metadata={"format": FORMAT, "graph_version": self.graph_version})
            _canonical_header(tmp / "label.safetensors")
            self.summary.to_parquet(tmp / "summary.parquet", index=False)
            sums = {f: sha256_file(tmp / f) for f in _CHECKED}
            (tmp / "meta.json").write_text(
                json.dumps({**self.meta, "format": FORMAT, "checksums": sums}, indent=2,
                           sort_keys=True, default=str) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], graph_version: str | None = None) -> ModelLabel:
        """Read and validate a label; with ``graph_version`` it must match.

        Raises:
            LabelError: missing files, malformed arrays, or another graph version.
        """
        from safetensors import safe_open
        from safetensors.numpy import load_file

        path = Path(path)
        for f in ("label.safetensors", "summary.parquet", "meta.json"):
            if not (path / f).is_file():
                raise LabelError(f"{path} is not a model label (missing {f}); label the model "
                                 "with `mll label MODEL_REF`")
        try:
            meta = read_json_object(path / "meta.json")
        except ValueError as exc:
            raise LabelError(f"{path}: meta.json is damaged ({exc}); relabel the model with "
                             "`mll label MODEL_REF --force`") from exc
        if meta.get("format") != FORMAT:
            raise LabelError(f"{path}: label format {meta.get('format')!r}, expected {FORMAT!r}; "
                             "relabel the model")
        try:
            with safe_open(str(path / "label.safetensors"), "np") as f:
                header = f.metadata() or {}
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise LabelError(f"{path}: label.safetensors is damaged ({_first(exc)}); relabel "
                             "the model with `mll label MODEL_REF --force`") from exc
        if header.get("graph_version") != meta.get("graph_version"):
            raise LabelError(f"{path}: arrays and meta.json disagree on the graph version; relabel")
        if graph_version is not None and meta["graph_version"] != graph_version:
            raise LabelError(
                f"{path} was computed on graph version {meta['graph_version']}, not {graph_version}; "
                "labels are only valid for their graph: relabel the model on this graph")
        bad = checksum_mismatch(path, meta)
        if bad:
            raise LabelError(f"{path}: {bad} does not match its checksum in meta.json (damaged "
                             "or modified); relabel the model with `mll label MODEL_REF --force`")
        try:
            arrays = load_file(str(path / "label.safetensors"))
            summary = pd.read_parquet(path / "summary.parquet")
            lab = cls(**{k: arrays[k] for k in _ARRAYS}, summary=summary, meta=meta)
        except (Exception) as exc:  # noqa: BLE001 - truncated safetensors / parquet
            raise LabelError(f"{path}: the label files are damaged ({_first(exc)}); relabel the "
                             "model with `mll label MODEL_REF --force`") from exc
        lab.validate()
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


def mapped_arrays(path: str | os.PathLike[str], fix: str = RELABEL
                  ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays of a safetensors file memory-mapped (nothing read until used), and its
    metadata. The header is checked before anything is mapped (:func:`_tensor_specs`): a
    truncated or crafted file is refused with one line naming it and ``fix``.

    Raises:
        LabelError: not a safetensors file, truncated, a malformed header, or an unexpected dtype.
    """
    path = Path(path)
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
    meta = header.get("__metadata__") or {}
    out = {}
    for name, (dtype, shape, lo, hi) in specs.items():
        out[name] = (np.memmap(path, dtype=dtype, mode="r", offset=8 + n + lo, shape=shape)
                     if hi > lo else np.zeros(shape, dtype))
    return out, meta


def _read_runs(fd: int, base: int, row_bytes: int, rows: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = file row rows[i]`` for sorted ``rows``: one positioned read per run of
    consecutive rows (a task's candidate images are mostly whole nodes: long runs)."""
    if not len(rows):
        return
    cut = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], cut]).tolist()
    ends = np.concatenate([cut, [len(rows)]]).tolist()
    flat = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    for s0, e0 in zip(starts, ends, strict=True):
        buf = flat[s0 * row_bytes:e0 * row_bytes]
        off, done = base + int(rows[s0]) * row_bytes, 0
        while done < len(buf):
            got = os.preadv(fd, [buf[done:]], off + done)
            if got <= 0:
                raise LabelError(f"label file ended early at byte {off + done}; fetch or relabel")
            done += got


@dataclass
class MappedLabel:
    """A label opened for selection: its header checked, nothing of its arrays read, summary
    read on first use.

    The arrays are exposed as read-only memory maps (shapes, dtypes, file offsets; usable as
    arrays), and :meth:`read_rows` reads just a task's candidate rows, so opening 1,000 labels
    costs their headers (benchmarks/results/selection_disk.md). Same attributes as
    :class:`ModelLabel` for what selection uses.
    """

    path: Path
    topk_idx: np.ndarray
    member_score: np.ndarray
    meta: dict[str, Any]

    def read_rows(self, name: str, rows: np.ndarray, out: np.ndarray) -> None:
        """Read rows ``rows`` (sorted) of array ``name`` into ``out`` (C-contiguous) with
        positioned reads: no page of the file is mapped into the process (a memory map would
        count every touched page, and its read-ahead, in the resident set)."""
        arr = getattr(self, name)
        if not isinstance(arr, np.memmap):
            out[...] = np.take(arr, rows, axis=0)
            return
        if out.dtype != arr.dtype or out.shape != (len(rows), *arr.shape[1:]):
            raise ValueError(f"out must be {arr.dtype}{(len(rows), *arr.shape[1:])}")
        fd = os.open(self.path / "label.safetensors", os.O_RDONLY)
        try:
            _read_runs(fd, int(arr.offset), int(arr.strides[0]), np.asarray(rows, np.int64), out)
        finally:
            os.close(fd)

    @property
    def graph_version(self) -> str:
        return str(self.meta["graph_version"])

    @functools.cached_property
    def summary(self) -> pd.DataFrame:
        """The per-node summary (read on first use; a damaged one is a :class:`LabelError`)."""
        f = self.path / "summary.parquet"
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
        """The whole label, read and validated."""
        return ModelLabel.load(self.path, self.graph_version)

    @classmethod
    def open(cls, path: str | os.PathLike[str], graph_version: str | None = None,
             n_images: int | None = None, n_members: int | None = None) -> MappedLabel:
        """Open a label directory; shapes are checked against the graph's sizes when given.

        Raises:
            LabelError: missing or damaged files, another graph version, wrong shapes.
        """
        path = Path(path)
        try:
            meta = read_json_object(path / "meta.json")
        except (OSError, ValueError) as exc:
            raise LabelError(f"{path}: meta.json is missing or damaged ({_first(exc)}); relabel "
                             "the model with `mll label MODEL_REF --force`") from exc
        if meta.get("format") != FORMAT:
            raise LabelError(f"{path}: label format {meta.get('format')!r}, expected {FORMAT!r}; "
                             "relabel the model")
        if graph_version is not None and meta.get("graph_version") != graph_version:
            raise LabelError(
                f"{path} was computed on graph version {meta.get('graph_version')}, not "
                f"{graph_version}; labels are only valid for their graph: relabel the model")
        fix = relabel_fix(meta)
        try:
            arrays, header = mapped_arrays(path / "label.safetensors", fix)
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
        for want, got, what in ((n_images, idx.shape[0], "images"),
                                (n_members, len(member), "memberships")):
            if want is not None and want != got:
                raise LabelError(f"{path}: label has {got} {what}, graph has {want}; relabel")
        return cls(path, idx, member, meta)
