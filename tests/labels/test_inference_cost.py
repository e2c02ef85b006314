"""Each label records what its model costs per image (issue #41 item 2): parameters, GFLOPs by
PyTorch's FlopCounterMode, measured ms. The GFLOPs are checked against a count by hand from
the ViT's shapes; the label, its registry version, `mll query label` and the card carry them."""

from __future__ import annotations

from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "demo_hub" / "mll-demo"


def _vit_gflops_by_hand(cfg: dict) -> float:
    """FLOPs (2 per multiply-add) of one image through an open_clip ViT image tower: patch
    embedding, per layer QKV + attention scores + attention x V + out projection + a 4x MLP,
    and the final projection (layer norms, softmax and biases left out: under 1 %)."""
    v = cfg["model_cfg"]["vision_cfg"]
    w, layers, p, size = v["width"], v["layers"], v["patch_size"], v["image_size"]
    e = cfg["model_cfg"]["embed_dim"]
    patches = (size // p) ** 2
    n = patches + 1  # the class token
    macs = patches * 3 * p * p * w + layers * (12 * n * w * w + 2 * n * n * w) + w * e
    return 2 * macs / 1e9


def test_gflops_count_every_block_of_the_image_tower() -> None:
    """The attention blocks included: nn.MultiheadAttention's fused inference path has no
    FLOP formula in PyTorch's counter and would count as 0 (measured: 0.0372 instead of
    0.0586 GFLOPs for this model)."""
    import json

    from mll_registry.models.cost import image_gflops, measure_cost
    from mll_registry.models.loading import load

    folder = DEMO / "vit-animals"
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    lm = load(f"local-dir:{folder}", device="cpu")
    want = _vit_gflops_by_hand(cfg)
    assert image_gflops(lm.model) == pytest.approx(want, rel=0.01)
    cost = measure_cost(lm.model)
    assert cost.gflops == pytest.approx(want, rel=0.01)
    assert cost.params == sum(p.numel() for p in lm.model.parameters())
    assert cost.image_params == sum(p.numel() for p in lm.model.visual.parameters())
    assert cost.input_size == (64, 64) and cost.ms_per_image > 0


def test_a_label_carries_its_cost_to_the_registry_query_and_card(tree: Path,
                                                                 tmp_path: Path) -> None:
    import json

    from conftest import label_and_register

    from mll_registry.app.root import App
    from mll_registry.graph.bundle import SampleDataset, build_graph
    from mll_registry.hub.cards import mll_metadata, render_section
    from mll_registry.labels.format import ModelLabel
    from mll_registry.labels.labeller import LabelConfig
    from mll_registry.registry.labels import Registry
    from mll_registry.settings import Settings

    graph = build_graph([SampleDataset("A", tree / "A")])[0]
    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", root=tmp_path / "data")
    folder = DEMO / "vit-animals"
    out = label_and_register(f"local-dir:{folder}", graph, LabelConfig(top_k=4, device="cpu"),
                             registry)
    label = ModelLabel.load(out["path"])
    want = _vit_gflops_by_hand(json.loads((folder / "open_clip_config.json").read_text()))
    cost = label.meta["cost"]
    assert cost["gflops"] == pytest.approx(want, rel=0.01) and cost["device"] == "cpu"
    app = App(Settings(data_dir=str(tmp_path / "data"), device="cpu"), registry=registry,
              label_stores={"registry": registry})
    v = app.queries.label(f"local-dir:{folder}", graph)[0]  # from the label index
    assert v.cost == {"params": cost["params"], "gflops": cost["gflops"],
                      "ms_per_image": cost["ms_per_image"]}
    assert v.to_dict()["cost"] == v.cost  # what `mll query label --json` prints
    section = render_section(label)
    assert f"{cost['gflops']:.4g} GFLOPs" in section and "image tower at 64x64" in section
    assert mll_metadata(label)["inference_cost"]["gflops"] == cost["gflops"]
