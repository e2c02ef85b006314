"""Labels in the format before ranks were chunked (``mll-label/1``), written as its writer
wrote them: for the tests that old labels stay readable, select alike and migrate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mll_registry.fsutil import sha256_file
from mll_registry.labels.format import FORMAT_V1, ModelLabel, _canonical_header


def save_v1(label: ModelLabel, path: Path) -> Path:
    """``label`` as an ``mll-label/1`` directory: ``label.safetensors`` (the three arrays),
    ``summary.parquet``, ``meta.json`` with both files' sha256."""
    from safetensors.numpy import save_file

    path.mkdir(parents=True)
    save_file({k: np.ascontiguousarray(getattr(label, k))
               for k in ("topk_idx", "topk_score", "member_score")},
              str(path / "label.safetensors"),
              metadata={"format": FORMAT_V1, "graph_version": label.graph_version})
    _canonical_header(path / "label.safetensors")
    label.summary.to_parquet(path / "summary.parquet", index=False)
    sums = {f: sha256_file(path / f) for f in ("label.safetensors", "summary.parquet")}
    meta = {k: v for k, v in label.meta.items() if k not in ("layout", "mean_acc1")}
    (path / "meta.json").write_text(json.dumps(
        {**meta, "format": FORMAT_V1, "checksums": sums}, indent=2, sort_keys=True,
        default=str) + "\n", encoding="utf-8")
    return path
