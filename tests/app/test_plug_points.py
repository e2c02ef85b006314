"""Each plug point works from outside the package: a separate distribution (a ``*.dist-info``
with ``entry_points.txt`` on ``sys.path``, as ``pip install`` would leave it) adds a model scheme,
a label store and a benchmark method, and the library finds them by name without being edited.

Each check runs in a fresh interpreter so the entry points are read as a user's process reads
them (the port tables cache what they found).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "demo_hub" / "mll-demo" / "vit-animals"

PLUGIN = '''
"""A company's plug-ins, outside mll_registry."""
from pathlib import Path

from mll_registry.evaluation.bench import BenchMethod
from mll_registry.labels.stores import LocalLabelStore
from mll_registry.models.refs import ModelRef
from mll_registry.models.schemes import LocalDirScheme

ZOO = Path(__file__).resolve().parent / "zoo"


class ZooScheme(LocalDirScheme):
    """``zoo:NAME``: a model of the company zoo folder."""

    def parse(self, rest, ref):
        return ModelRef("zoo", rest)

    def resolve(self, ref, *, allow_pickle, cache_dir):
        local = super().resolve(ModelRef("local-dir", str(ZOO / ref.name)),
                                allow_pickle=allow_pickle, cache_dir=cache_dir)
        return type(local)(ref, local.path, local.weights, local.revision, local.config)

    def registered_name(self, ref):
        return "zoo--" + ref.name


class ShelfStore(LocalLabelStore):
    """Labels on the company shelf (a sub-folder of the data dir)."""

    def __init__(self, root=None):
        super().__init__(root)
        self.base = self.base.parent / "shelf"


ZOO_SCHEME = ZooScheme()


def _worst(ev):
    """The single model worst on the task (a floor beside the oracles' ceilings)."""
    ref = min(ev.top1, key=ev.top1.get)
    return ev.correct_of(ref), ref


WORST = BenchMethod("Worst single", _worst, reference=True)
'''


def _distribution(tmp: Path) -> Path:
    site = tmp / "site"
    (site / "acme_mll").mkdir(parents=True)
    (site / "acme_mll" / "__init__.py").write_text(PLUGIN)
    (site / "acme_mll" / "zoo").mkdir()
    (site / "acme_mll" / "zoo" / "cat-model").symlink_to(MODEL, target_is_directory=True)
    info = site / "acme_mll-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-mll\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[mll_registry.schemes]\nzoo = acme_mll:ZOO_SCHEME\n\n"
        "[mll_registry.label_stores]\nshelf = acme_mll:ShelfStore\n\n"
        "[mll_registry.bench_methods]\nworst = acme_mll:WORST\n")
    return site


def _run(site: Path, code: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, cwd=site, env={"PYTHONPATH": f"{site}:{REPO}",
                                                   "PATH": "/usr/bin:/bin", "HOME": str(site)})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_model_scheme_from_another_package_resolves_by_name(tmp_path: Path) -> None:
    site = _distribution(tmp_path)
    got = _run(site, """
        import json
        from mll_registry.models.refs import SCHEMES, ModelRef, resolve
        from mll_registry.models.schemes import LocalDirScheme
        res = resolve("zoo:cat-model")
        print(json.dumps({"names": SCHEMES.names(), "ref": str(ModelRef.parse("zoo:cat-model")),
                          "weights": str(res.weights), "revision": res.revision,
                          "name": SCHEMES.get("zoo").registered_name(res.ref)}))
    """)
    import hashlib

    digest = hashlib.sha256((MODEL / "open_clip_model.safetensors").read_bytes()).hexdigest()
    assert "zoo" in got["names"] and {"hf-hub", "local-dir", "open_clip"} <= set(got["names"])
    assert got["ref"] == "zoo:cat-model"
    assert Path(str(got["weights"])).resolve() == (MODEL / "open_clip_model.safetensors").resolve()
    assert got["revision"] == "sha256:" + digest[:16]  # the weights' content, as local-dir
    assert got["name"] == "zoo--cat-model"


def test_a_label_store_from_another_package_is_found_by_name(tmp_path: Path) -> None:
    site = _distribution(tmp_path)
    data = tmp_path / "data"
    got = _run(site, f"""
        import json
        from mll_registry.labels.stores import LABEL_STORES
        store = LABEL_STORES.get("shelf")({str(data)!r})
        print(json.dumps({{"names": LABEL_STORES.names(), "base": str(store.base),
                          "type": type(store).__module__ + "." + type(store).__name__,
                          "listed": {{k: str(v) for k, v in store.list_labels("0" * 16).items()}}}}))
    """)
    assert got["names"] == ["local", "registry", "shelf"]
    assert got["type"] == "acme_mll.ShelfStore"
    assert Path(str(got["base"])) == data.resolve() / "shelf"
    assert got["listed"] == {}


def test_an_unknown_scheme_lists_the_plugged_in_one(tmp_path: Path) -> None:
    site = _distribution(tmp_path)
    got = _run(site, """
        import json
        from mll_registry.errors import ModelRefError
        from mll_registry.models.refs import ModelRef
        try:
            ModelRef.parse("nope:x")
        except ModelRefError as exc:
            print(json.dumps({"error": str(exc)}))
    """)
    assert "zoo:" in str(got["error"]) and "hf-hub:" in str(got["error"])


def test_a_bench_method_from_another_package_is_a_column_after_the_built_ins(tmp_path: Path) -> None:
    site = _distribution(tmp_path)
    got = _run(site, """
        import json
        import numpy as np
        from mll_registry.evaluation.bench import (METHODS, BenchMethod, TaskEvidence, _columns,
                                                   bench_methods)
        from mll_registry.task import Task, TaskClass
        methods = bench_methods()
        probs = [np.eye(2)[[0, 0, 1, 1]], np.eye(2)[[1, 1, 1, 0]], np.eye(2)[[0, 0, 1, 0]]]
        ev = TaskEvidence(Task("t", [TaskClass("a"), TaskClass("b")]), ["m1", "m2", "m3"],
                          probs, np.array([0, 0, 1, 1]), {"m1": 1.0, "m2": 0.25, "m3": 0.75},
                          "m1", {}, "m3", np.zeros((3, 2)), "inverse_entropy")
        plugged = methods[-1]
        correct, chosen = plugged.pick(ev)
        print(json.dumps({"columns": list(_columns(methods)), "builtin": list(METHODS),
                          "pick": [correct.tolist(), chosen], "reference": plugged.reference}))
    """)
    assert got["columns"] == [*got["builtin"], "Worst single"]  # built-ins first, in order
    assert got["pick"] == [[False, False, True, False], "m2"] and got["reference"] is True
