"""Multi-model labelling passes: each graph image decoded once for every model of a pass, every
label byte-identical to the label of a run of its own, per-model resume, grouping by weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mll_registry.demo.archs import build_tiny
from mll_registry.graph.bundle import GraphConfig, SampleDataset, build_graph
from mll_registry.labels.labeller import (
    LabelConfig,
    clear_checkpoints,
    label_model,
    label_models,
    label_refs,
    pass_groups,
)
from mll_registry.models.image_stream import PixelPipeline
from mll_registry.models.loading import load, save_open_clip_dir


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two models sharing one preprocess (64 px) and one with another (48 px)."""
    hub = tmp_path_factory.mktemp("hub")
    out = []
    for name, arch, seed, size in (("vit", "tiny-vit", 3, 64), ("resnet", "tiny-resnet", 4, 64),
                                   ("vit48", "tiny-vit", 5, 48)):
        model, cfg = build_tiny(arch, seed=seed)
        if size != 64:
            import open_clip

            cfg["vision_cfg"]["image_size"] = size
            model = open_clip.model.CLIP(**cfg).eval()
        out.append(save_open_clip_dir(model, cfg, hub / name))
    return out


@pytest.fixture()
def graph(tree: Path):
    g, _ = build_graph([SampleDataset("A", tree / "A"), SampleDataset("B", tree / "B")],
                       GraphConfig())
    return g


@pytest.fixture()
def decodes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts image decodes by preprocess key (decoding in this process: decode_workers=0)."""
    counts: dict[str, int] = {}
    real = PixelPipeline.__call__

    def counting(self: PixelPipeline, path: Path) -> np.ndarray:
        counts[self.key] = counts.get(self.key, 0) + 1
        return real(self, path)

    monkeypatch.setattr(PixelPipeline, "__call__", counting)
    return counts


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != "meta.json"}


def test_one_pass_decodes_each_image_once_and_labels_as_runs_of_their_own(
        model_dirs: list[Path], graph, tmp_path: Path, decodes: dict[str, int]) -> None:
    cfg = LabelConfig(top_k=4, batch_size=4, chunk_size=4, decode_workers=0, device="cpu")
    refs = [f"local-dir:{d}" for d in model_dirs]
    n = len(graph.images)
    together = label_refs(refs, graph, cfg, [tmp_path / "pass" / str(i) for i in range(3)])
    # two preprocesses: one pass each, each image decoded once per pass (not once per model)
    assert sorted(decodes.values()) == [n, n]
    assert [run.label.meta["timings"]["pass_models"] for run, _ in together] == [2, 2, 1]
    decodes.clear()
    for i, ref in enumerate(refs):
        run, path = label_refs([ref], graph, cfg, [tmp_path / "alone" / str(i)])[0]
        assert run.label.meta["timings"]["pass_models"] == 1
        # the label files and the embeddings file are the same bytes
        assert _files(path) == _files(together[i][1]), ref
        assert run.embeddings is not None and together[i][0].embeddings is not None
        assert run.embeddings.read_bytes() == together[i][0].embeddings.read_bytes()
    assert sum(decodes.values()) == 3 * n  # alone: every model decodes the graph again


def test_an_interrupted_pass_resumes_per_model(model_dirs: list[Path], graph) -> None:
    cfg = LabelConfig(top_k=4, batch_size=2, chunk_size=2, decode_workers=0, device="cpu")
    lms = [load(f"local-dir:{d}", device="cpu") for d in model_dirs[:2]]
    seen: list[int] = []

    class Boom(Exception):
        pass

    def interrupt(chunk: int) -> None:
        seen.append(chunk)
        if len(seen) == 3:  # chunk 0 of both models, then chunk 1 of the first only
            raise Boom

    with pytest.raises(Boom):
        label_models(lms, graph, cfg, on_chunk=interrupt)
    resumed = label_models(lms, graph, cfg)
    assert [(r.chunks_reused, r.chunks_computed) for r in resumed] == [(2, 1), (1, 2)]
    for lm, run in zip(lms, resumed, strict=True):
        clear_checkpoints(lm, graph)
        fresh = label_model(lm, graph, cfg)
        for k in ("topk_idx", "topk_score", "member_score"):
            np.testing.assert_array_equal(getattr(run.label, k), getattr(fresh.label, k))
        assert run.label.summary.equals(fresh.label.summary)


def test_pass_groups_fill_the_budget_in_order() -> None:
    gb = 10**9
    assert pass_groups([gb, gb, gb, gb], 2.5) == [[0, 1], [2, 3]]
    assert pass_groups([gb, 3 * gb, gb], 2.0) == [[0], [1], [2]]  # too big: a pass of its own
    assert pass_groups([gb // 2] * 5, 4.0) == [[0, 1, 2, 3, 4]]
    assert pass_groups([], 1.0) == []


def test_label_many_stores_each_skips_the_stored_and_a_bad_model_fails_alone(
        model_dirs: list[Path], graph, tmp_path: Path, decodes: dict[str, int]) -> None:
    """Through the app and the CLI: a broken model and a missing folder fail alone, with their
    errors; the stored label is skipped; the others are labelled in one pass per preprocess."""
    import json
    import shutil

    from typer.testing import CliRunner

    from mll_registry.app.root import App
    from mll_registry.cli.main import app as cli
    from mll_registry.graph.bundle import SemanticGraph
    from mll_registry.settings import Settings

    broken = tmp_path / "broken"
    shutil.copytree(model_dirs[0], broken)
    (broken / "open_clip_model.safetensors").write_bytes(b"not safetensors")
    refs = [f"local-dir:{d}" for d in model_dirs]
    a = App(Settings(data_dir=str(tmp_path / "data"), label_store="local", device="cpu",
                     decode_workers=0, top_k=4, pass_model_gb=1.0))
    first = a.labelling.label(refs[1], graph).to_dict()
    assert first["status"] == "labelled"
    decodes.clear()
    outcomes, errors = a.labelling.label_many(
        [refs[0], f"local-dir:{broken}", refs[1], f"local-dir:{tmp_path / 'none'}", refs[2]],
        graph)
    assert set(errors) == {f"local-dir:{broken}", f"local-dir:{tmp_path / 'none'}"}
    assert all(e and "\n" not in e for e in errors.values())
    assert [o.status for o in outcomes] == ["labelled", "skipped", "labelled"]
    n = len(graph.images)
    # the broken model failed to load, alone: the others kept their passes, one per preprocess
    assert sorted(decodes.values()) == [n, n]
    alone = a.labelling.label(refs[0], graph, out=tmp_path / "alone").to_dict()
    assert _files(Path(outcomes[0].run["path"])) == _files(tmp_path / "alone")
    assert alone["status"] == "labelled"

    graph_dir = tmp_path / "graph"
    graph.save(graph_dir)
    assert SemanticGraph.load(graph_dir).version == graph.version
    r = CliRunner().invoke(cli, ["label", refs[2], f"local-dir:{broken}", "--graph",
                                 str(graph_dir), "--no-register", "--json", "--top-k", "4",
                                 "--data-dir", str(tmp_path / "data")])
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert [x["status"] for x in out["labels"]] == ["skipped"]
    assert list(out["failed"]) == [f"local-dir:{broken}"]
