"""What ``mlflow.pyfunc.load_model("models:/NAME@labeled")`` gives: the label reader.

A labelled model version is an MLflow model whose artifacts are the label files (``label/``) and
an ``MLmodel`` naming this module as its ``python_function`` loader (no pickle: MLflow imports
this module and calls :func:`_load_pyfunc`). ``predict`` takes concepts (graph node ids; a
DataFrame with a ``concept`` column, a Series, or a list) and returns the model's measured
ability on each: accuracy@1, accuracy@5, mean own-concept similarity and the number of images.
The model itself (the open_clip weights) stays where its MODEL_REF points; the label is data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mll_registry.labels.format import ModelLabel

COLUMNS = ["concept", "acc1", "acc5", "mean_own", "n_images"]


class LabelReader:
    """A model label as an MLflow pyfunc: concepts in, measured per-concept ability out."""

    def __init__(self, label: ModelLabel) -> None:
        self.label = label
        self._table = label.summary.set_index("node_id")

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            concepts = model_input["concept" if "concept" in model_input else
                                   model_input.columns[0]].tolist()
        else:
            concepts = list(pd.Series(model_input).astype(str))
        rows = self._table.reindex(concepts)
        return pd.DataFrame({"concept": concepts, "acc1": rows["acc1"].to_numpy(),
                             "acc5": rows["acc5"].to_numpy(),
                             "mean_own": rows["mean_own"].to_numpy(),
                             "n_images": rows["n_images"].fillna(0).astype(int).to_numpy()})


def _load_pyfunc(data_path: str) -> LabelReader:
    """MLflow's loader hook: ``data_path`` is the model's ``label/`` directory."""
    return LabelReader(ModelLabel.load(Path(data_path)))


def write_mlflow_model(label_dir: Path, dest: Path) -> Path:
    """An MLflow model directory: ``label/`` (the files) + ``MLmodel`` (this loader)."""
    import shutil

    import mlflow.pyfunc
    from mlflow.models import Model

    shutil.copytree(label_dir, dest / "label")
    model = Model()
    mlflow.pyfunc.add_to_model(model, loader_module=__name__, data="label")
    model.save(str(dest / "MLmodel"))
    return dest
