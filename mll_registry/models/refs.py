"""Model references: ``SCHEME:REST`` strings, resolved to local files that pin their content.

A MODEL_REF names a model in one of the registered schemes (CLIP_benchmark's loader-registry
idea; built-ins in :mod:`mll_registry.models.schemes`):

* ``hf-hub:ORG/NAME[@REVISION]``  a Hugging Face Hub repo in open_clip layout
  (``open_clip_config.json`` with ``model_cfg`` + ``preprocess_cfg``, ``open_clip_model.safetensors``);
* ``local-dir:PATH``               the same layout in a local directory (the demo hub's);
* ``open_clip:ARCH/PRETRAINED``    an open_clip built-in architecture and pretrained tag.

A scheme is a :class:`ModelScheme`: it parses its references, resolves them to local files
(downloading only what loading needs), builds the model, and names the model in the registry.
Adding a scheme is one :meth:`Plugins.register` call (or an entry point), nothing else.
Every reference is untrusted (see README "Security model"): configs pass
:mod:`mll_registry.models.config`, weights are safetensors unless ``allow_pickle``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mll_registry.errors import ModelRefError, PickledWeightsRefused, UnsafeModelError
from mll_registry.fsutil import sha256_file as file_digest  # noqa: F401 - for schemes/plugins
from mll_registry.models.config import validate_config
from mll_registry.plugins import Plugins

CONFIG_NAME = "open_clip_config.json"
SAFE_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                "model.safetensors")
PICKLED_WEIGHTS = ("open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
                   "pytorch_model.bin", "model.pth", "model.pt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "spiece.model", "bpe_simple_vocab_16e6.txt.gz")
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class ModelRef:
    """A parsed MODEL_REF."""

    scheme: str  # "hf-hub" | "local-dir" | "open_clip"
    name: str  # repo id, absolute path, or ARCH/TAG
    revision: str | None = None

    @classmethod
    def parse(cls, ref: str) -> ModelRef:
        """Parse ``SCHEME:REST`` with the registered scheme (:data:`SCHEMES`).

        Raises:
            ModelRefError: no scheme, an unknown scheme, or a malformed rest.
        """
        scheme, sep, rest = ref.partition(":")
        if not sep or not rest:
            raise ModelRefError(
                f"bad model reference {ref!r}: use hf-hub:ORG/NAME[@REVISION], "
                "local-dir:PATH or open_clip:ARCH/PRETRAINED_TAG")
        if scheme not in SCHEMES:
            raise ModelRefError(f"unknown scheme {scheme!r} in {ref!r}: use "
                                + ", ".join(f"{s}:" for s in SCHEMES.names()))
        return SCHEMES.get(scheme).parse(rest, ref)

    def __str__(self) -> str:
        if self.revision:
            return f"{self.scheme}:{self.name}@{self.revision}"
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


class ModelScheme(Protocol):
    """One kind of MODEL_REF (the port a company model store plugs into)."""

    def parse(self, rest: str, ref: str) -> ModelRef:
        """``REST`` of ``SCHEME:REST`` -> a :class:`ModelRef` (raise ModelRefError if malformed)."""
        ...

    def resolve(self, ref: ModelRef, *, allow_pickle: bool,
                cache_dir: str | os.PathLike[str] | None) -> ResolvedModel:
        """Local files of the model, with the revision that pins their content."""
        ...

    def build(self, res: ResolvedModel, device: str) -> tuple[Any, Any, Any]:
        """(model, eval preprocess, tokenizer) with the weights loaded."""
        ...

    def registered_name(self, ref: ModelRef) -> str:
        """The MLflow registered-model name; two different sources must never share one."""
        ...

    def version_source(self, res: ResolvedModel) -> str:
        """A model-version source URI that pins the exact revision."""
        ...


#: the registered schemes (built-ins: hf-hub, local-dir, open_clip)
SCHEMES: Plugins[ModelScheme] = Plugins("schemes", builtins="mll_registry.models.schemes")


def resolve(ref: str | ModelRef, allow_pickle: bool = False,
            cache_dir: str | os.PathLike[str] | None = None) -> ResolvedModel:
    """Resolve a reference to local files (downloading only what is needed) without loading it.

    Raises:
        ModelRefError: not an open_clip model, no config ``model_cfg``, no weights.
        PickledWeightsRefused: only pickled weights and ``allow_pickle`` is False.
    """
    r = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
    return SCHEMES.get(r.scheme).resolve(r, allow_pickle=allow_pickle, cache_dir=cache_dir)


#: how the built-in schemes' registered names start (a label model's name); the ensembles'
#: names never do, so that deploy/mlflow-users.sh can deny workers every other registered model
LABEL_MODEL_PREFIXES = ("hf--", "local--", "open_clip--")


def registered_name(ref: str | ModelRef) -> str:
    """The MLflow registered-model name of a model source (its scheme decides; one-to-one)."""
    r = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
    return SCHEMES.get(r.scheme).registered_name(r)


def version_source(res: ResolvedModel) -> str:
    """A model-version source that pins the exact revision (accepted by the MLflow server)."""
    return SCHEMES.get(res.ref.scheme).version_source(res)


def source_of(model_ref: str) -> str:
    """The source (scheme + name, no revision) of a MODEL_REF string; '' when unparsable."""
    try:
        return ModelRef.parse(model_ref).source
    except ValueError:
        return ""


_DIGEST_FORMAT = "mll-weights-digest/1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _file_id(st: os.stat_result) -> list[int]:
    """What identifies a file's content without reading it: device, inode, size, mtime and
    ctime (ns). ctime cannot be set back by the file's writer, so a rewrite that restores the
    size and mtime still changes the id."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def weights_digest(path: Path, where: str, max_gb: float | None = None) -> str:
    """The sha256 (hex) of a local weights file, for its revision.

    A file over ``max_gb`` (default: the ``max_model_gb`` setting) is refused before a byte is
    read: it could not be loaded anyway, and hashing it would stall every listing. The digest
    is cached under the data dir by the file's (device, inode, size, mtime, ctime), so
    discovery listings do not rehash unchanged weights; any change to those rehashes, and a
    cache entry that is not exactly what this function writes is ignored.

    Raises:
        UnsafeModelError: the file is larger than ``max_gb``.
    """
    from mll_registry.config import data_dir
    from mll_registry.fsutil import write_json

    if max_gb is None:
        from mll_registry.settings import load_settings

        max_gb = load_settings().max_model_gb
    st = path.stat()
    if st.st_size > max_gb * 1e9:
        raise UnsafeModelError(
            f"{where}: weights file {path.name} is {st.st_size / 1e9:,.3f} GB, over the "
            f"max_model_gb limit of {max_gb:g} GB; refused before reading it. Raise max_model_gb "
            "(MLL_MAX_MODEL_GB) if the model is genuine")
    where_abs = str(path.resolve())
    ident = _file_id(st)
    cache: Path | None = None
    try:
        cache = (data_dir() / "cache" / "weights-digests"
                 / f"{hashlib.sha256(where_abs.encode()).hexdigest()[:32]}.json")
        if cache.stat().st_size < 4096:
            entry = json.loads(cache.read_text(encoding="utf-8"))
            if (isinstance(entry, dict) and entry.get("format") == _DIGEST_FORMAT
                    and entry.get("path") == where_abs and entry.get("id") == ident
                    and isinstance(entry.get("sha256"), str) and _HEX64.match(entry["sha256"])):
                return str(entry["sha256"])
    except (OSError, ValueError):
        pass  # absent, damaged or no data dir: hashed below
    digest = file_digest(path)
    if cache is not None and _file_id(path.stat()) == ident:  # unchanged while it was read
        with contextlib.suppress(OSError):  # a read-only data dir: the digest is not cached
            write_json(cache, {"format": _DIGEST_FORMAT, "path": where_abs, "id": ident,
                               "sha256": digest})
    return digest


def content_id(weights_sha256: str, config_blob: str) -> str:
    """What a label is computed from, by content (issue #30): the sha256 of the weights file
    and the git blob id of the checked config (what the Hub reports per file without a
    download: ``lfs.sha256`` and ``blobId``). Two commits that change neither have one id."""
    digest = hashlib.sha256(f"weights={weights_sha256};config={config_blob}".encode())
    return "content:" + digest.hexdigest()[:32]


def model_files(res: ResolvedModel) -> list[Path]:
    """The files that make a resolved folder model: its config, weights and tokenizer files
    (what ``--bundle`` copies; nothing else of the folder)."""
    names = [CONFIG_NAME, res.weights.name, *TOKENIZER_FILES]
    return [res.path / n for n in dict.fromkeys(names) if (res.path / n).is_file()]


def config_digest(res: ResolvedModel) -> str | None:
    """The sha256 (hex) of a resolved model's ``open_clip_config.json``, what an ensemble pins
    beside its weights; None for a built-in ``open_clip:`` architecture (no config file)."""
    cfg = res.path / CONFIG_NAME if res.path.is_dir() else None
    return file_digest(cfg) if cfg is not None and cfg.is_file() else None


def git_blob_id(data: bytes) -> str:
    """The git object id of a file's bytes (the Hub's ``blobId`` of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's id


def local_content_id(res: ResolvedModel, max_gb: float | None = None) -> str:
    """:func:`content_id` of resolved files (the weights digest is cached, see
    :func:`weights_digest`); a built-in open_clip architecture stands for its config."""
    weights = weights_digest(res.weights, str(res.ref), max_gb)
    cfg = res.path / CONFIG_NAME if res.path.is_dir() else None
    config = (git_blob_id(cfg.read_bytes()) if cfg is not None and cfg.is_file()
              else f"arch:{res.architecture}")
    return content_id(weights, config)


def hub_content_id(siblings: Any, where: str, allow_pickle: bool = False) -> str | None:
    """:func:`content_id` from a Hub listing's per-file metadata (``model_info(...,
    files_metadata=True).siblings``), without a download; None when the Hub does not report
    the weights' sha256 (a weights file outside LFS) or the config's blob id."""
    files = {s.rfilename: s for s in siblings or []}
    if CONFIG_NAME not in files:
        return None
    weights = files[pick_weights(list(files), where, allow_pickle)]
    config = files[CONFIG_NAME]
    if weights.lfs is None or not getattr(config, "blob_id", None):
        return None
    return content_id(str(weights.lfs.sha256), str(config.blob_id))


def pick_weights(files: list[str], where: str, allow_pickle: bool) -> str:
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


def read_config(path: Path, where: str) -> dict[str, Any]:
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
    weights = pick_weights(files, where, allow_pickle)
    return weights, [CONFIG_NAME, weights, *[f for f in TOKENIZER_FILES if f in files]]


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
            same = git_blob_id(data) == sib.blob_id
        if not same:
            raise ModelRefError(
                f"{local.ref} is not a copy of {hub_ref}@{info.sha}: {f.name} differs from the "
                "Hub's file; label it under its own name (without --same-as)")
    # the Hub's spelling of the id (it answers any case): one registered name per Hub model
    name = str(info.id) if str(info.id or "").casefold() == r.name.casefold() else r.name
    return ResolvedModel(ModelRef("hf-hub", name, info.sha), local.path, local.weights,
                         str(info.sha), local.config, linked=True)


