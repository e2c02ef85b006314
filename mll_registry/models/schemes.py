"""The built-in local model-reference schemes: ``local-dir:`` and ``open_clip:``.

``hf-hub:`` lives with the Hub code (:mod:`mll_registry.hub.scheme`) and is found through its
entry point, as any scheme from another package is.

Each is a :class:`mll_registry.models.refs.ModelScheme` registered in
:data:`mll_registry.models.refs.SCHEMES` when this module is imported.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any

from mll_registry.errors import ModelRefError, PickledWeightsRefused, UnsafeModelError
from mll_registry.models.refs import (
    SCHEMES,
    ModelRef,
    ResolvedModel,
    file_digest,
    pick_weights,
    read_config,
    weights_digest,
)


def _hub_cache_blob(folder: Path, entry: Path, st: os.stat_result) -> bool:
    """Whether ``entry`` is a Hugging Face cache snapshot's link to its own repo's blob
    (``models--ORG--NAME/snapshots/REV/FILE -> ../../blobs/SHA``, a regular file): the one link
    a model folder may hold, so that a Hub cache snapshot can be used as ``local-dir:``."""
    if not stat.S_ISLNK(st.st_mode) or folder.parent.name != "snapshots":
        return False
    target = entry.resolve()
    return (target.parent == (folder.parent.parent / "blobs").resolve()
            and stat.S_ISREG(os.stat(target, follow_symlinks=False).st_mode))


def regular_files(path: Path, where: str) -> list[str]:
    """The names of the regular files in model folder ``path``, refusing the folder when an
    entry is a link or not a regular file or folder: a link would make labelling read, and
    ``--bundle`` copy into a registered model, whatever it points at (a secret, ``/dev/zero``).

    Raises:
        UnsafeModelError: an entry is a link, a device, a FIFO or a socket.
    """
    names = []
    with os.scandir(path) as it:
        for e in it:
            st = e.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) or _hub_cache_blob(path, Path(e.path), st):
                names.append(e.name)
            elif not stat.S_ISDIR(st.st_mode):
                kind = "a link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                raise UnsafeModelError(
                    f"{where}: {e.name[:80]} is {kind}; a model folder holds regular files "
                    "only. Copy the file itself in place of the link, or remove it")
    return sorted(names)


class LocalDirScheme:
    """``local-dir:PATH``: a directory in open_clip layout; its revision is the weights' digest."""

    def parse(self, rest: str, ref: str) -> ModelRef:
        return ModelRef("local-dir", str(Path(rest).expanduser().resolve()))

    def resolve(self, ref: ModelRef, *, allow_pickle: bool,
                cache_dir: str | os.PathLike[str] | None) -> ResolvedModel:
        path = Path(ref.name)
        if not path.is_dir():
            raise ModelRefError(f"local-dir:{path}: no such directory")
        files = regular_files(path, f"local-dir:{path}")
        cfg = read_config(path, f"local-dir:{path}")
        weights = path / pick_weights(files, f"local-dir:{path}", allow_pickle)
        digest = weights_digest(weights, f"local-dir:{path}")
        return ResolvedModel(ref, path, weights, "sha256:" + digest[:16], cfg)

    def build(self, res: ResolvedModel, device: str) -> tuple[Any, Any, Any]:
        from mll_registry.models.loading import build_from_dir

        return build_from_dir(res, device)

    def registered_name(self, ref: ModelRef) -> str:
        """``local--<folder>--<hash of the absolute path>``: a folder named like a Hub repo, or
        like another folder, cannot take over that model's name."""
        folder = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(ref.name).name)[:80] or "root"
        return f"local--{folder}--{hashlib.sha256(ref.name.encode()).hexdigest()[:12]}"

    def version_source(self, res: ResolvedModel) -> str:
        return f"local-dir:{res.ref.name}@{res.revision}"


class OpenClipScheme:
    """``open_clip:ARCH/PRETRAINED_TAG``: a built-in architecture with a pretrained tag."""

    def parse(self, rest: str, ref: str) -> ModelRef:
        arch, slash, tag = rest.partition("/")
        if not slash or not arch or not tag:
            raise ModelRefError(f"bad open_clip reference {ref!r}: expected open_clip:ARCH/TAG")
        return ModelRef("open_clip", rest)

    def resolve(self, ref: ModelRef, *, allow_pickle: bool,
                cache_dir: str | os.PathLike[str] | None) -> ResolvedModel:
        import open_clip
        from open_clip.pretrained import download_pretrained, get_pretrained_cfg

        arch, tag = ref.name.split("/", 1)
        if arch not in open_clip.list_models():
            raise ModelRefError(f"open_clip:{ref.name}: unknown architecture {arch!r}")
        pcfg = get_pretrained_cfg(arch, tag)
        if not pcfg:
            tags = [t for a, t in open_clip.list_pretrained() if a == arch]
            raise ModelRefError(f"open_clip:{ref.name}: unknown pretrained tag {tag!r}; known: {tags}")
        file = self._weights(ref, pcfg, allow_pickle, cache_dir, download_pretrained)
        cfg = {"model_cfg": open_clip.get_model_config(arch), "preprocess_cfg": {}}
        return ResolvedModel(ref, file.parent, file, "sha256:" + file_digest(file)[:16], cfg)

    @staticmethod
    def _weights(ref: ModelRef, pcfg: dict[str, Any], allow_pickle: bool,
                 cache_dir: str | os.PathLike[str] | None, download: Any) -> Path:
        """The tag's safetensors file from its Hub repo; pickled weights (a URL, or a repo
        without safetensors) only with ``allow_pickle``, and refused before any download."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        refuse = PickledWeightsRefused(
            f"open_clip:{ref.name} has only pickled weights; opt in with --allow-pickle if you "
            "trust the source")
        repo = str(pcfg.get("hf_hub") or "").strip("/")
        try:
            if repo:
                try:
                    return Path(hf_hub_download(repo, "open_clip_model.safetensors",
                                                cache_dir=str(cache_dir) if cache_dir else None))
                except EntryNotFoundError:
                    if not allow_pickle:
                        raise refuse from None
            elif not allow_pickle:
                raise refuse
            return Path(download(pcfg, cache_dir=cache_dir))
        except ModelRefError:
            raise
        except Exception as exc:  # noqa: BLE001 - network, offline mode, missing cache entry
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise ModelRefError(
                f"open_clip:{ref.name}: its weights could not be fetched ({first}). Offline, "
                "the Hub cache must already hold them (download once online, or label a local "
                "copy with local-dir:PATH)") from exc

    def build(self, res: ResolvedModel, device: str) -> tuple[Any, Any, Any]:
        import open_clip

        arch = res.ref.name.split("/")[0]
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=str(res.weights), device=device, weights_only=True)
        return model, preprocess, open_clip.get_tokenizer(arch)

    def registered_name(self, ref: ModelRef) -> str:
        base = "open_clip--" + ref.name.replace("/", "--")
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", base)
        return safe if safe == base else f"{safe}--{hashlib.sha256(base.encode()).hexdigest()[:8]}"

    def version_source(self, res: ResolvedModel) -> str:
        return f"open_clip:{res.ref.name}@{res.revision}"


SCHEMES.register("local-dir", LocalDirScheme())
SCHEMES.register("open_clip", OpenClipScheme())
