"""Baselines for model selection (docs/method.md §5).

* **INB**: the single model best on a general benchmark. By default the benchmark is the model's
  label itself (mean accuracy@1 over all graph nodes); a user-given score table also works.
* **ModelGPT (paper)** (LOVM, Zohar et al., as the MLL paper runs it): a linear regressor from
  text-only features of each model's *text encoder* on a task's class names to the model's
  accuracy on the task, trained on *pseudo-tasks* cut from the graph's own sample datasets (never
  on the target tasks). A pseudo-task is a seeded draw of folder nodes of one sample source; its
  ground truth is each model's zero-shot top-1 on those nodes' own images of that source, computed
  from the fp16 embeddings each label keeps (no image tower runs). Features (LOVM's): text-acc and
  text-f1 (class descriptions, with Gaussian noise on their normalised embeddings, classified by
  the class prompts), intra- and inter-class similarity, synonym consistency, and the general
  (INB) score. Features and target are centred per task (accuracy minus the task's mean over
  models), so the fit explains which model is better *within* a task; the highest prediction wins.
* **ModelGPT (target-fit)**: the earlier variant kept for comparison: a ridge fit
  leave-one-task-out on the *other target tasks'* measured accuracies (features: general score,
  text accuracy, text margin, class separation).
* **Oracles** (references that look at the task's labelled data, not selection methods):
  ``Oracle (single)`` is the model with the best measured top-1 on the task, a true ceiling of
  single-model selection. ``Oracle (per-class F1)`` picks per class the model with the best
  measured per-class F1 (from each model's predictions on the task) and ensembles them as MLL
  does. It is an *upper reference* for per-class selection, not a proven bound: the ensemble's
  accuracy depends on how the chosen models' probabilities combine, and another per-class choice
  (MLL's among them) can beat it on a task.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mll_registry.graph.bundle import SemanticGraph
from mll_registry.labels.format import ModelLabel
from mll_registry.task import Task, TaskClass

FEATURES = ("general_score", "text_acc", "text_margin", "class_separation", "bias")
# -- ModelGPT (paper): every default stated once ---------------------------------------------------
PAPER_FEATURES = ("general_score", "text_acc", "text_f1", "intra_sim", "inter_sim", "synonym")
PSEUDO_TASKS_PER_SOURCE = 8  # pseudo-tasks drawn from each sample source
PSEUDO_CLASSES = (20, 40)  # classes per pseudo-task, drawn uniformly in this range (inclusive)
PSEUDO_SEED = 0
PROMPT = "a photo of a {}."  # class prompt of the text features (the reuse default)
NOISE_SIGMA = 0.15  # Gaussian noise per coordinate on normalised description embeddings
NOISE_REPEATS = 10  # noisy copies of each description (a steadier text-acc/f1)
NOISE_SEED = 0
SYNONYMS = 5  # WordNet synonyms per class for the synonym feature, at most
RIDGE = 1e-3  # relative ridge: lambda * diag(X^T X) of the centred features

Encoder = Callable[[Sequence[str]], np.ndarray]  # texts -> (n, d) normalised text embeddings


def inb_scores(labels: dict[str, ModelLabel]) -> dict[str, float]:
    """General benchmark score per model: mean accuracy@1 of its label over the graph."""
    return {ref: float(lab.summary["acc1"].mean()) for ref, lab in labels.items()}


def best_of(scores: dict[str, float]) -> str:
    """The highest-scoring model (ties: the first ref in sorted order)."""
    return max(sorted(scores), key=lambda r: scores[r])


# -- ModelGPT (target-fit) -------------------------------------------------------------------------
def text_features(lm: Any, class_names: Sequence[str], descriptions: Sequence[Sequence[str]],
                  prompt: str = PROMPT) -> dict[str, float]:
    """Text-only features of one model's text encoder on one task (the target-fit variant).

    * ``text_acc``: descriptions classified to their class by cosine to the class prompts;
    * ``text_margin``: mean (own-class cosine - best other-class cosine) of the descriptions;
    * ``class_separation``: 1 - mean max cosine between different class prompts (granularity).
    """
    from mll_registry.labels.labeller import encode_texts

    P = encode_texts(lm, [[prompt.format(c)] for c in class_names]).cpu().numpy()
    flat = [d for ds in descriptions for d in ds]
    owner = np.repeat(np.arange(len(class_names)), [len(ds) for ds in descriptions])
    D = encode_texts(lm, [[d] for d in flat]).cpu().numpy()
    S = D @ P.T
    own = S[np.arange(len(flat)), owner]
    other = np.where(np.eye(len(class_names), dtype=bool)[owner], -np.inf, S).max(1)
    PP = P @ P.T
    np.fill_diagonal(PP, -np.inf)
    return {"text_acc": float((S.argmax(1) == owner).mean()),
            "text_margin": float(np.mean(own - other)) if len(class_names) > 1 else 0.0,
            "class_separation": float(1 - PP.max(1).mean()) if len(class_names) > 1 else 1.0}


def feature_vector(general_score: float, tf: dict[str, float]) -> np.ndarray:
    return np.array([general_score, tf["text_acc"], tf["text_margin"], tf["class_separation"],
                     1.0])


@dataclass
class ModelGPT:
    """Ridge regression from text-only features to measured task accuracy (target-fit)."""

    ridge: float = 1e-2
    coef: np.ndarray | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> ModelGPT:
        if len(X) < 2:
            raise ValueError("ModelGPT needs measured accuracies on other tasks to fit")
        reg = self.ridge * np.eye(X.shape[1])
        reg[-1, -1] = 0.0  # do not shrink the intercept
        self.coef = np.linalg.solve(X.T @ X + reg, X.T @ y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise ValueError("fit ModelGPT before predicting")
        return X @ self.coef


# -- ModelGPT (paper): pseudo-tasks and their ground truth -----------------------------------------
@dataclass(frozen=True, eq=False)
class PseudoTask:
    """C folder nodes of one sample source and their own images from it (class = node)."""

    name: str
    source: str
    domain: str
    nodes: tuple[str, ...]  # node ids, in class order
    image_ids: np.ndarray = field(repr=False)  # graph image ids
    targets: np.ndarray = field(repr=False)  # class position of each image

    def as_task(self, graph: SemanticGraph) -> Task:
        """The pseudo-task as a :class:`Task` of node lemmas (for class descriptions)."""
        lemma = dict(zip(graph.nodes["node_id"], graph.nodes["lemma"], strict=True))
        return Task(self.name, [TaskClass(lemma[n]) for n in self.nodes], domain=self.domain)


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def pseudo_tasks(graph: SemanticGraph, per_source: int = PSEUDO_TASKS_PER_SOURCE,
                 classes: tuple[int, int] = PSEUDO_CLASSES,
                 seed: int = PSEUDO_SEED) -> list[PseudoTask]:
    """Seeded pseudo-tasks, ``per_source`` per sample source of the graph (docs/method.md §5).

    Candidates of a source are the folder nodes with own images from it (one node per lemma,
    the first in node order, so class names stay distinct); each task draws C of them, C uniform
    in ``classes`` (at most all). The draw of a source depends only on (seed, source name), not on
    the other sources. A source with fewer than two candidates gives no task; a draw of every
    candidate ends its source's draws (later ones would repeat it). A task's domain (for class
    descriptions) is its source's description when the graph records one, else "photo".
    """
    from mll_registry.task import normalise

    own = graph.members[graph.members["own"].to_numpy(bool)]
    src = graph.images["source"].to_numpy()[own["image_id"].to_numpy(np.int64)]
    domains = graph.manifest.get("descriptions") or {}
    pos = graph.node_index()
    lemma = dict(zip(graph.nodes["node_id"], graph.nodes["lemma"], strict=True))
    out: list[PseudoTask] = []
    for source in sorted(set(graph.images["source"])):
        rows = own[src == source]
        seen: set[str] = set()
        cands: list[str] = []
        for n in sorted(set(rows["node_id"]), key=pos.__getitem__):
            key = normalise(lemma[n])
            if key not in seen:
                seen.add(key)
                cands.append(n)
        if len(cands) < 2:
            continue
        rng = np.random.default_rng([seed, _stable_int(source)])
        node_of = rows["node_id"].to_numpy()
        image_of = rows["image_id"].to_numpy(np.int64)
        for t in range(per_source):
            c = min(int(rng.integers(classes[0], classes[1] + 1)), len(cands))
            picked = [cands[i] for i in sorted(rng.choice(len(cands), c, replace=False))]
            cls = {n: i for i, n in enumerate(picked)}
            sel = np.isin(node_of, picked)
            out.append(PseudoTask(f"{source}/{t}", str(source),
                                  str(domains.get(source) or "photo"), tuple(picked),
                                  image_of[sel], np.array([cls[n] for n in node_of[sel]],
                                                          np.int64)))
            if c == len(cands):
                break  # every candidate drawn: further draws would repeat the task
    return out


def label_node_prompts(graph: SemanticGraph, label: ModelLabel) -> list[list[str]]:
    """Each node's prompts as ``label`` was computed with them (its recorded label config)."""
    from mll_registry.labels.labeller import LabelConfig, node_texts

    lc = label.meta.get("label_config") or {}
    d = LabelConfig()
    cfg = LabelConfig(templates=tuple(lc.get("templates") or d.templates),
                      text_source=str(lc.get("text_source") or d.text_source))
    return node_texts(graph, cfg)


def pseudo_task_accuracy(tasks: Sequence[PseudoTask], graph: SemanticGraph, embeddings: Any,
                         prompts: Sequence[Sequence[str]]) -> np.ndarray:
    """(T,) one model's zero-shot top-1 on each pseudo-task, from its label's fp16 embeddings.

    ``embeddings`` is the label's :class:`~mll_registry.labels.embeddings.LabelEmbeddings`;
    ``prompts`` the nodes' prompts it was computed with (:func:`label_node_prompts`). Image rows
    are found by content digest, node rows by prompt digest; each image is classified among its
    task's class nodes only.

    Raises:
        EmbeddingsError: an image or node text of a task is not in the embeddings.
    """
    from mll_registry.labels.embeddings import EmbeddingsError, digest_bytes, row_index, text_keys

    pos = graph.node_index()
    t_rows = row_index(embeddings.text_key, text_keys(prompts))
    ids = np.unique(np.concatenate([t.image_ids for t in tasks])) if tasks else np.zeros(0, int)
    i_rows = row_index(embeddings.image_digest,
                       digest_bytes(graph.images["digest"].to_numpy()[ids]))
    if (i_rows < 0).any() or (t_rows < 0).any():
        raise EmbeddingsError(f"{embeddings.path}: {int((i_rows < 0).sum())} images and "
                              f"{int((t_rows < 0).sum())} node texts of graph {graph.version} are "
                              "not in these embeddings; relabel the model on this graph")
    img = np.asarray(embeddings.image_emb[i_rows], np.float32)  # row k: image ids[k]
    out = np.empty(len(tasks))
    for k, t in enumerate(tasks):
        txt = np.asarray(embeddings.text_emb[t_rows[[pos[n] for n in t.nodes]]], np.float32)
        x = img[np.searchsorted(ids, t.image_ids)]
        out[k] = float(np.mean((x @ txt.T).argmax(1) == t.targets))
    return out


# -- ModelGPT (paper): text features ---------------------------------------------------------------
class TextBank:
    """A model's normalised text embeddings by string, each distinct string encoded once."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self._emb: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        from mll_registry.labels.labeller import encode_texts

        new = [t for t in dict.fromkeys(texts) if t not in self._emb]
        if new:
            self._emb.update(zip(new, encode_texts(self.lm, [[t] for t in new]).cpu().numpy(),
                                 strict=True))
        if not texts:
            return np.zeros((0, 0), np.float32)
        return np.stack([self._emb[t] for t in texts])


def class_synonyms(name: str, node: str | None = None, limit: int = SYNONYMS) -> list[str]:
    """WordNet synonyms of a class: the other lemmas of its synset (``node``, else the name's
    most frequent noun sense), else its direct hypernyms' first lemmas; [] outside WordNet."""
    from mll_registry.graph import wordnet as W
    from mll_registry.task import normalise

    try:
        syn = W.synset(node) if node else (W.lookup_word(name) or [None])[0]
    except KeyError:
        syn = None
    if syn is None:
        return []
    own = normalise(name)
    out = [x.replace("_", " ") for x in syn.lemma_names() if normalise(x) != own]
    if not out:
        out = [W.lemma(h) for h in syn.hypernyms() + syn.instance_hypernyms()]
    return list(dict.fromkeys(out))[:limit]


def per_class_f1(pred: np.ndarray, targets: np.ndarray, n_classes: int) -> np.ndarray:
    """(M, C) F1 = 2TP / (2TP + FP + FN) of each row of predictions ``pred`` (M, N) per class
    (0 where a class has neither images nor predictions)."""
    pred = np.atleast_2d(pred)
    M, C = len(pred), n_classes
    off = (np.arange(M) * C)[:, None]
    predicted = np.bincount((pred + off).ravel(), minlength=M * C).reshape(M, C)
    hit = pred == targets[None, :]
    tp = np.bincount((pred + off)[hit], minlength=M * C).reshape(M, C)
    support = np.bincount(targets, minlength=C)[None, :]
    den = predicted + support  # 2TP + FP + FN
    return np.divide(2 * tp, den, out=np.zeros((M, C)), where=den > 0)


def lovm_features(P: np.ndarray, D: np.ndarray, owner: np.ndarray, syn: np.ndarray,
                  syn_owner: np.ndarray, sigma: float = NOISE_SIGMA,
                  repeats: int = NOISE_REPEATS, seed: int = NOISE_SEED) -> dict[str, float]:
    """LOVM's text-only features from normalised embeddings (docs/method.md §5).

    ``P`` (C, d) class prompts; ``D`` (n, d) class descriptions of class ``owner``; ``syn`` (k, d)
    synonym prompts of class ``syn_owner``.

    * ``text_acc``, ``text_f1``: descriptions plus N(0, sigma^2) noise per coordinate
      (``repeats`` draws), classified by dot product with the class prompts: top-1 and macro F1;
    * ``intra_sim``: mean over classes of the mean cosine of a class's descriptions to its prompt
      (LOVM's ``inter_close``: how tightly a class's texts sit around it);
    * ``inter_sim``: mean over classes of the largest cosine to another class prompt (LOVM's
      ``intraclass_sim``: granularity; 0 for one class);
    * ``synonym``: mean over classes of the mean cosine of its prompt to its synonyms' prompts
      (a class without synonyms counts 1: its name agrees with itself).
    """
    C = len(P)
    rng = np.random.default_rng(seed)
    noisy = D[None] + sigma * rng.standard_normal((repeats, *D.shape))
    pred = (noisy @ P.T).argmax(-1).reshape(-1)
    tgt = np.tile(owner, repeats)
    n_desc = np.bincount(owner, minlength=C)
    own = np.einsum("nd,nd->n", D, P[owner])
    has = n_desc > 0
    intra = np.bincount(owner, own, C)[has] / n_desc[has]
    PP = P @ P.T
    np.fill_diagonal(PP, -np.inf)
    n_syn = np.bincount(syn_owner, minlength=C)
    s_cos = np.einsum("nd,nd->n", syn, P[syn_owner]) if len(syn) else np.zeros(0)
    syn_mean = np.divide(np.bincount(syn_owner, s_cos, C), n_syn, out=np.ones(C),
                         where=n_syn > 0)
    return {"text_acc": float(np.mean(pred == tgt)),
            "text_f1": float(per_class_f1(pred[None], tgt, C)[0].mean()),
            "intra_sim": float(intra.mean()),
            "inter_sim": float(PP.max(1).mean()) if C > 1 else 0.0,
            "synonym": float(syn_mean.mean())}


@dataclass(frozen=True)
class ClassTexts:
    """The model-independent texts of one task: names, descriptions and synonyms per class."""

    names: list[str]
    descriptions: list[list[str]]
    synonyms: list[list[str]]

    @classmethod
    def of(cls, task: Task, describe: Callable[[TaskClass, Task], list[str]],
           nodes: Sequence[str] | None = None) -> ClassTexts:
        """Texts of ``task`` (``nodes``: the classes' synset ids, when known)."""
        return cls(task.class_names, [describe(c, task) for c in task.classes],
                   [class_synonyms(c.name, nodes[i] if nodes else None)
                    for i, c in enumerate(task.classes)])


def paper_features(encode: Encoder, texts: ClassTexts, general_score: float,
                   prompt: str = PROMPT) -> np.ndarray:
    """(F,) one model's :data:`PAPER_FEATURES` on one task, from its text tower only."""
    flat = [d for ds in texts.descriptions for d in ds]
    owner = np.repeat(np.arange(len(texts.names)), [len(ds) for ds in texts.descriptions])
    syn = [prompt.format(s) for ss in texts.synonyms for s in ss]
    syn_owner = np.repeat(np.arange(len(texts.names)), [len(ss) for ss in texts.synonyms])
    E = encode([prompt.format(c) for c in texts.names] + flat + syn)
    C, n = len(texts.names), len(flat)
    f = lovm_features(E[:C], E[C:C + n], owner, E[C + n:], syn_owner)
    return np.array([general_score] + [f[k] for k in PAPER_FEATURES[1:]])


def centre(a: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``a`` minus the mean of its group (rows of the same task)."""
    _, inv = np.unique(groups, return_inverse=True)
    inv = inv.ravel()
    counts = np.bincount(inv).astype(float)
    flat = a.reshape(len(a), -1)
    means = np.stack([np.bincount(inv, flat[:, j]) / counts for j in range(flat.shape[1])], 1)
    return (flat - means[inv]).reshape(a.shape)


@dataclass
class CentredRegression:
    """Linear regression of per-task-centred accuracy on per-task-centred features, with a
    small relative ridge (ModelGPT as the paper trains it, on pseudo-tasks)."""

    ridge: float = RIDGE
    coef: np.ndarray | None = None

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> CentredRegression:
        if len(np.unique(groups)) < 1 or len(X) < 2:
            raise ValueError("ModelGPT (paper) needs pseudo-tasks with measured accuracies")
        Xc, yc = centre(X, groups), centre(y, groups)
        pen = np.diag(np.sqrt(self.ridge * np.einsum("nf,nf->f", Xc, Xc)))
        self.coef = np.linalg.lstsq(np.vstack([Xc, pen]), np.concatenate([yc, np.zeros(len(pen))]),
                                    rcond=None)[0]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted accuracy minus the task's mean, for one task's rows (one per model)."""
        if self.coef is None:
            raise ValueError("fit ModelGPT (paper) before predicting")
        return (X - X.mean(0)) @ self.coef


@dataclass
class PaperModelGPT:
    """ModelGPT trained on the graph's pseudo-tasks (what :func:`fit_paper_modelgpt` returns)."""

    refs: list[str]
    tasks: list[PseudoTask]
    X: np.ndarray  # (T * M, F), task-major: row t * M + m
    y: np.ndarray  # (T * M,) measured zero-shot top-1
    regression: CentredRegression

    def summary(self) -> dict[str, Any]:
        assert self.regression.coef is not None
        return {"pseudo_tasks": len(self.tasks),
                "sources": sorted({t.source for t in self.tasks}),
                "features": list(PAPER_FEATURES),
                "coef": [round(float(c), 6) for c in self.regression.coef],
                "mean_pseudo_task_top1": round(float(self.y.mean()), 4)}


def fit_paper_modelgpt(graph: SemanticGraph, labels: dict[str, ModelLabel],
                       embeddings: Mapping[str, Path | str], encoder: Callable[[str], Encoder],
                       general: dict[str, float] | None = None,
                       describe: Callable[[TaskClass, Task], list[str]] | None = None,
                       tasks: Sequence[PseudoTask] | None = None) -> PaperModelGPT:
    """Train ModelGPT on pseudo-tasks of ``graph`` (docs/method.md §5).

    ``embeddings`` maps each ref to its label's embeddings file; ``encoder(ref)`` gives the
    model's text encoder (e.g. a :class:`TextBank`); ``describe`` the class descriptions (default:
    WordNet, as selection uses); ``general`` the general scores (default: :func:`inb_scores`).

    Raises:
        EmbeddingsError: a model has no embeddings file (the message names the fix).
        ValueError: the graph yields no pseudo-task.
    """
    from mll_registry.labels.embeddings import LabelEmbeddings

    refs = sorted(labels)
    opened = {r: LabelEmbeddings.open(p) for r, p in check_embeddings(refs, embeddings).items()}
    if describe is None:
        from mll_registry.selection.matching import WordNetCaptions

        describe = WordNetCaptions().describe
    general = general if general is not None else inb_scores(labels)
    tasks = list(tasks) if tasks is not None else pseudo_tasks(graph)
    if not tasks:
        raise ValueError(f"graph {graph.version} gives no pseudo-task (a sample source with at "
                         "least two folder nodes) to train ModelGPT (paper) on")
    acc = np.stack([pseudo_task_accuracy(tasks, graph, opened[r],
                                         label_node_prompts(graph, labels[r])) for r in refs], 1)
    texts = [ClassTexts.of(t.as_task(graph), describe, t.nodes) for t in tasks]
    X = np.stack([paper_features(encoder(r), tx, general[r]) for tx in texts for r in refs])
    y = acc.reshape(-1)
    groups = np.repeat(np.arange(len(tasks)), len(refs))
    return PaperModelGPT(refs, list(tasks), X, y, CentredRegression().fit(X, y, groups))


def check_embeddings(refs: Sequence[str], embeddings: Mapping[str, Path | str] | None
                     ) -> dict[str, Path]:
    """Each ref's embeddings file; raise naming the models without one and the fix."""
    from mll_registry.labels.embeddings import EmbeddingsError

    embeddings = embeddings or {}
    missing = [r for r in refs if r not in embeddings or not Path(embeddings[r]).is_file()]
    if missing:
        raise EmbeddingsError(
            f"ModelGPT (paper) computes its pseudo-task ground truth from the fp16 embeddings "
            f"kept beside each label, and {len(missing)} model(s) have none: "
            f"{', '.join(missing)}. Relabel them with keep_embeddings on "
            "(MLL_KEEP_EMBEDDINGS=true mll label MODEL_REF --force)")
    return {r: Path(embeddings[r]) for r in refs}


# -- oracles and ranking metrics -------------------------------------------------------------------
def oracle_single(top1: dict[str, float]) -> str:
    """The model with the best measured top-1 on the task."""
    return best_of(top1)


def oracle_per_class(per_class: np.ndarray) -> np.ndarray:
    """(C, 1) model position with the best per-class score; ``per_class`` is (M, C) (ties: the
    first model)."""
    return np.argmax(per_class, axis=0)[:, None]


def oracle_per_class_f1(pred: np.ndarray, targets: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, 1) model position with the best measured F1 per class, from each model's predictions
    ``pred`` (M, N) on the task: the ``Oracle (per-class F1)`` choice (an upper reference)."""
    return oracle_per_class(per_class_f1(pred, targets, n_classes))


def kendall_tau(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Kendall's tau-b between a predicted and a measured model ranking (nan if undefined)."""
    from scipy.stats import kendalltau

    if len(predicted) < 2:
        return float("nan")
    return float(kendalltau(predicted, measured).statistic)
