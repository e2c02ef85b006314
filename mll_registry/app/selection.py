"""Selection and reuse: the labels a graph has, the models chosen per class of a task, their
ensemble measured on labelled images, and the MLflow runs recording both."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mll_registry.app.results import Reuse, Selection

if TYPE_CHECKING:
    from mll_registry.app.graphs import GraphService, GraphSpec
    from mll_registry.app.parts import Parts
    from mll_registry.graph.bundle import SemanticGraph
    from mll_registry.labels.format import MappedLabel, ModelLabel
    from mll_registry.selection.ensemble import Ensemble
    from mll_registry.selection.reuse import ReuseResult
    from mll_registry.task import Task


class SelectionService:
    """The selection and reuse use cases over an App's :class:`~mll_registry.app.parts.Parts`
    and its graphs."""

    def __init__(self, parts: Parts, graphs: GraphService) -> None:
        self.app = parts
        self.graphs = graphs

    def labels(self, graph: SemanticGraph, store: str | None = None
               ) -> dict[str, ModelLabel]:
        """The labels of ``graph`` with the configured label settings, read and validated
        whole (the newest per model)."""
        from mll_registry.labels.stores import load_labels, store_fetch

        return load_labels(self._label_dirs(graph, store), graph.version,
                           store_fetch(self.app.label_store(store)))

    def mapped_labels(self, graph: SemanticGraph, store: str | None = None
                      ) -> dict[str, MappedLabel]:
        """The same labels opened by their meta.json or headers: selection reads (and from a
        remote store fetches) only the chunks of its candidate rows."""
        from mll_registry.labels.stores import open_labels, store_fetch

        return open_labels(self._label_dirs(graph, store), graph.version, len(graph.images),
                           len(graph.members), store_fetch(self.app.label_store(store)))

    def _label_dirs(self, graph: SemanticGraph, store: str | None) -> dict[str, Path]:
        from mll_registry.selection.select import SelectionError

        h = self.app.settings.label_hash()
        st = self.app.label_store(store)
        paths = st.label_dirs(graph.version, h)
        if not paths and st.list_labels(graph.version, None):
            raise SelectionError(
                f"no labels with the configured label settings (hash {h}) for graph "
                f"{graph.version}, but labels with other settings exist: label the models with "
                "these settings, set the same templates/top_k, or run `mll registry migrate` "
                "for a registry written by mll-registry 0.1")
        return dict(paths)

    def select(self, task: Task | str | os.PathLike[str], graph: SemanticGraph | GraphSpec, *,
               store: str | None = None, log: bool = False) -> Selection:
        """Match the task's classes to the graph by text and choose models per class."""
        import dataclasses

        from mll_registry.selection.select import SelectOptions, select
        from mll_registry.task import Task

        a = self.app
        t = task if isinstance(task, Task) else Task.from_yaml(task)
        g = self.graphs.of(graph)
        res = select(t, g, self.mapped_labels(g, store), SelectOptions.from_settings(a.settings),
                     embedder=a.embedder, provider=a.caption_provider, root=a.root)
        if res.dropped:  # the selection is for the classes left
            t = dataclasses.replace(t, classes=[c for c in t.classes if c.name not in res.dropped])
        sel = Selection(t, g, res)
        if log:
            sel.run_id = self.log(sel)
        return sel

    def log(self, sel: Selection, reuse: ReuseResult | None = None) -> str:
        """One MLflow run for a selection (and its measured reuse), linked to the versions used."""
        a = self.app
        reg = a.registry
        links, model_ids = reg.selection_links(sel.result.selected_models(), sel.graph.version,
                                               a.settings.label_hash())
        return reg.log_selection(sel.task, sel.result, reuse, links=links,
                                 settings=a.settings.recorded(), model_ids=model_ids)

    def reuse(self, task: Task | str | os.PathLike[str], data: str | os.PathLike[str] | None,
              graph: SemanticGraph | GraphSpec, *, store: str | None = None,
              log: bool = False) -> Reuse:
        """Select, run the entropy-weighted ensemble on labelled images, measure it."""
        from mll_registry.selection.reuse import evaluate

        sel = self.select(task, graph, store=store)
        s = self.app.settings
        out = evaluate(sel.result, sel.task, data, weighting=s.weighting, prompts=s.prompts,
                       device=s.device)
        r = Reuse(sel, out)
        if log:
            r.run_id = self.log(sel, out)
        return r

    def save_ensemble(self, sel: Selection, path: str | os.PathLike[str], *,
                      bundle: bool = False,
                      metas: dict[str, dict[str, Any]] | None = None) -> Path:
        """Save selection ``sel`` as an MLflow ``python_function`` model at ``path`` (a new
        folder): :mod:`mll_registry.selection.ensemble`'s spec as its data, loaded by that module
        (no pickle); ``bundle`` copies each member's model files in (config, weights, tokenizer:
        regular files only), so that serving needs no Hub. ``metas``: the members' label metas
        when the caller has them (else read here). The environment recorded is this tool's
        own requirement, never the caller's project files. Returns the model folder.

        Raises:
            SelectionError: ``bundle`` is asked for a member whose weights are not on disk here.
        """
        import shutil
        import tempfile

        import mlflow.pyfunc
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        from mll_registry import __version__
        from mll_registry.models.refs import model_files, resolve
        from mll_registry.selection.ensemble import (
            ENSEMBLE_FORMAT,
            IMAGE_COLUMN,
            MEMBERS_DIR,
            SPEC_FILE,
            input_example,
            pin_weights,
            prob_column,
            spec_from_selection,
        )
        from mll_registry.selection.ensemble_trust import LOADER
        from mll_registry.selection.select import SelectionError

        s = self.app.settings
        res = sel.result
        metas = metas if metas is not None else self._member_metas(sel)
        spec = pin_weights(spec_from_selection(res, s.prompts, s.weighting, metas))
        out = Path(path)
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "ensemble"
            data.mkdir()
            (data / SPEC_FILE).write_text(spec.to_json(), encoding="utf-8")
            for i, m in enumerate(spec.members if bundle else []):
                if not m.ref.startswith("local-dir:"):
                    raise SelectionError(f"cannot bundle {m.ref}: only local-dir: members are "
                                         "bundled; save without bundle (members load from the "
                                         "Hub cache at their revision)")
                dest = data / MEMBERS_DIR / str(i)
                dest.mkdir(parents=True)
                for f in model_files(resolve(m.ref)):  # resolve refuses links (regular_files)
                    shutil.copyfile(f, dest / f.name)  # but a Hub cache blob's: its bytes
            signature = ModelSignature(
                inputs=Schema([ColSpec("string", IMAGE_COLUMN)]),
                outputs=Schema([ColSpec("string", "class"),
                                *(ColSpec("double", prob_column(c)) for c in spec.classes)]))
            no_project = Path(tmp) / "no-uv-project"  # MLflow would copy the cwd's uv.lock,
            no_project.mkdir()  # pyproject.toml and .python-version (index URLs, passwords)
            mlflow.pyfunc.save_model(
                str(out), loader_module=LOADER, data_path=str(data),
                signature=signature, input_example=input_example(),
                pip_requirements=[f"mll-registry=={__version__}"],
                uv_project_path=no_project,
                metadata={"mll_ensemble": ENSEMBLE_FORMAT, "task": spec.task})
        return out

    def _member_metas(self, sel: Selection) -> dict[str, dict[str, Any]]:
        """The label metas of the models ``sel`` uses (their labels opened by header)."""
        labels = self.mapped_labels(sel.graph)
        return {r: dict(labels[r].meta) for r in sel.result.selected_models() if r in labels}

    def register(self, sel: Selection, name: str, *, bundle: bool = False) -> dict[str, str]:
        """Register selection ``sel`` as a new version of MLflow model ``name`` (``@task``: the
        name :func:`~mll_registry.selection.ensemble.ensemble_name` derives from the task),
        logged with the selection's run (made when ``sel`` has none): :meth:`save_ensemble`'s
        folder, tagged with its members, graph, reuse mode and calibration."""
        import json
        import tempfile

        from mll_registry.labels.format import label_digest
        from mll_registry.models.refs import LABEL_MODEL_PREFIXES
        from mll_registry.registry.graph_store import GRAPH_MODEL
        from mll_registry.selection.ensemble import FROM_TASK, ensemble_name
        from mll_registry.selection.select import SelectionError

        if name == FROM_TASK:
            name = ensemble_name(sel.task.name)
        if name == GRAPH_MODEL or name.startswith(LABEL_MODEL_PREFIXES):
            raise SelectionError(
                f"cannot register an ensemble as {name!r}: names starting "
                f"{', '.join(LABEL_MODEL_PREFIXES)} or named {GRAPH_MODEL} are the registry's "
                "label and graph models (labelling workers may write them); pick another name, "
                "or @task")

        res = sel.result
        rid = sel.run_id or self.log(sel)
        sel.run_id = rid
        metas = self._member_metas(sel)
        pins = {r: {"revision": m.get("revision"),
                    "label": label_digest(m),
                    "weights": m.get("weights_sha256")}
                for r, m in metas.items()}
        tags = {"mll.task": sel.task.name, "mll.graph_version": sel.graph.version,
                "mll.label_hash": self.app.settings.label_hash(),
                "mll.members": ",".join(res.selected_models())[:5000],
                "mll.pins": json.dumps(pins, sort_keys=True)[:5000],
                "mll.reuse_mode": res.reuse_mode, "mll.calibration": res.calibration,
                "mll.bundled": str(bundle).lower()}
        with tempfile.TemporaryDirectory() as tmp:
            path = self.save_ensemble(sel, Path(tmp) / "model", bundle=bundle, metas=metas)
            version = self.app.registry.register_model_dir(
                rid, path, name, tags,
                description=f"MLL ensemble for {sel.task.name}: {len(res.classes)} classes, "
                            f"{len(res.selected_models())} models")
        return {"name": name, "version": version, "uri": f"models:/{name}/{version}",
                "run_id": rid}

    def load_ensemble(self, model_uri: str, dst: str | os.PathLike[str]) -> Ensemble:
        """The ensemble at ``model_uri`` (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``,
        ``runs:/`` or a folder) from this App's registry, loaded only once its files are checked
        to be one of this tool's ensembles (a remote one downloaded into ``dst``, a new folder).
        MLflow's loader is never asked: it would run whatever the version's MLmodel names.

        Raises:
            UntrustedModelError: the version is not one of this tool's ensembles.
        """
        from mll_registry.selection.ensemble import Ensemble, loader
        from mll_registry.selection.ensemble_trust import DATA, fetch_verified

        s = self.app.settings
        with self.app.registry.process_uri():
            root, spec = fetch_verified(model_uri, dst, s.max_model_gb)
        return Ensemble(spec, loader(root / DATA, s.device))

    def predict(self, model_uri: str, images: list[str]) -> Any:
        """Load an ensemble (:meth:`load_ensemble`) and predict ``images`` (paths of image
        files, read here: the ensemble itself opens no paths)."""
        import tempfile

        from mll_registry.selection.ensemble import EnsembleInputError

        data = []
        for p in images:
            path = Path(p)
            if not path.is_file():
                raise EnsembleInputError(f"no such image file: {p}")
            data.append(path.read_bytes())
        with tempfile.TemporaryDirectory(prefix="mll-ensemble-") as tmp:
            return self.load_ensemble(model_uri, Path(tmp) / "model").predict(data)

    def serve(self, model_uri: str, host: str, port: int,
              ready: Callable[[str], None] | None = None) -> None:
        """Serve the ensemble at ``model_uri`` over HTTP (MLflow's scoring API) until
        interrupted, once its files are checked (:meth:`load_ensemble`'s check), every request
        held to the ``serve_max_*`` settings. ``ready`` is told what is served, before it is."""
        import tempfile

        from mll_registry.selection.ensemble import RequestLimits
        from mll_registry.selection.ensemble_trust import fetch_verified
        from mll_registry.selection.serving import serve

        s = self.app.settings
        with tempfile.TemporaryDirectory(prefix="mll-serve-") as tmp:
            with self.app.registry.process_uri():
                root, spec = fetch_verified(model_uri, Path(tmp) / "model", s.max_model_gb)
            if ready is not None:
                ready(f"{spec.task}: {len(spec.classes)} classes, {len(spec.members)} members")
            serve(root, host, port, RequestLimits.from_settings(s).body_bytes())

    def promote(self, name: str, version: str, task: Task | str | os.PathLike[str] | None = None,
                data: str | os.PathLike[str] | None = None, *, alias: str = "champion",
                margin: float = 0.0, force: bool = False) -> dict[str, Any]:
        """Champion and challenger: move ``alias`` of registered ensemble ``name`` to
        ``version`` only when it wins. With task data, both versions are measured on the same
        images (top-1), both figures go to one MLflow run (experiment ``mll-promotion``), and
        the challenger wins when its top-1 beats the champion's by more than ``margin``. The
        first version to ask becomes champion. Without data the alias moves only with ``force``.
        Rerunning for the version that holds the alias changes nothing.
        """
        import tempfile

        from mlflow.exceptions import MlflowException

        from mll_registry.selection.ensemble_trust import fetch_verified
        from mll_registry.selection.reuse import TaskImages
        from mll_registry.task import Task

        client = self.app.registry.client
        if task is None:  # an alias only ever names a checked version (measuring checks it)
            with tempfile.TemporaryDirectory(prefix="mll-promote-") as tmp, \
                    self.app.registry.process_uri():
                fetch_verified(f"models:/{name}/{version}", Path(tmp) / "model",
                               self.app.settings.max_model_gb)
        try:
            champion: str | None = str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            champion = None
        out: dict[str, Any] = {"name": name, "alias": alias, "challenger": str(version),
                               "champion": champion, "margin": margin}
        if champion == str(version):
            return {**out, "decision": "already", "moved": False}
        scores: dict[str, float] = {}
        if task is not None:
            t = task if isinstance(task, Task) else Task.from_yaml(task)
            images = TaskImages.from_task(t, data)
            for v in filter(None, (str(version), champion)):
                pred = self.predict(f"models:/{name}/{v}", [str(p) for p in images.paths])
                want = [images.classes[int(i)] for i in images.targets]
                scores[v] = float((pred["class"].to_numpy() == want).mean())
        if champion is None:
            decision = "first"
        elif str(version) in scores and champion in scores:
            decision = ("won" if scores[str(version)] > scores[champion] + margin else "lost")
        else:
            decision = "forced" if force else "no data"
        moved = decision in ("first", "won", "forced")
        if moved:
            client.set_registered_model_alias(name, alias, str(version))
        out.update(decision=decision, moved=moved, top1=scores)
        if scores:
            reg = self.app.registry
            with reg.run("mll-promotion", f"promote {name} v{version}", {
                    "mll.kind": "promotion", "mll.model": name,
                    "mll.decision": decision}) as rid:
                for k, val in {"challenger": version, "champion": champion or "-",
                               "alias": alias, "margin": margin}.items():
                    client.log_param(rid, k, str(val))
                client.log_metric(rid, "challenger_top1", scores[str(version)])
                if champion in scores:
                    client.log_metric(rid, "champion_top1", scores[str(champion)])
            out["run_id"] = rid
        return out

    def ensembles(self, model_ref: str | None = None, *, store: str | None = None
                  ) -> list[dict[str, Any]]:
        """Every registered ensemble version (those using ``model_ref`` when given) and whether
        it is stale (:func:`ensemble_versions`, which tags them)."""
        return ensemble_versions(self.app, model_ref, store)


def ensemble_versions(parts: Parts, model_ref: str | None = None, store: str | None = None
                      ) -> list[dict[str, Any]]:
    """Every registered ensemble version (those using ``model_ref`` when given) and whether
    it is stale: a member whose label on the ensemble's graph is gone, or whose revision or
    label changed since the version pinned them (``mll.pins``). A stale version is tagged
    ``mll.stale`` with the reasons; the tag is removed once it is fresh again.

    Tags are anyone's writing: a version whose ``mll.pins`` or label key is malformed is
    skipped with a warning naming it, so that it hides no other version (nor, after a label
    registration, the stale-marking of the others)."""
    import json
    import logging
    import re

    from mll_registry.labels.format import label_digest

    log = logging.getLogger(__name__)
    client = parts.registry.client
    st = parts.label_store(store)
    graph_version, label_hash = re.compile(r"[0-9a-f]{16}"), re.compile(r"[0-9a-f]{12}")

    def pages(search: Any, *args: Any) -> list[Any]:
        """Every result of an MLflow search, all pages (one page holds 100 registered models)."""
        out, token = [], None
        while True:
            page = search(*args, page_token=token)
            out += list(page)
            token = getattr(page, "token", None)
            if not token:
                return out

    def versions_of(name: str) -> list[Any]:
        """The versions of registered model ``name``, whatever it holds: MLflow's filter strings
        have no escapes, so each quote or backslash is LIKE's one-character wildcard there and
        the exact name is kept here."""
        pattern = re.sub(r"['\"\\\\]", "_", name)
        return [mv for mv in pages(client.search_model_versions, f"name LIKE '{pattern}'")
                if mv.name == name]

    def pins_of(tags: dict[str, str]) -> dict[str, dict[str, Any]]:
        """``mll.pins``: member ref -> its pinned revision, label digest and weights digest,
        each a string or null. Raises ValueError naming what is malformed."""
        try:
            pins = json.loads(tags.get("mll.pins") or "{}")
        except (ValueError, RecursionError):
            raise ValueError("mll.pins is not JSON") from None
        if not isinstance(pins, dict) or not all(isinstance(p, dict) for p in pins.values()):
            raise ValueError("mll.pins is not an object of member objects")
        for ref, pin in pins.items():
            for field in ("revision", "label", "weights"):
                if not isinstance(pin.get(field), (str, type(None))):
                    raise ValueError(f"mll.pins has a {field} of {ref!r:.80} that is no string")
        return pins

    current: dict[tuple[str, str], dict[str, Path]] = {}
    out = []
    for rm in pages(client.search_registered_models, "tags.`mll.kind` = 'ensemble'"):
        for mv in versions_of(rm.name):
            tags = mv.tags or {}
            members = [m for m in (tags.get("mll.members") or "").split(",") if m]
            if model_ref and model_ref not in members:
                continue
            key = (tags.get("mll.graph_version", ""), tags.get("mll.label_hash", ""))
            try:
                if any(key) and not (graph_version.fullmatch(key[0])
                                     and label_hash.fullmatch(key[1])):
                    raise ValueError("mll.graph_version or mll.label_hash is malformed")
                pins = pins_of(tags)
            except ValueError as exc:
                log.warning("skipping version %.20r of registered ensemble %.200r: %s (register "
                            "the ensemble again, or fix or delete that version)",
                            str(mv.version), rm.name, exc)
                continue
            if key not in current:
                current[key] = dict(st.label_dirs(*key)) if all(key) else {}
            reasons = []
            for ref, pin in pins.items():
                path = current[key].get(ref)
                if path is None:
                    reasons.append(f"{ref}: no label on graph {key[0]} any more")
                    continue
                meta = json.loads((Path(path) / "meta.json").read_text(encoding="utf-8"))
                if meta.get("revision") != pin.get("revision"):
                    reasons.append(f"{ref}: new revision {meta.get('revision')}")
                elif label_digest(meta) != pin.get("label"):
                    reasons.append(f"{ref}: new label version")
            stale = "; ".join(reasons)
            if stale and tags.get("mll.stale") != stale[:5000]:
                client.set_model_version_tag(rm.name, mv.version, "mll.stale", stale[:5000])
            elif not stale and "mll.stale" in tags:
                client.delete_model_version_tag(rm.name, mv.version, "mll.stale")
            out.append({"name": rm.name, "version": str(mv.version),
                        "task": tags.get("mll.task"), "members": members,
                        "aliases": list(getattr(mv, "aliases", []) or []),
                        "stale": reasons})
    return out
