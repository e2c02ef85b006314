"""Concept names -> graph nodes: a synset id, a wnid, a word, or a phrase's head noun.

One resolution rule, used by ``mll query best`` and by selection's "is this class in the graph"
check (:func:`mll_registry.matching.match`): a synset id or wnid must be a node; a word or phrase
resolves to the first of its WordNet noun senses that is a node; a phrase none of whose senses is
a node falls back to its head noun ("Siamese cat" -> cat, "glass of milk" -> glass), i.e. to a
broader concept of the graph.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_HEAD_SPLIT = re.compile(r"\s+(?:of|with|in|on|at|for|showing|from)\s+", re.IGNORECASE)


def head_noun(phrase: str) -> str:
    """The head noun of an English noun phrase: the last word before "of/with/in/..."."""
    words = _HEAD_SPLIT.split(phrase.strip())[0].split()
    return words[-1] if words else phrase.strip()


def resolve_concept(concept: str, node_ids: Sequence[str]) -> tuple[str, list[str]]:
    """A synset id, a wnid, a word or a phrase -> (graph node, other graph senses of the word).

    Raises:
        KeyError: with a message naming what was tried.
    """
    from mll_registry import wordnet as W

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


def in_graph(name: str, node_ids: Sequence[str]) -> str | None:
    """The graph node ``name`` resolves to by :func:`resolve_concept`, or None."""
    try:
        return resolve_concept(name, node_ids)[0]
    except KeyError:
        return None
