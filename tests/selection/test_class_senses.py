"""WordNet senses of a class chosen with the task in mind (docs/method.md §3 step 1): the other
classes and the domain pick the sense that descriptions gloss and the graph node a name resolves
to; with no context WordNet's order stands. Real WordNet and the bundled sentence model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mll_registry.graph import wordnet as W
from mll_registry.graph.concepts import resolve_concept
from mll_registry.selection.matching import (
    SENSE_MARGIN,
    Embedder,
    WordNetCaptions,
    describe_task,
    graph_nodes_of,
    keep_senses,
    match,
    match_kind,
    nearest_classes,
    sense_context,
)
from mll_registry.settings import DEFAULTS
from mll_registry.task import Task, TaskClass

COMPUTER_MOUSE = "mouse.n.04"  # "a hand-operated electronic device that controls ... a cursor"
RODENT = "mouse.n.01"


def _task(*names: str, domain: str = "photo") -> Task:
    return Task("t", [TaskClass(n) for n in names], domain=domain)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def _chosen(task: Task, embedder: Embedder) -> list[str]:
    """The senses chosen for the task's first class."""
    return WordNetCaptions().choose_senses(task, embedder)[0]


class _NoEmbedder:
    """Fails if asked: a task with no context, or a cached one, must not need the sentence
    model."""

    def __init__(self, key: str = "none") -> None:
        self.name = self.key = key

    def encode(self, texts, batch_size: int = 128) -> np.ndarray:
        raise AssertionError(f"encoded {list(texts)[:3]} with no context to rank against")


@pytest.mark.parametrize("domain", ["photo", "pet photograph"])
def test_mouse_among_pets_is_the_rodent_and_never_the_computer_mouse(embedder: Embedder,
                                                                     domain: str) -> None:
    task = _task("mouse", "dog", "cat", "hamster", "rabbit", domain=domain)
    senses = _chosen(task, embedder)
    assert senses[0] == RODENT and COMPUTER_MOUSE not in senses
    gloss = W.synset(COMPUTER_MOUSE).definition()
    d = WordNetCaptions().describe(task.classes[0], task, embedder=embedder)
    assert not any(gloss in x for x in d)
    assert f"mouse which is {W.synset(RODENT).definition()}" in d
    # the same choice resolves the name: a graph with both senses gives the rodent, a graph with
    # only the computer mouse gives nothing (WordNet's order alone would give the computer mouse)
    both, computer_only = ["dog.n.01", COMPUTER_MOUSE, RODENT], ["dog.n.01", COMPUTER_MOUSE]
    assert resolve_concept("mouse", both, senses=senses)[0] == RODENT
    assert resolve_concept("mouse", computer_only)[0] == COMPUTER_MOUSE
    with pytest.raises(KeyError, match="chosen for the task"):
        resolve_concept("mouse", computer_only, senses=senses)


def test_mouse_among_computer_parts_is_the_computer_mouse(embedder: Embedder) -> None:
    senses = _chosen(_task("mouse", "keyboard", "monitor", "printer"), embedder)
    assert senses[0] == COMPUTER_MOUSE and RODENT not in senses


def test_bat_is_the_club_among_sports_gear_and_the_animal_among_animals(
        embedder: Embedder) -> None:
    gear = _chosen(_task("bat", "ball", "glove", "helmet"), embedder)
    assert "bat.n.01" not in gear
    assert W.synset(gear[0]).lexname() == "noun.artifact"  # a club, cricket bat or racket
    animals = _chosen(_task("bat", "owl", "fox", "wolf"), embedder)
    assert animals[0] == "bat.n.01"
    assert all(W.synset(s).lexname() == "noun.animal" for s in animals)


@pytest.mark.parametrize("other", ["car", "quantum chromodynamics"])
def test_a_frequent_sense_yields_only_to_a_context_that_fits_another(embedder: Embedder,
                                                                    other: str) -> None:
    # "dog" is the animal in 42 of WordNet's 42 tagged uses: an unrelated class says too little
    # to make it a pawl or a cad (which the fit alone, with no prior, would)
    task = _task("dog", other)
    assert _chosen(task, embedder)[0] == "dog.n.01"
    assert W.sense_counts("dog")["dog.n.01"] == 42
    assert WordNetCaptions(sense_prior=0.0).choose_senses(task, embedder)[0][0] != "dog.n.01"


def test_in_a_long_mixed_task_the_nearest_classes_are_the_context(embedder: Embedder) -> None:
    task = _task("mouse", "banana", "keyboard", "bus", "monitor", "apple", "printer", "car")
    assert nearest_classes(task, embedder, [0]) == {0: ["keyboard", "monitor", "printer"]}
    assert sense_context(task, task.classes[0], ["keyboard", "monitor", "printer"]) == (
        "keyboard, monitor, printer")
    assert _chosen(task, embedder) == [COMPUTER_MOUSE]


def test_no_context_keeps_wordnet_order_without_the_sentence_model() -> None:
    task = _task("mouse")
    assert sense_context(task, task.classes[0]) == ""
    first_two = [s.name() for s in W.lookup_word("mouse")[:2]]
    assert WordNetCaptions().choose_senses(task, _NoEmbedder()) == [first_two]
    d = WordNetCaptions().describe(task.classes[0], task, embedder=_NoEmbedder())
    assert d[3:] == [f"mouse which is {W.synset(s).definition()}" for s in first_two]
    # one sense needs no ranking either, whatever the context
    assert WordNetCaptions().choose_senses(_task("hamster", "giraffe"), _NoEmbedder())[0] == [
        "hamster.n.01"]


def test_sense_text_is_the_kinds_and_the_gloss_in_a_fixed_order() -> None:
    # person.n.01 has two hypernyms, which nltk keeps in a set: the first by name is used, so the
    # text (and the sense choice, and the description cache) is the same in every process
    assert W.sense_text(W.synset("mouse.n.03")) == (
        "a kind of person, a kind of causal agent: person who is quiet or timid")
    assert W.sense_text(W.synset("entity.n.01")) == W.synset("entity.n.01").definition()


def test_the_keep_rule_is_the_best_sense_plus_those_within_the_margin() -> None:
    ranked = [("a", 0.50), ("b", 0.50 - SENSE_MARGIN / 2), ("c", 0.50 - SENSE_MARGIN - 0.01)]
    assert keep_senses(ranked, 2, SENSE_MARGIN) == ["a", "b"]
    assert keep_senses(ranked, 1, SENSE_MARGIN) == ["a"]
    assert keep_senses(ranked, 3, SENSE_MARGIN) == ["a", "b"]  # c is beyond the margin
    assert keep_senses([("a", float("nan")), ("b", float("nan"))], 1, SENSE_MARGIN) == ["a"]
    assert keep_senses([], 2, SENSE_MARGIN) == []


def test_own_description_is_kept_and_joins_the_context(embedder: Embedder) -> None:
    task = Task("t", [TaskClass("mouse", "a pointing device next to the keyboard of a computer")])
    assert "pointing device" in sense_context(task, task.classes[0])
    d = WordNetCaptions().describe(task.classes[0], task, embedder=embedder)
    assert "mouse, a pointing device next to the keyboard of a computer" in d
    assert WordNetCaptions().choose_senses(task, embedder)[0][0] == COMPUTER_MOUSE


def test_match_resolves_by_the_chosen_sense_and_records_it(
        embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph holding only the computer mouse: by WordNet's order "mouse" among pets would be
    matched by name through it; by the chosen sense it is not. The choice is in the Matching,
    its params and the description cache (a warm match needs neither WordNet nor the sentence
    model), and a different rule gives another cache entry."""
    ids = ["cat.n.01", "dog.n.01", COMPUTER_MOUSE]
    nodes = pd.DataFrame({"node_id": ids, "wnid": [W.wnid(W.synset(i)) for i in ids],
                          "lemma": ["cat", "dog", "mouse"],
                          "caption": [f"{W.lemma(W.synset(i))} which is "
                                      f"{W.synset(i).definition()}" for i in ids]})
    graph = SimpleNamespace(version="test-senses", node_ids=ids, nodes=nodes)
    pets = _task("mouse", "dog", "cat", "hamster", "rabbit")
    m = match(pets, graph, embedder=embedder, root=tmp_path)  # type: ignore[arg-type]
    assert m.senses["mouse"][0] == RODENT and m.params["senses"] == m.senses
    assert m.matched_by["dog"] == "name" and m.matched_by["mouse"] != "name"
    by_order = graph_nodes_of(["mouse"], graph, tmp_path)  # type: ignore[arg-type]
    assert by_order["mouse"] == COMPUTER_MOUSE  # no chosen senses: WordNet's order
    computers = _task("mouse", "keyboard", "printer")
    m2 = match(computers, graph, embedder=embedder, root=tmp_path)  # type: ignore[arg-type]
    assert m2.senses["mouse"][0] == COMPUTER_MOUSE and m2.matched_by["mouse"] == "name"
    with monkeypatch.context() as mp:  # warm: answered from the caches
        mp.setattr(W, "wn", lambda: pytest.fail("WordNet read on a warm match"))
        warm = match(pets, graph, embedder=_NoEmbedder(embedder.key),  # type: ignore[arg-type]
                     root=tmp_path)
    assert warm.senses == m.senses and warm.matched_by == m.matched_by
    cache = tmp_path / "cache" / "text" / "classes"
    before = set(cache.glob("*.json"))
    again = describe_task(pets, WordNetCaptions(), embedder, tmp_path)
    assert set(cache.glob("*.json")) == before and again.senses[0] == m.senses["mouse"]
    describe_task(pets, WordNetCaptions(sense_margin=1.0), embedder, tmp_path)
    assert len(set(cache.glob("*.json")) - before) == 1  # another rule, another cache entry


def _graph_of(ids: list[str]) -> SimpleNamespace:
    nodes = pd.DataFrame({"node_id": ids, "wnid": [W.wnid(W.synset(i)) for i in ids],
                          "lemma": [W.lemma(W.synset(i)) for i in ids],
                          "caption": [f"{W.lemma(W.synset(i))} which is "
                                      f"{W.synset(i).definition()}" for i in ids]})
    return SimpleNamespace(version="test-" + "-".join(ids), node_ids=ids, nodes=nodes)


def test_match_kind_is_one_rule() -> None:
    """Chosen sense in the graph: by name, whatever the similarity. Not: another sense of the
    name counts only when it is the best-matching node; else the similarity threshold."""
    assert match_kind("a.n.01", None, "b.n.01", 0.1, 0.6) == "name"
    assert match_kind(None, "a.n.02", "a.n.02", 0.1, 0.6) == "other_sense"
    assert match_kind(None, "a.n.02", "b.n.01", 0.59, 0.6) == "none"  # not the top match
    assert match_kind(None, "a.n.02", "b.n.01", 0.6, 0.6) == "similarity"
    assert match_kind(None, None, "b.n.01", 0.59, 0.6) == "none"


def test_a_name_whose_chosen_sense_is_absent_matches_its_other_sense_when_that_is_the_top_node(
        embedder: Embedder, tmp_path: Path) -> None:
    """Issue #27's misfire: among tools "hammer" is read as the tool (hammer.n.02); a graph
    that holds only the gunlock's hammer (hammer.n.01), its best match by text, was flagged
    unmatched (similarity below the threshold). It is matched, as ``other_sense``, and is no
    weak class; a name with no node under any sense stays unmatched."""
    tools = _task("hammer", "screwdriver", "saw", "zither", domain="cartoon emoji")
    graph = _graph_of(["hammer.n.01", "screwdriver.n.01", "saw.n.02", "cat.n.01"])
    m = match(tools, graph, embedder=embedder, root=tmp_path)  # type: ignore[arg-type]
    assert "hammer.n.01" not in m.senses["hammer"]  # the task chose the tool ...
    hammer = m.classes.index("hammer")
    assert graph.node_ids[m.top_nodes[hammer, 0]] == "hammer.n.01"  # ... the text the gunlock's
    assert m.top_sims[hammer, 0] < DEFAULTS.weak_similarity  # so similarity alone would flag it
    assert m.matched_by["hammer"] == "other_sense" and "hammer" not in m.weak
    assert m.matched_by["screwdriver"] == "name"
    assert m.matched_by["zither"] in ("similarity", "none")
    assert ("zither" in m.weak) == (m.matched_by["zither"] == "none")
