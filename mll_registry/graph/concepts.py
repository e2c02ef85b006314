"""Concept names -> graph nodes: a synset id, a wnid, a word, or a phrase's head noun.

One resolution rule, used by ``mll query best`` and by selection's "is this class in the graph"
check (:func:`mll_registry.selection.matching.match`): a synset id or wnid must be a node; a word or phrase
resolves to the first of its WordNet noun senses that is a node; a phrase none of whose senses is
a node falls back to its head noun ("Siamese cat" -> cat, "glass of milk" -> glass), i.e. to a
broader concept of the graph. Selection passes the senses it chose for the task
(:func:`mll_registry.selection.matching.choose_senses`), which are then the only senses of the word tried:
"mouse" among pets is the rodent or nothing, never the computer mouse.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_HEAD_SPLIT = re.compile(r"\s+(?:of|with|in|on|at|for|showing|from)\s+", re.IGNORECASE)


def head_noun(phrase: str) -> str:
    """The head noun of an English noun phrase: the last word before "of/with/in/..."."""
    words = _HEAD_SPLIT.split(phrase.strip())[0].split()
    return words[-1] if words else phrase.strip()


def _norm(word: str) -> str:
    return re.sub(r"[\s_]+", " ", word.strip().lower())


def _from_table(concept: str, nodes: Any) -> tuple[str, list[str]] | None:
    """The graph's own node table answers ids, wnids and first lemmas without WordNet."""
    ids = nodes["node_id"].tolist()
    if concept in ids:
        return concept, []
    if "wnid" in nodes and concept in set(nodes["wnid"]):
        return str(nodes.loc[nodes["wnid"] == concept, "node_id"].iloc[0]), []
    if "lemma" in nodes:
        hits = sorted(n for n, lem in zip(ids, nodes["lemma"], strict=True)
                      if _norm(str(lem)) == _norm(concept))
        if hits:  # in sense order (dog.n.01 before dog.n.03), as WordNet lists them
            return hits[0], hits[1:]
    return None


def resolve_concept(concept: str, node_ids: Sequence[str], nodes: Any = None,
                    senses: Sequence[str] | None = None) -> tuple[str, list[str]]:
    """A synset id, a wnid, a word or a phrase -> (graph node, other graph senses of the word).

    ``nodes`` (the graph's node table) lets ids, wnids and first lemmas resolve without loading
    the WordNet reader (seconds); everything else goes through WordNet. ``senses``: the word's
    senses to try, best first, instead of all of them in WordNet's order (a task's choice); if
    none is a node, a phrase still falls back to its head noun.

    Raises:
        KeyError: with a message naming what was tried.
    """
    if senses:
        present = set(node_ids)
        hits = [s for s in senses if s in present]
        if hits:
            return hits[0], hits[1:]
        head = head_noun(concept)
        if head == concept.strip():
            raise KeyError(f"no sense of {concept!r} chosen for the task is in this graph "
                           f"(chosen: {list(senses)[:6]})")
        return resolve_concept(head, node_ids, nodes)
    if nodes is not None:
        hit = _from_table(concept, nodes)
        if hit is not None:
            return hit
    from mll_registry.graph import wordnet as W
    present = set(node_ids)
    if W.is_node_name(concept):
        node = W.synset(concept).name()
        if node not in present:
            raise KeyError(f"{concept} ({node}) is not a node of this graph")
        return node, []
    tried: list[str] = []
    for word in dict.fromkeys([concept, head_noun(concept)]):
        senses = [s.name() for s in W.lookup_word(word)]
        tried += senses
        hits = [s for s in senses if s in present]
        if hits:
            return hits[0], hits[1:]
    if not tried:
        raise KeyError(f"{concept!r} is not a WordNet noun; give a synset id like dog.n.01")
    raise KeyError(f"no sense of {concept!r} is in this graph (senses: {tried[:6]})")


def in_graph(name: str, node_ids: Sequence[str], nodes: Any = None,
             senses: Sequence[str] | None = None) -> str | None:
    """The graph node ``name`` resolves to by :func:`resolve_concept`, or None."""
    try:
        return resolve_concept(name, node_ids, nodes, senses)[0]
    except KeyError:
        return None
