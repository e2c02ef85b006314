"""Loading an open_clip model for inference: built from its checked config, never running its code.

:func:`load` resolves a MODEL_REF (:mod:`mll_registry.models.refs`), asks its scheme to build the
model, and returns it in eval mode with its eval preprocess and tokenizer. For repos in open_clip
layout :func:`build_from_dir` builds from the validated ``model_cfg`` and loads exactly the chosen
weights file; :func:`build_tokenizer` makes the tokenizer from the repo's own files only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mll_registry.errors import ModelRefError
from mll_registry.models.config import check_size, check_tokenizer_config
from mll_registry.models.refs import (
    CONFIG_NAME,
    SAFE_WEIGHTS,
    SCHEMES,
    ModelRef,
    ResolvedModel,
    resolve,
)
from mll_registry.settings import DEFAULTS


@dataclass
class LoadedModel:
    """An open_clip model ready for inference with its own preprocess and tokenizer."""

    resolved: ResolvedModel
    model: Any  # open_clip.CLIP / CustomTextCLIP
    preprocess: Any  # torchvision Compose (eval transform)
    tokenizer: Any
    device: str

    @property
    def preprocess_cfg(self) -> dict[str, Any]:
        """The preprocess parameters that determine the prepared pixels (cache key)."""
        return preprocess_signature(self.preprocess)


def preprocess_signature(preprocess: Any) -> dict[str, Any]:
    """A JSON-able description of an eval transform (image size, resize, crop, mean/std)."""
    steps = []
    for t in getattr(preprocess, "transforms", [preprocess]):
        d: dict[str, Any] = {"type": type(t).__name__}
        for k in ("size", "interpolation", "max_size", "antialias", "mean", "std", "fill"):
            if hasattr(t, k):
                v = getattr(t, k)
                d[k] = str(v) if not isinstance(v, int | float | list | tuple | type(None)) else v
        steps.append(d)
    return {"steps": steps}


def pick_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelRefError("--device cuda was asked for but CUDA is not available; use auto or cpu")
    return device


def load(ref: str | ModelRef | ResolvedModel, device: str = DEFAULTS.device,
         allow_pickle: bool = False, cache_dir: str | os.PathLike[str] | None = None,
         max_model_gb: float = DEFAULTS.max_model_gb,
         batch_size: int = DEFAULTS.batch_size) -> LoadedModel:
    """Resolve and load a model (eval mode) with its eval preprocess and tokenizer.

    The config's size is estimated first (:func:`mll_registry.models.config.check_size`): a model
    over ``max_model_gb`` is refused before anything is allocated.
    """
    res = ref if isinstance(ref, ResolvedModel) else resolve(ref, allow_pickle, cache_dir)
    if res.config.get("model_cfg"):
        check_size(res.config["model_cfg"], str(res.ref), max_model_gb, batch_size)
    dev = pick_device(device)
    model, preprocess, tokenizer = SCHEMES.get(res.ref.scheme).build(res, dev)
    model.eval()
    return LoadedModel(res, model, preprocess, tokenizer, dev)


def build_from_dir(res: ResolvedModel, device: str) -> tuple[Any, Any, Any]:
    """Build from the validated ``model_cfg`` and load exactly the chosen weights file.

    Nothing else is resolved: no pretrained tower weights, no tokenizer from another repo.
    """
    import tempfile

    import open_clip
    from open_clip.factory import load_checkpoint

    cfg = res.config
    digest = hashlib.sha1(json.dumps(cfg["model_cfg"], sort_keys=True).encode()).hexdigest()[:12]
    name = f"mll-{digest}"
    if name not in open_clip.list_models():
        with tempfile.TemporaryDirectory() as tmp:  # open_clip's public way to add an architecture
            (Path(tmp) / f"{name}.json").write_text(json.dumps(cfg["model_cfg"]), encoding="utf-8")
            open_clip.add_model_config(Path(tmp) / f"{name}.json")
    pp = cfg.get("preprocess_cfg", {})
    quiet = logging.getLogger()  # open_clip warns "initialized randomly": we load weights next
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, device=device, pretrained_image=False, pretrained_text=False,
            image_mean=pp.get("mean"), image_std=pp.get("std"),
            image_interpolation=pp.get("interpolation"), image_resize_mode=pp.get("resize_mode"))
    finally:
        quiet.setLevel(level)
    try:
        load_checkpoint(model, str(res.weights), device=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - safetensors / torch raise their own error types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelRefError(
            f"{res.ref}: the weights file {res.weights.name} is damaged or does not match the "
            f"model config ({first}); download or save the model again") from exc
    model.float()  # fp16-stored weights run in fp32 on CPU (autocast handles CUDA)
    return model, preprocess, build_tokenizer(res.path, cfg["model_cfg"]["text_cfg"], res.ref)


def build_tokenizer(path: Path, text_cfg: dict[str, Any], ref: ModelRef | str = "") -> Any:
    """The model's tokenizer, built only from files in ``path`` and never with remote code.

    open_clip's ``get_tokenizer`` hands ``tokenizer_kwargs`` to transformers unchecked; here they
    are allow-listed (:data:`mll_registry.models.config.TOKENIZER_KWARGS`), a
    ``tokenizer_config.json`` naming code (``auto_map``) is refused, and transformers is called
    with ``trust_remote_code=False, local_files_only=True`` on the local directory.
    """
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer, SimpleTokenizer

    where = str(ref) or str(path)
    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    ctx = int(text_cfg.get("context_length") or DEFAULT_CONTEXT_LENGTH)
    if not text_cfg.get("hf_tokenizer_name"):
        return SimpleTokenizer(context_length=ctx, **{
            k: v for k, v in kwargs.items() if k in ("clean", "reduction_mask")})
    tc = path / "tokenizer_config.json"
    if tc.is_file():
        try:
            check_tokenizer_config(json.loads(tc.read_text(encoding="utf-8")), where)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelRefError(f"{where}: tokenizer_config.json is not valid JSON ({exc})") from exc
    if not (path / "tokenizer.json").is_file() and not tc.is_file():
        raise ModelRefError(
            f"{where}: the config names a Hugging Face tokenizer "
            f"({text_cfg['hf_tokenizer_name']!r}) but the repo holds no tokenizer.json; "
            "tokenizers are loaded only from the model's own repository")
    own = {k: kwargs.pop(k) for k in ("clean", "strip_sep_token", "language") if k in kwargs}
    kwargs.pop("reduction_mask", None)
    try:
        return HFTokenizer(str(path), context_length=ctx,
                           tokenizer_mode=text_cfg.get("tokenizer_mode"), **own, **kwargs,
                           trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelRefError(f"{where}: its tokenizer files do not load with transformers' "
                            f"built-in classes ({str(exc)[:200]})") from exc


def save_open_clip_dir(model: Any, model_cfg: dict[str, Any], path: str | os.PathLike[str],
                       preprocess_cfg: dict[str, Any] | None = None,
                       readme: str | None = None, half: bool = False) -> Path:
    """Save a model in Hub repo layout: ``open_clip_config.json`` + ``open_clip_model.safetensors``.

    Written to a temporary directory and renamed, so a half-saved model never looks complete.
    ``half`` stores fp16 weights (they load back into an fp32 model).
    """
    from safetensors.torch import save_file

    from mll_registry.fsutil import atomic_dir

    path = Path(path)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / SAFE_WEIGHTS[0]), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(
            {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}, indent=2) + "\n",
            encoding="utf-8")
        if readme is not None:
            (tmp / "README.md").write_text(readme, encoding="utf-8")
    return path
