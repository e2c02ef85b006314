"""Tiny open_clip architectures for the demo hub and the tests (configuration as data).

About 3.7 M parameters each, 85 % of them in the 49,408-token embedding; 64 px images.
"""

from __future__ import annotations

from typing import Any

_TEXT = {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}

TINY_ARCHS: dict[str, dict[str, Any]] = {
    # ViT tower: 64 px, patch 8, width 128, 2 layers
    "tiny-vit": {"embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": 2, "width": 128,
                                                  "patch_size": 8, "head_width": 32},
                 "text_cfg": dict(_TEXT)},
    # ResNet tower (open_clip's ModifiedResNet with attention pooling)
    "tiny-resnet": {"embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1],
                                                     "width": 16, "head_width": 32},
                    "text_cfg": dict(_TEXT)},
}


def build_tiny(arch: str = "tiny-vit", seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """A freshly initialised tiny CLIP and its ``model_cfg`` (train it before calling it a model)."""
    import copy

    import open_clip
    import torch

    cfg = copy.deepcopy(TINY_ARCHS[arch])
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**cfg)
    model.eval()
    return model, cfg
