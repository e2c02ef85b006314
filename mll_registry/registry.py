"""The MLflow registry: labels as runs and registered model versions, queries, selection runs.

Layout in MLflow:

* experiment ``mll-labels``: one run per (model revision, graph version) with params (model ref,
  architecture, templates, graph version), metrics (mean accuracy@1/@5, coverage, images/s) and
  artifacts (``label/`` = the label files, ``summary.csv``, ``concepts.png``);
* a **registered model per model source**; the name mapping is :func:`registered_name`
  (``hf-hub:org/name`` -> ``hf--org--name``; ``local-dir:PATH`` -> ``local--<folder>--<path hash>``;
  ``open_clip:ARCH/TAG`` -> ``open_clip--ARCH--TAG``): two sources never share a name;
* a **model version per labelled (revision, graph version)** whose source pins the exact revision
  (``hf://org/name@<sha>``, or ``local-dir:PATH@sha256:<digest>``), with tags (graph version, status,
  label summary) and the alias ``labeled`` on the newest labelled version;
* experiment ``mll-selection``: one run per selection (and reuse evaluation).

Idempotent: labelling an already labelled (revision, graph version) is a no-op unless forced. Two
concurrent registrations of one model leave one version (the lowest version number wins, the other
deletes itself). A version is created with status ``registering`` and a lease, and marked ``ready``
only after everything is in place; on any failure it is deleted, and one left behind by a killed
process (dead owner or expired lease) is removed by the next registration of the same label.

With nothing configured, MLflow runs embedded: ``sqlite:///<data>/mlflow.db`` with artifacts under
``<data>/mlartifacts``, initialised once under a file lock so concurrent writers are safe.
``MLFLOW_TRACKING_URI`` points it at a server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from mll_registry import __version__
from mll_registry.config import data_dir
from mll_registry.hub import ModelRef, ResolvedModel
from mll_registry.labels import ModelLabel

LABEL_EXPERIMENT = "mll-labels"
SELECTION_EXPERIMENT = "mll-selection"
ALIAS = "labeled"
NAMING = "2"  # registered-name scheme (see registered_name); "1" = the ambiguous legacy names
LEASE_S = 120.0  # a registration (after the label is logged) takes seconds; renew-free lease
T = TypeVar("T")
log = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    """The registry is unreachable or inconsistent; the message says what to do."""


# -- connection ----------------------------------------------------------------------------------
def tracking_uri(root: str | os.PathLike[str] | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded sqlite store in the data directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir(root) / 'mlflow.db'}"


def _artifact_root(root: str | os.PathLike[str] | None = None) -> str:
    return (data_dir(root) / "mlartifacts").as_uri()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def retrying(fn: Callable[[], T], what: str, uri: str, tries: int = 4,
             delay: float = 0.5) -> T:
    """Call ``fn``, retrying connection failures with backoff; then a clear RegistryError."""
    from mlflow.exceptions import MlflowException

    last: Exception | None = None
    for i in range(tries):
        try:
            return fn()
        except MlflowException as exc:
            text = str(exc)
            transient = any(s in text for s in ("Max retries", "Connection", "connect",
                                                 "503", "502", "504", "timed out"))
            if not transient:
                raise
            last = exc
        except (ConnectionError, OSError) as exc:
            last = exc
        time.sleep(delay * (2 ** i))
    raise RegistryError(
        f"MLflow at {_safe_uri(uri)} is not reachable ({what} failed after {tries} tries: "
        f"{str(last)[:200]}). Start the server or fix MLFLOW_TRACKING_URI; nothing was registered.")


def _safe_uri(uri: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", uri)  # never print credentials


def registered_name(ref: str | ModelRef) -> str:
    """The MLflow registered-model name of a model source; two sources never share one.

    ``hf-hub:org/name`` -> ``hf--org--name`` (Hub ids are ASCII and hold no ``--``, so this is
    one-to-one); ``local-dir:PATH`` -> ``local--<folder>--<hash of the absolute path>`` (a folder
    named like a Hub repo cannot take the Hub model's name, nor another folder's);
    ``open_clip:ARCH/TAG`` -> ``open_clip--ARCH--TAG``. A local copy of a Hub model is registered
    under the Hub name only when linked explicitly (``same_as``, checked byte for byte).
    """
    r = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
    if r.scheme == "hf-hub":
        return "hf--" + r.name.replace("/", "--")
    if r.scheme == "local-dir":
        folder = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(r.name).name)[:80] or "root"
        return f"local--{folder}--{hashlib.sha256(r.name.encode()).hexdigest()[:12]}"
    base = "open_clip--" + r.name.replace("/", "--")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", base)
    return safe if safe == base else f"{safe}--{hashlib.sha256(base.encode()).hexdigest()[:8]}"


def legacy_registered_name(ref: str | ModelRef) -> str:
    """The name releases before 0.2 used (last two path parts only; ambiguous): for migration."""
    r = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
    if r.scheme == "hf-hub":
        base = r.name.replace("/", "--")
    elif r.scheme == "local-dir":
        p = Path(r.name)
        base = f"{p.parent.name}--{p.name}" if p.parent.name else p.name
    else:
        base = "open_clip--" + r.name.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base)


def source_of(model_ref: str) -> str:
    """The source (scheme + name, no revision) of a MODEL_REF string; '' when unparsable."""
    try:
        return ModelRef.parse(model_ref).source
    except ValueError:
        return ""


def _proc_start(pid: int) -> str:
    """The kernel's start time of ``pid`` ('' where /proc is absent): tells a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def lease_tags(seconds: float) -> dict[str, str]:
    """Tags that say who is registering a version and until when the claim holds."""
    pid = os.getpid()
    return {"mll.lease_owner": f"{socket.gethostname()}:{pid}:{_proc_start(pid)}",
            "mll.lease_until": f"{time.time() + seconds:.3f}"}


def lease_stale(tags: dict[str, str], now: float | None = None) -> bool:
    """A ``registering`` version whose owner is gone: lease expired, or a dead process here.

    Versions from releases without leases count as stale (their owner cannot be checked).
    """
    until = tags.get("mll.lease_until")
    owner = tags.get("mll.lease_owner", "")
    if until is None:
        return True
    try:
        if float(until) < (now if now is not None else time.time()):
            return True
    except ValueError:
        return True
    host, _, rest = owner.partition(":")
    pid_s, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_s.isdigit():
        return False  # another host: only the lease expiry can tell
    pid = int(pid_s)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return bool(start) and _proc_start(pid) != start


def version_source(res: ResolvedModel) -> str:
    """A model-version source that pins the exact revision (accepted by the MLflow server)."""
    if res.ref.scheme == "hf-hub":
        return f"hf://{res.ref.name}@{res.revision}"
    return f"{res.ref.scheme}:{res.ref.name}@{res.revision}"


@dataclass
class LabelledVersion:
    """A registered, ready model version with its label summary."""

    name: str
    version: int
    run_id: str
    model_ref: str
    revision: str
    graph_version: str
    mean_acc1: float
    source: str
    aliases: list[str] = field(default_factory=list)

    @property
    def model_source(self) -> str:
        """Where the model comes from (scheme + name, no revision): one entry per source."""
        return source_of(self.model_ref) or self.name

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _version_entry(v: Any) -> LabelledVersion:
    t = v.tags or {}
    return LabelledVersion(name=v.name, version=int(v.version), run_id=v.run_id or "",
                           model_ref=t.get("mll.model_ref", ""), revision=t.get("mll.revision", ""),
                           graph_version=t.get("mll.graph_version", ""),
                           mean_acc1=float(t.get("mll.mean_acc1", "nan")), source=v.source,
                           aliases=list(getattr(v, "aliases", []) or []))


class Registry:
    """Labels and selections in MLflow (embedded sqlite by default, or a server)."""

    def __init__(self, uri: str | None = None, root: str | os.PathLike[str] | None = None,
                 tries: int = 4) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        from mlflow import MlflowClient

        self.root = root
        self.uri = uri or tracking_uri(root)
        self.tries = tries
        self.lease_s = LEASE_S
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri[len("sqlite:///"):])
            with _file_lock(db.with_suffix(".init.lock")):  # one migration, then many writers
                self.client = MlflowClient(self.uri)
                self.client.search_experiments(max_results=1)
        else:
            self.client = MlflowClient(self.uri)
        self._exp: dict[str, str] = {}

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return retrying(fn, what, self.uri, self.tries)

    def experiment(self, name: str) -> str:
        """Experiment id, created on first use (artifacts in the data dir when embedded)."""
        if name not in self._exp:
            exp = self._call(lambda: self.client.get_experiment_by_name(name), "get experiment")
            if exp is None:
                loc = _artifact_root(self.root) if self.uri.startswith("sqlite") else None
                try:
                    eid = self._call(lambda: self.client.create_experiment(
                        name, artifact_location=loc), "create experiment")
                except Exception:  # created concurrently by another writer
                    exp = self.client.get_experiment_by_name(name)
                    if exp is None:
                        raise
                    eid = exp.experiment_id
            else:
                eid = exp.experiment_id
            self._exp[name] = eid
        return self._exp[name]

    @contextlib.contextmanager
    def _run(self, experiment: str, run_name: str, tags: dict[str, str]) -> Iterator[str]:
        """A run that ends FINISHED when the block completes and FAILED when it raises."""
        exp = self.experiment(experiment)
        run = self._call(lambda: self.client.create_run(exp, run_name=run_name, tags=tags),
                         "create run")
        rid = str(run.info.run_id)
        try:
            yield rid
            self.client.set_terminated(rid, "FINISHED")
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.set_terminated(rid, "FAILED")
            raise

    # -- label registration -------------------------------------------------------------------
    def versions(self, name: str) -> list[Any]:
        from mlflow.exceptions import MlflowException

        try:
            return list(self._call(lambda: self.client.search_model_versions(
                f"name='{name}'", max_results=1000), "search model versions"))
        except MlflowException:
            return []

    def same_label(self, name: str, revision: str, graph_version: str) -> list[Any]:
        """Versions of ``name`` that label (revision, graph version), whatever their status."""
        return [v for v in self.versions(name) if (v.tags or {}).get("mll.revision") == revision
                and (v.tags or {}).get("mll.graph_version") == graph_version]

    def find_labelled(self, name: str, revision: str, graph_version: str) -> Any | None:
        """The ready version holding (revision, graph version), if any (lowest number)."""
        hits = [v for v in self.same_label(name, revision, graph_version)
                if (v.tags or {}).get("mll.status") == "ready"]
        return min(hits, key=lambda v: int(v.version)) if hits else None

    def register_label(self, res: ResolvedModel, label: ModelLabel, label_dir: Path,
                       force: bool = False) -> tuple[LabelledVersion, bool]:
        """Log the labelling run and register the version. Returns (version, created_now).

        A no-op returning the existing version when (revision, graph version) is registered,
        unless ``force`` (then a new version replaces the old one as ``labeled``).
        """
        name = registered_name(res.ref)
        if not force:
            old = self.find_labelled(name, res.revision, label.graph_version)
            if old is not None:
                return _version_entry(old), False
        run_id = self._log_label_run(res, label, label_dir, name)
        entry = self._register_version(res, label, name, run_id, force)
        return entry, entry.run_id == run_id

    def _log_label_run(self, res: ResolvedModel, label: ModelLabel, label_dir: Path,
                       name: str) -> str:
        meta = label.meta
        head = label.headline()
        with self._run(LABEL_EXPERIMENT, f"{name}@{res.revision[:15]} on {label.graph_version}",
                       {"mll.kind": "label", "mll.model_ref": str(res.ref),
                        "mll.revision": res.revision, "mll.graph_version": label.graph_version,
                        "mll.registered_model": name,
                        **({"mll.linked_copy": "true"} if res.linked else {})}) as rid:
            cfg = meta.get("label_config", {})
            params = {"model_ref": str(res.ref), "revision": res.revision,
                      "architecture": meta.get("architecture"), "graph_version": label.graph_version,
                      "templates": json.dumps(cfg.get("templates")),
                      "text_source": cfg.get("text_source"), "top_k": label.k,
                      "device": meta.get("device"), "code_version": __version__}
            for k, v in params.items():
                self.client.log_param(rid, k, str(v)[:6000])
            s = label.summary
            metrics = {"mean_acc1": head["mean_acc1"], "mean_acc5": head["mean_acc5"],
                       "coverage": float((s["acc5"] >= 0.5).mean()),
                       "images_per_s": float(meta.get("timings", {}).get("images_per_s") or 0),
                       "nodes": len(s), "images": head["images"]}
            for k, v in metrics.items():
                self.client.log_metric(rid, k, float(v))
            self.client.log_artifacts(rid, str(label_dir), "label")
            with tempfile.TemporaryDirectory() as tmp:
                s.sort_values("acc1", ascending=False).to_csv(Path(tmp) / "summary.csv",
                                                              index=False)
                concept_plot(s, Path(tmp) / "concepts.png", title=name)
                self.client.log_artifact(rid, str(Path(tmp) / "summary.csv"))
                self.client.log_artifact(rid, str(Path(tmp) / "concepts.png"))
        return rid

    def _register_version(self, res: ResolvedModel, label: ModelLabel, name: str, run_id: str,
                          force: bool) -> LabelledVersion:
        """Create the version under a lease, settle races and stale leftovers, mark it ready.

        A version is created ``registering`` with a lease (owner = host:pid:start, expiry).
        Twins of the same label key left ``registering`` by a dead owner, or past their lease,
        are deleted here, so a killed registration never wedges the model. Of live twins the
        lowest version number wins; a ready twin wins over this one unless ``force``.
        """
        from mlflow.exceptions import MlflowException

        try:
            self._call(lambda: self.client.create_registered_model(name, tags={
                "mll.model_ref_scheme": res.ref.scheme, "mll.source": res.ref.source,
                "mll.naming": NAMING}), "create registered model")
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                raise
        head = label.headline()
        top = label.summary.sort_values("acc1", ascending=False).head(5)["node_id"].tolist()
        v = self._call(lambda: self.client.create_model_version(
            name, version_source(res), run_id=run_id, tags={
                "mll.status": "registering", "mll.revision": res.revision,
                "mll.graph_version": label.graph_version, "mll.model_ref": str(res.ref),
                "mll.source": res.ref.source, **lease_tags(self.lease_s)},
            description=f"MLL label of {res.ref} at {res.revision} on graph {label.graph_version}"),
            "create model version")
        try:
            winner = None if force else self._settle(name, int(v.version), res.revision,
                                                     label.graph_version)
            if winner is not None:
                self.client.delete_model_version(name, v.version)
                self.client.set_tag(run_id, "mll.duplicate_of", f"{name}/{winner.version}")
                return _version_entry(winner)
            for k, val in {"mll.mean_acc1": head["mean_acc1"], "mll.mean_acc5": head["mean_acc5"],
                           "mll.nodes": head["nodes"], "mll.top_concepts": ",".join(top),
                           "mll.label_artifact": f"runs:/{run_id}/label",
                           "mll.code_version": __version__}.items():
                self.client.set_model_version_tag(name, v.version, k, str(val))
            self.client.set_model_version_tag(name, v.version, "mll.status", "ready")
            self._update_alias(name)
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.delete_model_version(name, v.version)
            raise
        return _version_entry(self.client.get_model_version(name, v.version))

    def _settle(self, name: str, mine: int, revision: str, graph_version: str) -> Any | None:
        """The ready twin this registration should yield to, or None to go on with ``mine``.

        Stale twins (owner dead, lease expired) are deleted; a live earlier twin still
        registering is waited for, at most until its lease expires.
        """
        while True:
            twins = [t for t in self.same_label(name, revision, graph_version)
                     if int(t.version) != mine]
            live = []
            for t in twins:
                tags = t.tags or {}
                if tags.get("mll.status") == "ready":
                    live.append(t)
                elif tags.get("mll.status") == "registering" and lease_stale(tags):
                    log.warning("%s version %s was left 'registering' by %s; removing it", name,
                                t.version, tags.get("mll.lease_owner", "an old release"))
                    with contextlib.suppress(Exception):
                        self.client.delete_model_version(name, t.version)
                elif tags.get("mll.status") == "registering":
                    live.append(t)
            ready = [t for t in live if (t.tags or {}).get("mll.status") == "ready"]
            if ready:
                return min(ready, key=lambda t: int(t.version))
            if not any(int(t.version) < mine for t in live):
                return None
            time.sleep(0.2)  # an earlier live registration is finishing: wait for its outcome

    def _update_alias(self, name: str) -> None:
        ready = [v for v in self.versions(name) if (v.tags or {}).get("mll.status") == "ready"]
        if ready:
            newest = max(ready, key=lambda v: int(v.version))
            self.client.set_registered_model_alias(name, ALIAS, newest.version)

    # -- reading ------------------------------------------------------------------------------
    def labelled_versions(self, graph_version: str | None = None) -> list[LabelledVersion]:
        """Every ready labelled version (optionally of one graph version), all pages."""
        out: list[LabelledVersion] = []
        token: str | None = None
        filt = "tag.`mll.status` = 'ready'"

        def page_at(t: str | None) -> Any:
            return self._call(lambda: self.client.search_model_versions(
                filt, max_results=1000, page_token=t), "search model versions")

        while True:
            page = page_at(token)
            out += [_version_entry(v) for v in page]
            token = getattr(page, "token", None)
            if not token:
                break
        if graph_version:
            out = [v for v in out if v.graph_version == graph_version]
        return sorted(out, key=lambda v: (v.name, v.version))

    def latest_per_model(self, graph_version: str) -> list[LabelledVersion]:
        """The newest ready version per model source for ``graph_version``.

        Grouped by the source each version records (not by registered name), so even versions
        registered under a shared legacy name by two different sources both stay visible.
        """
        best: dict[tuple[str, str], LabelledVersion] = {}
        for v in self.labelled_versions(graph_version):
            key = (v.name, v.model_source)
            if key not in best or v.version > best[key].version:
                best[key] = v
        return [best[k] for k in sorted(best)]

    def latest_for(self, model: str, graph_version: str | None = None) -> LabelledVersion | None:
        """The newest ready version of a MODEL_REF (matched by source) or a registered name."""
        if ":" in model:
            src = ModelRef.parse(model).source
            mine = [v for v in self.labelled_versions(graph_version) if v.model_source == src]
        else:
            mine = [v for v in self.labelled_versions(graph_version) if v.name == model]
        return max(mine, key=lambda v: v.version) if mine else None

    def migrate_names(self) -> list[dict[str, Any]]:
        """Move models registered under legacy (ambiguous) names to :func:`registered_name`.

        A legacy model whose versions all come from one source is renamed (versions, tags and
        aliases kept); one shared by several sources (a name take-over) is split: each version
        is re-created under its own source's name and the legacy entry removed. Idempotent.
        Returns what was moved.
        """
        moved: list[dict[str, Any]] = []
        for rm in self._call(lambda: list(self.client.search_registered_models(
                max_results=1000)), "search registered models"):
            if (rm.tags or {}).get("mll.naming") == NAMING:
                continue
            groups: dict[str, list[Any]] = {}
            for v in self.versions(rm.name):
                ref = (v.tags or {}).get("mll.model_ref")
                if ref and source_of(ref):
                    groups.setdefault(registered_name(ref), []).append(v)
            if not groups:
                continue  # not one of ours
            if set(groups) == {rm.name}:  # the name did not change (open_clip refs)
                self.client.set_registered_model_tag(rm.name, "mll.naming", NAMING)
                continue
            existing = {m.name for m in self.client.search_registered_models(max_results=1000)}
            if len(groups) == 1 and next(iter(groups)) not in existing:
                new = next(iter(groups))
                self.client.rename_registered_model(rm.name, new)
                self.client.set_registered_model_tag(new, "mll.naming", NAMING)
                src = source_of(groups[new][0].tags["mll.model_ref"])
                self.client.set_registered_model_tag(new, "mll.source", src)
                moved.append({"from": rm.name, "to": new, "versions": len(groups[new])})
                continue
            for new, versions in groups.items():
                if new == rm.name:
                    continue
                src = source_of(versions[0].tags["mll.model_ref"])
                with contextlib.suppress(Exception):
                    self.client.create_registered_model(new, tags={
                        "mll.source": src, "mll.naming": NAMING})
                for v in sorted(versions, key=lambda x: int(x.version)):
                    self.client.create_model_version(new, v.source, run_id=v.run_id,
                                                     tags=dict(v.tags or {}),
                                                     description=v.description)
                    self.client.delete_model_version(rm.name, v.version)
                self._update_alias(new)
                moved.append({"from": rm.name, "to": new, "versions": len(versions)})
            if not self.versions(rm.name):
                self.client.delete_registered_model(rm.name)
        return moved

    def download_label(self, v: LabelledVersion) -> Path:
        """The label directory of a version (downloaded once into the data dir cache)."""
        import mlflow

        dest = data_dir(self.root) / "cache" / "registry-labels" / v.run_id
        if (dest / "label" / "meta.json").is_file():
            return dest / "label"
        dest.mkdir(parents=True, exist_ok=True)
        self._call(lambda: mlflow.artifacts.download_artifacts(
            run_id=v.run_id, artifact_path="label", dst_path=str(dest),
            tracking_uri=self.uri), "download label")
        return dest / "label"

    def download_summary(self, v: LabelledVersion) -> pd.DataFrame:
        """The per-node summary table of a version (cached by run id)."""
        import mlflow

        dest = data_dir(self.root) / "cache" / "registry-summaries" / v.run_id
        f = dest / "summary.parquet"
        if not f.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            self._call(lambda: mlflow.artifacts.download_artifacts(
                run_id=v.run_id, artifact_path="label/summary.parquet", dst_path=str(dest),
                tracking_uri=self.uri), "download summary")
            got = dest / "label" / "summary.parquet"
            if got.is_file():
                os.replace(got, f)
        return pd.read_parquet(f)

    # -- selection runs -----------------------------------------------------------------------
    def log_selection(self, task: Any, selection: Any, reuse: Any = None,
                      graph_version: str | None = None) -> str:
        """One run in ``mll-selection``: params, selection table, composition, metrics, tags."""
        versions = {v.model_ref: v for v in self.labelled_versions(graph_version)}
        used = selection.selected_models()
        links = [f"{versions[m].name}/{versions[m].version}" if m in versions else m for m in used]
        with self._run(SELECTION_EXPERIMENT, f"select {task.name}", {
                "mll.kind": "reuse" if reuse else "selection", "mll.task": task.name,
                "mll.model_versions": ",".join(links)[:5000]}) as rid:
            p = selection.params
            params = {"task": task.name, "domain": task.domain, "task_type": task.task,
                      "classes": len(task.classes), "k": p.get("k"), "alpha": p.get("alpha"),
                      "metric": p.get("metric"), "top_n": p.get("top_n"),
                      "caption_provider": p.get("caption_provider"),
                      "embedding_model": p.get("embedding_model"),
                      "graph_version": p.get("graph_version"),
                      "models_considered": len(selection.models)}
            for k, val in params.items():
                self.client.log_param(rid, k, str(val))
            self.client.log_text(rid, json.dumps(selection.to_dict(), indent=2),
                                 "selection.json")
            rows = [{"class": c["class"], "rank": i + 1, "model": m["model"],
                     "reuse": m["reuse"], "score": m["score"], "weak_match": c["weak_match"],
                     "top_node": c["nodes"][0]["node"] if c["nodes"] else ""}
                    for c in selection.per_class() for i, m in enumerate(c["models"])]
            self.client.log_text(rid, pd.DataFrame(rows).to_csv(index=False), "selection.csv")
            comp: dict[str, list[str]] = {}
            for c in selection.per_class():
                for m in c["models"]:
                    comp.setdefault(m["model"], []).append(c["class"])
            self.client.log_dict(rid, comp, "ensemble_composition.json")
            self.client.log_metric(rid, "models_used", float(len(used)))
            self.client.log_metric(rid, "weak_matches", float(len(selection.weak)))
            if reuse is not None:
                self.client.log_metric(rid, "top1", reuse.ensemble["top1"])
                self.client.log_metric(rid, "top5", reuse.ensemble["top5"])
                self.client.log_metric(rid, "images", float(reuse.n_images))
                self.client.log_metric(rid, "images_per_s", float(reuse.images_per_s))
                self.client.log_metric(rid, "forward_passes_per_image", float(len(used)))
                for ci, acc in reuse.ensemble["per_class"].items():
                    self.client.log_metric(rid, f"class_top1_{_metric_key(task.class_names[ci])}",
                                           acc)
                for m, acc in reuse.per_model.items():
                    self.client.log_metric(rid, f"alone_top1_{_metric_key(m.rsplit('/', 1)[-1])}",
                                           acc["top1"])
                self.client.log_text(rid, json.dumps(reuse.to_dict(), indent=2), "reuse.json")
        return rid


def _metric_key(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)[:200]


def concept_plot(summary: pd.DataFrame, path: Path, n: int = 12, title: str = "") -> Path:
    """Bar plot of a model's strongest and weakest concepts (folder nodes first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary.sort_values(["acc1", "mean_own"], ascending=False)
    pick = pd.concat([s.head(n), s.tail(n)])
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(pick) + 1))
    colours = ["tab:green"] * min(n, len(s)) + ["tab:red"] * (len(pick) - min(n, len(s)))
    ax.barh(pick["node_id"][::-1], pick["acc1"][::-1], color=colours[::-1])
    ax.set_xlabel("accuracy@1 over all graph nodes")
    ax.set_title(f"{title}: strongest and weakest concepts")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# -- label store and index --------------------------------------------------------------------
class MlflowLabelStore:
    """Selection's view of the registry: model ref -> label directory (downloaded, cached)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def labels_for(self, graph_version: str) -> dict[str, Path]:
        return {v.model_ref: self.registry.download_label(v)
                for v in self.registry.latest_per_model(graph_version)}


@dataclass
class ConceptHit:
    """One model's measured ability on one concept."""

    name: str
    version: int
    model_ref: str
    revision: str
    acc1: float
    acc5: float
    mean_own: float
    n_images: int

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("acc1", "acc5", "mean_own"):
            d[k] = round(float(d[k]), 4)
        return d


class LabelIndex:
    """Per-concept scores of every labelled model (models x nodes), for fast queries.

    Built from the registry's newest labelled version per model; cached on disk per (tracking
    URI, graph version) together with the (name, version, run) list it was built from, and
    rebuilt incrementally when that list changes. ``max_age`` seconds after a version check the
    next query trusts the cache without asking MLflow again (0 = always check).
    """

    FORMAT = "mll-label-index/2"

    def __init__(self, registry: Registry, graph_version: str, max_age: float = 30.0) -> None:
        self.registry = registry
        self.graph_version = graph_version
        self.max_age = max_age
        key = hashlib.sha256(registry.uri.encode()).hexdigest()[:12]
        self.path = data_dir(registry.root) / "cache" / "label-index" / f"{key}-{graph_version}"
        self.versions: list[LabelledVersion] = []
        self.nodes: list[str] = []
        self.acc1 = self.acc5 = self.own = np.zeros((0, 0), np.float32)
        self.n_images = np.zeros(0, np.int64)
        self.checked_at = 0.0
        self.build_stats: dict[str, float] = {}

    def _signature(self, versions: Sequence[LabelledVersion]) -> list[list[Any]]:
        return [[v.name, v.version, v.run_id] for v in versions]

    def refresh(self, force_check: bool = False) -> LabelIndex:
        """Load from the disk cache; check the registry for new versions unless recently checked."""
        if not self.versions and (self.path / "index.npz").is_file():
            self._load()
        if not force_check and self.versions and time.time() - self.checked_at < self.max_age:
            return self
        t0 = time.perf_counter()
        current = self.registry.latest_per_model(self.graph_version)
        t1 = time.perf_counter()
        if self._signature(current) != self._signature(self.versions) or not self.versions:
            self._build(current)
        self.checked_at = time.time()
        self._save_meta()
        self.build_stats["version_check_s"] = round(t1 - t0, 4)
        return self

    def _build(self, versions: list[LabelledVersion]) -> None:
        t0 = time.perf_counter()
        old = {(v.name, v.run_id): i for i, v in enumerate(self.versions)}
        rows1, rows5, rows_own = [], [], []
        nodes: list[str] | None = self.nodes or None
        fetched = 0
        for v in versions:
            i = old.get((v.name, v.run_id))
            if i is not None and nodes is not None:
                rows1.append(self.acc1[i])
                rows5.append(self.acc5[i])
                rows_own.append(self.own[i])
                continue
            s = self.registry.download_summary(v)
            fetched += 1
            if nodes is None:
                nodes = s["node_id"].tolist()
                self.n_images = s["n_images"].to_numpy(np.int64)
            s = s.set_index("node_id").reindex(nodes)
            rows1.append(s["acc1"].to_numpy(np.float32))
            rows5.append(s["acc5"].to_numpy(np.float32))
            rows_own.append(s["mean_own"].to_numpy(np.float32))
        self.nodes = nodes or []
        n = len(self.nodes)
        self.acc1 = np.stack(rows1) if rows1 else np.zeros((0, n), np.float32)
        self.acc5 = np.stack(rows5) if rows5 else np.zeros((0, n), np.float32)
        self.own = np.stack(rows_own) if rows_own else np.zeros((0, n), np.float32)
        self.versions = versions
        self._node_pos = {nd: i for i, nd in enumerate(self.nodes)}
        self.path.mkdir(parents=True, exist_ok=True)
        from mll_registry.fsutil import atomic_path

        with atomic_path(self.path / "index.npz", suffix=".npz") as tmp:
            np.savez(tmp, acc1=self.acc1, acc5=self.acc5, own=self.own, n_images=self.n_images)
        self.build_stats.update(build_s=round(time.perf_counter() - t0, 3), fetched=fetched)

    def _save_meta(self) -> None:
        from mll_registry.fsutil import write_json

        write_json(self.path / "versions.json", {
            "format": self.FORMAT, "checked_at": self.checked_at, "nodes": self.nodes,
            "versions": [v.to_dict() for v in self.versions]})

    def _load(self) -> None:
        """Read the disk cache: numeric arrays only (never a pickle), checked against the meta.

        A cache that is not exactly what this code writes (damaged, planted, older format) is
        deleted and rebuilt from the registry.
        """
        try:
            meta = json.loads((self.path / "versions.json").read_text(encoding="utf-8"))
            if meta.get("format") != self.FORMAT:
                raise ValueError("older cache format")
            with np.load(self.path / "index.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("acc1", "acc5", "own", "n_images")}
            nodes = [str(n) for n in meta["nodes"]]
            versions = [LabelledVersion(**v) for v in meta["versions"]]
            shape = (len(versions), len(nodes))
            if any(arrays[k].shape != shape or arrays[k].dtype.kind != "f"
                   for k in ("acc1", "acc5", "own")) or arrays["n_images"].shape != (len(nodes),):
                raise ValueError("arrays do not match the version and node lists")
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt, never trusted
            log.warning("label index cache %s is unusable (%s); rebuilding it", self.path, exc)
            for f in ("index.npz", "versions.json"):
                (self.path / f).unlink(missing_ok=True)
            return
        self.acc1, self.acc5, self.own = arrays["acc1"], arrays["acc5"], arrays["own"]
        self.n_images = arrays["n_images"]
        self.nodes, self.versions = nodes, versions
        self.checked_at = float(meta["checked_at"])
        self._node_pos = {nd: i for i, nd in enumerate(self.nodes)}

    def best(self, node_id: str, n: int = 5) -> list[ConceptHit]:
        """Models ranked by accuracy@1 on ``node_id`` (then accuracy@5, then mean own score)."""
        j = self._node_pos.get(node_id)
        if j is None:
            raise KeyError(node_id)
        order = np.lexsort((-self.own[:, j], -self.acc5[:, j], -self.acc1[:, j]))[:n]
        return [ConceptHit(self.versions[i].name, self.versions[i].version,
                           self.versions[i].model_ref, self.versions[i].revision,
                           float(self.acc1[i, j]), float(self.acc5[i, j]), float(self.own[i, j]),
                           int(self.n_images[j])) for i in order]


# -- orchestration shared by the CLI and the flows -----------------------------------------------
def label_and_register(ref: str, graph: Any, cfg: Any = None, registry: Registry | None = None,
                       force: bool = False, allow_pickle: bool = False,
                       root: str | os.PathLike[str] | None = None,
                       progress: Callable[[str, int, int], None] | None = None,
                       same_as: str | None = None) -> dict[str, Any]:
    """Resolve, label (unless already registered) and register one model.

    ``same_as`` (``hf-hub:ORG/NAME[@REV]``) registers a local copy under that Hub model, after
    checking that its config and weights are the Hub's bytes (see :func:`hub.link_copy`).

    Returns a summary with ``status`` = ``labelled`` (this call registered it) or ``skipped``
    (already registered); either way the version reported is ready, aliased and selectable.
    """
    from mll_registry.hub import link_copy, resolve
    from mll_registry.labeling import LabelConfig, label_ref

    cfg = cfg or LabelConfig()
    reg = registry or Registry(root=root)
    res = resolve(ref, allow_pickle=allow_pickle)
    if same_as:
        res = link_copy(res, same_as)
    name = registered_name(res.ref)
    if not force:
        old = reg.find_labelled(name, res.revision, graph.version)
        if old is not None:
            return {"status": "skipped", "reason": "already labelled for this revision and graph",
                    **_version_entry(old).to_dict()}
    run, path = label_ref(res, graph, cfg, root=root, allow_pickle=allow_pickle,
                          progress=progress)
    entry, created = reg.register_label(res, run.label, path, force=force)
    return {"status": "labelled" if created else "skipped", **entry.to_dict(),
            **run.summary(path)}


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
