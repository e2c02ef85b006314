"""Choice of the sense prior and margin (docs/method.md §3 step 1) on WordNet alone.

Simulated tasks: a polysemous noun w (>= 2 noun senses) whose true sense s is a visual one
(animal, artifact, food, plant, object, substance, body) with at least 3 co-hyponyms. Each such
sense gives two tasks of 4 classes with the default domain: a *related* one, whose other classes
are 3 of s's co-hyponyms (seed 0), and an *unrelated* one, whose other classes are 3 words drawn
from all the related tasks' other classes (a heterogeneous task: the context says little). Tasks
are weighted so that each word counts once, its senses by WordNet's tag counts + 1 (how often the
sense is used; "uniform" weighs them alike, for comparison).

A sense's score is its fit (cosine between :func:`mll_registry.graph.wordnet.sense_text` and the
context) + prior * log(1 + its tag count). For each (prior, margin) the kept senses are the best
one plus any other within the margin (at most 2); a task scores F1 = 2/(kept + 1) if s is kept,
else 0. The pair chosen has the best mean of the related and unrelated frequency-weighted F1
(ties: the smallest prior, then the smallest margin). No task accuracy and no demo task is looked
at. The table also gives how often the best-scoring sense is s with prior 0, for the sense text
used (two hypernyms and the gloss) and for the first one tried (lemmas, one hypernym, gloss).

    uv run python benchmarks/bench_senses.py [--words 2000]
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _results import append_rows, stamp  # noqa: E402

VISUAL = {"noun.animal", "noun.artifact", "noun.food", "noun.plant", "noun.object",
          "noun.substance", "noun.body"}
PRIORS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3)
MARGINS = tuple(round(0.01 * i, 2) for i in range(21))
LIMIT = 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=2000)
    args = ap.parse_args()
    from mll_registry.graph import wordnet as W
    from mll_registry.selection.matching import Embedder, keep_senses, sense_context
    from mll_registry.task import Task, TaskClass

    rng = random.Random(0)
    words = sorted(n for n in W.wn().all_lemma_names(pos="n") if re.fullmatch(r"[a-z]+", n))
    rng.shuffle(words)
    # (word, its senses, true sense index, weight uniform, weight frequency, other classes)
    found_all: list[tuple[str, list[Any], int, float, float, list[str]]] = []
    n_words = 0
    for w in words:
        senses = W.lookup_word(w)
        if len(senses) < 2:
            continue
        counts = W.sense_counts(w)
        found = []
        for i, s in enumerate(senses):
            kinds = sorted(s.hypernyms(), key=lambda h: h.name())
            if s.lexname() not in VISUAL or not kinds:
                continue
            own = {n.lower() for n in s.lemma_names()}
            sibs = [W.lemma(h) for h in kinds[0].hyponyms() if h != s]
            sibs = sorted({n for n in sibs if w not in n.lower().split() and n.lower() not in own})
            if len(sibs) >= 3:
                found.append((i, rng.sample(sibs, 3), counts.get(s.name(), 0) + 1))
        if not found:
            continue
        total = sum(c for _, _, c in found)
        found_all += [(w, senses, i, 1 / len(found), c / total, others) for i, others, c in found]
        n_words += 1
        if n_words >= args.words:
            break
    pool = sorted({o for t in found_all for o in t[5]})
    unrelated = [(w, ss, i, wu, wf, rng.sample(pool, 3)) for w, ss, i, wu, wf, _ in found_all]

    def context(w: str, others: list[str]) -> str:
        t = Task("sim", [TaskClass(w), *(TaskClass(o) for o in others)])
        return sense_context(t, t.classes[0])

    def with_lemmas(s: Any) -> str:
        kinds = sorted(s.hypernyms() + s.instance_hypernyms(), key=lambda h: h.name())
        kind = f", a kind of {W.lemma(kinds[0])}" if kinds else ""
        return f"{', '.join(n.replace('_', ' ') for n in s.lemma_names())}{kind}: {s.definition()}"

    embedder = Embedder()

    def fits(tasks: list[Any], text: Callable[[Any], str]) -> list[list[float]]:
        cx = [context(t[0], t[5]) for t in tasks]
        texts = list(dict.fromkeys(x for c, t in zip(cx, tasks, strict=True)
                                   for x in (c, *(text(s) for s in t[1]))))
        emb = dict(zip(texts, embedder.encode(texts), strict=True))
        return [[float(emb[text(s)] @ emb[c]) for s in t[1]]
                for c, t in zip(cx, tasks, strict=True)]

    def weights(tasks: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        return np.array([t[3] for t in tasks]), np.array([t[4] for t in tasks])

    def f1(tasks: list[Any], kept: list[list[str]]) -> tuple[float, float]:
        wu, wf = weights(tasks)
        s = np.array([2 / (len(k) + 1) if t[1][t[2]].name() in k else 0.0
                      for k, t in zip(kept, tasks, strict=True)])
        return float((s * wu).sum() / wu.sum()), float((s * wf).sum() / wf.sum())

    tags = {w: W.sense_counts(w) for w in {t[0] for t in found_all}}

    def kept(tasks: list[Any], fit: list[list[float]], prior: float, margin: float,
             limit: int = LIMIT) -> list[list[str]]:
        out = []
        for t, f in zip(tasks, fit, strict=True):
            score = [x + prior * math.log1p(tags[t[0]].get(s.name(), 0))
                     for x, s in zip(f, t[1], strict=True)]
            order = sorted(range(len(score)), key=lambda j: -score[j])
            out.append(keep_senses([(t[1][j].name(), score[j]) for j in order], limit, margin))
        return out

    related_fit, unrelated_fit = fits(found_all, W.sense_text), fits(unrelated, W.sense_text)
    top_used = f1(found_all, kept(found_all, related_fit, 0.0, 0.0, 1))
    top_lemmas = f1(found_all, kept(found_all, fits(found_all, with_lemmas), 0.0, 0.0, 1))
    wordnet2 = [f1(ts, [[s.name() for s in t[1][:LIMIT]] for t in ts])
                for ts in (found_all, unrelated)]
    grid, best = {}, (-1.0, 0.0, 0.0)
    for p in PRIORS:
        for m in MARGINS:
            r, u = f1(found_all, kept(found_all, related_fit, p, m)), \
                f1(unrelated, kept(unrelated, unrelated_fit, p, m))
            grid[p, m] = (r, u)
            if (r[1] + u[1]) / 2 > best[0] + 1e-12:
                best = ((r[1] + u[1]) / 2, p, m)
    _, p_best, m_best = best
    print(f"{n_words} words, {len(found_all)} related + {len(unrelated)} unrelated tasks")
    print(f"WordNet order (first {LIMIT}): related F1 {wordnet2[0][0]:.3f} / {wordnet2[0][1]:.3f},"
          f" unrelated {wordnet2[1][0]:.3f} / {wordnet2[1][1]:.3f} (uniform / frequency)")
    print(f"best-fitting sense is the true one (related, prior 0): {top_used[0]:.3f} / "
          f"{top_used[1]:.3f} (with lemmas, one hypernym: {top_lemmas[0]:.3f} / "
          f"{top_lemmas[1]:.3f})")
    for p in PRIORS:
        print(f"prior {p:.2f}: " + " ".join(
            f"{m:.2f}:{grid[p, m][0][1]:.3f}/{grid[p, m][1][1]:.3f}" for m in MARGINS))
    r, u = grid[p_best, m_best]
    print(f"chosen: prior {p_best:.2f}, margin {m_best:.2f}: related F1 {r[1]:.3f}, unrelated "
          f"{u[1]:.3f} (frequency-weighted)")

    def row_of(p: float) -> str:
        return ", ".join(f"{m:.2f}: {grid[p, m][0][1]:.3f} / {grid[p, m][1][1]:.3f}"
                         for m in MARGINS)

    append_rows(
        "senses.md",
        "# Sense prior and margin: chosen on tasks simulated from WordNet alone\n\n"
        "Command: `uv run python benchmarks/bench_senses.py` (see its docstring). A task is a "
        "visual sense of a polysemous noun with 3 other classes: its co-hyponyms (related) or "
        "3 words drawn from all tasks' other classes (unrelated). Score = fit to the context + "
        "prior * log(1 + WordNet tag count); kept = the best sense and any within the margin, "
        "at most 2. F1 of the kept senses against the true one, frequency-weighted (each word "
        "once, its senses by tag count + 1). The pair chosen has the best mean of the related "
        "and unrelated F1. WordNet order = the first 2 senses, the rule before this one. Top-1 "
        "= the best-fitting sense (prior 0, related tasks) is the true one, for the sense text "
        "used and with lemmas + one hypernym + gloss (uniform / frequency).\n\n"
        "| date | machine | words | tasks (related + unrelated) | WordNet order F1 related / "
        "unrelated | top-1 used | top-1 with lemmas | F1 related / unrelated by margin, prior 0 "
        "| same, chosen prior | chosen prior, margin |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n",
        [f"{stamp()} | {n_words} | {len(found_all)} + {len(unrelated)} | "
         f"{wordnet2[0][1]:.3f} / {wordnet2[1][1]:.3f} | {top_used[0]:.3f} / {top_used[1]:.3f} | "
         f"{top_lemmas[0]:.3f} / {top_lemmas[1]:.3f} | {row_of(0.0)} | {row_of(p_best)} | "
         f"{p_best:.2f}, {m_best:.2f}"])


if __name__ == "__main__":
    main()
