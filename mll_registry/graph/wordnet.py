"""WordNet for nltk, offline: provisioning and synset lookup by wnid or synset id.

nltk's own downloader needs the network. Where no nltk ``wordnet`` corpus is installed we build
one from Debian's ``wordnet-base`` + ``wordnet-sense-index`` files (WordNet 3.0, the version whose
noun offsets ImageNet wnids use) plus the fixed ``lexnames`` table that Debian does not ship.
nltk only reads corpora under its allowed roots and refuses links, so files are copied, not linked.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mll_registry.config import data_dir
from mll_registry.errors import MLLError
from mll_registry.fsutil import atomic_dir

if TYPE_CHECKING:  # pragma: no cover
    from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader

DEBIAN_WORDNET_DIRS = ("/usr/share/wordnet",)
_REQUIRED = ("data.noun", "index.noun", "index.sense")

# WordNet's fixed table of the 45 lexicographer files (lexnames(5WN)); nltk needs it, Debian omits it.
LEXNAMES = "\n".join(
    f"{i:02d}\t{name}\t{kind}"
    for i, (name, kind) in enumerate(
        [("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1),
         ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1),
         ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1),
         ("noun.food", 1), ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1),
         ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1),
         ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1),
         ("noun.shape", 1), ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1),
         ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2), ("verb.communication", 2),
         ("verb.competition", 2), ("verb.consumption", 2), ("verb.contact", 2),
         ("verb.creation", 2), ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2),
         ("verb.possession", 2), ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2),
         ("adj.ppl", 3)]
    )
) + "\n"

HOW_TO_GET_WORDNET = (
    "WordNet for nltk was not found. Fix it one of these ways:\n"
    "  * Debian/Ubuntu (offline-friendly): apt-get install wordnet-base wordnet-sense-index, "
    "then run `mll setup`;\n"
    "  * with network: python -m nltk.downloader wordnet (then set NLTK_DATA if not default);\n"
    "  * or point WNSEARCHDIR at a WordNet 3.0 dict directory (data.noun, index.noun, index.sense)."
)


class WordNetUnavailable(MLLError, RuntimeError):
    """No usable WordNet corpus could be found or built."""


@dataclass(frozen=True)
class WordNetStatus:
    """Where WordNet was found and how."""

    source: str  # "nltk" (already installed) or "debian" (built from dict files)
    path: str | None
    noun_synsets: int | None = None


def _nltk_has_wordnet() -> bool:
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
        return True
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
            return True
        except LookupError:
            return False


def _debian_dict_dir() -> Path | None:
    candidates = [os.environ.get("WNSEARCHDIR", ""), *DEBIAN_WORDNET_DIRS]
    for cand in candidates:
        if cand and all((Path(cand) / f).is_file() for f in _REQUIRED):
            return Path(cand)
    return None


def nltk_data_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The NLTK_DATA directory we manage inside the data directory."""
    return data_dir(root) / "nltk_data"


def ensure_wordnet(root: str | os.PathLike[str] | None = None) -> WordNetStatus:
    """Make ``from nltk.corpus import wordnet`` work offline, building the corpus if needed.

    Order: nltk's own data (``NLTK_DATA``, ``~/nltk_data``, ...) wins; then a corpus we built
    earlier in the data directory; then a fresh build from Debian's dict files.

    Raises:
        WordNetUnavailable: with instructions, when none of these exist.
    """
    import nltk

    ours = nltk_data_dir(root)
    if str(ours) not in nltk.data.path:
        nltk.data.path.insert(0, str(ours))
    corpus = ours / "corpora" / "wordnet"
    if (corpus / "lexnames").is_file():
        return WordNetStatus("debian", str(corpus))
    if _nltk_has_wordnet():
        return WordNetStatus("nltk", None)
    src = _debian_dict_dir()
    if src is None:
        raise WordNetUnavailable(HOW_TO_GET_WORDNET)
    with atomic_dir(corpus) as tmp:
        for entry in sorted(src.iterdir()):
            if entry.is_file():
                shutil.copyfile(entry, tmp / entry.name)  # real copies: nltk refuses links
        if not (tmp / "lexnames").exists():
            (tmp / "lexnames").write_text(LEXNAMES, encoding="utf-8")
    _reader.cache_clear()
    return WordNetStatus("debian", str(corpus))


@functools.lru_cache(maxsize=1)
def _reader() -> WordNetCorpusReader:
    ensure_wordnet()
    from nltk.corpus import wordnet as wn

    wn.ensure_loaded()
    return wn  # type: ignore[return-value]


def wn() -> WordNetCorpusReader:
    """The loaded nltk WordNet reader (provisioned on first use)."""
    return _reader()


_WNID = re.compile(r"^n(\d{8})$")
_SYNSET_ID = re.compile(r"^[^\s/]+\.n\.\d{2}$")


def is_node_name(name: str) -> bool:
    """True if ``name`` looks like a wnid (``n02084071``) or a noun synset id (``dog.n.01``)."""
    return bool(_WNID.match(name) or _SYNSET_ID.match(name))


def synset(node: str) -> Synset:
    """Resolve a wnid (``n02084071``) or a noun synset id (``dog.n.01``) to a Synset.

    Raises:
        KeyError: the name is neither, or names no WordNet 3.0 noun synset.
    """
    reader = wn()
    m = _WNID.match(node)
    found = None
    try:
        with warnings.catch_warnings():  # nltk warns and returns None for unknown offsets
            warnings.simplefilter("ignore")
            if m:
                found = reader.synset_from_pos_and_offset("n", int(m.group(1)))
            elif _SYNSET_ID.match(node):
                found = reader.synset(node)
    except Exception as exc:  # nltk raises WordNetError / ValueError for unknown ids
        raise KeyError(f"no WordNet noun synset {node!r}") from exc
    if found is not None:
        return found
    if m or _SYNSET_ID.match(node):
        raise KeyError(f"no WordNet noun synset {node!r}")
    raise KeyError(f"{node!r} is neither a wnid like n02084071 nor a synset id like dog.n.01")


def wnid(s: Synset) -> str:
    """The ImageNet-style wnid of a noun synset: ``n`` + 8-digit offset."""
    return f"n{s.offset():08d}"


def lemma(s: Synset) -> str:
    """The synset's first lemma, human-readable (underscores as spaces)."""
    return s.lemma_names()[0].replace("_", " ")


def lookup_word(word: str) -> list[Synset]:
    """Noun synsets of a plain word or phrase (``"hot dog"``), most frequent sense first."""
    return list(wn().synsets(word.strip().replace(" ", "_"), pos="n"))


def sense_text(s: Synset, depth: int = 2) -> str:
    """One sentence saying what a sense means, for ranking a word's senses by text similarity:
    the kinds of thing it is (``depth`` hypernyms up, the first by name) and its gloss ("a kind
    of electronic device, a kind of device: a hand-operated electronic device ..."). The kinds are
    what a task's other classes share; lemmas are left out, as rare synonyms ("pawl, detent,
    click, dog") mislead (benchmarks/results/senses.md)."""
    kinds, cur = [], s
    for _ in range(depth):
        # nltk keeps a synset's pointers in a set: sorted, or the order changes between processes
        up = sorted(cur.hypernyms() + cur.instance_hypernyms(), key=lambda h: h.name())
        if not up:
            break
        cur = up[0]
        kinds.append(f"a kind of {lemma(cur)}")
    return f"{', '.join(kinds)}: {s.definition()}" if kinds else s.definition()


def sense_counts(word: str) -> dict[str, int]:
    """How often ``word`` was tagged with each of its noun senses in WordNet's sense-tagged corpus
    (SemCor), by synset id: the frequency behind WordNet's sense order ("dog": 42 for dog.n.01, 0
    for the others), used as the prior when ranking senses against a task."""
    return {lem.synset().name(): lem.count()
            for lem in wn().lemmas(word.strip().replace(" ", "_"), pos="n")}
