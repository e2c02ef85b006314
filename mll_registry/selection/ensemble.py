"""A selection as a deployable model: the ensemble spec, its predictor, and the MLflow
``python_function`` loader (issue #28).

A selection ends as an :class:`EnsembleSpec` (``ensemble.json``): every member's MODEL_REF with
the revision and label it was selected on and the sha256 of its weights file (checked whenever
the member is loaded), the logit scale reuse takes for it, the task's
classes and prompts, the reuse mode, the per-class members and the vote weights. It holds no
code and no pickle: :func:`_load_pyfunc` (MLflow's ``loader_module`` protocol) reads the JSON and
loads each member through the same safe loader as labelling (safetensors only, configs checked,
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
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mll_registry.errors import MLLError

ENSEMBLE_FORMAT = "mll-ensemble/1"
SPEC_FILE = "ensemble.json"
MEMBERS_DIR = "members"  # bundled member weights, one folder per member (``members/<i>/``)
IMAGE_COLUMN = "image"  # the input column: a path, raw bytes or a base64 string per row
MAX_BATCH = 256  # images per forward pass of a member


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
    def from_json(cls, text: str) -> EnsembleSpec:
        """Parse and check a spec.

        Raises:
            EnsembleInputError: another format, or members, classes and routes that disagree.
        """
        d = json.loads(text)
        if not isinstance(d, dict) or d.get("format") != ENSEMBLE_FORMAT:
            raise EnsembleInputError(f"not an {ENSEMBLE_FORMAT} spec (format "
                                     f"{d.get('format') if isinstance(d, dict) else None!r})")
        spec = cls(**{**d, "members": [Member(**m) for m in d["members"]]})
        M, C = len(spec.members), len(spec.classes)
        bad = (len(spec.chosen) != C or any(not 0 <= m < M for row in spec.chosen for m in row)
               or (spec.routing is not None and (len(spec.routing) != M or
                                                  any(len(r) != C for r in spec.routing))))
        if bad or M == 0 or C < 2:
            raise EnsembleInputError(f"inconsistent ensemble spec: {M} members, {C} classes, "
                                     f"routes {len(spec.chosen)}")
        return spec


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
            weights_file=meta.get("weights_file"), weights_sha256=meta.get("weights_sha256")))
    p = selection.params
    return EnsembleSpec(task=selection.task, classes=list(selection.classes),
                        prompts=list(prompts), weighting=weighting,
                        reuse_mode=selection.reuse_mode, calibration=selection.calibration,
                        members=members, chosen=chosen, routing=routing,
                        k=int(selection.chosen.shape[1]), alpha=p.get("alpha"),
                        graph_version=p.get("graph_version"))


def decode(item: Any, row: int = 0) -> io.BytesIO | Path:
    """One input image as something :func:`mll_registry.errors.open_image` reads: raw bytes, a
    base64 string, or a path (str or Path) to an image file.

    Raises:
        EnsembleInputError: neither, or a path that is no file.
    """
    if isinstance(item, bytes | bytearray):
        return io.BytesIO(bytes(item))
    if isinstance(item, Path):
        item = str(item)
    if isinstance(item, str):
        if len(item) < 4096 and os.path.isfile(item):
            return Path(item)
        try:
            return io.BytesIO(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise EnsembleInputError(
                f"row {row}: not an image path that exists here, nor base64 image bytes; send "
                "file paths, raw bytes or base64-encoded image files") from None
    raise EnsembleInputError(f"row {row}: an image is a path, bytes or a base64 string, got "
                             f"{type(item).__name__}")


class Ensemble:
    """The deployed selection: members loaded once (``load``: MODEL_REF or folder -> a loaded
    model), their class-text embeddings computed once, images scored in batches."""

    def __init__(self, spec: EnsembleSpec, load: Callable[[int, Member], Any]) -> None:
        self.spec = spec
        self._load = load
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
            EnsembleInputError: an input is no image (named by row), or there is none.
        """
        import torch

        from mll_registry.errors import ImageFileError
        from mll_registry.labels.calibration import probabilities
        from mll_registry.labels.labeller import encode_pixels
        from mll_registry.models.image_stream import PixelPipeline
        from mll_registry.selection.reuse import ensemble_scores

        if len(images) == 0:
            raise EnsembleInputError("no images to score: send at least one")
        sources = [decode(x, i) for i, x in enumerate(images)]
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
                        rows.append(pipe(src))  # type: ignore[arg-type]
                    except ImageFileError as exc:
                        raise EnsembleInputError(f"row {r}: {exc}".replace(
                            "<_io.BytesIO object", "<bytes")) from None
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
    column), a list, or one image.

    Raises:
        EnsembleInputError: a DataFrame without that column or with unknown ones.
    """
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        cols = list(model_input.columns)
        if cols == [IMAGE_COLUMN] or (len(cols) == 1 and cols[0] == 0):
            return list(model_input.iloc[:, 0])
        raise EnsembleInputError(f"expected one column {IMAGE_COLUMN!r} of image paths, bytes "
                                 f"or base64 strings; got columns {cols[:5]}")
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
    the pinned revision), through the safe loader either way."""
    from mll_registry.models.loading import load

    base = Path(path) / MEMBERS_DIR

    def load_member(i: int, m: Member) -> Any:
        folder = base / str(i)
        lm = load(f"local-dir:{folder}" if folder.is_dir() else pinned(m), device=device)
        check_weights(m, lm.resolved.weights)
        return lm

    return load_member


def pin_weights(spec: EnsembleSpec) -> EnsembleSpec:
    """``spec`` with every member's ``weights_sha256`` filled in where its label did not record
    one (labels from before the pin): local members from their files (refused when those no
    longer hold the revision the label was computed on), Hub members from the Hub cache at
    their revision (left unpinned when not cached there: nothing is downloaded).

    Raises:
        MemberWeightsChanged: a local member's files changed since it was labelled.
    """
    from mll_registry.models.refs import ModelRef, resolve, weights_digest

    members = []
    for m in spec.members:
        if m.weights_sha256 is None:
            r = ModelRef.parse(m.ref)
            path: Path | None = None
            if r.scheme == "hf-hub":
                from huggingface_hub import try_to_load_from_cache

                hit = try_to_load_from_cache(r.name, m.weights_file or "",
                                             revision=r.revision or m.revision)
                path = Path(hit) if isinstance(hit, str) and m.weights_file else None
            else:
                res = resolve(r)
                if m.revision and res.revision != m.revision:
                    raise MemberWeightsChanged(
                        f"member {m.ref}: its files are now revision {res.revision}, not the "
                        f"{m.revision} its label was computed on; relabel it (mll label) and "
                        "select again")
                path = res.weights
            if path is not None:
                m = replace(m, weights_sha256=weights_digest(path, m.ref))
        members.append(m)
    return replace(spec, members=members)


def check_weights(m: Member, weights: Path) -> None:
    """Refuse weights other than those ``m`` pinned (no pin: nothing to check).

    Raises:
        MemberWeightsChanged: the file's sha256 is not the pinned one.
    """
    from mll_registry.models.refs import weights_digest

    if m.weights_sha256 is None:
        return
    got = weights_digest(weights, m.ref)
    if got != m.weights_sha256:
        raise MemberWeightsChanged(
            f"member {m.ref}: its weights file {weights.name} has sha256 {got[:16]}..., not the "
            f"{m.weights_sha256[:16]}... this ensemble was selected with; the model changed since. "
            "Select and register the ensemble again, or restore the pinned weights")


def _load_pyfunc(data_path: str) -> PyfuncEnsemble:
    """MLflow's ``loader_module`` entry: the ensemble saved at ``data_path``."""
    spec = EnsembleSpec.from_json((Path(data_path) / SPEC_FILE).read_text(encoding="utf-8"))
    return PyfuncEnsemble(Ensemble(spec, loader(data_path)))
