"""The committed demo hub: small trained open_clip models in Hub repo layout.

``demo_hub/mll-demo/<name>/`` at the repository root (override with ``MLL_DEMO_HUB``), one folder
per model with ``open_clip_config.json``, ``open_clip_model.safetensors`` (fp16) and a README card.
``scripts/train_demo_hub.py`` regenerates it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mll_registry.graph.bundle import SemanticGraph

if TYPE_CHECKING:
    from mll_registry.labels.labeller import LabelConfig

ORG = "mll-demo"


def demo_hub_dir() -> Path:
    """Root of the demo hub (the folder holding ``mll-demo/``)."""
    env = os.environ.get("MLL_DEMO_HUB")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "demo_hub"


def demo_model_dirs() -> list[Path]:
    """Model folders of the demo hub, sorted by name."""
    base = demo_hub_dir() / ORG
    if not base.is_dir():
        raise FileNotFoundError(
            f"demo hub not found at {base}; run from a clone of the repository, set MLL_DEMO_HUB, "
            "or train it with `uv run python scripts/train_demo_hub.py`")
    return sorted(p for p in base.iterdir() if (p / "open_clip_config.json").is_file())


def demo_refs() -> list[str]:
    """MODEL_REFs of the demo models (``local-dir:`` references)."""
    return [f"local-dir:{p}" for p in demo_model_dirs()]


def ensure_demo_labels(graph: SemanticGraph, cfg: LabelConfig | None = None,
                       root: str | os.PathLike[str] | None = None,
                       log: Callable[[str], None] = lambda s: None) -> dict[str, Path]:
    """Label every demo model on ``graph`` that has no local label with ``cfg`` yet.

    A label from before per-model calibration (no ``meta["calibration"]``) is relabelled from
    its own stored embeddings (no image is encoded again).

    Returns ref -> label directory (the local label store's layout).
    """
    import json

    from mll_registry.labels.embeddings import LabelEmbeddings, embeddings_path
    from mll_registry.labels.labeller import LabelConfig, label_refs
    from mll_registry.labels.stores import LocalLabelStore

    cfg = cfg or LabelConfig()
    have = LocalLabelStore(root).list_labels(graph.version, cfg.label_hash())
    refs = demo_refs()
    todo: dict[str, LabelEmbeddings | None] = {}
    for ref in refs:
        if ref in have:  # a label from before calibration: relabelled from its own embeddings
            meta = json.loads((have[ref] / "meta.json").read_text(encoding="utf-8"))
            emb = embeddings_path(have[ref])
            if meta.get("calibration") is None and emb.is_file():
                todo[ref] = LabelEmbeddings.open(emb)
        else:
            todo[ref] = None
    if todo:  # one pass: each graph image decoded once for every model (they are tiny)
        runs = label_refs(list(todo), graph, cfg, root=root, reuse=list(todo.values()))
        for ref, (run, path) in zip(todo, runs, strict=True):
            log(f"labelled {ref}: mean acc@1 {run.label.headline()['mean_acc1']:.3f} "
                f"({run.seconds['total']:.1f} s, in a pass of {len(todo)} models)")
            have[ref] = path
    return {r: p for r, p in have.items() if r in set(refs)}
