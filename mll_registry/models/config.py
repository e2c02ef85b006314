"""Validation of an untrusted ``open_clip_config.json`` before anything is built from it.

A model repository is data written by a stranger. open_clip turns parts of its config into
actions: ``text_cfg.hf_tokenizer_name`` + ``tokenizer_kwargs`` reach transformers'
``AutoTokenizer.from_pretrained`` (where ``trust_remote_code`` or a tokenizer ``auto_map`` runs a
``.py`` file, even one fetched from *another* repo), ``text_cfg.hf_model_name`` and
``vision_cfg.timm_model_name`` pull configs and weights from other repos, ``bpe_path`` reads any
local file. So every key is checked against an allow-list with its type here, and anything unknown
is refused rather than passed on. The allow-list is data (:data:`VISION_KEYS`, :data:`TEXT_KEYS`,
...): supporting a new open_clip option is one line, reviewed.

What is allowed is what an open_clip CLIP with a ViT / ResNet / built-in timm image tower and
open_clip's own text tower needs; Hugging Face text towers (``hf_model_name``) are refused: they
resolve their config and weights from another repository.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

from mll_registry.errors import UnsafeModelError

Check = Callable[[Any], bool]


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1_000_000


def _pos_int(v: Any) -> bool:
    return _int(v) and v > 0


def _float(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and abs(v) < 1e6


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _opt(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _ints(n: int) -> Check:
    return lambda v: isinstance(v, list | tuple) and len(v) == n and all(_pos_int(x) for x in v)


def _one_of(*choices: Any) -> Check:
    return lambda v: v in choices


_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


def _name(v: Any) -> bool:
    return isinstance(v, str) and bool(_NAME.match(v))


def _scalars(v: Any) -> bool:
    return isinstance(v, dict) and len(v) <= 16 and all(
        _name(k) and (v2 is None or isinstance(v2, bool | int | float | str)) for k, v2 in v.items())


def _size(v: Any) -> bool:
    return _pos_int(v) or _ints(2)(v)


MODEL_KEYS: dict[str, Check] = {
    "embed_dim": _pos_int, "vision_cfg": lambda v: isinstance(v, dict),
    "text_cfg": lambda v: isinstance(v, dict), "quick_gelu": _bool, "custom_text": _bool,
    "init_logit_scale": _float, "init_logit_bias": _opt(_float), "nonscalar_logit_scale": _bool,
}
_BLOCK = {"block_type": _opt(_one_of("default", "custom")), "qk_norm": _bool,
          "scaled_cosine_attn": _bool, "scale_heads": _bool, "scale_attn_inner": _bool,
          "scale_attn": _bool, "scale_fc": _bool, "ls_init_value": _opt(_float),
          "mlp_ratio": _float, "final_ln_after_pool": _bool, "output_tokens": _bool,
          "act_kwargs": _opt(_scalars), "norm_kwargs": _opt(_scalars)}
VISION_KEYS: dict[str, Check] = {
    **_BLOCK, "layers": lambda v: _pos_int(v) or _ints(4)(v), "width": _pos_int,
    "head_width": _pos_int, "patch_size": _pos_int, "image_size": _size, "patch_dropout": _float,
    "attentional_pool": _bool, "attn_pooler_queries": _pos_int, "attn_pooler_heads": _pos_int,
    "no_ln_pre": _bool, "pos_embed_type": _one_of("learnable", "sin_cos_2d"),
    "pool_type": _one_of("tok", "avg", "none", "attn"),
    # a built-in timm architecture, built with random weights (ours are loaded over them)
    "timm_model_name": _opt(_name), "timm_model_pretrained": _one_of(False),
    "timm_pool": _one_of("avg", "abs_attn", "rot_attn", "token", "", "none"),
    "timm_proj": _one_of("linear", "mlp", "none", ""), "timm_proj_bias": _bool,
    "timm_drop": _float, "timm_drop_path": _opt(_float),
}
TEXT_KEYS: dict[str, Check] = {
    **_BLOCK, "context_length": _pos_int, "vocab_size": _pos_int, "width": _pos_int,
    "heads": _pos_int, "layers": _pos_int, "embed_cls": _bool, "pad_id": _int, "eos_id": _int,
    "no_causal_mask": _bool, "pool_type": _one_of("argmax", "first", "last", "eos", "none"),
    "proj_bias": _bool, "proj_type": _one_of("linear", "mlp", "none"),
    # a Hugging Face *tokenizer* is allowed, but only from this repo's own tokenizer files
    "hf_tokenizer_name": _opt(lambda v: isinstance(v, str) and len(v) <= 200),
    "tokenizer_mode": _opt(_one_of("", "clips")),
    "tokenizer_kwargs": _opt(lambda v: isinstance(v, dict)),
}
#: tokenizer options that only shape tokenisation (no paths, no code, no remote resolution)
TOKENIZER_KWARGS: dict[str, Check] = {
    "clean": _one_of("whitespace", "lower", "canonicalize", "none"), "strip_sep_token": _bool,
    "language": _opt(_name), "use_fast": _bool, "do_lower_case": _bool,
    "model_max_length": _pos_int, "padding_side": _one_of("left", "right"),
    "truncation_side": _one_of("left", "right"), "add_prefix_space": _bool,
    "reduction_mask": _opt(_one_of("simple", "random", "shuffle", "syntax")),
}
PREPROCESS_KEYS: dict[str, Check] = {
    "mean": lambda v: isinstance(v, list | tuple) and len(v) in (1, 3) and all(map(_float, v)),
    "std": lambda v: isinstance(v, list | tuple) and len(v) in (1, 3) and all(
        _float(x) and x > 0 for x in v),
    "interpolation": _opt(_one_of("bicubic", "bilinear", "nearest", "random")),
    "resize_mode": _opt(_one_of("shortest", "longest", "squash")),
    "size": _opt(_size), "fill_color": _opt(_int),
}
#: keys refused with a reason of their own (they fetch or execute something from elsewhere)
REFUSED: dict[str, str] = {
    "trust_remote_code": "it would run Python code shipped with the model",
    "hf_model_name": "a Hugging Face text tower resolves its config and weights from another "
                     "repository",
    "hf_model_pretrained": "weights are loaded only from this repository's safetensors",
    "hf_proj_type": "only used by Hugging Face text towers, which are not supported",
    "hf_pooler_type": "only used by Hugging Face text towers, which are not supported",
    "bpe_path": "it reads a file outside the model repository",
    "multimodal_cfg": "CoCa captioning models are not labelled by this tool",
    "auto_map": "it names Python code to run (possibly from another repository)",
    "cache_dir": "it points outside the model repository",
    "revision": "it resolves files from another revision",
}


def _check(section: Mapping[str, Any], allowed: Mapping[str, Check], where: str) -> None:
    for key, value in section.items():
        if key in REFUSED:
            raise UnsafeModelError(
                f"{where}: '{key}' is refused: {REFUSED[key]}. Untrusted models may not set it; "
                "remove it from the config (or convert the model to a plain open_clip CLIP).")
        check = allowed.get(key)
        if check is None:
            raise UnsafeModelError(
                f"{where}: unknown key '{key}' (allowed: {', '.join(sorted(allowed))}). Configs "
                "are checked against an allow-list before anything is built; remove the key.")
        if not check(value):
            raise UnsafeModelError(f"{where}: '{key}' has a value of the wrong type or range "
                                   f"({str(value)[:80]!r}); fix the config.")


def validate_config(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A checked deep copy of an ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``).

    Raises:
        UnsafeModelError: an unknown or refused key, a value of the wrong type, a missing tower.
    """
    if not isinstance(config, dict):
        raise UnsafeModelError(f"{where}: open_clip_config.json must hold a JSON object")
    extra = set(config) - {"model_cfg", "preprocess_cfg"}
    if extra & set(REFUSED):
        _check({k: config[k] for k in extra & set(REFUSED)}, {}, f"{where}: config")
    cfg = copy.deepcopy({"model_cfg": config.get("model_cfg"),
                         "preprocess_cfg": config.get("preprocess_cfg") or {}})
    model = cfg["model_cfg"]
    if not isinstance(model, dict):
        raise UnsafeModelError(f"{where}: 'model_cfg' must be a JSON object")
    for need in ("embed_dim", "vision_cfg", "text_cfg"):
        if need not in model:
            raise UnsafeModelError(f"{where}: model_cfg lacks '{need}'; not an open_clip CLIP config")
    _check(model, MODEL_KEYS, f"{where}: model_cfg")
    _check(model["vision_cfg"], VISION_KEYS, f"{where}: model_cfg.vision_cfg")
    _check(model["text_cfg"], TEXT_KEYS, f"{where}: model_cfg.text_cfg")
    _check(model["text_cfg"].get("tokenizer_kwargs") or {}, TOKENIZER_KWARGS,
           f"{where}: model_cfg.text_cfg.tokenizer_kwargs")
    if not isinstance(cfg["preprocess_cfg"], dict):
        raise UnsafeModelError(f"{where}: 'preprocess_cfg' must be a JSON object")
    _check(cfg["preprocess_cfg"], PREPROCESS_KEYS, f"{where}: preprocess_cfg")
    return cfg


def check_tokenizer_config(tokenizer_config: Any, where: str) -> None:
    """Refuse a ``tokenizer_config.json`` that names code (``auto_map``) or a non-built-in class.

    Raises:
        UnsafeModelError: the file would make transformers import a module of the repo's own.
    """
    if not isinstance(tokenizer_config, dict):
        raise UnsafeModelError(f"{where}: tokenizer_config.json must hold a JSON object")
    for key in ("auto_map", "trust_remote_code"):
        if key in tokenizer_config:
            raise UnsafeModelError(
                f"{where}: tokenizer_config.json sets '{key}': {REFUSED[key]}. Tokenizers are "
                "built only by transformers' own classes; remove the key.")
    cls = tokenizer_config.get("tokenizer_class")
    if cls is not None and not (isinstance(cls, str) and re.fullmatch(r"[A-Za-z0-9_]{1,80}", cls)):
        raise UnsafeModelError(f"{where}: tokenizer_config.json names tokenizer_class {cls!r}; "
                               "only a transformers class name (no module path) is accepted")


def estimate_bytes(model_cfg: dict[str, Any], batch_size: int = 256) -> tuple[float, float]:
    """(parameter bytes, activation bytes) an open_clip config would need in fp32, estimated
    from the config alone, before anything is allocated.

    Transformers: ``(4 + 2 mlp_ratio) w^2`` parameters per layer, embeddings and the
    projection; activations for one labelling batch: the widest layer's hidden states plus the
    attention matrix. ResNet image towers (ModifiedResNet): ``17 (w 2^i)^2`` per bottleneck of
    stage i plus the attention pool over ``32 w`` channels; activations: a few tensors of the
    first stage. timm towers are built-in architectures of known size and are not estimated.
    Checked against open_clip's ViT-B-32, ViT-B-16, ViT-L-14, RN50 and RN101 (within 2 % of
    their parameter counts): enough to refuse a config that would take a worker
    down.
    """
    v, t = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    embed = float(model_cfg.get("embed_dim", 512))
    size = v.get("image_size", 224)
    side = float(max(size) if isinstance(size, list | tuple) else size)
    params = acts = 0.0
    if v.get("timm_model_name"):
        pass
    elif isinstance(v.get("layers"), list | tuple):
        w = float(v.get("width", 64))
        params += 17 * w * w * sum(float(n) * 4.0 ** i for i, n in enumerate(v["layers"]))
        params += 4 * (32 * w) ** 2 + 32 * w * embed
        acts += batch_size * (side / 2) ** 2 * w * 3
    else:
        w, layers = float(v.get("width", 768)), float(v.get("layers", 12))
        seq = (side / float(v.get("patch_size", 16))) ** 2 + 1
        heads = max(w / float(v.get("head_width", 64)), 1.0)
        mlp = float(v.get("mlp_ratio", 4.0))
        params += layers * (4 + 2 * mlp) * w * w + seq * w + 3 * v.get("patch_size", 16) ** 2 * w
        params += w * embed
        acts += batch_size * (seq * w * (2 + mlp) + heads * seq * seq)
    w, layers = float(t.get("width", 512)), float(t.get("layers", 12))
    ctx, vocab = float(t.get("context_length", 77)), float(t.get("vocab_size", 49408))
    mlp = float(t.get("mlp_ratio", 4.0))
    params += layers * (4 + 2 * mlp) * w * w + vocab * w + ctx * w + w * embed
    acts += batch_size * (ctx * w * (2 + mlp) + float(t.get("heads", 8)) * ctx * ctx)
    return params * 4.0, acts * 4.0


def check_size(model_cfg: dict[str, Any], where: str, max_gb: float,
               batch_size: int = 256) -> float:
    """Refuse a config whose estimated fp32 parameters + one batch's activations exceed
    ``max_gb`` (the ``max_model_gb`` setting). Returns the estimate in GB.

    Raises:
        UnsafeModelError: over the limit (nothing has been allocated).
    """
    p, a = estimate_bytes(model_cfg, batch_size)
    gb = (p + a) / 1e9
    if gb > max_gb:
        raise UnsafeModelError(
            f"{where}: building this model would need about {gb:,.1f} GB ({p / 1e9:,.1f} GB of "
            f"parameters, {a / 1e9:,.1f} GB of activations at batch {batch_size}), over the "
            f"limit of {max_gb:g} GB; refused before allocating anything. Raise max_model_gb "
            "(MLL_MAX_MODEL_GB) if the model is genuine, or lower batch_size")
    return gb
