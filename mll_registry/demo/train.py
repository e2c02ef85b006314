"""Train the demo hub: small open_clip models with genuinely different strengths.

Each model is trained contrastively (open_clip's ``ClipLoss``) on emoji renders of a concept subset
in one or both *training* styles (plain Noto colour, Symbola line art; ``sources.TRAINING_STYLES``).
No training render is a graph render: training views use augmentation seeds of their own
(``train:...``), and three of the graph's five sources are transformations no model was trained on
(silhouette, greyscale, textured background); target styles (EmojiOne, Twemoji, sketch) are never
seen in training or labelling (``tests/demo/test_demo_data.py`` checks both by recipe and by pixels). Captions mix templates over the
WordNet lemma and the emoji's own name ("a drawing of a hotdog.", "an emoji of a hot dog.").

Specialities come from data, tower and budget (``DEMO_SPECS``): concept subsets (animals, food,
objects and tools, vehicles and places, symbols), style subsets (colour, line art, both), two image
towers (ViT and ResNet), and different step counts. Everything is seeded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mll_registry.demo import sources as S
from mll_registry.demo.data import Concept, Render, augment

TRAIN_VIEWS = 10
CAPTION_TEMPLATES = ("a photo of a {}.", "a drawing of a {}.", "an emoji of a {}.", "a {}.", "{}")


@dataclass(frozen=True)
class ModelSpec:
    """One demo model: what it sees and how long it trains."""

    name: str
    arch: str  # key of mll_registry.demo.archs.TINY_ARCHS
    groups: tuple[str, ...] | None  # concept groups (emoji_synsets.tsv), None = all
    styles: tuple[str, ...]  # training styles it trains on
    steps: int
    seed: int
    description: str
    batch: int = 128
    lr: float = 2e-3


ANIMALS = ("animal", "plant", "nature")
FOOD = ("food", "plant")
OBJECTS = ("object", "clothing", "music", "sport")
TRAVEL = ("vehicle", "place", "nature")
SYMBOLS = ("symbol", "body", "sport", "music")

DEMO_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("vit-all-colour", "tiny-vit", None, ("noto",), 600, 1,
              "generalist, colour renders only"),
    ModelSpec("vit-all-lineart", "tiny-vit", None, ("symbola",), 600, 2,
              "generalist, line art only"),
    ModelSpec("vit-all-both-long", "tiny-vit", None, ("noto", "symbola"), 900, 3,
              "generalist, both styles, longest training"),
    ModelSpec("resnet-all-both-short", "tiny-resnet", None, ("noto", "symbola"), 300, 4,
              "generalist ResNet, both styles, short training"),
    ModelSpec("vit-animals", "tiny-vit", ANIMALS, ("noto", "symbola"), 450, 5,
              "animals, plants and nature"),
    ModelSpec("vit-food", "tiny-vit", FOOD, ("noto", "symbola"), 450, 6, "food and plants"),
    ModelSpec("resnet-objects", "tiny-resnet", OBJECTS, ("noto", "symbola"), 450, 7,
              "objects, tools, clothing, instruments, sports gear"),
    ModelSpec("resnet-travel", "tiny-resnet", TRAVEL, ("noto", "symbola"), 450, 8,
              "vehicles, places and nature"),
    ModelSpec("vit-symbols", "tiny-vit", SYMBOLS, ("noto", "symbola"), 300, 9,
              "symbols, body parts, sports and music"),
    ModelSpec("resnet-animals-lineart", "tiny-resnet", ANIMALS, ("symbola",), 450, 10,
              "animals, plants and nature in line art"),
)


def select_concepts(concepts: Sequence[Concept], groups: tuple[str, ...] | None) -> list[Concept]:
    return [c for c in concepts if groups is None or c.group in groups]


def train_seed(style: str, codepoint: int, view: int) -> str:
    """Augmentation seed of training view ``view``: every training view is augmented, with
    seeds of its own, so no training render is a graph render (``demo.data.graph_seed``)."""
    return f"train:{style}:{codepoint:X}:{view}"


def training_renders(concepts: Sequence[Concept], styles: Sequence[str],
                     views: int = TRAIN_VIEWS) -> list[Render]:
    """The recipe of every training image of ``concepts`` in ``styles`` (concept-major)."""
    return [Render(S.GLYPHS[st], c.codepoint, st, train_seed(st, c.codepoint, v))
            for c in concepts for st in styles for v in range(views)]


def training_pixels(concepts: Sequence[Concept], styles: Sequence[str], pipe: Any,
                    views: int = TRAIN_VIEWS, size: int = 96) -> np.ndarray:
    """uint8 (concepts, styles x views, H, W, 3): the training renders, preprocessed."""
    per = len(styles) * views
    recipes = training_renders(concepts, styles, views)
    bases: dict[tuple[int, str], Any] = {}
    out = []
    for r in recipes:
        key = (r.codepoint, r.style)
        if key not in bases:
            bases = {key: S.render(r.codepoint, r.style, size)}  # one glyph at a time
        out.append(np.asarray(pipe.pil(augment(bases[key], str(r.seed))), dtype=np.uint8))
    return np.stack(out).reshape(len(concepts), per, *out[0].shape) if out else np.zeros(
        (len(concepts), per, 0, 0, 3), np.uint8)


def captions_for(c: Concept, lemma: str) -> list[str]:
    names = sorted({lemma, c.name})
    return [t.format(n) for t in CAPTION_TEMPLATES for n in names]


def train(spec: ModelSpec, concepts: Sequence[Concept], out_dir: str | Path,
          log: Callable[[str], None] = print, pixel_cache: dict[Any, np.ndarray] | None = None,
          ) -> dict[str, Any]:
    """Train one spec and save it in Hub layout under ``out_dir/spec.name``. Returns its stats."""
    import open_clip
    import torch

    from mll_registry.demo.archs import build_tiny
    from mll_registry.graph import wordnet as W
    from mll_registry.models.image_stream import PixelPipeline
    from mll_registry.models.loading import save_open_clip_dir

    t0 = time.perf_counter()
    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    model, cfg = build_tiny(spec.arch, seed=spec.seed)
    preprocess = open_clip.image_transform(cfg["vision_cfg"]["image_size"], is_train=False)
    pipe = PixelPipeline.from_preprocess(preprocess)
    chosen = select_concepts(concepts, spec.groups)
    key = (tuple(c.codepoint for c in chosen), spec.styles, pipe.key)
    if pixel_cache is not None and key in pixel_cache:
        pix = pixel_cache[key]
    else:
        pix = training_pixels(chosen, spec.styles, pipe)
        if pixel_cache is not None:
            pixel_cache[key] = pix
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=cfg["text_cfg"]["context_length"])
    caps = [captions_for(c, W.lemma(W.synset(c.synset))) for c in chosen]
    tokens = [tokenizer(cs) for cs in caps]
    mean = torch.tensor(pipe.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(pipe.std).view(1, 3, 1, 1) * 255
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.1)
    warm = max(1, spec.steps // 10)

    def lr_at(step: int) -> float:
        if step < warm:
            return spec.lr * (step + 1) / warm
        return spec.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, spec.steps - warm)))

    batch = min(spec.batch, len(chosen))
    model.train()
    losses = []
    for step in range(spec.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        idx = rng.choice(len(chosen), size=batch, replace=False)  # distinct concepts per batch
        view = rng.integers(0, pix.shape[1], size=batch)
        x = torch.from_numpy(pix[idx, view]).permute(0, 3, 1, 2).float()
        x = (x - mean) / std
        cap = rng.integers(0, len(caps[0]), size=batch)
        # concepts have 1 or 2 names (5 or 10 captions): wrap the draw per concept (the bound
        # stays as first written, so models trained before this fix reproduce bit for bit)
        t = torch.stack([tokens[i][j % len(tokens[i])] for i, j in zip(idx, cap, strict=True)])
        img_f, txt_f, scale = model(x, t)[:3]
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if step % 100 == 0 or step == spec.steps - 1:
            log(f"{spec.name}: step {step + 1}/{spec.steps} loss {np.mean(losses[-50:]):.3f}")
    model.eval()
    seconds = time.perf_counter() - t0
    stats = {"spec": asdict(spec), "concepts": len(chosen), "final_loss": round(
        float(np.mean(losses[-50:])), 4), "train_seconds": round(seconds, 1),
        "train_images": int(pix.shape[0] * pix.shape[1])}
    readme = _card(spec, stats, cfg)
    path = save_open_clip_dir(model, cfg, Path(out_dir) / spec.name, half=True, readme=readme)
    stats["size_mb"] = round(sum(f.stat().st_size for f in path.iterdir()) / 2**20, 2)
    return stats


def _card(spec: ModelSpec, stats: dict[str, Any], cfg: dict[str, Any]) -> str:
    groups = ", ".join(spec.groups) if spec.groups else "all"
    return f"""---
library_name: open_clip
license: mit
tags: [clip, open_clip, mll-demo]
---
# {spec.name}

A tiny open_clip model of the MLL Registry demo hub: {spec.description}.

- image tower: `{spec.arch}` ({cfg['vision_cfg']['image_size']} px), embedding {cfg['embed_dim']}
- trained on: emoji renders of {stats['concepts']} concepts (groups: {groups}) in
  style(s) {', '.join(spec.styles)}; {stats['train_images']} training images
- {spec.steps} steps, batch {min(spec.batch, stats['concepts'])}, AdamW lr {spec.lr}, seed {spec.seed};
  final loss {stats['final_loss']}; {stats['train_seconds']} s on CPU
- reproduce: `uv run python scripts/train_demo_hub.py --only {spec.name}`

Not a useful model outside the demo: it exists so that model selection has real, different
strengths to find.
"""
