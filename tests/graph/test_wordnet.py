"""WordNet provisioning from Debian dict files and lookups by wnid and synset id."""

from pathlib import Path

import pytest

from mll_registry.graph import wordnet as W


def test_lexnames_table_is_wordnets_fixed_table() -> None:
    lines = W.LEXNAMES.strip().split("\n")
    assert len(lines) == 45
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[5] == "05\tnoun.animal\t1"
    assert lines[44] == "44\tadj.ppl\t3"


def test_ensure_wordnet_builds_an_nltk_corpus(data_root: Path) -> None:
    status = W.ensure_wordnet()
    if status.source == "debian":
        corpus = Path(status.path or "")
        assert (corpus / "lexnames").read_text() == W.LEXNAMES
        assert (corpus / "data.noun").is_file() and not (corpus / "data.noun").is_symlink()
        assert str(data_root) in str(corpus)
    assert W.ensure_wordnet() == status  # idempotent


def test_lookup_by_wnid_and_synset_id() -> None:
    dog = W.synset("n02084071")
    assert dog.name() == "dog.n.01"
    assert W.synset("dog.n.01") == dog
    assert W.wnid(dog) == "n02084071"
    assert W.lemma(W.synset("hotdog.n.02")) == "hotdog"
    assert W.lemma(W.synset("n07697537")) == "hotdog"  # ImageNet's "hotdog, hot dog, red hot"
    assert W.synset("n01440764").name() == "tench.n.01"  # ImageNet class 0


@pytest.mark.parametrize("bad", ["n99999999", "nosuch.n.01", "dog", "n0208407", "dog.v.01"])
def test_unknown_names_raise_keyerror(bad: str) -> None:
    with pytest.raises(KeyError):
        W.synset(bad)


def test_is_node_name() -> None:
    assert W.is_node_name("n02084071") and W.is_node_name("hot_dog.n.01")
    assert not W.is_node_name("dog") and not W.is_node_name("n123")


def test_lookup_word_most_frequent_first() -> None:
    assert W.lookup_word("dog")[0].name() == "dog.n.01"
    assert {s.name() for s in W.lookup_word("hot dog")} >= {"hotdog.n.02"}


def test_missing_wordnet_gives_instructions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(W, "_nltk_has_wordnet", lambda: False)
    monkeypatch.setattr(W, "DEBIAN_WORDNET_DIRS", (str(tmp_path / "none"),))
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    with pytest.raises(W.WordNetUnavailable, match="apt-get install wordnet-base"):
        W.ensure_wordnet(tmp_path / "fresh")
