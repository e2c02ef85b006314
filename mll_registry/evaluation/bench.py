"""The benchmark harness: MLL against its baselines on any task files (docs/method.md §5).

Per task: top-1 of INB, ModelGPT as the paper trains it (on pseudo-tasks of the graph's sample
datasets) and fit on the other target tasks, MLL with k=1 and k=3, and the two oracles (the best
single model; per class the model with the best measured F1); Kendall tau between each method's
predicted model ranking and the measured one; selection time against the time of evaluating every
model on the task's data. Every model is evaluated once per task (the oracles need it) and those
probabilities are reused for every method, so MLL's own reuse cost is what ``mll reuse`` would
spend. Where every task names a ``reference`` set (the same classes in another art set), the
attainable references make the same two choices from ground truth on it and are scored on the
task: what labelled data of the concepts, but not of the task's drawings, would buy.

Results are one flat table (one row per task x method, CLIP_benchmark style), a Markdown table,
a bar plot, and the growth curve (average accuracy as the hub grows, over random model orders).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mll_registry.evaluation import baselines as B
from mll_registry.evaluation.intervals import Interval, paired_bootstrap
from mll_registry.graph.bundle import SemanticGraph
from mll_registry.labels.format import ModelLabel
from mll_registry.plugins import Plugins
from mll_registry.selection.matching import Embedder, WordNetCaptions
from mll_registry.selection.reuse import ProbCache, TaskImages, accuracy, ensemble_scores
from mll_registry.selection.select import SelectionResult, SelectOptions, select
from mll_registry.settings import DEFAULTS
from mll_registry.task import Task

#: MLL with the graph's sample sources pooled alike (the paper) and weighted by the task's domain
MLL_MODES = ("uniform", "domain")


@dataclass
class TaskEvidence:
    """What a benchmark method sees of one task: every model's class probabilities on the task's
    images (computed once), the measured single-model figures, the MLL selections and the
    baselines' picks. A method only chooses; its ensemble is scored here, image by image."""

    task: Task
    refs: list[str]
    probs: list[np.ndarray]  # per model (N, C)
    targets: np.ndarray
    top1: dict[str, float]  # model -> measured top-1 alone
    inb: str
    selections: dict[str, SelectionResult]  # "uniform"/"domain": the paper's rule; "configured"
    gpt_pick: str  # ModelGPT as the paper trains it
    per_class_f1: np.ndarray  # (M, C) measured
    weighting: str
    #: per model (N, C) at the configured selection's calibrated scales (None: not calibrated)
    calibrated: list[np.ndarray] | None = None
    #: measured on the task's ``reference`` set (None: the task names none)
    reference: ReferenceEvidence | None = None

    def correct_of(self, ref: str) -> np.ndarray:
        """(N,) whether model ``ref`` alone gets each image right."""
        return np.asarray(self.probs[self.refs.index(ref)].argmax(1) == self.targets)

    def ensemble_correct(self, chosen: np.ndarray, routing: np.ndarray | None = None,
                         calibrated: bool = False) -> np.ndarray:
        """(N,) whether the entropy-weighted ensemble of ``chosen`` ((C, k) indices into refs;
        ``routing``: (M, C) vote weights, :func:`~mll_registry.selection.reuse.routing_weights`;
        ``calibrated``: at the calibrated scales) gets each image right."""
        probs = self.calibrated if calibrated and self.calibrated is not None else self.probs
        scores = ensemble_scores(probs, chosen, self.weighting, routing)
        return np.asarray(scores.argmax(1) == self.targets)

    def selection_correct(self, sel: SelectionResult) -> np.ndarray:
        """(N,) per image: right or not, reusing ``sel`` as its ``reuse_mode`` and calibration
        say."""
        return self.ensemble_correct(sel.chosen, sel.vote_weights(), bool(sel.logit_scales))


@dataclass(frozen=True)
class ReferenceEvidence:
    """Every model measured on a task's reference set: the same classes, other drawings."""

    top1: dict[str, float]  # model -> top-1 alone
    per_class_f1: np.ndarray  # (M, C)


@dataclass(frozen=True)
class BenchMethod:
    """One column of the benchmark: ``pick`` gives, per image of a task, whether the method's
    prediction is right, and the model(s) it chose (its top-1 is the mean; the per-image
    vector is what the paired bootstrap intervals resample).

    A ``reference`` (an oracle) looks at the task's labelled images: a ceiling, not a method a
    user could run, so it is never the best one in bold.
    """

    name: str
    pick: Callable[[TaskEvidence], tuple[np.ndarray, Any]]
    reference: bool = False
    #: needs every task's reference set (a column only when each task names one)
    needs_reference: bool = False


def _mll(k: int, mode: str, reuse_mode: str | None = None, name: str | None = None
         ) -> BenchMethod:
    """MLL with the selection ``mode`` (``uniform``/``domain``: the paper's per-class rule;
    ``configured``: the settings' reuse mode and fall-back rule), optionally voting as
    ``reuse_mode`` instead."""
    def pick(ev: TaskEvidence) -> tuple[np.ndarray, Any]:
        sel = ev.selections[mode].with_k(k)
        if reuse_mode is not None:
            sel = dataclasses.replace(sel, reuse_mode=reuse_mode)
        return ev.selection_correct(sel), sel.selected_models()

    return BenchMethod(name or f"MLL k={k} ({mode})", pick)


def _oracle_per_class(ev: TaskEvidence) -> tuple[np.ndarray, Any]:
    chosen = B.oracle_per_class(ev.per_class_f1)
    return ev.ensemble_correct(chosen), sorted({ev.refs[int(m)] for m in chosen[:, 0]})


def _attainable_per_class(ev: TaskEvidence) -> tuple[np.ndarray, Any]:
    assert ev.reference is not None
    chosen = B.oracle_per_class(ev.reference.per_class_f1)
    return ev.ensemble_correct(chosen), sorted({ev.refs[int(m)] for m in chosen[:, 0]})


def _attainable_single(ev: TaskEvidence) -> str:
    assert ev.reference is not None
    return B.oracle_single(ev.reference.top1)


def _single(pick: Callable[[TaskEvidence], str]) -> Callable[[TaskEvidence], tuple[np.ndarray, Any]]:
    def run(ev: TaskEvidence) -> tuple[np.ndarray, Any]:
        ref = pick(ev)
        return ev.correct_of(ref), ref

    return run


#: the configured MLL (the settings' reuse mode and fall-back rule): the one the intervals test
MLL = "MLL k=1"
#: ModelGPT fit on the other target tasks (leave one task out): a column, scored across tasks
TARGET_FIT = "ModelGPT (target-fit)"
#: the built-in per-task methods, in the order the tables show them (TARGET_FIT after the paper's)
BUILTIN_METHODS: tuple[BenchMethod, ...] = (
    BenchMethod("INB", _single(lambda ev: ev.inb)),
    BenchMethod("ModelGPT (paper)", _single(lambda ev: ev.gpt_pick)),
    _mll(1, "configured", name=MLL),
    _mll(3, "configured", name="MLL k=3"),
    *(_mll(k, mode) for mode in MLL_MODES for k in (1, 3)),
    *(_mll(1, "uniform", rm, f"MLL k=1 ({rm})") for rm in ("pooled", "soft")),
    BenchMethod("Oracle (single)", _single(lambda ev: B.oracle_single(ev.top1)), reference=True),
    BenchMethod("Oracle (per-class F1)", _oracle_per_class, reference=True),
    BenchMethod("Attainable (single)", _single(_attainable_single), reference=True,
                needs_reference=True),
    BenchMethod("Attainable (per-class F1)", _attainable_per_class, reference=True,
                needs_reference=True),
)
#: more methods, from other packages: an entry point in the group ``mll_registry.bench_methods``
#: naming a :class:`BenchMethod` (or ``BENCH_METHODS.register(name, method)`` in code); shown
#: after the built-ins, in name order
BENCH_METHODS: Plugins[BenchMethod] = Plugins("bench_methods")


def bench_methods(references: bool = True) -> list[BenchMethod]:
    """The per-task methods a run measures: the built-ins, then the plugged ones (without those
    that need reference sets unless ``references``)."""
    return [m for m in (*BUILTIN_METHODS, *(BENCH_METHODS.get(n) for n in BENCH_METHODS.names()))
            if references or not m.needs_reference]


def _columns(methods: Sequence[BenchMethod]) -> tuple[str, ...]:
    names = [m.name for m in methods]
    return (*names[:2], TARGET_FIT, *names[2:])


METHODS = _columns(BUILTIN_METHODS)  # the built-in columns (with reference sets)
ORACLES = tuple(m.name for m in BUILTIN_METHODS if m.reference)  # references, not methods
#: the differences the benchmark gives paired 95 % intervals for: (method, baseline); those
#: against the attainable references where the tasks name reference sets
COMPARISONS = ((MLL, "INB"), (MLL, "ModelGPT (paper)"), (MLL, TARGET_FIT),
               (MLL, "Attainable (single)"), (MLL, "Attainable (per-class F1)"))


@dataclass
class BenchConfig:
    """Selection and reuse settings used for every task (recorded with the results)."""

    alpha: float = DEFAULTS.alpha
    metric: str = DEFAULTS.metric
    top_n: int = DEFAULTS.top_n
    weighting: str = DEFAULTS.weighting
    source_weighting: str = DEFAULTS.source_weighting  # the MLL of the growth curve ("MLL k=1")
    source_temperature: float = DEFAULTS.source_temperature  # of the "(domain)" rows
    reuse_mode: str = DEFAULTS.reuse_mode  # of the configured MLL ("MLL k=1", "MLL k=3")
    fallback_z: float | None = DEFAULTS.fallback_z_or_none()  # of the configured MLL
    calibration: str = DEFAULTS.calibration  # of the configured MLL
    growth_orders: int = 10
    subhub_sizes: tuple[int, ...] = (5, 7)  # random sub-hubs of these sizes ...
    subhub_draws: int = 30  # ... this many of each
    seed: int = 0


@dataclass
class TaskRun:
    """Everything measured on one task."""

    task: Task
    top1: dict[str, float]  # method -> top-1
    chosen: dict[str, Any]  # method -> model(s)
    per_model_top1: dict[str, float]
    per_class: np.ndarray  # (M, C) measured per-class accuracy
    tau: dict[str, float]
    selection_s: float
    eval_all_s: float
    probs: list[np.ndarray] = field(repr=False, default_factory=list)
    targets: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    reuse: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))  # (M, C)
    per_class_f1: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))  # (M, C)
    source_weights: dict[str, Any] = field(default_factory=dict)  # of the "(domain)" rows
    correct: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # method -> (N,)
    selection: SelectionResult | None = field(repr=False, default=None)  # the configured MLL's
    gpt_scores: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))  # (M,)
    fell_back: int = 0  # classes of the configured MLL that fell back to the task's model
    calibrated: list[np.ndarray] | None = field(repr=False, default=None)  # the configured's

    def probs_for(self, sel: SelectionResult) -> list[np.ndarray]:
        """Each model's probabilities as selection ``sel`` reuses them (its calibration)."""
        return self.calibrated if sel.logit_scales and self.calibrated is not None \
            else self.probs


@dataclass
class BenchResult:
    runs: list[TaskRun]
    models: list[str]
    config: BenchConfig
    growth: dict[str, list[float]] = field(default_factory=dict)
    modelgpt_paper: dict[str, Any] = field(default_factory=dict)  # its pseudo-task training
    methods: tuple[str, ...] = METHODS  # the columns, in order
    references: tuple[str, ...] = ORACLES  # the columns that are ceilings, not methods
    subhubs: dict[str, Any] = field(default_factory=dict)  # size -> MLL vs INB over draws

    def intervals(self) -> dict[str, Interval]:
        """Paired bootstrap 95 % intervals of each comparison of :data:`COMPARISONS` (over the
        tasks' classes and images), for the runs that kept their per-image results."""
        out = {}
        for a, b in COMPARISONS:
            if self.runs and all(a in r.correct and b in r.correct for r in self.runs):
                out[f"{a} - {b}"] = paired_bootstrap(
                    [(r.correct[a], r.correct[b], r.targets) for r in self.runs])
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Flat table: one row per task x method."""
        out = []
        for r in self.runs:
            for m in self.methods:
                out.append({"task": r.task.name, "classes": len(r.task.classes), "method": m,
                            "top1": round(r.top1[m], 4), "chosen": r.chosen[m]})
        return out

    def averages(self) -> dict[str, float]:
        return {m: round(float(np.mean([r.top1[m] for r in self.runs])), 4)
                for m in self.methods}

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": self.models, "config": self.config.__dict__,
            "tasks": [{"task": r.task.name, "classes": len(r.task.classes),
                       "top1": {m: round(v, 4) for m, v in r.top1.items()},
                       "chosen": r.chosen, "source_weights": r.source_weights,
                       "kendall_tau": {m: round(v, 4) for m, v in r.tau.items()},
                       "selection_s": round(r.selection_s, 3),
                       "eval_all_models_s": round(r.eval_all_s, 2),
                       "per_model_top1": {k: round(v, 4) for k, v in r.per_model_top1.items()}}
                      for r in self.runs],
            "average_top1": self.averages(),
            "average_kendall_tau": {m: round(float(np.nanmean([r.tau[m] for r in self.runs])), 4)
                                    for m in self.runs[0].tau} if self.runs else {},
            "growth": self.growth,
            "modelgpt_paper": self.modelgpt_paper,
            "intervals": {k: v.to_dict() for k, v in self.intervals().items()},
            "subhubs": self.subhubs,
            "fell_back": {r.task.name: r.fell_back for r in self.runs},
        }

    def markdown(self) -> str:
        taus = ("MLL (uniform)", "MLL (domain)", "INB", "ModelGPT (paper)")
        cols = self.methods
        head = "| task | classes | " + " | ".join(cols) + " | tau MLL (uniform) | " \
               "tau MLL (domain) | tau INB | tau GPT (paper) | select s | eval-all s |\n"
        head += "|---|---:|" + "---:|" * len(cols) + "---:|" * (len(taus) + 2) + "\n"
        selection = [m for m in cols if m not in self.references]  # bold: the best of these
        lines = []
        for r in self.runs:
            best = max(r.top1[m] for m in selection)
            cells = [f"**{r.top1[m]:.3f}**" if m in selection and r.top1[m] == best
                     else f"{r.top1[m]:.3f}" for m in cols]
            lines.append(f"| {r.task.name} | {len(r.task.classes)} | " + " | ".join(cells) +
                         "".join(f" | {r.tau.get(t, float('nan')):.2f}" for t in taus) +
                         f" | {r.selection_s:.2f} | {r.eval_all_s:.1f} |")
        av = self.averages()
        d = self.to_dict()["average_kendall_tau"]
        lines.append("| **average** | | " + " | ".join(f"{av[m]:.3f}" for m in cols) +
                     "".join(f" | {d.get(t, float('nan')):.2f}" for t in taus) + " | "
                     f"{np.mean([r.selection_s for r in self.runs]):.2f} | "
                     f"{np.mean([r.eval_all_s for r in self.runs]):.1f} |")
        out = head + "\n".join(lines) + "\n"
        iv = self.intervals()
        if iv:
            out += ("\n| difference of average top-1 | estimate | paired bootstrap 95 % "
                    "interval |\n|---|---:|---|\n")
            out += "".join(f"| {k} | {v.estimate:+.3f} | [{v.low:+.3f}, {v.high:+.3f}]"
                           f"{' (above 0)' if v.above_zero else ''} |\n" for k, v in iv.items())
        if self.subhubs:
            out += ("\n| random sub-hubs | draws | MLL k=1 | INB | ModelGPT (paper) | "
                    "MLL - INB (mean, 2.5-97.5 % of draws) | draws MLL >= INB |\n"
                    "|---|---:|---:|---:|---:|---|---:|\n")
            for size, h in self.subhubs.items():
                out += (f"| {size} models | {h['draws']} | {h['mll']:.3f} | {h['inb']:.3f} | "
                        f"{h['modelgpt_paper']:.3f} | {h['mll_minus_inb']:+.3f} "
                        f"[{h['low']:+.3f}, {h['high']:+.3f}] | {h['mll_at_least_inb']:.0%} |\n")
        return out


def _ensemble_top1(probs: Sequence[np.ndarray], chosen: np.ndarray, targets: np.ndarray,
                   weighting: str) -> float:
    return accuracy(ensemble_scores(probs, chosen, weighting), targets)["top1"]


def run_bench(tasks: Sequence[Task], graph: SemanticGraph, labels: dict[str, ModelLabel],
              load: Callable[[str], Any], cfg: BenchConfig | None = None,
              log: Callable[[str], None] = lambda s: None,
              embedder: Embedder | None = None,
              embeddings: dict[str, Path] | None = None) -> BenchResult:
    """Benchmark every method on every task. ``load`` maps a MODEL_REF to a loaded model;
    ``embeddings`` each ref to its label's embeddings file (ModelGPT (paper) needs them: a model
    without one is an error naming the fix, never a silent fallback)."""
    cfg = cfg or BenchConfig()
    methods = bench_methods(references=all(t.reference for t in tasks))
    embedder = embedder or Embedder()
    provider = WordNetCaptions()
    refs = sorted(labels)
    general = B.inb_scores(labels)
    inb = B.best_of(general)
    loaded: dict[str, Any] = {}

    def get(ref: str) -> Any:
        if ref not in loaded:
            loaded[ref] = load(ref)
        return loaded[ref]

    banks: dict[str, B.TextBank] = {}

    def bank(ref: str) -> B.TextBank:
        if ref not in banks:
            banks[ref] = B.TextBank(get(ref))
        return banks[ref]

    paper = B.fit_paper_modelgpt(graph, labels, embeddings or {}, bank, general,
                                 provider.describe)
    log(f"ModelGPT (paper): trained on {len(paper.tasks)} pseudo-tasks from "
        f"{len({t.source for t in paper.tasks})} sample sources")
    # warm the sentence model so selection timings measure selection, not a model load
    embedder.encode(["warm up"])
    runs: list[TaskRun] = []
    feats: dict[str, np.ndarray] = {}  # task -> (M, F) ModelGPT features
    for task in tasks:
        log(f"{task.name}: {len(task.classes)} classes")
        images = TaskImages.from_task(task)
        cache = ProbCache(images)
        t0 = time.perf_counter()
        probs = [cache.get(r, get) for r in refs]
        eval_all = time.perf_counter() - t0
        accs = [accuracy(p, images.targets) for p in probs]
        top1 = {r: a["top1"] for r, a in zip(refs, accs, strict=True)}
        C = len(task.classes)
        per_class = np.array([[a["per_class"].get(c, 0.0) for c in range(C)] for a in accs])
        sel: dict[str, Any] = {}
        for mode in MLL_MODES:  # the paper's rule: per-class votes, never falling back, each
            # model at its own logit scale
            sel[mode] = select(task, graph, labels, SelectOptions(
                k=1, alpha=cfg.alpha, metric=cfg.metric, top_n=cfg.top_n, source_weighting=mode,
                source_temperature=cfg.source_temperature, reuse_mode="per_class",
                fallback_z=None, calibration="none"), embedder=embedder, provider=provider)
        t1 = time.perf_counter()
        sel["configured"] = select(task, graph, labels, SelectOptions(
            k=1, alpha=cfg.alpha, metric=cfg.metric, top_n=cfg.top_n,
            source_weighting=cfg.source_weighting, source_temperature=cfg.source_temperature,
            reuse_mode=cfg.reuse_mode, fallback_z=cfg.fallback_z,
            calibration=cfg.calibration), embedder=embedder, provider=provider)
        sel_s = time.perf_counter() - t1
        scales = sel["configured"].logit_scales
        calibrated = [cache.get(r, get, scales[r]) for r in refs] if scales else None
        s1 = sel[cfg.source_weighting]  # the configured MLL: tau "MLL" and the growth curve
        desc = [provider.describe(c, task) for c in task.classes]
        feats[task.name] = np.stack([B.feature_vector(general[r], B.text_features(
            get(r), task.class_names, desc)) for r in refs])
        texts = B.ClassTexts(task.class_names, desc,
                             [B.class_synonyms(c) for c in task.class_names])
        gpt = paper.regression.predict(np.stack([B.paper_features(bank(r), texts, general[r])
                                                 for r in refs]))
        gpt_pick = refs[int(np.argmax(gpt))]
        f1 = B.per_class_f1(np.stack([p.argmax(1) for p in probs]), images.targets, C)
        ev = TaskEvidence(task, refs, probs, images.targets, top1, inb, sel, gpt_pick, f1,
                          cfg.weighting, calibrated, measure_reference(task, refs, get))
        picks = {m.name: m.pick(ev) for m in methods}
        correct = {name: np.asarray(c, bool) for name, (c, _) in picks.items()}
        res = {name: float(np.mean(c)) for name, c in correct.items()}
        chosen = {name: models for name, (_, models) in picks.items()}
        measured = [top1[r] for r in refs]
        tau = {"MLL": B.kendall_tau(s1.reuse.mean(1).tolist(), measured),
               **{f"MLL ({mode})": B.kendall_tau(sel[mode].reuse.mean(1).tolist(), measured)
                  for mode in MLL_MODES},
               "INB": B.kendall_tau([general[r] for r in refs], measured),
               "ModelGPT (paper)": B.kendall_tau(gpt.tolist(), measured)}
        runs.append(TaskRun(task, res, chosen, top1, per_class, tau, sel_s, eval_all,
                            probs, images.targets, s1.reuse, f1,
                            dict(sel["domain"].params.get("source_weights") or {}),
                            correct, sel["configured"], np.asarray(gpt, np.float64),
                            int(sel["configured"].params.get("fell_back", 0)), calibrated))
        log(f"  MLL k=1 {res[MLL]:.3f} (paper rule: uniform {res['MLL k=1 (uniform)']:.3f}, "
            f"domain {res['MLL k=1 (domain)']:.3f})  INB {res['INB']:.3f}  oracle "
            f"{res['Oracle (single)']:.3f}")

    # ModelGPT (target-fit): leave-one-task-out ridge regression on the other target tasks
    tf = TARGET_FIT
    for run in runs:
        others = [r for r in runs if r is not run]
        if not others:
            run.top1[tf], run.chosen[tf] = run.top1["INB"], inb
            run.correct[tf] = run.correct["INB"]
            run.tau[tf] = run.tau["INB"]
            continue
        X = np.concatenate([feats[o.task.name] for o in others])
        y = np.concatenate([[o.per_model_top1[r] for r in refs] for o in others])
        pred = B.ModelGPT().fit(X, y).predict(feats[run.task.name])
        pick = refs[int(np.argmax(pred))]
        run.top1[tf], run.chosen[tf] = run.per_model_top1[pick], pick
        run.correct[tf] = np.asarray(run.probs[refs.index(pick)].argmax(1) == run.targets)
        run.tau[tf] = B.kendall_tau(pred.tolist(), [run.per_model_top1[r] for r in refs])
    result = BenchResult(runs, refs, cfg, modelgpt_paper=paper.summary(),
                         methods=_columns(methods),
                         references=tuple(m.name for m in methods if m.reference))
    result.growth = growth(runs, labels, cfg)
    result.subhubs = subhubs(runs, general, cfg)
    return result


def subhubs(runs: Sequence[TaskRun], general: dict[str, float],
            cfg: BenchConfig) -> dict[str, Any]:
    """The configured MLL against INB and ModelGPT (paper) on random sub-hubs: for each size,
    ``subhub_draws`` random model subsets (seeded), each method choosing within the subset
    (MLL: the same selection restricted, :meth:`SelectionResult.with_models`)."""
    if not runs or runs[0].selection is None:
        return {}
    refs = runs[0].selection.models
    rng = np.random.default_rng([cfg.seed, 1])
    out: dict[str, Any] = {}
    for size in cfg.subhub_sizes:
        if size >= len(refs):
            continue
        rows = []
        for _ in range(cfg.subhub_draws):
            keep = np.sort(rng.choice(len(refs), size, replace=False))
            m, i, g = [], [], []
            for run in runs:
                sel = run.selection.with_models(keep.tolist())  # type: ignore[union-attr]
                probs = [run.probs_for(sel)[j] for j in keep]
                sc = ensemble_scores(probs, sel.chosen, cfg.weighting, sel.vote_weights())
                m.append(float(np.mean(sc.argmax(1) == run.targets)))
                inb = max(keep, key=lambda j: (general[refs[j]], -j))
                i.append(run.per_model_top1[refs[inb]])
                gp = keep[int(np.argmax(run.gpt_scores[keep]))]
                g.append(run.per_model_top1[refs[gp]])
            rows.append((np.mean(m), np.mean(i), np.mean(g)))
        a = np.array(rows)
        d = a[:, 0] - a[:, 1]
        out[str(size)] = {"draws": len(a), "mll": round(float(a[:, 0].mean()), 4),
                          "inb": round(float(a[:, 1].mean()), 4),
                          "modelgpt_paper": round(float(a[:, 2].mean()), 4),
                          "mll_minus_inb": round(float(d.mean()), 4),
                          "low": round(float(np.quantile(d, 0.025)), 4),
                          "high": round(float(np.quantile(d, 0.975)), 4),
                          "mll_at_least_inb": round(float(np.mean(d >= 0)), 4)}
    return out


def growth(runs: Sequence[TaskRun], labels: dict[str, ModelLabel],
           cfg: BenchConfig) -> dict[str, list[float]]:
    """Average top-1 over tasks as the hub grows from 1 model to all, over random orders.

    Every selection quantity is per model (a model's reuse metric does not depend on the other
    models), so the k=1 choice within a subset is the argmax of the full reuse matrix over it.
    """
    refs = sorted(labels)
    rng = np.random.default_rng(cfg.seed)
    general = B.inb_scores(labels)
    curves: dict[str, list[list[float]]] = {"MLL k=1": [], "INB": [], "Oracle (single)": []}
    for _ in range(cfg.growth_orders):
        order = [refs[i] for i in rng.permutation(len(refs))]
        mll, inb, orc = [], [], []
        for n in range(1, len(order) + 1):
            sub = {r: labels[r] for r in order[:n]}
            idx = np.array([refs.index(r) for r in sorted(sub)])
            a_mll, a_inb, a_orc = [], [], []
            for run in runs:
                chosen = idx[np.argmax(run.reuse[idx], axis=0)][:, None]  # (C, 1) into refs
                a_mll.append(_ensemble_top1(run.probs, chosen, run.targets, cfg.weighting))
                a_inb.append(run.per_model_top1[B.best_of({r: general[r] for r in sub})])
                a_orc.append(max(run.per_model_top1[r] for r in sub))
            mll.append(float(np.mean(a_mll)))
            inb.append(float(np.mean(a_inb)))
            orc.append(float(np.mean(a_orc)))
        curves["MLL k=1"].append(mll)
        curves["INB"].append(inb)
        curves["Oracle (single)"].append(orc)
    out: dict[str, list[float]] = {}
    for k, v in curves.items():
        arr = np.array(v)
        out[f"{k} mean"] = arr.mean(0).round(4).tolist()
        out[f"{k} std"] = arr.std(0).round(4).tolist()
    return out


def plot(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    """Per-task bars for every method, and the growth curve beside them (one PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iv = result.intervals()
    fig, axes = plt.subplots(1, 3 if iv else 2, figsize=(20 if iv else 15, 4.8),
                             gridspec_kw={"width_ratios": [2, 1, 1] if iv else [2, 1]})
    ax, ax2 = axes[0], axes[1]
    names = [r.task.name for r in result.runs] + ["average"]
    x = np.arange(len(names))
    cols = result.methods
    w = 0.8 / len(cols)
    av = result.averages()
    colours = [plt.get_cmap("tab20")(i) for i in range(20)]
    for i, m in enumerate(cols):  # references (ceilings and attainable choices) hatched
        vals = [r.top1[m] for r in result.runs] + [av[m]]
        ax.bar(x + (i - len(cols) / 2 + 0.5) * w, vals, w, label=m,
               color=colours[i % len(colours)],
               hatch="//" if m in result.references else None, edgecolor="white", lw=0)
    ax.set_xticks(x, names, rotation=30 if len(names) > 6 else 0, ha="right"
                  if len(names) > 6 else "center", fontsize=8 if len(names) > 10 else 10)
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"{len(result.runs)} task{'s' if len(result.runs) != 1 else ''} "
                 f"({', '.join(n for n in names[:-1][:6])}{', ...' if len(names) > 7 else ''}): "
                 "selection methods", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    g = result.growth
    if g:
        n = np.arange(1, len(g["MLL k=1 mean"]) + 1)
        for k in ("MLL k=1", "INB", "Oracle (single)"):
            mu, sd = np.array(g[f"{k} mean"]), np.array(g[f"{k} std"])
            ax2.plot(n, mu, marker="o", ms=3, label=k if k != "MLL k=1"
                     else f"MLL k=1 ({result.config.source_weighting})")
            ax2.fill_between(n, mu - sd, mu + sd, alpha=0.2)
        ax2.set_xlabel("models in the hub")
        ax2.set_ylabel("average top-1 over tasks")
        ax2.set_title(f"growth ({result.config.growth_orders} random orders)")
        ax2.legend(fontsize=8)
    if iv:
        ax3 = axes[2]
        names_iv = list(iv)
        est = np.array([iv[k].estimate for k in names_iv])
        err = np.array([[iv[k].estimate - iv[k].low for k in names_iv],
                        [iv[k].high - iv[k].estimate for k in names_iv]])
        ax3.errorbar(est, np.arange(len(names_iv)), xerr=err, fmt="o", capsize=4)
        ax3.axvline(0, color="grey", lw=1, ls="--")
        ax3.set_yticks(np.arange(len(names_iv)), names_iv, fontsize=8)
        ax3.set_xlabel("difference of average top-1")
        ax3.set_title("paired bootstrap 95 % intervals", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _key(method: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in method.lower()).strip("_")


def measure_reference(task: Task, refs: Sequence[str], load: Callable[[str], Any]
                      ) -> ReferenceEvidence | None:
    """Every model alone on ``task``'s reference set (None when the task names none)."""
    if task.reference is None:
        return None
    cache = ProbCache(TaskImages.from_task(task, task.reference))
    targets = cache.images.targets
    preds = [cache.get(r, load) for r in refs]
    return ReferenceEvidence(
        {r: accuracy(p, targets)["top1"] for r, p in zip(refs, preds, strict=True)},
        B.per_class_f1(np.stack([p.argmax(1) for p in preds]), targets, len(task.classes)))


def single_model_top1(task: Task, refs: Sequence[str], load: Callable[[str], Any],
                      data: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """Measured top-1 of every model alone on a task's labelled images (for INB and oracle)."""
    cache = ProbCache(TaskImages.from_task(task, data))
    return {r: accuracy(cache.get(r, load), cache.images.targets)["top1"] for r in refs}
