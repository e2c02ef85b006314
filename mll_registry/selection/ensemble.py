"""A selection as a deployable model: the ensemble spec, its predictor, and the MLflow
``python_function`` loader (issue #28).

A selection ends as an :class:`EnsembleSpec` (``ensemble.json``): every member's MODEL_REF with
the revision and label it was selected on and the sha256 of its weights and config files (checked
whenever the member is loaded), the logit scale reuse takes for it, the task's
classes and prompts, the reuse mode, the per-class members and the vote weights. It holds no
code and no pickle: :mod:`mll_registry.selection.ensemble_loader` (MLflow's ``loader_module``)
checks the folder, reads the JSON and loads each member through the same safe loader as labelling (safetensors only, configs checked,
no remote code), from ``members/<i>/`` when the weights were bundled, else by its MODEL_REF.
:class:`Ensemble` then scores images exactly as :func:`mll_registry.selection.reuse.evaluate`
does: each member encodes each image once, probabilities at the member's scale, the
entropy-weighted vote of :func:`~mll_registry.selection.reuse.ensemble_scores`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mll_registry.errors import MLLError

ENSEMBLE_FORMAT = "mll-ensemble/1"
SPEC_FILE = "ensemble.json"
MEMBERS_DIR = "members"  # bundled member weights, one folder per member (``members/<i>/``)
IMAGE_COLUMN = "image"  # the input column: raw bytes or a base64 string per row
MAX_BATCH = 256  # images per forward pass of a member
# bounds of a spec read from a registry (whoever can write a version writes the spec)
MAX_SPEC_BYTES = 4 << 20
MAX_CLASSES = 4096
MAX_MEMBERS = 64
MAX_PROMPTS = 64
MAX_TEXT = 512  # characters of one class name, prompt, task name, revision or ref
MAX_LOGIT_SCALE = 1e4
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def prob_column(cls: str) -> str:
    """The output column of class ``cls``'s probability (``p:<class>``)."""
    return f"p:{cls}"


class EnsembleInputError(MLLError, ValueError):
    """An input the ensemble cannot score; the message names the row and the fix."""


@dataclass(frozen=True)
class Member:
    """One model of the ensemble, pinned."""

    ref: str
    revision: str | None
    logit_scale: float  # the scale its probabilities are taken at (calibrated or its own)
    label_hash: str | None = None
    graph_version: str | None = None
    weights_file: str | None = None
    #: sha256 (hex) of the weights file it was selected with; None: unknown (not checked)
    weights_sha256: str | None = None
    #: sha256 (hex) of its ``open_clip_config.json``; None for ``open_clip:`` built-ins
    config_sha256: str | None = None


class MemberWeightsChanged(MLLError, ValueError):
    """A member's weights file is not the one the ensemble pinned."""


@dataclass(frozen=True)
class EnsembleSpec:
    """Everything a deployed selection needs, as JSON (``ensemble.json``)."""

    task: str
    classes: list[str]
    prompts: list[str]
    weighting: str
    reuse_mode: str
    calibration: str
    members: list[Member]
    chosen: list[list[int]]  # (C, k) member positions per class
    routing: list[list[float]] | None  # (members, C) vote weights; None: per-class votes
    k: int
    alpha: float | None = None
    graph_version: str | None = None
    format: str = ENSEMBLE_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> EnsembleSpec:
        """Parse and check a spec in full: a registry version's spec is written by whoever may
        write versions, so every key is known, every value typed and bounded, every member
        pinned by the sha256 of its weights and config, every scale finite, every prompt a
        plain template with one ``{}``.

        Raises:
            EnsembleInputError: the first thing wrong, named.
        """
        if len(text) > MAX_SPEC_BYTES:
            raise EnsembleInputError(f"{SPEC_FILE} is over {MAX_SPEC_BYTES} bytes")
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise EnsembleInputError(f"{SPEC_FILE} is not JSON ({str(exc)[:80]})") from None
        if not isinstance(d, dict) or d.get("format") != ENSEMBLE_FORMAT:
            raise EnsembleInputError(f"not an {ENSEMBLE_FORMAT} spec (format "
                                     f"{d.get('format') if isinstance(d, dict) else None!r})")
        _check_keys(d, cls, "the spec")
        members = _list(d, "members", 1, MAX_MEMBERS, "the spec")
        spec = cls(**{**d, "members": [_member(m, i) for i, m in enumerate(members)]})
        _check_spec(spec)
        return spec


def _bad(what: str) -> EnsembleInputError:
    return EnsembleInputError(f"{SPEC_FILE}: {what}; not a spec this tool wrote: register the "
                              "ensemble again (mll select --register)")


def _check_keys(d: Mapping[str, Any], kind: type, where: str) -> None:
    """Refuse keys ``kind`` (a dataclass) does not have, and missing required ones."""
    from dataclasses import MISSING, fields

    names = {f.name: f for f in fields(kind)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise _bad(f"{where} has unknown keys {unknown[:5]}")
    missing = [n for n, f in names.items() if n not in d and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        raise _bad(f"{where} lacks {missing[:5]}")


def _list(d: Mapping[str, Any], key: str, lo: int, hi: int, where: str) -> list[Any]:
    v = d.get(key)
    if not isinstance(v, list) or not lo <= len(v) <= hi:
        raise _bad(f"{where}: {key} is not a list of {lo} to {hi} entries")
    return v


def _text(v: Any, what: str, optional: bool = False) -> None:
    if v is None and optional:
        return
    if not isinstance(v, str) or not v or len(v) > MAX_TEXT or "\x00" in v:
        raise _bad(f"{what} is not a string of 1 to {MAX_TEXT} characters")


def _number(v: Any, what: str, lo: float, hi: float) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
            or not lo <= v <= hi:
        raise _bad(f"{what} is not a finite number in [{lo:g}, {hi:g}]")


def _member(m: Any, i: int) -> Member:
    """Member ``i`` of a spec, checked: a MODEL_REF, pins by sha256 of weights and config."""
    from mll_registry.errors import ModelRefError
    from mll_registry.models.refs import ModelRef

    where = f"member {i}"
    if not isinstance(m, dict):
        raise _bad(f"{where} is not an object")
    _check_keys(m, Member, where)
    _text(m.get("ref"), f"{where}: ref")
    try:
        scheme = ModelRef.parse(m["ref"]).scheme
    except ModelRefError as exc:
        raise _bad(f"{where}: {exc}") from None
    for k in ("revision", "label_hash", "graph_version"):
        _text(m.get(k), f"{where}: {k}", optional=True)
    _number(m.get("logit_scale"), f"{where}: logit_scale", 1e-6, MAX_LOGIT_SCALE)
    wf = m.get("weights_file")
    if wf is not None and not (isinstance(wf, str) and _FILE_NAME.fullmatch(wf)):
        raise _bad(f"{where}: weights_file is not a plain file name")
    if not (isinstance(m.get("weights_sha256"), str) and _HEX64.fullmatch(m["weights_sha256"])):
        raise _bad(f"{where} ({m['ref']}) is not pinned by the sha256 of its weights")
    cfg = m.get("config_sha256")
    if scheme == "open_clip" and cfg is not None or scheme != "open_clip" and not (
            isinstance(cfg, str) and _HEX64.fullmatch(cfg)):
        raise _bad(f"{where} ({m['ref']}) is not pinned by the sha256 of its config")
    return Member(**m)


def _check_spec(spec: EnsembleSpec) -> None:
    """Types, bounds and agreement of a spec's fields (its members are checked already)."""
    _text(spec.task, "task")
    C, M = len(spec.classes) if isinstance(spec.classes, list) else -1, len(spec.members)
    if not 2 <= C <= MAX_CLASSES:
        raise _bad(f"classes is not a list of 2 to {MAX_CLASSES} names")
    for c in spec.classes:
        _text(c, "a class name")
    if len(set(spec.classes)) != C:
        raise _bad("classes repeat a name")
    if not isinstance(spec.prompts, list) or not 1 <= len(spec.prompts) <= MAX_PROMPTS:
        raise _bad(f"prompts is not a list of 1 to {MAX_PROMPTS} templates")
    for t in spec.prompts:
        _text(t, "a prompt")
        if t.count("{}") != 1 or t.replace("{}", "").count("{") or \
                t.replace("{}", "").count("}"):
            raise _bad(f"prompt {t[:40]!r} is not a template with exactly one {{}} and no other "
                       "braces")
    choices = {"weighting": ("inverse_entropy", "entropy", "uniform"),
               "reuse_mode": ("per_class", "pooled", "soft"), "calibration": ("none", "graph")}
    for k, allowed in choices.items():
        if getattr(spec, k) not in allowed:
            raise _bad(f"{k} is not one of {allowed}")
    if isinstance(spec.k, bool) or not isinstance(spec.k, int) or not 1 <= spec.k <= M:
        raise _bad(f"k is not an integer from 1 to the {M} members")
    if not isinstance(spec.chosen, list) or len(spec.chosen) != C or any(
            not isinstance(row, list) or len(row) != spec.k
            or any(isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < M for m in row)
            for row in spec.chosen):
        raise _bad(f"chosen is not {C} rows of {spec.k} member positions below {M}")
    if spec.routing is not None:
        if not isinstance(spec.routing, list) or len(spec.routing) != M or any(
                not isinstance(r, list) or len(r) != C for r in spec.routing):
            raise _bad(f"routing is not {M} rows of {C} weights")
        for r in spec.routing:
            for w in r:
                _number(w, "a routing weight", 0.0, 1e6)
    if spec.alpha is not None:
        _number(spec.alpha, "alpha", 0.0, 1.0)
    _text(spec.graph_version, "graph_version", optional=True)
    if not isinstance(spec.extra, dict) or len(spec.extra) > 16 or any(
            not isinstance(k, str) or len(k) > 64 or not (
                v is None or isinstance(v, bool | int | str) and len(str(v)) <= MAX_TEXT
                or isinstance(v, float) and math.isfinite(v))
            for k, v in spec.extra.items()):
        raise _bad("extra is not up to 16 short scalar entries")


def spec_from_selection(selection: Any, prompts: Sequence[str], weighting: str,
                        metas: Mapping[str, Mapping[str, Any]]) -> EnsembleSpec:
    """The spec of a :class:`~mll_registry.selection.select.SelectionResult`: its distinct
    selected models (by first use) as members, pinned by their labels' ``metas``."""
    used = selection.selected_models()
    pos = {r: i for i, r in enumerate(used)}
    chosen = [[pos[selection.models[int(m)]] for m in row] for row in selection.chosen]
    routing = None
    if selection.reuse_mode != "per_class":
        W = selection.routing()[[selection.models.index(r) for r in used]]
        routing = [[float(x) for x in row] for row in W]
    members = []
    for r in used:
        meta = metas.get(r, {})
        scale = selection.scale_of(r)
        members.append(Member(
            ref=r, revision=meta.get("revision"),
            logit_scale=float(scale if scale is not None else meta.get("logit_scale", 100.0)),
            label_hash=meta.get("label_hash"), graph_version=meta.get("graph_version"),
            weights_file=meta.get("weights_file"), weights_sha256=meta.get("weights_sha256"),
            config_sha256=meta.get("config_sha256")))
    p = selection.params
    return EnsembleSpec(task=selection.task, classes=list(selection.classes),
                        prompts=list(prompts), weighting=weighting,
                        reuse_mode=selection.reuse_mode, calibration=selection.calibration,
                        members=members, chosen=chosen, routing=routing,
                        k=int(selection.chosen.shape[1]), alpha=p.get("alpha"),
                        graph_version=p.get("graph_version"))


def base64_len(n: int) -> int:
    """Characters of ``n`` bytes base64-encoded (padded)."""
    return -(-n // 3) * 4


@dataclass(frozen=True)
class RequestLimits:
    """What one request to a served ensemble may ask for (settings ``serve_max_*``)."""

    images: int
    image_bytes: int
    pixels: int

    @classmethod
    def from_settings(cls, s: Any) -> RequestLimits:
        return cls(int(s.serve_max_images), int(s.serve_max_image_mb * 1e6),
                   int(s.serve_max_pixels))

    def body_bytes(self) -> int:
        """The largest request body these allow: every image base64-encoded, plus room for
        the JSON around them."""
        return self.images * (base64_len(self.image_bytes) + 1024) + 65536


def decode(item: Any, row: int = 0, max_bytes: int | None = None) -> io.BytesIO:
    """One input image as something :func:`mll_registry.errors.open_image` reads: raw bytes or
    a base64 string of an image file, of at most ``max_bytes``. Never a path: a served model
    must not open files its client names (`mll predict` reads its files itself).

    Raises:
        EnsembleInputError: neither, or over ``max_bytes``.
    """
    if isinstance(item, str):
        if max_bytes is not None and len(item) > base64_len(max_bytes) + 4:  # a little slack
            raise EnsembleInputError(f"row {row}: an image of over {max_bytes:,} bytes "
                                     "(serve_max_image_mb); send smaller images")
        try:
            item = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise EnsembleInputError(
                f"row {row}: not base64 image bytes; send raw bytes or base64-encoded image "
                "files (a served model opens no paths)") from None
    if isinstance(item, bytes | bytearray):
        if max_bytes is not None and len(item) > max_bytes:
            raise EnsembleInputError(f"row {row}: an image of over {max_bytes:,} bytes "
                                     "(serve_max_image_mb); send smaller images")
        return io.BytesIO(bytes(item))
    raise EnsembleInputError(f"row {row}: an image is raw bytes or a base64 string, got "
                             f"{type(item).__name__}")


class Ensemble:
    """The deployed selection: members loaded once (``load``: MODEL_REF or folder -> a loaded
    model), their class-text embeddings computed once, images scored in batches."""

    def __init__(self, spec: EnsembleSpec, load: Callable[[int, Member], Any],
                 limits: RequestLimits | None = None) -> None:
        self.spec = spec
        self._load = load
        self.limits = limits  # None: in-process use, only the global pixel limit
        self._models: dict[int, Any] = {}
        self._texts: dict[int, Any] = {}

    def _member(self, i: int) -> tuple[Any, Any]:
        if i not in self._models:
            from mll_registry.labels.labeller import encode_texts

            lm = self._load(i, self.spec.members[i])
            self._models[i] = lm
            self._texts[i] = encode_texts(lm, [[t.format(c) for t in self.spec.prompts]
                                               for c in self.spec.classes])
        return self._models[i], self._texts[i]

    def probabilities(self, images: Sequence[Any]) -> np.ndarray:
        """(n, C) the ensemble's normalised class scores for ``images`` (see :func:`decode`).

        Raises:
            EnsembleInputError: an input is no image (named by row), there is none, or the
                request is over one of :attr:`limits` (named).
        """
        import torch

        from mll_registry.errors import ImageFileError
        from mll_registry.labels.calibration import probabilities
        from mll_registry.labels.labeller import encode_pixels
        from mll_registry.models.image_stream import PixelPipeline
        from mll_registry.selection.reuse import ensemble_scores

        lim = self.limits
        if len(images) == 0:
            raise EnsembleInputError("no images to score: send at least one")
        if lim is not None and len(images) > lim.images:
            raise EnsembleInputError(f"{len(images)} images in one request, over the "
                                     f"{lim.images} allowed (serve_max_images); send fewer")
        sources = [decode(x, i, lim.image_bytes if lim else None) for i, x in enumerate(images)]
        pixels: dict[str, np.ndarray] = {}
        probs = []
        for i, member in enumerate(self.spec.members):
            lm, txt = self._member(i)
            pipe = PixelPipeline.from_preprocess(lm.preprocess)
            if pipe.key not in pixels:  # decoded once per distinct preprocess
                rows = []
                for r, src in enumerate(sources):
                    if isinstance(src, io.BytesIO):
                        src.seek(0)
                    try:
                        rows.append(pipe(src, lim.pixels if lim else None))  # type: ignore[arg-type]
                    except ImageFileError as exc:
                        msg = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the image",
                                     str(exc))
                        raise EnsembleInputError(f"row {r}: {msg}".replace(
                            "larger than", "over the serve_max_pixels limit of" if lim
                            else "larger than")) from None
                pixels[pipe.key] = np.stack(rows)
            img = torch.from_numpy(encode_pixels(lm, pixels[pipe.key], pipe, MAX_BATCH))
            with torch.no_grad():
                cos = (img.to(txt.device).float() @ txt.float().T).cpu().numpy()
            probs.append(probabilities(cos.astype(np.float64), member.logit_scale))
        routing = None if self.spec.routing is None else np.asarray(self.spec.routing)
        scores = ensemble_scores(probs, np.asarray(self.spec.chosen), self.spec.weighting,
                                 routing)
        return scores / np.maximum(scores.sum(axis=1, keepdims=True), 1e-300)

    def predict(self, images: Sequence[Any]) -> Any:
        """A DataFrame, one row per image: ``class`` (the prediction) and ``p:<class>`` per
        class (the normalised ensemble scores)."""
        import pandas as pd

        p = self.probabilities(images)
        out = pd.DataFrame(p, columns=[prob_column(c) for c in self.spec.classes])
        out.insert(0, "class", [self.spec.classes[int(j)] for j in p.argmax(axis=1)])
        return out


def images_of(model_input: Any) -> list[Any]:
    """The images of an MLflow ``predict`` input: a DataFrame with an ``image`` column (or one
    column), a list, or one image (raw bytes or base64 strings each).

    Raises:
        EnsembleInputError: a DataFrame without that column or with unknown ones.
    """
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        cols = list(model_input.columns)
        if cols == [IMAGE_COLUMN] or (len(cols) == 1 and cols[0] == 0):
            return list(model_input.iloc[:, 0])
        raise EnsembleInputError(f"expected one column {IMAGE_COLUMN!r} of image bytes or "
                                 f"base64 strings; got columns {[str(c)[:40] for c in cols[:5]]}")
    if isinstance(model_input, pd.Series | np.ndarray):
        return list(model_input)
    if isinstance(model_input, list | tuple):
        return list(model_input)
    return [model_input]


def input_example() -> Any:
    """The MLflow input example: one 8 x 8 white PNG, base64-encoded, in the ``image`` column."""
    import pandas as pd
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 255, 255)).save(buf, format="PNG")
    return pd.DataFrame({IMAGE_COLUMN: [base64.b64encode(buf.getvalue()).decode()]})


class PyfuncEnsemble:
    """What ``mlflow.pyfunc.load_model`` returns for an ensemble (through ``_load_pyfunc``)."""

    def __init__(self, ensemble: Ensemble) -> None:
        self.ensemble = ensemble

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """The ensemble's predictions; a bad input is MLflow's BAD_REQUEST (HTTP 400 from
        ``mlflow models serve``) with the one-line reason."""
        try:
            return self.ensemble.predict(images_of(model_input))
        except EnsembleInputError as exc:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import BAD_REQUEST

            raise MlflowException(str(exc), error_code=BAD_REQUEST) from exc


#: the registered-model name that asks for one derived from the task (:func:`ensemble_name`);
#: never a model name itself ("@" separates a name from an alias in ``models:/NAME@ALIAS``)
FROM_TASK = "@task"


def ensemble_name(task: str) -> str:
    """The registered-model name derived from a task's name: ``<task>-mll-ensemble``, the task
    name lower-cased with every run of other characters than letters, digits, ``.``, ``_`` and
    ``-`` made one ``-``."""
    import re

    slug = re.sub(r"[^a-z0-9._-]+", "-", task.lower()).strip("-.") or "task"
    return f"{slug}-mll-ensemble"


def pinned(m: Member) -> str:
    """The member's MODEL_REF at the Hub revision it was selected on (``hf-hub:ORG/NAME@SHA``);
    other schemes pin by content, checked by the loader."""
    if m.ref.startswith("hf-hub:") and "@" not in m.ref and m.revision:
        return f"{m.ref}@{m.revision}"
    return m.ref


def loader(path: str | os.PathLike[str], device: str = "cpu") -> Callable[[int, Member], Any]:
    """Load members from ``path/members/<i>`` when bundled, else by their MODEL_REF (Hub cache,
    the pinned revision), through the safe loader either way, each checked against its pins."""
    from mll_registry.models.loading import load

    base = Path(path) / MEMBERS_DIR

    def load_member(i: int, m: Member) -> Any:
        folder = base / str(i)
        lm = load(f"local-dir:{folder}" if folder.is_dir() else pinned(m), device=device)
        check_pins(m, lm.resolved)
        return lm

    return load_member


def pin_weights(spec: EnsembleSpec) -> EnsembleSpec:
    """``spec`` with every member's ``weights_sha256`` and ``config_sha256`` filled in where
    its label did not record them (labels from before the pins): local members from their
    files (refused when those no longer hold the revision the label was computed on), Hub
    members from the Hub cache at their revision (nothing is downloaded).

    Raises:
        MemberWeightsChanged: a local member's files changed since it was labelled, or a
            member's files are not here to pin (a loaded ensemble refuses unpinned members).
    """
    from mll_registry.fsutil import sha256_file
    from mll_registry.models.refs import (
        CONFIG_NAME,
        ModelRef,
        config_digest,
        resolve,
        weights_digest,
    )

    members = []
    for m in spec.members:
        r = ModelRef.parse(m.ref)
        needs_config = r.scheme != "open_clip"
        if m.weights_sha256 is None or (needs_config and m.config_sha256 is None):
            weights: Path | None = None
            config: Path | None = None
            if r.scheme == "hf-hub":
                from huggingface_hub import try_to_load_from_cache

                rev = r.revision or m.revision
                hits = [try_to_load_from_cache(r.name, f, revision=rev)
                        for f in (m.weights_file or "", CONFIG_NAME)]
                weights, config = (Path(h) if isinstance(h, str) else None for h in hits)
                weights = weights if m.weights_file else None
            else:
                res = resolve(r)
                if m.revision and res.revision != m.revision:
                    raise MemberWeightsChanged(
                        f"member {m.ref}: its files are now revision {res.revision}, not the "
                        f"{m.revision} its label was computed on; relabel it (mll label) and "
                        "select again")
                weights = res.weights
                if needs_config and m.config_sha256 is None:
                    m = replace(m, config_sha256=config_digest(res))
            if m.weights_sha256 is None and weights is not None:
                m = replace(m, weights_sha256=weights_digest(weights, m.ref))
            if needs_config and m.config_sha256 is None and config is not None:
                m = replace(m, config_sha256=sha256_file(config))
        if m.weights_sha256 is None or (needs_config and m.config_sha256 is None):
            raise MemberWeightsChanged(
                f"member {m.ref}: its weights and config are not here to pin (a Hub model "
                "outside the Hub cache); load it once here (mll label, which is a no-op for a "
                "labelled model, or huggingface-cli download) and register again")
        members.append(m)
    return replace(spec, members=members)


def check_pins(m: Member, res: Any) -> None:
    """Refuse a member whose weights or config are not the ones ``m`` pinned.

    Raises:
        MemberWeightsChanged: a file's sha256 is not the pinned one, or a pin is missing.
    """
    from mll_registry.models.refs import config_digest, weights_digest

    weights: Path = res.weights
    if m.weights_sha256 is None:
        raise MemberWeightsChanged(f"member {m.ref} is not pinned by the sha256 of its weights; "
                                   "register the ensemble again (mll select --register)")
    got = weights_digest(weights, m.ref)
    if got != m.weights_sha256:
        raise MemberWeightsChanged(
            f"member {m.ref}: its weights file {weights.name} has sha256 {got[:16]}..., not the "
            f"{m.weights_sha256[:16]}... this ensemble was selected with; the model changed since. "
            "Select and register the ensemble again, or restore the pinned weights")
    got_cfg = config_digest(res)
    if got_cfg != m.config_sha256:
        raise MemberWeightsChanged(
            f"member {m.ref}: its config (open_clip_config.json) has sha256 "
            f"{(got_cfg or 'none')[:16]}..., not the {(m.config_sha256 or 'none')[:16]}... this "
            "ensemble was selected with; the model changed since. Select and register the "
            "ensemble again, or restore the pinned config")
