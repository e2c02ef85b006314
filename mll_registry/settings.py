"""Settings: every default of the tool stated once, read from flags, environment and a file.

Precedence, highest first (as pytest, ruff and mypy do it):

1. explicit values (CLI flags, flow parameters, keyword arguments),
2. environment variables ``MLL_<FIELD>`` (``MLL_ALPHA=0.8``, ``MLL_TEMPLATES='["a {}."]'``;
   lists as JSON),
3. the project's config file: ``mll.toml`` (top-level keys) or the ``[tool.mll]`` table of
   ``pyproject.toml``, whichever is found first from the working directory upwards,
4. the user's own config file, ``$XDG_CONFIG_HOME/mll/config.toml`` (``~/.config/mll/config.toml``;
   ``MLL_CONFIG`` names another, and then it is the only file read),
5. the defaults below.

A project config is written by whoever wrote the directory (a cloned repository), so it may not
choose where a credential is sent: the keys in :data:`USER_ONLY` (the caption endpoint receives
the caption API key) are ignored there, with a warning, unless the user trusts the directory
(``trusted_dirs = ["~/work/repo"]`` in their own config, or ``MLL_TRUST_PROJECT_CONFIG=1``).
The tracking and Hub endpoints are not settings: they come from the environment only
(``MLFLOW_TRACKING_URI``, ``HF_ENDPOINT``).

Every label, selection and bench result records the settings it used (:meth:`Settings.recorded`).
The label-content fields (templates, text source, top-K) form the label's identity: their hash
is part of the registry key (:meth:`Settings.label_hash`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from mll_registry.errors import MLLError

ENV_PREFIX = "MLL_"
CONFIG_FILE = "mll.toml"
#: the user's own config file, under $XDG_CONFIG_HOME (default ~/.config)
USER_CONFIG = Path("mll") / "config.toml"
#: settings that decide where a credential is sent: never taken from an untrusted project config
USER_ONLY = frozenset({"caption_provider", "caption_url"})
#: the user-config key listing directories whose project configs may set :data:`USER_ONLY` keys
TRUSTED_DIRS = "trusted_dirs"
TRUST_ENV = ENV_PREFIX + "TRUST_PROJECT_CONFIG"
log = logging.getLogger(__name__)
_WARNED: set[str] = set()
#: bump when the label file format or its computation changes meaning (part of the label hash)
LABEL_FORMAT = 1


class SettingsError(MLLError, ValueError):
    """A setting has a bad value or a config file is unreadable; the message names which."""


@dataclass(frozen=True)
class Settings:
    """All tunables with their defaults (the only place they are written).

    Labelling (the first three define a label's identity):
        templates: prompt templates over the node text, embeddings averaged.
        text_source: ``lemma`` (the node's first lemma) or ``caption`` (the graph caption).
        top_k: graph nodes kept per image in the compact label (64: same selection as dense
            similarities on every demo (task, class) pair; benchmarks/results/label_compact.md).
        batch_size, chunk_size: images per forward pass / per checkpointed chunk.
        decode_workers: DataLoader processes decoding graph images ahead of the forward pass
            (0: decode in the labelling process, no overlap).
        pixel_cache_gb: budget of the optional raw-pixel cache (decoded pixels shared by the
            models with one preprocess on one graph; larger than the encoded images, so off
            by default: 0). Used only when the whole graph fits the budget.
        pass_model_gb: weights held at once by a multi-model labelling pass (the sum of the
            weight files of the models labelled together, each batch of graph images decoded
            once for all of them; a model above it is labelled alone). 4 GB holds 6 ViT-B-32.
    Selection:
        k: models per class; alpha: reuse-metric weight of the class's own score; metric:
        ``f1`` or ``precision``; top_n: graph nodes matched per class; embedder: sentence
        embedding model; caption_provider: ``wordnet`` or ``openai`` (needs caption_url);
        weak_similarity: a class whose name resolves to no graph node and whose best caption
        similarity is below this has no good match (calibrated: benchmarks/results/unmatched.md);
        unmatched: what selection does with such a class: ``fallback`` (the best general
        models), ``drop`` (leave the class out) or ``fail``. source_weighting: ``uniform`` pools
        the graph's sample sources alike (the paper; the default: on the demo, ``domain`` measured
        below it, README "Benchmarks"); ``domain`` weighs each source's counts by a softmax of
        the text similarity between the task's domain and the source's description, at
        temperature ``source_temperature`` (0.1, fixed before measuring; the leave-one-source-out
        rule on the sample sources alone prefers sharper: benchmarks/results/source_temperature.md).
        A task with no domain, or a graph with undescribed sources, is pooled uniformly either way.
    Reuse:
        prompts: class prompt templates; weighting: ``inverse_entropy``, ``entropy``, ``uniform``.
        reuse_mode: how the selected models vote: ``per_class`` (the paper: each class is
        scored by its own k models only), ``pooled`` (every class by the entropy-weighted
        ensemble of all distinct selected models: every class compared like with like) or
        ``soft`` (as pooled, each model's vote on a class weighted by (r / max r)^2, r its reuse
        metric there). fallback: ``margin`` lets a class keep its own best model only where
        its class score is ahead of the task-level model's by more than ``fallback_z``
        standard errors (:func:`mll_registry.selection.select.class_margins`); ``off`` never
        falls back. calibration: the logit scale each model's class probabilities are taken at:
        ``none`` (the model's own) or ``graph`` (the scale fitted on the graph's images when the
        model was labelled, :mod:`mll_registry.labels.calibration`). The defaults were chosen
        on pseudo-tasks of the graph's own sources, never on the demo tasks
        (benchmarks/results/reuse_settings.md).
    Where:
        device: ``auto``, ``cpu``, ``cuda[:N]``; max_model_gb: a model whose config needs more
        (estimated fp32 parameters + one batch's activations) is refused before allocation;
        retry_budget_s: total seconds one remote call may spend retrying before its error
        (a down server is reported within about this long); label_store: ``registry`` (MLflow) or
        ``local`` (the data dir); data_dir: assets and caches (None: ``MLL_DATA_DIR`` or XDG).
    Serving (every request to a served ensemble, `mll serve`; each bound a 400 naming it):
        serve_max_images: images per request; serve_max_image_mb: megabytes per image (the
        request body may hold that many images base64-encoded, and no more); serve_max_pixels:
        pixels per decoded image (16 Mpx: 4096 x 4096; what a served request may make one
        worker decode, about 48 MB of RGB).
    Graph growth:
        incremental: label a model on a graph extended from one it is labelled on by reusing that
        label's stored embeddings (only new images and node texts are encoded; the label equals
        a full one); False always labels in full. keep_embeddings: keep those fp16 embeddings
        beside each label (2d + 16 bytes per image: 0.71 GB per model at 680,000 images and
        d = 512); False saves the space, and a grown graph is then labelled in full.
    Discovery (scheduled labelling of new Hub models):
        discovery_page_size: models listed, labelled and recorded per page (the watermark moves
        after each page; the Hub's listing page size); discovery_attempts: scheduled runs that try
        a model that fails to label before it is reported as given up; models_per_run: models
        one labelling run takes (discovery hands a worker groups of this many; the run labels
        them in passes of ``pass_model_gb``).
    """

    templates: tuple[str, ...] = ("a photo of a {}.",)
    text_source: Literal["lemma", "caption"] = "lemma"
    top_k: int = 64
    batch_size: int = 256
    chunk_size: int = 2048
    decode_workers: int = 2
    pixel_cache_gb: float = 0.0
    pass_model_gb: float = 4.0
    k: int = 1
    alpha: float = 0.7
    metric: Literal["f1", "precision"] = "f1"
    top_n: int = 5
    embedder: str = "all-MiniLM-L6-v2"
    caption_provider: str = "wordnet"
    caption_url: str | None = None
    weak_similarity: float = 0.6
    unmatched: Literal["fallback", "drop", "fail"] = "fallback"
    source_weighting: Literal["domain", "uniform"] = "uniform"
    source_temperature: float = 0.1
    prompts: tuple[str, ...] = ("a photo of a {}.",)
    weighting: Literal["inverse_entropy", "entropy", "uniform"] = "inverse_entropy"
    reuse_mode: Literal["per_class", "pooled", "soft"] = "pooled"
    fallback: Literal["margin", "off"] = "off"
    fallback_z: float = 2.0
    calibration: Literal["none", "graph"] = "graph"
    device: str = "auto"
    max_model_gb: float = 16.0
    retry_budget_s: float = 60.0
    label_store: str = "registry"
    data_dir: str | None = None
    discovery_page_size: int = 100
    discovery_attempts: int = 3
    models_per_run: int = 10
    incremental: bool = True
    keep_embeddings: bool = True
    serve_max_images: int = 64
    serve_max_image_mb: float = 8.0
    serve_max_pixels: int = 16 * 1024 * 1024
    sources: dict[str, str] = field(default_factory=dict, compare=False)  # field -> origin

    def __post_init__(self) -> None:
        checks = {
            "text_source": self.text_source in ("lemma", "caption"),
            "templates": bool(self.templates) and all("{}" in t for t in self.templates),
            "prompts": bool(self.prompts) and all("{}" in t for t in self.prompts),
            "top_k": self.top_k >= 1, "batch_size": self.batch_size >= 1,
            "chunk_size": self.chunk_size >= 1,
            "decode_workers": self.decode_workers >= 0, "pixel_cache_gb": self.pixel_cache_gb >= 0,
            "k": self.k >= 1, "top_n": self.top_n >= 1,
            "max_model_gb": self.max_model_gb > 0, "retry_budget_s": self.retry_budget_s >= 0,
            "alpha": 0.0 <= self.alpha <= 1.0, "metric": self.metric in ("f1", "precision"),
            "weighting": self.weighting in ("inverse_entropy", "entropy", "uniform"),
            "reuse_mode": self.reuse_mode in ("per_class", "pooled", "soft"),
            "fallback": self.fallback in ("margin", "off"), "fallback_z": self.fallback_z >= 0,
            "calibration": self.calibration in ("none", "graph"),
            "unmatched": self.unmatched in ("fallback", "drop", "fail"),
            "source_weighting": self.source_weighting in ("domain", "uniform"),
            "source_temperature": self.source_temperature > 0,
            "label_store": bool(self.label_store),
            "discovery_page_size": self.discovery_page_size >= 1,
            "discovery_attempts": self.discovery_attempts >= 1,
            "models_per_run": self.models_per_run >= 1, "pass_model_gb": self.pass_model_gb > 0,
            "serve_max_images": self.serve_max_images >= 1,
            "serve_max_image_mb": self.serve_max_image_mb > 0,
            "serve_max_pixels": self.serve_max_pixels >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            k = bad[0]
            raise SettingsError(f"setting {k}={getattr(self, k)!r} is invalid "
                                f"(from {self.sources.get(k, 'the arguments')}); see "
                                "`mll settings` for the allowed values")

    def fallback_z_or_none(self) -> float | None:
        """The fall-back rule's threshold in standard errors, or None when it is off."""
        return self.fallback_z if self.fallback == "margin" else None

    # -- identity and records ---------------------------------------------------------------
    def label_identity(self) -> dict[str, Any]:
        """What a label's content depends on (besides the model revision and graph version)."""
        return label_identity(self.templates, self.text_source, self.top_k)

    def label_hash(self) -> str:
        """12 hex digits naming :meth:`label_identity` (registry key, label path, MLflow tag)."""
        return label_identity_hash(self.templates, self.text_source, self.top_k)

    def recorded(self) -> dict[str, Any]:
        """Every setting as JSON-able values (logged with results)."""
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in fields(self) if f.name != "sources" for v in [getattr(self, f.name)]}

    def replace(self, **overrides: Any) -> Settings:
        """A copy with ``overrides`` applied; ``None`` values are ignored (an unset flag)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - {f.name for f in fields(self)}
        if unknown:
            raise SettingsError(f"unknown setting(s) {sorted(unknown)}")
        given = {k: _coerce(k, v, "arguments") for k, v in given.items()}
        return dataclasses.replace(self, **given,
                                   sources={**self.sources, **dict.fromkeys(given, "arguments")})


def label_identity(templates: Any, text_source: str, top_k: int) -> dict[str, Any]:
    """The label-content settings as a JSON-able dict (with the label format version)."""
    return {"templates": list(templates), "text_source": text_source, "top_k": int(top_k),
            "format": LABEL_FORMAT}


def label_identity_hash(templates: Any, text_source: str, top_k: int) -> str:
    """12 hex digits of :func:`label_identity`: part of every label's key."""
    blob = json.dumps(label_identity(templates, text_source, top_k), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


DEFAULTS = Settings()
_TYPES = {f.name: type(getattr(DEFAULTS, f.name)) for f in fields(Settings) if f.name != "sources"}
_TYPES.update(caption_url=str, data_dir=str)


def _coerce(name: str, value: Any, origin: str) -> Any:
    want = _TYPES[name]
    try:
        if want is tuple:
            if isinstance(value, str):
                value = json.loads(value) if value.strip().startswith("[") else [value]
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise TypeError("a list of strings")
            return tuple(value)
        if want is bool:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if want is int and isinstance(value, float) and not value.is_integer():
            raise TypeError("an integer")
        if isinstance(value, bool) and want is not bool:
            raise TypeError(want.__name__)
        return want(value)
    except (TypeError, ValueError, json.JSONDecodeError) as exc:
        raise SettingsError(f"setting {name}={value!r} from {origin} is not "
                            f"{want.__name__ if want is not tuple else 'a list of strings'} "
                            f"({exc})") from exc


def user_config_path(env: Mapping[str, str] | None = None) -> Path:
    """The user's own config file: ``MLL_CONFIG``, else ``$XDG_CONFIG_HOME/mll/config.toml``."""
    env = os.environ if env is None else env
    if env.get(ENV_PREFIX + "CONFIG"):
        return Path(env[ENV_PREFIX + "CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / USER_CONFIG


def find_config(start: str | os.PathLike[str] | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The project config: the nearest ``mll.toml`` or ``pyproject.toml`` with ``[tool.mll]``
    from ``start`` (the working directory) upwards, and its table."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / CONFIG_FILE).is_file():
            return d / CONFIG_FILE, _read_table(d / CONFIG_FILE)
        pp = d / "pyproject.toml"
        if pp.is_file():
            table = _read_table(pp)
            if table:
                return pp, table
    return None


def _trusted_dirs(path: Path, table: dict[str, Any]) -> list[Path]:
    dirs = table.pop(TRUSTED_DIRS, [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise SettingsError(f"{path}: {TRUSTED_DIRS} must be a list of directory paths")
    return [Path(d).expanduser().resolve() for d in dirs]


def project_trusted(config: Path, trusted: list[Path], env: Mapping[str, str]) -> bool:
    """Whether the project config ``config`` may set :data:`USER_ONLY` keys: its directory is
    in (or under) one of the user's ``trusted_dirs``, or ``MLL_TRUST_PROJECT_CONFIG`` is on."""
    if env.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    d = config.resolve().parent
    return any(d == t or t in d.parents for t in trusted)


def _ignored(key: str, config: Path, user: Path) -> str:
    return (f"ignored {key} from the project config {config}: a project config may not choose "
            f"where a credential is sent; set it in {user}, ${ENV_PREFIX}{key.upper()} or a flag, "
            f"or trust the directory ({TRUSTED_DIRS} = ['{config.parent}'] in {user}, "
            f"or {TRUST_ENV}=1)")


def _read_table(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"config file {path} is unreadable ({exc}); fix or remove it") from exc
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("mll", {})
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: the mll settings must be a table")
    return data


def load_settings(overrides: Mapping[str, Any] | None = None,
                  env: Mapping[str, str] | None = None,
                  start: str | os.PathLike[str] | None = None) -> Settings:
    """Defaults < the user's config < the project's config < ``MLL_*`` environment <
    ``overrides`` (None values skipped); the project config's :data:`USER_ONLY` keys only in a
    trusted directory (ignored with a warning otherwise).

    Raises:
        SettingsError: an unknown key in the config file, or a value of the wrong type.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    user = user_config_path(env)
    files: list[tuple[Path, dict[str, Any]]] = []
    trusted: list[Path] = []
    if user.is_file() or env.get(ENV_PREFIX + "CONFIG"):
        table = _read_table(user)
        trusted = _trusted_dirs(user, table)
        files.append((user, table))
    project = None if env.get(ENV_PREFIX + "CONFIG") else find_config(start)
    if project:
        files.append(project)
    for path, table in files:
        if path != user and (USER_ONLY | {TRUSTED_DIRS}) & set(table):
            may = project_trusted(path, trusted, env)
            for k in sorted((USER_ONLY | {TRUSTED_DIRS}) & set(table)):
                if may and k != TRUSTED_DIRS:
                    continue
                note = _ignored(k, path, user)
                if note not in _WARNED:
                    _WARNED.add(note)
                    log.warning("%s", note)
                del table[k]
                if k != TRUSTED_DIRS:  # `mll settings` shows why the value is not the project's
                    origin.setdefault(k, f"default (ignored in the untrusted {path})")
        unknown = set(table) - set(_TYPES)
        if unknown:
            raise SettingsError(f"{path}: unknown mll setting(s) {sorted(unknown)}; known: "
                                f"{', '.join(sorted(_TYPES))}")
        for k, v in table.items():
            values[k] = _coerce(k, v, str(path))
            origin[k] = str(path)
    for k in _TYPES:
        if k == "data_dir":
            continue  # MLL_DATA_DIR is read where the data dir is resolved (config.data_dir)
        raw = env.get(ENV_PREFIX + k.upper())
        if raw is not None and raw != "":
            values[k] = _coerce(k, raw, f"${ENV_PREFIX}{k.upper()}")
            origin[k] = f"${ENV_PREFIX}{k.upper()}"
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in _TYPES:
            raise SettingsError(f"unknown setting {k!r}")
        values[k] = _coerce(k, v, "arguments")
        origin[k] = "arguments"
    return Settings(**values, sources=origin)
