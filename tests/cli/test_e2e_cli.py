"""End to end through the CLI on real trained demo-hub models: label -> select -> reuse.

A small graph (the pets and vehicles concepts of the demo, sample styles only) keeps it quick; the
models are the committed, genuinely trained demo hub.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import missing_demo_hub, missing_sources
from typer.testing import CliRunner

from mll_registry.cli.main import app
from mll_registry.demo import sources as S

pytestmark = pytest.mark.slow
runner = CliRunner()


def _demo_models(n: int = 3) -> list[Path]:
    from mll_registry.demo.hub import demo_model_dirs

    try:
        dirs = demo_model_dirs()
    except FileNotFoundError:
        missing_demo_hub()
    want = ["vit-all-colour", "vit-animals", "resnet-travel"]
    return ([d for d in dirs if d.name in want] + [d for d in dirs if d.name not in want])[:n]


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if S.missing_sources():
        missing_sources()
    from mll_registry.demo.data import ensure_demo_images, load_concepts
    from mll_registry.demo.tasks import ensure_demo_tasks
    from mll_registry.graph import wordnet as W

    tmp = tmp_path_factory.mktemp("world")
    tasks = {p.stem: p for p in ensure_demo_tasks(names=["pets", "vehicles"])}
    renders = {r.style: Path(r.path) for r in ensure_demo_images(("noto", "symbola"))}
    keep = {c.synset for c in load_concepts() if c.group in ("animal", "vehicle")}
    for style, root in renders.items():
        for syn in keep:
            wnid = W.wnid(W.synset(syn))
            shutil.copytree(root / wnid, tmp / "src" / style / wnid)
    res = runner.invoke(app, ["graph", "build", "-s", f"noto={tmp / 'src' / 'noto'}",
                              "-s", f"symbola={tmp / 'src' / 'symbola'}",
                              "--describe", "noto=colour emoji",
                              "--describe", "symbola=black-and-white line drawing",
                              "--out", str(tmp / "graph"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["source_descriptions"] == {
        "noto": "colour emoji", "symbola": "black-and-white line drawing"}
    return {"graph": tmp / "graph", "tmp": tmp, **tasks}


@pytest.fixture(scope="module")
def labelled(small_world: dict[str, Path]) -> list[dict]:
    dirs = _demo_models()  # several refs: one labelling pass (each image decoded once)
    res = runner.invoke(app, ["label", *[f"local-dir:{d}" for d in dirs], "--graph",
                              str(small_world["graph"]), "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["failed"] == {} and len(out["labels"]) == len(dirs) > 1
    return list(out["labels"])


def test_label_summary(labelled: list[dict], small_world: dict[str, Path]) -> None:
    g = json.loads(runner.invoke(app, ["graph", "info", str(small_world["graph"]),
                                       "--json"]).stdout)
    for s in labelled:
        assert s["nodes"] == g["nodes"] and s["images"] == g["images"]
        assert s["graph_version"] == g["version"]
        assert s["images_per_s"] > 0 and Path(s["path"], "scores.safetensors").is_file()
        # trained models: far above chance over all nodes (chance = 1 / nodes)
        assert s["mean_acc1"] > 5 / s["nodes"]
        assert s["bytes_per_image"] < 300  # K=64 nodes per image + member scores


def test_select_json(labelled: list[dict], small_world: dict[str, Path]) -> None:
    res = runner.invoke(app, ["select", "--task", str(small_world["pets"]), "--graph",
                              str(small_world["graph"]), "-k", "2", "--fallback", "margin",
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    task = yaml.safe_load(small_world["pets"].read_text())
    assert [c["class"] for c in out["classes"]] == task["classes"]
    assert out["models_considered"] == len(labelled)
    # the defaults (pooled votes at the labels' calibrated scales), the margin rule turned on
    assert out["params"]["reuse_mode"] == "pooled" and out["params"]["fallback_z"] == 2.0
    assert out["params"]["calibration"] == "graph"
    for c in out["classes"]:
        assert len(c["models"]) == 2
        if c["fell_back"]:  # the task-level order: the task's model first, the class's own not
            assert c["models"][0]["model"] == c["task_model"] != c["own_model"]
            assert c["margin"] <= 2.0 * c["margin_se"]
        else:  # its own ranking by the reuse metric
            assert c["models"][0]["model"] == c["own_model"]
            assert c["models"][0]["reuse"] >= c["models"][1]["reuse"]
            assert c["own_model"] == c["task_model"] or c["margin"] > 2.0 * c["margin_se"]
        assert len(c["nodes"]) == 5
        assert c["nodes"][0]["similarity"] >= c["nodes"][-1]["similarity"]
    dog = next(c for c in out["classes"] if c["class"] == "dog")
    assert any(n["node"] == "dog.n.01" for n in dog["nodes"])
    assert out["params"]["alpha"] == 0.7 and out["params"]["embedding_model"] == "all-MiniLM-L6-v2"
    assert out["params"]["source_weights"]["weights"] == {"noto": 0.5, "symbola": 0.5}  # default
    # domain-aware: the pets task's "cartoon emoji" is nearer "colour emoji" than line drawings
    res = runner.invoke(app, ["select", "--task", str(small_world["pets"]), "--graph",
                              str(small_world["graph"]), "--source-weighting", "domain",
                              "--no-log"])
    assert res.exit_code == 0, res.output
    assert "weighted by the domain 'cartoon emoji'" in res.output
    w = re.search(r"noto (\d\.\d\d), symbola (\d\.\d\d)", res.output)
    assert w and float(w[1]) > 0.9 > 0.1 > float(w[2]), res.output
    res = runner.invoke(app, ["select", "--task", str(small_world["pets"]), "--graph",
                              str(small_world["graph"]), "--source-weighting", "softmax"])
    assert res.exit_code == 2 and "source_weighting" in res.output


def test_reuse_json_measures_ensemble_and_each_model(labelled: list[dict],
                                                     small_world: dict[str, Path]) -> None:
    res = runner.invoke(app, ["reuse", "--task", str(small_world["vehicles"]), "--graph",
                              str(small_world["graph"]), "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    n_cls = len(yaml.safe_load(small_world["vehicles"].read_text())["classes"])
    assert out["images"] == n_cls * 6
    assert 0.0 <= out["ensemble"]["top1"] <= out["ensemble"]["top5"] <= 1.0
    assert out["ensemble"]["top1"] > 2 / n_cls  # well above chance on unseen target images
    assert set(out["per_model"]) == set(out["models_used"])
    assert len(out["ensemble"]["per_class"]) == n_cls


def test_bad_task_inputs_are_clear(labelled: list[dict], small_world: dict[str, Path]) -> None:
    tmp, graph = small_world["tmp"], str(small_world["graph"])
    empty = tmp / "empty.yaml"
    empty.write_text("name: empty\nclasses: []\n")
    res = runner.invoke(app, ["select", "--task", str(empty), "--graph", graph])
    assert res.exit_code == 2 and "no classes" in res.output
    dup = tmp / "dup.yaml"
    dup.write_text("name: dup\nclasses: [dog, Dog]\n")
    res = runner.invoke(app, ["select", "--task", str(dup), "--graph", graph])
    assert res.exit_code == 2 and "twice" in res.output
    nodata = tmp / "nodata.yaml"
    nodata.write_text(f"name: nodata\nclasses: [dog]\ndata: {tmp / 'missing'}\n")
    res = runner.invoke(app, ["reuse", "--task", str(nodata), "--graph", graph])
    assert res.exit_code == 2 and "does not exist" in res.output
    extra = tmp / "extra.yaml"
    pets = yaml.safe_load(small_world["pets"].read_text())
    extra.write_text(yaml.safe_dump({**pets, "classes": pets["classes"][:-1]}))
    res = runner.invoke(app, ["reuse", "--task", str(extra), "--graph", graph])
    assert res.exit_code == 2 and "does not name" in res.output
    res = runner.invoke(app, ["select", "--task", str(small_world["pets"]), "--graph", graph,
                              "--data-dir", str(tmp / "fresh-data")])
    assert res.exit_code == 2 and "no labelled models" in res.output


def test_weak_match_is_flagged(labelled: list[dict], small_world: dict[str, Path]) -> None:
    odd = small_world["tmp"] / "odd.yaml"
    odd.write_text("name: odd\ndomain: emoji\nclasses: [dog, quantum chromodynamics]\n")
    res = runner.invoke(app, ["select", "--task", str(odd), "--graph", str(small_world["graph"]),
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["weak_matches"] == ["quantum chromodynamics"]
    assert [c["weak_match"] for c in out["classes"]] == [False, True]


def test_warm_queries_and_selection_load_neither_mlflow_nor_wordnet_nor_the_text_model(
        labelled: list[dict], small_world: dict[str, Path]) -> None:
    """Second time round, `query best`, `query label` and `select` answer from the label index,
    the label download cache and the text caches: the same answers as the first (cold) process,
    without importing MLflow, nltk or sentence-transformers."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from mll_registry.app.root import App\n"
        "a = App.configured()\n"
        f"g = a.graphs.get({str(small_world['graph'])!r})\n"
        f"best = [h.name for h in a.queries.best('dog.n.01', graph={str(small_world['graph'])!r})"
        ".models]\n"
        "v, summary = a.queries.label(best[0], g)\n"
        f"sel = a.selection.select({str(small_world['pets'])!r}, g)\n"
        "if sys.argv[1:] == ['cold']:  # the index was checked just now: fresh for the warm run\n"
        f"    a.queries.best('dog.n.01', graph={str(small_world['graph'])!r}, refresh=True)\n"
        "print(json.dumps({'best': best, 'label': [v.name, v.version, "
        "round(float(summary['acc1'].mean()), 6)], 'chosen': sel.result.chosen.tolist(), "
        "'models': sel.result.models, 'modules': sorted(sys.modules)}))\n")

    def run(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    cold, warm = run("cold"), run()
    for k in ("best", "label", "chosen", "models"):
        assert warm[k] == cold[k], k
    assert len(cold["best"]) == len(labelled)
    heavy = [m for m in warm["modules"]
             if m.split(".")[0] in ("mlflow", "nltk", "sentence_transformers", "transformers")]
    assert heavy == []
    assert any(m.startswith("mlflow") for m in cold["modules"])  # the cold path did use it
