"""`mll registry ensembles` and the stale-marking after each label registration read tags that
anyone with write access to the registry wrote (issue #40, item 11): a malformed version is
skipped with a warning, and any registered name is found. Real embedded MLflow (sqlite); the
versions are made with MlflowClient directly, without models (every pinned member then has no
label on the graph, so a version that is checked is marked stale)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mll_registry.app.root import App
from mll_registry.settings import Settings

GRAPH = "0123456789abcdef"
LABEL_HASH = "0123456789ab"
REF = "local-dir:/models/member"
LOGGER = "mll_registry.app.selection"


@pytest.fixture()
def app(tmp_path: Path) -> App:
    return App(Settings(data_dir=str(tmp_path / "d"), label_store="local"))


def _ensemble(app: App, name: str, pins: str | None = None, **tags: str) -> str:
    """A version of registered ensemble ``name`` (made on first use) using REF, with these tags
    over valid ones; returns its version."""
    from mlflow.exceptions import MlflowException

    client = app.registry.client
    try:
        client.create_registered_model(name, tags={"mll.kind": "ensemble"})
    except MlflowException as exc:  # made by an earlier call
        assert exc.error_code == "RESOURCE_ALREADY_EXISTS", exc
    valid = {"mll.kind": "ensemble", "mll.task": "pets", "mll.members": REF,
             "mll.graph_version": GRAPH, "mll.label_hash": LABEL_HASH,
             "mll.pins": json.dumps({REF: {"revision": "sha256:aa", "label": "bb",
                                           "weights": "cc"}})}
    if pins is not None:
        valid["mll.pins"] = pins
    mv = client.create_model_version(name, "file:///nowhere/ensemble", tags={**valid, **tags})
    return str(mv.version)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.mark.parametrize("pins", [
    "{not json", "[1, 2]", json.dumps({REF: "sha256:aa"}),
    json.dumps({REF: {"revision": 3, "label": "bb"}}), "[" * 5000,
], ids=["not-json", "a-list", "pin-not-an-object", "revision-not-a-string", "nested-deeply"])
def test_a_malformed_pins_tag_is_skipped_with_one_warning_and_the_rest_are_checked(
        app: App, pins: str, caplog: pytest.LogCaptureFixture) -> None:
    good = _ensemble(app, "pets-mll-ensemble")
    bad = _ensemble(app, "pets-mll-ensemble", pins=pins)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        listed = app.selection.ensembles()
    assert [(e["name"], e["version"]) for e in listed] == [("pets-mll-ensemble", good)]
    assert listed[0]["stale"] == [f"{REF}: no label on graph {GRAPH} any more"]
    client = app.registry.client
    assert client.get_model_version("pets-mll-ensemble", good).tags["mll.stale"]
    assert "mll.stale" not in client.get_model_version("pets-mll-ensemble", bad).tags
    warned = _warnings(caplog)
    assert len(warned) == 1, warned
    assert f"version '{bad}' of registered ensemble 'pets-mll-ensemble'" in warned[0]
    assert "mll.pins" in warned[0] and "\n" not in warned[0]


def test_a_malformed_label_key_is_skipped_and_never_reaches_the_label_store(
        app: App, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph version and label hash become a glob in the local store: only their shapes."""
    from mll_registry.labels.stores import LocalLabelStore

    asked: list[tuple[str, str]] = []
    real = LocalLabelStore.label_dirs

    def label_dirs(self: LocalLabelStore, graph_version: str, label_hash: str) -> dict:
        asked.append((graph_version, label_hash))
        return real(self, graph_version, label_hash)

    monkeypatch.setattr(LocalLabelStore, "label_dirs", label_dirs)
    good = _ensemble(app, "pets-mll-ensemble")
    _ensemble(app, "pets-mll-ensemble", **{"mll.graph_version": "../../*"})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        listed = app.selection.ensembles()
    assert [e["version"] for e in listed] == [good]
    assert ["mll.graph_version" in w for w in _warnings(caplog)] == [True]
    assert asked == [(GRAPH, LABEL_HASH)]


def test_ensembles_whose_names_hold_quotes_are_listed(app: App) -> None:
    """MLflow's filter strings have no escape for a quote: such a name broke the listing."""
    names = ["Tom's pets", 'the "best" pets', "it's \"both\"", "back\\slash's", "pets_v2"]
    for name in names:
        _ensemble(app, name)
    _ensemble(app, "petsXv2")  # what `pets_v2` matches as a LIKE pattern: not its version
    listed = sorted((e["name"], e["version"]) for e in app.selection.ensembles())
    assert listed == sorted([(n, "1") for n in names] + [("petsXv2", "1")])


def test_more_ensembles_than_one_page_are_all_listed(app: App) -> None:
    """MLflow answers 100 registered models per page."""
    client = app.registry.client
    for i in range(101):
        client.create_registered_model(f"e{i:03d}", tags={"mll.kind": "ensemble"})
    _ensemble(app, "e100")
    assert [e["name"] for e in app.selection.ensembles()] == ["e100"]


def test_stale_marking_after_a_label_registration_survives_a_malformed_version(
        app: App, caplog: pytest.LogCaptureFixture) -> None:
    """What a registry store's labelling runs once a label of REF is stored: the good version
    is still tagged stale and reported; the malformed one is only warned about."""
    good = _ensemble(app, "pets-mll-ensemble")
    _ensemble(app, "pets-mll-ensemble", pins="{not json")
    _ensemble(app, "Tom's pets")
    with caplog.at_level(logging.WARNING):
        app.labelling._mark_stale_ensembles(REF, None)
    client = app.registry.client
    assert client.get_model_version("pets-mll-ensemble", good).tags["mll.stale"]
    assert client.get_model_version("Tom's pets", "1").tags["mll.stale"]
    text = caplog.text
    assert f"ensemble models:/pets-mll-ensemble/{good} is stale" in text
    assert "ensemble models:/Tom's pets/1 is stale" in text
    assert "could not check the ensembles" not in text, text
