"""Model references and safe loading of open_clip models.

A MODEL_REF names a model in one of three schemes (CLIP_benchmark's loader-registry idea):

* ``hf-hub:ORG/NAME[@REVISION]``  a Hugging Face Hub repo in open_clip layout
  (``open_clip_config.json`` with ``model_cfg`` + ``preprocess_cfg``, ``open_clip_model.safetensors``);
* ``local-dir:PATH``               the same layout in a local directory (the demo hub's);
* ``open_clip:ARCH/PRETRAINED``    an open_clip built-in architecture and pretrained tag.

Every reference is first *resolved* to a local directory (downloading only the files needed), then
loaded. Weights from the Hub are untrusted: safetensors are loaded; pickled weights (``*.bin``,
``*.pt``, ``*.pth``) are refused unless the caller passes ``allow_pickle=True`` (and even then torch
loads them with ``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mll_registry.errors import ModelRefError, PickledWeightsRefused, UnsafeModelError
from mll_registry.model_config import check_tokenizer_config, validate_config

CONFIG_NAME = "open_clip_config.json"
SAFE_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                "model.safetensors")
PICKLED_WEIGHTS = ("open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
                   "pytorch_model.bin", "model.pth", "model.pt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "spiece.model", "bpe_simple_vocab_16e6.txt.gz")
MAX_CONFIG_BYTES = 1 << 20
# ASCII only, as the Hub's own repo-id rule: non-ASCII names must not fold into another name
_HF_RE = re.compile(r"^(?P<repo>[A-Za-z0-9_.\-]{1,96}/[A-Za-z0-9_.\-]{1,96})"
                    r"(?:@(?P<rev>[A-Za-z0-9_.\-/]{1,200}))?$")


@dataclass(frozen=True)
class ModelRef:
    """A parsed MODEL_REF."""

    scheme: str  # "hf-hub" | "local-dir" | "open_clip"
    name: str  # repo id, absolute path, or ARCH/TAG
    revision: str | None = None

    @classmethod
    def parse(cls, ref: str) -> ModelRef:
        """Parse ``hf-hub:ORG/NAME[@REV]``, ``local-dir:PATH`` or ``open_clip:ARCH/TAG``."""
        scheme, sep, rest = ref.partition(":")
        if not sep or not rest:
            raise ModelRefError(
                f"bad model reference {ref!r}: use hf-hub:ORG/NAME[@REVISION], "
                "local-dir:PATH or open_clip:ARCH/PRETRAINED_TAG")
        if scheme == "hf-hub":
            m = _HF_RE.match(rest)
            if not m or "--" in m.group("repo") or ".." in m.group("repo"):
                raise ModelRefError(
                    f"bad Hub reference {ref!r}: expected hf-hub:ORG/NAME[@REVISION] with ASCII "
                    "letters, digits, '-', '_' and '.' (no '--' or '..', as on the Hub)")
            return cls("hf-hub", m.group("repo"), m.group("rev"))
        if scheme == "local-dir":
            return cls("local-dir", str(Path(rest).expanduser().resolve()))
        if scheme == "open_clip":
            arch, slash, tag = rest.partition("/")
            if not slash or not arch or not tag:
                raise ModelRefError(f"bad open_clip reference {ref!r}: expected open_clip:ARCH/TAG")
            return cls("open_clip", rest)
        raise ModelRefError(f"unknown scheme {scheme!r} in {ref!r}: use hf-hub:, local-dir: or open_clip:")

    def __str__(self) -> str:
        if self.scheme == "hf-hub" and self.revision:
            return f"hf-hub:{self.name}@{self.revision}"
        return f"{self.scheme}:{self.name}"

    @property
    def source(self) -> str:
        """Where the model comes from, revision excluded: one registered model per source."""
        return f"{self.scheme}:{self.name}"

    @property
    def key(self) -> str:
        """A filesystem- and MLflow-safe key for caches (scheme + name, revision excluded)."""
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.scheme}_{self.name}").strip("_")
        return base[-80:] + "-" + hashlib.sha1(str(self).encode()).hexdigest()[:8]


@dataclass
class ResolvedModel:
    """A model reference resolved to local files, with what identifies its exact content."""

    ref: ModelRef
    path: Path  # directory holding config + weights (or the weights file for open_clip refs)
    weights: Path
    revision: str  # Hub commit sha, or a content digest of the weights for local models
    config: dict[str, Any] = field(default_factory=dict)
    linked: bool = False  # local files verified to be this Hub revision's bytes (link_copy)

    @property
    def architecture(self) -> str:
        cfg = self.config.get("model_cfg", {})
        if self.ref.scheme == "open_clip":
            return self.ref.name.split("/")[0]
        vis = cfg.get("vision_cfg", {})
        kind = "timm:" + vis["timm_model_name"] if vis.get("timm_model_name") else (
            "resnet" if isinstance(vis.get("layers"), list | tuple) else "vit")
        layers = vis.get("layers", "?")
        if isinstance(layers, list | tuple):
            layers = "x".join(map(str, layers))
        return f"{kind}-w{vis.get('width', '?')}-l{layers}-e{cfg.get('embed_dim', '?')}"


def _file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _pick_weights(files: list[str], where: str, allow_pickle: bool) -> str:
    for name in SAFE_WEIGHTS:
        if name in files:
            return name
    safe_other = sorted(f for f in files if f.endswith(".safetensors"))
    if safe_other:
        return safe_other[0]
    pickled = [f for f in PICKLED_WEIGHTS if f in files] or sorted(
        f for f in files if f.endswith((".bin", ".pt", ".pth")))
    if pickled:
        if allow_pickle:
            return pickled[0]
        raise PickledWeightsRefused(
            f"{where} has only pickled weights ({', '.join(pickled)}); pickles can run code when "
            "loaded. Convert them to safetensors, or opt in with --allow-pickle "
            "(allow_pickle=True) if you trust the source.")
    raise ModelRefError(f"{where} has no model weights (*.safetensors); is it an open_clip model?")


def _read_config(path: Path, where: str) -> dict[str, Any]:
    """The repo's ``open_clip_config.json``, checked against the allow-list (:mod:`model_config`)."""
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file():
        raise ModelRefError(
            f"{where} is not an open_clip model: no {CONFIG_NAME}. open_clip Hub repos hold "
            f"{CONFIG_NAME} and open_clip_model.safetensors.")
    if cfg_file.stat().st_size > MAX_CONFIG_BYTES:
        raise UnsafeModelError(f"{where}: {CONFIG_NAME} is larger than {MAX_CONFIG_BYTES} bytes; "
                               "not an open_clip config")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelRefError(f"{where}: {CONFIG_NAME} is not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict) or "model_cfg" not in cfg:
        raise ModelRefError(
            f"{where}: {CONFIG_NAME} has no 'model_cfg' (older Hub configs lack it and open_clip "
            "3.x cannot build the model from them). Add model_cfg, or use open_clip:ARCH/TAG.")
    return validate_config(cfg, where)


def resolve(ref: str | ModelRef, allow_pickle: bool = False,
            cache_dir: str | os.PathLike[str] | None = None) -> ResolvedModel:
    """Resolve a reference to local files (downloading only what is needed) without loading it.

    Raises:
        ModelRefError: not an open_clip model, no config ``model_cfg``, no weights.
        PickledWeightsRefused: only pickled weights and ``allow_pickle`` is False.
    """
    r = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
    if r.scheme == "local-dir":
        path = Path(r.name)
        if not path.is_dir():
            raise ModelRefError(f"local-dir:{path}: no such directory")
        cfg = _read_config(path, f"local-dir:{path}")
        files = sorted(p.name for p in path.iterdir() if p.is_file())
        weights = path / _pick_weights(files, f"local-dir:{path}", allow_pickle)
        return ResolvedModel(r, path, weights, "sha256:" + _file_digest(weights)[:16], cfg)
    if r.scheme == "hf-hub":
        return _resolve_hf(r, allow_pickle, cache_dir)
    return _resolve_open_clip(r, allow_pickle, cache_dir)


def hub_files(files: list[str], where: str, allow_pickle: bool) -> tuple[str, list[str]]:
    """(weights file, files to download) of an open_clip Hub repo listing ``files``.

    Raises:
        ModelRefError: no ``open_clip_config.json``; PickledWeightsRefused: only pickles.
    """
    if CONFIG_NAME not in files:
        raise ModelRefError(
            f"{where} is not an open_clip model: no {CONFIG_NAME} in the repo (it has: "
            f"{', '.join(files[:8]) or 'no files'}{', ...' if len(files) > 8 else ''}). "
            f"Only repos in open_clip layout ({CONFIG_NAME} + open_clip_model.safetensors) "
            "can be labelled.")
    weights = _pick_weights(files, where, allow_pickle)
    return weights, [CONFIG_NAME, weights, *[f for f in TOKENIZER_FILES if f in files]]


def _resolve_hf(r: ModelRef, allow_pickle: bool, cache_dir: Any) -> ResolvedModel:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    where = f"hf-hub:{r.name}"
    try:
        info = HfApi().model_info(r.name, revision=r.revision)
        files = [s.rfilename for s in info.siblings or []]
        sha = info.sha or r.revision or "unknown"
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelRefError(f"{where}: {exc.__class__.__name__}: repo or revision not found") from exc
    except Exception:  # offline: fall back to what the local cache holds
        path = Path(snapshot_download(r.name, revision=r.revision, cache_dir=cache_dir,
                                      local_files_only=True))
        files, sha = sorted(p.name for p in path.iterdir()), path.name
    weights, wanted = hub_files(sorted(files), where, allow_pickle)
    path = Path(snapshot_download(r.name, revision=sha, allow_patterns=wanted, cache_dir=cache_dir))
    cfg = _read_config(path, where)
    return ResolvedModel(r, path, path / weights, sha, cfg)


def link_copy(local: ResolvedModel, hub_ref: str) -> ResolvedModel:
    """``local`` stood in for the Hub model ``hub_ref``, after checking it is the same bytes.

    The config and the weights file must match the Hub revision's files (LFS sha256, or the git
    blob id for small files); then the label is registered under the Hub model, pinned to its
    commit. Needs the Hub (or ``HF_ENDPOINT``) to be reachable.

    Raises:
        ModelRefError: not a Hub reference, the Hub cannot be asked, or a file differs.
    """
    from huggingface_hub import HfApi

    r = ModelRef.parse(hub_ref)
    if r.scheme != "hf-hub":
        raise ModelRefError(f"--same-as takes a Hub reference (hf-hub:ORG/NAME[@REV]), not {hub_ref}")
    try:
        info = HfApi().model_info(r.name, revision=r.revision, files_metadata=True)
    except Exception as exc:
        raise ModelRefError(f"cannot check {local.ref} against {hub_ref}: the Hub did not answer "
                            f"({type(exc).__name__}); link it when the Hub is reachable") from exc
    remote = {s.rfilename: s for s in info.siblings or []}
    for f in (local.path / CONFIG_NAME, local.weights):
        sib = remote.get(f.name)
        data = f.read_bytes()
        if sib is None:
            same = False
        elif sib.lfs is not None:
            same = hashlib.sha256(data).hexdigest() == sib.lfs.sha256
        else:
            same = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == sib.blob_id
        if not same:
            raise ModelRefError(
                f"{local.ref} is not a copy of {hub_ref}@{info.sha}: {f.name} differs from the "
                "Hub's file; label it under its own name (without --same-as)")
    return ResolvedModel(ModelRef("hf-hub", r.name, info.sha), local.path, local.weights,
                         str(info.sha), local.config, linked=True)


def _resolve_open_clip(r: ModelRef, allow_pickle: bool, cache_dir: Any) -> ResolvedModel:
    import open_clip
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    arch, tag = r.name.split("/", 1)
    if arch not in open_clip.list_models():
        raise ModelRefError(f"open_clip:{r.name}: unknown architecture {arch!r}")
    pcfg = get_pretrained_cfg(arch, tag)
    if not pcfg:
        tags = [t for a, t in open_clip.list_pretrained() if a == arch]
        raise ModelRefError(f"open_clip:{r.name}: unknown pretrained tag {tag!r}; known: {tags}")
    file = Path(download_pretrained(pcfg, cache_dir=cache_dir))
    if file.suffix != ".safetensors" and not allow_pickle:
        raise PickledWeightsRefused(
            f"open_clip:{r.name} resolves to pickled weights ({file.name}); opt in with "
            "--allow-pickle if you trust the source")
    cfg = {"model_cfg": open_clip.get_model_config(arch), "preprocess_cfg": {}}
    return ResolvedModel(r, file.parent, file, "sha256:" + _file_digest(file)[:16], cfg)


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


def load(ref: str | ModelRef | ResolvedModel, device: str = "auto", allow_pickle: bool = False,
         cache_dir: str | os.PathLike[str] | None = None) -> LoadedModel:
    """Resolve and load a model (eval mode) with its eval preprocess and tokenizer."""
    import open_clip

    res = ref if isinstance(ref, ResolvedModel) else resolve(ref, allow_pickle, cache_dir)
    dev = pick_device(device)
    if res.ref.scheme == "open_clip":
        arch = res.ref.name.split("/")[0]
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=str(res.weights), device=dev, weights_only=True)
        tokenizer = open_clip.get_tokenizer(arch)
    else:
        model, preprocess, tokenizer = _load_dir(res, dev)
    model.eval()
    return LoadedModel(res, model, preprocess, tokenizer, dev)


def _load_dir(res: ResolvedModel, device: str) -> tuple[Any, Any, Any]:
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
    load_checkpoint(model, str(res.weights), device=device, weights_only=True)
    model.float()  # fp16-stored weights run in fp32 on CPU (autocast handles CUDA)
    return model, preprocess, build_tokenizer(res.path, cfg["model_cfg"]["text_cfg"], res.ref)


def build_tokenizer(path: Path, text_cfg: dict[str, Any], ref: ModelRef | str = "") -> Any:
    """The model's tokenizer, built only from files in ``path`` and never with remote code.

    open_clip's ``get_tokenizer`` hands ``tokenizer_kwargs`` to transformers unchecked; here they
    are allow-listed (:data:`mll_registry.model_config.TOKENIZER_KWARGS`), a
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
