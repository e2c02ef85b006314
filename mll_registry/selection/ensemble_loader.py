"""MLflow's ``loader_module`` for MLL ensembles (``python_function`` flavour): what
``mlflow.pyfunc.load_model`` calls for a version this tool saved, and what `mll serve` hands to
MLflow's scoring server. It checks the whole model folder first
(:func:`~mll_registry.selection.ensemble_trust.verify_model_dir`), then builds the
:class:`~mll_registry.selection.ensemble.Ensemble` with every request held to the
``serve_max_*`` settings.
"""

from __future__ import annotations

from mll_registry.selection.ensemble import Ensemble, PyfuncEnsemble, RequestLimits, loader
from mll_registry.selection.ensemble_trust import model_root, verify_model_dir


def _load_pyfunc(data_path: str) -> PyfuncEnsemble:
    """MLflow's ``loader_module`` entry: the ensemble saved at ``data_path``."""
    from mll_registry.settings import load_settings

    s = load_settings()
    spec = verify_model_dir(model_root(data_path), max_model_gb=s.max_model_gb)
    return PyfuncEnsemble(Ensemble(spec, loader(data_path), RequestLimits.from_settings(s)))
