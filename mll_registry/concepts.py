"""Concept names -> graph nodes: a synset id, a wnid or a plain word (WordNet senses)."""

from __future__ import annotations

from collections.abc import Sequence


def resolve_concept(concept: str, node_ids: Sequence[str]) -> tuple[str, list[str]]:
    """A synset id, a wnid or a plain word -> (graph node, other graph senses of the word).

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
    senses = [s.name() for s in W.lookup_word(concept)]
    if not senses:
        raise KeyError(f"{concept!r} is not a WordNet noun; give a synset id like dog.n.01")
    hits = [s for s in senses if s in present]
    if not hits:
        raise KeyError(f"no sense of {concept!r} is in this graph (senses: {senses[:6]})")
    return hits[0], hits[1:]
