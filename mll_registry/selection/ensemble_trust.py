"""Only the tool's own ensembles are loaded (issue #40).

A registered model version is a folder of files written by whoever may write versions, and
MLflow's loader runs what the folder's ``MLmodel`` names: a ``loader_module`` shipped in
``code_paths``, a cloudpickled ``python_model``. So before anything of a version is loaded,
its files are checked to be exactly what
:meth:`~mll_registry.app.selection.SelectionService.save_ensemble` writes:

* every path is on an allow-list (MLflow's small metadata files, ``data/ensemble/ensemble.json``,
  bundled members' config, safetensors weights and tokenizer files), every file a regular file
  (no link, no device, no FIFO) under its size bound: no pickle, no code, nothing else;
* ``MLmodel`` has one flavour, ``python_function``, whose loader is
  :mod:`mll_registry.selection.ensemble_loader` with no ``code`` and no ``python_model``;
* ``ensemble.json`` validates in full (:meth:`~mll_registry.selection.ensemble.EnsembleSpec.
  from_json`): members pinned by the sha256 of weights and config, finite scales, plain prompts.

A version in the registry is listed first (names and sizes, refused before a byte is
downloaded when it could not pass), then downloaded and checked again as files.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from mll_registry.selection.ensemble import (
    ENSEMBLE_FORMAT,
    MAX_SPEC_BYTES,
    MEMBERS_DIR,
    SPEC_FILE,
    EnsembleInputError,
    EnsembleSpec,
)

LOADER = "mll_registry.selection.ensemble_loader"
DATA = "data/ensemble"
SPEC_PATH = f"{DATA}/{SPEC_FILE}"
#: MLflow's own files in a model folder: metadata, never code
MLFLOW_FILES = frozenset({"MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt",
                          "input_example.json", "serving_input_example.json",
                          "registered_model_meta"})
MAX_META_BYTES = 1 << 20  # each of MLFLOW_FILES, and a bundled member's config or tokenizer file
MAX_FILES = 4096
_MEMBER = re.compile(rf"{re.escape(DATA)}/{MEMBERS_DIR}/(0|[1-9][0-9]{{0,2}})/([^/]+)")
_SAFETENSORS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.safetensors")
_MLMODEL_KEYS = frozenset({"artifact_path", "flavors", "is_signature_from_type_hint", "metadata",
                           "mlflow_version", "model_id", "model_size_bytes", "model_uuid",
                           "prompts", "run_id", "saved_input_example_info", "signature",
                           "type_hint_from_example", "utc_time_created"})
_PYFUNC_KEYS = frozenset({"code", "data", "env", "loader_module", "python_version", "streamable"})


class UntrustedModelError(EnsembleInputError):
    """A model version that is not one of this tool's ensembles; it is not loaded."""


def _refuse(where: str, what: str) -> UntrustedModelError:
    return UntrustedModelError(
        f"{where} is not an MLL ensemble this tool loads: {what}. Nothing of it was loaded; "
        "register ensembles with `mll select --register`, and serve them with `mll serve` "
        "(`mlflow models serve` on an unchecked version runs whatever its writer put there)")


def file_bound(rel: str, max_model_gb: float, where: str = "the model") -> int:
    """The largest size the file at model-relative path ``rel`` may have.

    Raises:
        UntrustedModelError: ``rel`` is not on the allow-list.
    """
    from mll_registry.models.refs import CONFIG_NAME, TOKENIZER_FILES

    if rel in MLFLOW_FILES:
        return MAX_META_BYTES
    if rel == SPEC_PATH:
        return MAX_SPEC_BYTES
    m = _MEMBER.fullmatch(rel)
    if m is not None:
        name = m.group(2)
        if name == CONFIG_NAME or name in TOKENIZER_FILES:
            return MAX_META_BYTES * 8
        if _SAFETENSORS.fullmatch(name):
            return int(max_model_gb * 1e9)
    raise _refuse(where, f"it holds {rel[:120]!r}, a file no MLL ensemble has")


def check_listing(entries: Iterable[tuple[str, int | None]], where: str,
                  max_model_gb: float) -> None:
    """Refuse a listing (model-relative path, size or None) that a tool's ensemble cannot have:
    a name off the allow-list, a file over its bound, too many files, no MLmodel or spec."""
    names = set()
    for rel, size in entries:
        names.add(rel)
        if len(names) > MAX_FILES:
            raise _refuse(where, f"it holds over {MAX_FILES} files")
        bound = file_bound(rel, max_model_gb, where)
        if size is not None and size > bound:
            raise _refuse(where, f"{rel} is {size:,} bytes, over its bound of {bound:,}")
    missing = [n for n in ("MLmodel", SPEC_PATH) if n not in names]
    if missing:
        raise _refuse(where, f"it has no {missing[0]}")


def _walk(root: Path, where: str) -> list[tuple[str, int]]:
    """(relative path, size) of every file under ``root``, refusing anything but regular files
    and directories (a link is refused, not followed)."""
    out: list[tuple[str, int]] = []
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                rel = Path(e.path).relative_to(root).as_posix()
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(e.path))
                elif stat.S_ISREG(st.st_mode):
                    out.append((rel, st.st_size))
                else:
                    kind = "a link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                    raise _refuse(where, f"{rel[:120]} is {kind}")
                if len(out) + len(stack) > MAX_FILES:
                    raise _refuse(where, f"it holds over {MAX_FILES} files")
    return out


def _check_mlmodel(text: str, where: str) -> None:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _refuse(where, f"its MLmodel is not YAML ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise _refuse(where, "its MLmodel is not a mapping")
    extra = sorted(set(doc) - _MLMODEL_KEYS)
    if extra:
        raise _refuse(where, f"its MLmodel has keys {extra[:5]}")
    flavors = doc.get("flavors")
    if not isinstance(flavors, dict) or set(flavors) != {"python_function"}:
        raise _refuse(where, "its MLmodel flavours are "
                             f"{sorted(flavors) if isinstance(flavors, dict) else flavors!r}, "
                             "not python_function alone")
    pf = flavors["python_function"]
    if not isinstance(pf, dict):
        raise _refuse(where, "its python_function flavour is not a mapping")
    if "python_model" in pf or "artifacts" in pf:
        raise _refuse(where, "its python_function flavour holds a python_model (a pickle)")
    if pf.get("code") is not None:
        raise _refuse(where, f"its python_function flavour ships code ({str(pf['code'])[:60]})")
    if set(pf) - _PYFUNC_KEYS:
        raise _refuse(where, f"its python_function flavour has keys {sorted(set(pf) - _PYFUNC_KEYS)[:5]}")
    if pf.get("loader_module") != LOADER:
        raise _refuse(where, f"its loader module is {str(pf.get('loader_module'))[:80]!r}, not "
                             f"{LOADER}")
    if pf.get("data") != DATA:
        raise _refuse(where, f"its data path is {str(pf.get('data'))[:80]!r}, not {DATA}")
    env = pf.get("env")
    if env is not None and env != {"conda": "conda.yaml", "virtualenv": "python_env.yaml"}:
        raise _refuse(where, "its python_function env is not MLflow's own two files")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or meta.get("mll_ensemble") != ENSEMBLE_FORMAT:
        raise _refuse(where, f"its MLmodel metadata does not say {ENSEMBLE_FORMAT}")


def verify_model_dir(path: str | os.PathLike[str], where: str | None = None,
                     max_model_gb: float | None = None) -> EnsembleSpec:
    """Check the model folder ``path`` is one of this tool's ensembles; its spec.

    Raises:
        UntrustedModelError: the first thing that is not (the message names it and the fix).
    """
    root = Path(path)
    where = where or str(root)
    if max_model_gb is None:
        from mll_registry.settings import load_settings

        max_model_gb = load_settings().max_model_gb
    if not root.is_dir() or root.is_symlink():
        raise _refuse(where, "it is not a model folder")
    files = _walk(root, where)
    check_listing(files, where, max_model_gb)
    _check_mlmodel((root / "MLmodel").read_text(encoding="utf-8", errors="replace"), where)
    try:
        spec = EnsembleSpec.from_json((root / SPEC_PATH).read_bytes())
    except UntrustedModelError:
        raise
    except EnsembleInputError as exc:
        raise _refuse(where, str(exc)) from None
    for rel, _ in files:
        m = _MEMBER.fullmatch(rel)
        if m is not None and int(m.group(1)) >= len(spec.members):
            raise _refuse(where, f"{rel} bundles a member the spec does not have")
    return spec


def _remote_listing(uri: str, where: str) -> list[tuple[str, int | None]]:
    """(path, size) of every artifact under ``uri``, listed without downloading."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(uri)
    out: list[tuple[str, int | None]] = []
    todo: list[str | None] = [None]
    while todo:
        d = todo.pop()
        for f in repo.list_artifacts(d):
            if f.is_dir:
                if f.path.count("/") >= 6:
                    raise _refuse(where, f"{f.path[:120]} nests too deep")
                todo.append(f.path)
            else:
                out.append((f.path, f.file_size))
            if len(out) + len(todo) > MAX_FILES:
                raise _refuse(where, f"it holds over {MAX_FILES} files")
    return out


def fetch_verified(model_uri: str, dst: str | os.PathLike[str],
                   max_model_gb: float | None = None) -> tuple[Path, EnsembleSpec]:
    """The verified local folder of ``model_uri`` (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``,
    ``runs:/...`` or a local folder) and its spec. A remote version is listed and checked
    before it is downloaded into ``dst`` (a new folder), then checked again as files; a local
    folder is checked where it is.

    Raises:
        UntrustedModelError: not one of this tool's ensembles.
    """
    if max_model_gb is None:
        from mll_registry.settings import load_settings

        max_model_gb = load_settings().max_model_gb
    if "://" not in model_uri and ":/" not in model_uri:
        local = Path(model_uri).expanduser()
        return local, verify_model_dir(local, model_uri, max_model_gb)
    check_listing(_remote_listing(model_uri, model_uri), model_uri, max_model_gb)
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    out = Path(dst)
    out.mkdir(parents=True, exist_ok=False)
    get_artifact_repository(model_uri).download_artifacts("", dst_path=str(out))
    return out, verify_model_dir(out, model_uri, max_model_gb)


def model_root(data_path: str | os.PathLike[str]) -> Path:
    """The model folder of MLflow's ``data_path`` (``<model>/data/ensemble``)."""
    p = Path(data_path)
    return p.parents[1] if p.as_posix().endswith(DATA) else p
