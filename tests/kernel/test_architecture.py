"""The assembly layer's contracts: import boundaries, one source of settings, ports by name,
and a label identity that includes the label settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mll_registry.settings import DEFAULTS, Settings, SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo_hub" / "mll-demo"


# -- boundaries -----------------------------------------------------------------------------------
def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_cli_imports_neither_prefect_nor_flows() -> None:
    mods = _modules_after("import mll_registry.cli.main")
    bad = sorted(m for m in mods if m == "prefect" or m.startswith(("prefect.", "flows")))
    assert bad == []


def test_no_library_module_imports_prefect() -> None:
    """Every module of the library, imported, pulls in neither Prefect nor the flows."""
    import pkgutil

    import mll_registry

    names = [m.name for m in pkgutil.walk_packages(mll_registry.__path__, "mll_registry.")
             if not m.name.endswith(".__main__")]  # that one runs the CLI
    assert len(names) > 30
    mods = _modules_after("\n".join(f"import {n}" for n in names))
    assert sorted(m for m in mods if m == "prefect" or m.startswith(("prefect.", "flows"))) == []


# -- settings --------------------------------------------------------------------------------------
def test_settings_precedence_file_env_flags(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[project]\nname='x'\n[tool.mll]\nalpha = 0.5\ntop_n = 7\ntemplates = ['a {}.']\n")
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    s = load_settings(env={}, start=sub)  # found from a sub-directory, as ruff/pytest do
    assert (s.alpha, s.top_n, s.templates, s.k) == (0.5, 7, ("a {}.",), DEFAULTS.k)
    assert s.sources["alpha"].endswith("pyproject.toml")
    s = load_settings(env={"MLL_ALPHA": "0.6", "MLL_TEMPLATES": '["x {}", "y {}"]'}, start=sub)
    assert (s.alpha, s.templates, s.sources["alpha"]) == (0.6, ("x {}", "y {}"), "$MLL_ALPHA")
    s = load_settings({"alpha": 0.9, "top_n": None}, env={"MLL_ALPHA": "0.6"}, start=sub)
    assert (s.alpha, s.top_n) == (0.9, 7)  # a flag wins; an unset flag (None) does not
    (tmp_path / "mll.toml").write_text("k = 3\n")
    assert load_settings(env={}, start=tmp_path).k == 3  # mll.toml next to it wins over pyproject


@pytest.mark.parametrize(("content", "match"), [
    ("alfa = 0.5\n", "unknown mll setting"),
    ("alpha = 'high'\n", "alpha='high'"),
    ("alpha = 1.5\n", "alpha=1.5"),
    ("templates = ['no slot']\n", "templates"),
    ("top_k = 2.5\n", "top_k"),
])
def test_bad_settings_name_the_problem(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / "mll.toml").write_text(content)
    with pytest.raises(SettingsError, match=match):
        load_settings(env={}, start=tmp_path)


def test_label_hash_depends_only_on_label_content() -> None:
    base = Settings()
    assert Settings(batch_size=8, device="cpu", alpha=0.1).label_hash() == base.label_hash()
    assert Settings(top_k=32).label_hash() != base.label_hash()
    assert Settings(templates=("a {}.",)).label_hash() != base.label_hash()
    assert Settings(text_source="caption").label_hash() != base.label_hash()


def test_top_k_default_is_stated_once() -> None:
    """`mll label`, the flows and LabelConfig use the same default top-K: the settings'."""
    import inspect

    from mll_registry.app.root import App
    from mll_registry.cli import label as label_cli
    from mll_registry.labels.labeller import LabelConfig

    assert LabelConfig().top_k == DEFAULTS.top_k == 64
    assert App(Settings()).label_config().top_k == DEFAULTS.top_k
    assert inspect.signature(label_cli.label).parameters["top_k"].default is None  # unset -> settings
    src = (REPO / "flows" / "labeling.py").read_text() + (REPO / "prefect.yaml").read_text()
    assert "top_k" not in src  # the flows take it from the settings too


# -- ports -----------------------------------------------------------------------------------------
def test_plugin_tables_refuse_unknown_names_with_the_known_ones() -> None:
    from mll_registry.models.refs import ModelRef
    from mll_registry.plugins import PluginError
    from mll_registry.selection.matching import CAPTION_PROVIDERS

    with pytest.raises(PluginError, match="known: openai, wordnet"):
        CAPTION_PROVIDERS.get("gpt")
    with pytest.raises(ValueError, match="unknown scheme 's3'.*hf-hub:"):
        ModelRef.parse("s3:bucket/model")


@pytest.fixture()
def graph(tree: Path):
    from mll_registry.graph.bundle import SampleDataset, build_graph

    return build_graph([SampleDataset("A", tree / "A"), SampleDataset("B", tree / "B")])[0]


class CompanyStore:
    """A company model store: ``company:NAME`` -> a folder of the store (here the demo hub)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.resolved: list[str] = []

    def parse(self, rest: str, ref: str):
        from mll_registry.models.refs import ModelRef

        return ModelRef("company", rest)

    def resolve(self, ref, *, allow_pickle, cache_dir):
        from mll_registry.models.refs import ResolvedModel, file_digest, read_config

        path = self.root / ref.name
        self.resolved.append(ref.name)
        w = path / "open_clip_model.safetensors"
        return ResolvedModel(ref, path, w, "sha256:" + file_digest(w)[:16],
                             read_config(path, str(ref)))

    def build(self, res, device):
        from mll_registry.models.loading import build_from_dir

        return build_from_dir(res, device)

    def registered_name(self, ref) -> str:
        return "company--" + ref.name

    def version_source(self, res) -> str:
        return f"company://{res.ref.name}@{res.revision}"


class FixedCaptions:
    """A caption provider of the user's own: one fixed description per class."""

    name = "fixed"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def describe(self, cls, task) -> list[str]:
        self.asked.append(cls.name)
        return [f"a picture of a {cls.name}"]


@pytest.mark.slow
def test_custom_scheme_and_caption_provider_plug_in(graph, tmp_path: Path) -> None:
    from mll_registry.app.root import App
    from mll_registry.models.refs import SCHEMES, registered_name
    from mll_registry.selection.matching import CAPTION_PROVIDERS
    from mll_registry.task import Task, TaskClass

    store, captions = CompanyStore(DEMO), FixedCaptions()
    SCHEMES.register("company", store)
    CAPTION_PROVIDERS.register("fixed", lambda settings: captions)
    try:
        a = App(Settings(top_k=4, device="cpu", caption_provider="fixed", label_store="local",
                         data_dir=str(tmp_path / "data")))
        for name in ("vit-animals", "resnet-objects"):
            out = a.labelling.label(f"company:{name}", graph).to_dict()
            assert out["status"] == "labelled" and out["model_ref"] == f"company:{name}"
        assert registered_name("company:vit-animals") == "company--vit-animals"
        sel = a.selection.select(Task("pets", [TaskClass("dog"), TaskClass("cat")]), graph)
    finally:
        SCHEMES.unregister("company")
        CAPTION_PROVIDERS.unregister("fixed")
    assert sorted(sel.result.models) == ["company:resnet-objects", "company:vit-animals"]
    assert set(sel.result.selected_models()) <= set(sel.result.models)
    assert captions.asked == ["dog", "cat"]  # the plugged provider described every class
    assert sel.result.params["caption_provider"] == "fixed"
    assert store.resolved == ["vit-animals", "resnet-objects"]


@pytest.mark.slow
def test_label_identity_includes_the_label_settings(graph, tmp_path: Path) -> None:
    from mll_registry.app.root import App
    from mll_registry.models.refs import registered_name
    from mll_registry.registry.labels import ALIAS, Registry

    reg = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", root=tmp_path / "data")
    ref = f"local-dir:{DEMO / 'vit-food'}"
    name = registered_name(ref)

    def label(**s):
        base = {"top_k": 4, "device": "cpu", "data_dir": str(tmp_path / "data")}
        return App(Settings(**{**base, **s}), registry=reg,
                   label_stores={"registry": reg}).labelling.label(ref, graph).to_dict()

    first = label()
    again = label()
    assert (first["status"], again["status"]) == ("labelled", "skipped")
    assert again["version"] == first["version"] and len(reg.versions(name)) == 1
    other_k = label(top_k=8)
    other_t = label(templates=("a drawing of a {}.",))
    assert (other_k["status"], other_t["status"]) == ("labelled", "labelled")
    tags = {int(v.version): v.tags["mll.label_hash"] for v in reg.versions(name)}
    want = {first["version"]: Settings(top_k=4).label_hash(),
            other_k["version"]: Settings(top_k=8).label_hash(),
            other_t["version"]: Settings(top_k=4, templates=("a drawing of a {}.",)).label_hash()}
    assert tags == want and len(set(tags.values())) == 3
    c = reg.client
    for v, h in want.items():  # one alias per settings hash
        assert int(c.get_model_version_by_alias(name, f"{ALIAS}-{h}").version) == v
    # none has the default settings: `labeled` is the newest ready version
    assert int(c.get_model_version_by_alias(name, ALIAS).version) == max(want)
    # the local label path carries the hash too
    assert Path(first["path"]).name.endswith(Settings(top_k=4).label_hash())


def test_concepts_in_the_node_table_resolve_without_wordnet() -> None:
    """Ids, wnids and first lemmas come from the graph's own table: no nltk reader is loaded."""
    code = (
        "import pandas as pd, sys\n"
        "from mll_registry.graph.concepts import resolve_concept\n"
        "nodes = pd.DataFrame({'node_id': ['dog.n.01', 'mouse.n.04', 'mouse.n.01'],\n"
        "                      'wnid': ['n02084071', 'n03793489', 'n02330245'],\n"
        "                      'lemma': ['dog', 'mouse', 'mouse']})\n"
        "ids = nodes.node_id.tolist()\n"
        "assert resolve_concept('dog.n.01', ids, nodes) == ('dog.n.01', [])\n"
        "assert resolve_concept('n02084071', ids, nodes) == ('dog.n.01', [])\n"
        "assert resolve_concept('Mouse', ids, nodes) == ('mouse.n.01', ['mouse.n.04'])\n")
    mods = _modules_after(code)
    assert not any(m.startswith("nltk") for m in mods)
    assert not any(m == "mlflow" or m.startswith("mlflow.") for m in mods)


def test_retries_stop_at_the_try_count_or_the_time_budget() -> None:
    from mll_registry.retries import call_with_retries

    calls: list[float] = []
    slept: list[float] = []

    def down() -> None:
        calls.append(1.0)
        raise ConnectionError("refused")

    def give_up(exc: BaseException) -> BaseException:
        return RuntimeError(f"down after {len(calls)} tries")

    with pytest.raises(RuntimeError, match="down after 4 tries"):
        call_with_retries(down, "x", transient=lambda e: True, give_up=give_up, tries=4,
                          base_delay=0.5, sleep=slept.append, budget=1e6)
    assert slept == [0.5, 1.0, 2.0]  # exponential backoff between the 4 tries
    calls.clear()
    with pytest.raises(RuntimeError, match="down after 1 tries"):  # no time left: no retry
        call_with_retries(down, "x", transient=lambda e: True, give_up=give_up, tries=4,
                          sleep=slept.append, budget=0.0)
    calls.clear()
    with pytest.raises(ValueError, match="bad"):  # not transient: at once, as it was
        call_with_retries(lambda: (_ for _ in ()).throw(ValueError("bad")), "x",
                          transient=lambda e: False, give_up=lambda e: e, sleep=slept.append)


def test_store_answers_are_not_retried_as_connection_failures() -> None:
    """A concurrent "already exists" whose text quotes driver/connection details is passed on
    (the registration handles it), not retried and reported as an unreachable server."""
    from mlflow.exceptions import MlflowException

    from mll_registry.registry.tracking import _transient

    race = MlflowException("Registered Model (name=m) already exists. (sqlite3.IntegrityError) "
                           "... Connection rolled back", error_code="RESOURCE_ALREADY_EXISTS")
    assert not _transient(race)
    assert _transient(MlflowException("API request failed: Max retries exceeded"))
    assert _transient(ConnectionError("refused"))
