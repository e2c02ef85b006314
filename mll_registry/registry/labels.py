"""The MLflow label registry: labels as runs and registered model versions (the ``registry``
label store).

Layout in MLflow:

* experiment ``mll-labels``: one run per labelled (model revision, graph version, label settings)
  with params, metrics (mean accuracy@1/@5, coverage, images/s) and artifacts (``label/`` = the
  label files, ``summary.csv``, ``concepts.png``);
* a **registered model per model source**, named by the source's scheme
  (:func:`mll_registry.models.refs.registered_name`): two sources never share a name;
* a **model version per label** whose source pins the exact revision, with tags (source,
  revision, graph version, status, label summary) and the alias ``labeled``.

Idempotent: labelling an already labelled key is a no-op unless forced. Two concurrent
registrations of one label leave one version (the lowest version number wins, the other deletes
itself). A version is created with status ``registering`` and a lease, and marked ``ready`` only
after everything is in place; on any failure it is deleted, and one left behind by a killed
process (dead owner or expired lease) is removed by the next registration of the same label.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import posixpath
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mll_registry import __version__
from mll_registry.config import data_dir
from mll_registry.labels.embeddings import embeddings_path
from mll_registry.labels.format import ModelLabel
from mll_registry.labels.stores import LabelKey, StoredLabel
from mll_registry.models.refs import (
    ModelRef,
    ResolvedModel,
    registered_name,
    source_of,
    version_source,
)
from mll_registry.registry.plots import concept_plot
from mll_registry.registry.tracking import LABEL_EXPERIMENT, RUN_ID, Tracking
from mll_registry.settings import DEFAULTS, label_identity_hash

ALIAS = "labeled"
NAMING = "2"  # registered-name scheme (see registered_name); "1" = the ambiguous legacy names
ALIAS_CHECKS = 5  # reads of the aliases after a registration sets them (_update_alias)
LEASE_S = 120.0  # a registration (after the label is logged) takes seconds; renew-free lease
log = logging.getLogger(__name__)


EMBEDDINGS_ARTIFACT = "embeddings/embeddings.safetensors"  # in the label run


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


def lineage_tags(label: ModelLabel) -> dict[str, str]:
    """Run and version tags of a label on an extended graph: the parent graph, its delta and
    whether this label was computed incrementally (from which graph's label)."""
    meta = label.meta
    out = {}
    if meta.get("graph_parent"):
        out["mll.parent_graph"] = str(meta["graph_parent"])
        out["mll.graph_delta"] = str(meta.get("graph_delta", ""))
    inc = meta.get("incremental")
    if inc:
        out["mll.incremental_from"] = str(inc.get("from_graph"))
        out["mll.images_encoded"] = str(inc.get("images_encoded"))
    elif meta.get("graph_parent"):
        out["mll.incremental_from"] = "none (labelled in full)"
    return out


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


def cost_tags(cost: Any) -> dict[str, str]:
    """The version tags of a label's inference cost (``meta.json``'s ``cost``; none for labels
    from before it was measured)."""
    if not isinstance(cost, dict):
        return {}
    return {f"mll.{k}": str(cost[k]) for k in ("params", "gflops", "ms_per_image") if k in cost}


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
    label_hash: str = ""
    model_id: str = ""  # the MLflow logged model holding the label
    #: the model's inference cost per image (params, gflops, ms_per_image; :mod:`~mll_registry.
    #: models.cost`), empty for labels from before it was measured
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def model_source(self) -> str:
        """Where the model comes from (scheme + name, no revision): one entry per source."""
        return source_of(self.model_ref) or self.name

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)




def run_cache_dir(kind: str, run_id: str, root: str | os.PathLike[str] | None = None) -> Path:
    """``<data>/cache/<kind>/<run_id>``: the cache of one label run's files.

    The run id comes from the registry, which anyone who can write to the server can set: it
    becomes a path only when it has a run id's shape, and only under the cache folder (an
    absolute or ``..`` id would otherwise point :func:`atomic_dir` at any directory to replace).
    """
    from mll_registry.fsutil import path_under
    from mll_registry.labels.format import LabelError

    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise LabelError(f"the registry names a label run {str(run_id)!r:.80}, which is not an "
                         "MLflow run id; fix or delete that model version in the registry")
    return path_under(data_dir(root) / "cache" / kind, run_id)


def cached_label_dir(v: LabelledVersion, root: str | os.PathLike[str] | None = None,
                     verify: bool = False) -> Path | None:
    """The version's label directory if a whole copy is in the data dir's cache (no MLflow).

    Whole = every file's header and footer parse; with ``verify`` also every file's checksum
    (reads the files: for full loads, which read them anyway).
    """
    from mll_registry.labels.format import checksum_mismatch, files_look_whole

    dest = run_cache_dir("registry-labels", v.run_id, root) / "label"
    if not files_look_whole(dest):
        return None
    try:
        return None if verify and checksum_mismatch(dest) else dest
    except (OSError, ValueError):
        return None


_REPO_LOCK = threading.Lock()


@contextlib.contextmanager
def stored_label(label_dir: Path) -> Iterator[Path]:
    """The label at ``label_dir`` as an artifact store holds it (a temporary directory, gone
    after the block): an ``mll-label/2`` label's ranks in chunks, the other files linked;
    an ``mll-label/1`` label as it is."""
    from mll_registry.fsutil import read_json_object
    from mll_registry.labels.format import FORMAT, RANKS_FILE, label_files, write_chunks

    meta = read_json_object(label_dir / "meta.json")
    if meta.get("format") != FORMAT:
        yield label_dir
        return
    with tempfile.TemporaryDirectory(prefix=".stored.", dir=label_dir.parent) as tmp:
        out = Path(tmp)
        for name in ["meta.json", *(f for f in label_files(meta) if f != RANKS_FILE)]:
            try:
                os.link(label_dir / name, out / name)
            except OSError:  # no hard links here: a copy
                import shutil

                shutil.copyfile(label_dir / name, out / name)
        write_chunks(label_dir, out)
        yield out


def version_entry(v: Any) -> LabelledVersion:
    """An MLflow ``ModelVersion`` as the :class:`LabelledVersion` the tool reports."""
    t = v.tags or {}
    return LabelledVersion(name=v.name, version=int(v.version), run_id=v.run_id or "",
                           model_ref=t.get("mll.model_ref", ""), revision=t.get("mll.revision", ""),
                           graph_version=t.get("mll.graph_version", ""),
                           mean_acc1=float(t.get("mll.mean_acc1", "nan")), source=v.source,
                           aliases=list(getattr(v, "aliases", []) or []),
                           label_hash=t.get("mll.label_hash", ""),
                           model_id=t.get("mll.model_id", ""), cost=cost_of(t))


def cost_of(tags: dict[str, str]) -> dict[str, float]:
    """The inference cost a label version's tags carry (:func:`cost_tags`), numbers only."""
    out = {}
    for k in ("params", "gflops", "ms_per_image"):
        try:
            out[k] = float(tags[f"mll.{k}"])
        except (KeyError, ValueError):
            continue
    return out


class Registry(Tracking):
    """Labels in MLflow: registration (leases, races, migration) and reading."""

    lease_s = LEASE_S

    # -- label registration -------------------------------------------------------------------
    def versions(self, name: str) -> list[Any]:
        from mlflow.exceptions import MlflowException

        try:
            return list(self.call(lambda: self.client.search_model_versions(
                f"name='{name}'", max_results=1000), "search model versions"))
        except MlflowException:
            return []

    def same_label(self, name: str, revision: str, graph_version: str,
                   label_hash: str) -> list[Any]:
        """Versions of ``name`` holding that label key, whatever their status."""
        return self._tagged(name, {"mll.revision": revision, "mll.graph_version": graph_version,
                                   "mll.label_hash": label_hash})

    def _tagged(self, name: str, want: dict[str, str]) -> list[Any]:
        """Versions of ``name`` carrying every tag value of ``want``."""
        return [v for v in self.versions(name)
                if all((v.tags or {}).get(k) == val for k, val in want.items())]

    def find_labelled(self, name: str, revision: str, graph_version: str,
                      label_hash: str) -> Any | None:
        """The ready version holding that label key, if any (lowest number)."""
        hits = [v for v in self.same_label(name, revision, graph_version, label_hash)
                if (v.tags or {}).get("mll.status") == "ready"]
        return min(hits, key=lambda v: int(v.version)) if hits else None

    def find_same_content(self, name: str, content: str, graph_version: str,
                          label_hash: str) -> Any | None:
        """The ready version of ``name`` on that graph and settings computed from ``content``
        (:func:`~mll_registry.models.refs.content_id`) at whatever commit (lowest number)."""
        if not content:
            return None
        hits = self._tagged(name, {"mll.content": content, "mll.graph_version": graph_version,
                                   "mll.label_hash": label_hash, "mll.status": "ready"})
        return min(hits, key=lambda v: int(v.version)) if hits else None

    def record_revision(self, v: Any, revision: str) -> list[str]:
        """Record that commit ``revision`` holds the content version ``v`` was labelled from
        (tag ``mll.revisions``: every such commit, oldest first). Returns the list."""
        tags = v.tags or {}
        seen = json.loads(tags.get("mll.revisions") or "[]") or [tags.get("mll.revision", "")]
        if revision not in seen:
            seen.append(revision)
            self.call(lambda: self.client.set_model_version_tag(
                v.name, v.version, "mll.revisions", json.dumps(seen)[:5000]),
                "record revision")
        return seen

    def _labelled_or_same(self, key: LabelKey) -> tuple[Any | None, bool]:
        """(the ready version of ``key``, whether it was found by content at another commit)."""
        name = registered_name(key.source)
        v = self.find_labelled(name, key.revision, key.graph_version, key.label_hash)
        if v is not None:
            return v, False
        v = self.find_same_content(name, key.content, key.graph_version, key.label_hash)
        return v, v is not None

    def register_label(self, res: ResolvedModel, label: ModelLabel, label_dir: Path,
                       force: bool = False) -> tuple[LabelledVersion, bool]:
        """Log the labelling run and register the version. Returns (version, created_now).

        A no-op returning the existing version when (revision, graph version) is registered,
        unless ``force`` (then a new version replaces the old one as ``labeled``).
        """
        name = registered_name(res.ref)
        if not force:
            old = self.find_labelled(name, res.revision, label.graph_version, label.label_hash)
            if old is not None:
                return version_entry(old), False
        run_id, model = self._log_label_run(res, label, label_dir, name)
        entry = self._register_version(res, label, name, run_id, force, model)
        return entry, entry.run_id == run_id

    def _log_label_run(self, res: ResolvedModel, label: ModelLabel, label_dir: Path,
                       name: str) -> tuple[str, tuple[str, str] | None]:
        """The label run (started when the labelling started) and its MLflow logged model.

        Returns (run id, logged-model id); the logged model holds the label files plus an
        ``MLmodel`` whose pyfunc is the label reader (:mod:`mll_registry.registry.label_pyfunc`).
        """
        meta = label.meta
        head = label.headline()
        took = float(meta.get("timings", {}).get("total") or 0.0)
        tags = {"mll.kind": "label", "mll.model_ref": str(res.ref),
                "mll.revision": res.revision, "mll.graph_version": label.graph_version,
                "mll.registered_model": name, "mll.label_hash": label.label_hash,
                **({"mll.linked_copy": "true"} if res.linked else {}), **lineage_tags(label)}
        with self.run(LABEL_EXPERIMENT, f"{name}@{res.revision[:15]} on {label.graph_version}",
                      tags, started=time.time() - took) as rid:
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
            # retried on a reset connection (a retry uploads every file again, over the same
            # names); a full disk fails at once. Stored with the ranks in chunks: what a
            # selection fetches one by one (labels.format.stored_files)
            with stored_label(label_dir) as stored:
                self.call(functools.partial(self.client.log_artifacts, rid, str(stored),
                                            "label"), "upload label")
            emb = embeddings_path(label_dir)
            if emb.is_file():  # beside the label, not in it: selection never downloads it
                with tempfile.TemporaryDirectory(dir=emb.parent) as tmp:
                    named = Path(tmp) / EMBEDDINGS_ARTIFACT.rsplit("/", 1)[1]
                    os.link(emb, named)  # the artifact's fixed name, without a copy
                    self.call(functools.partial(self.client.log_artifact, rid, str(named),
                                                EMBEDDINGS_ARTIFACT.rsplit("/", 1)[0]),
                              "upload embeddings")
                self.client.log_metric(rid, "embeddings_bytes", float(emb.stat().st_size))
            with tempfile.TemporaryDirectory() as tmp:
                s.sort_values("acc1", ascending=False).to_csv(Path(tmp) / "summary.csv",
                                                              index=False)
                concept_plot(s, Path(tmp) / "concepts.png", title=name)
                for name in ("summary.csv", "concepts.png"):  # uploads retried like every call
                    self.call(functools.partial(self.client.log_artifact, rid,
                                                str(Path(tmp) / name)), f"upload {name}")
            model = self._log_label_model(rid, name, label_dir, tags)
        return rid, model

    def _log_label_model(self, run_id: str, name: str, label_dir: Path,
                         tags: dict[str, str]) -> tuple[str, str]:
        """An MLflow logged model of the label (what ``models:/NAME@labeled`` resolves to)."""
        from mll_registry.registry.label_pyfunc import write_mlflow_model

        exp = self.experiment(LABEL_EXPERIMENT)
        lm = self.call(lambda: self.client.create_logged_model(
            exp, name=re.sub(r"[^A-Za-z0-9_-]", "-", name)[:200], source_run_id=run_id,
            tags=tags, model_type="mll-label"), "create logged model")
        with tempfile.TemporaryDirectory() as tmp:
            write_mlflow_model(label_dir, Path(tmp) / "model")
            self.call(functools.partial(self.client.log_model_artifacts, lm.model_id,
                                        str(Path(tmp) / "model")), "upload label model")
        self.client.finalize_logged_model(lm.model_id, "READY")
        return str(lm.model_id), str(lm.artifact_location)

    def _register_version(self, res: ResolvedModel, label: ModelLabel, name: str, run_id: str,
                          force: bool, model: tuple[str, str] | None = None) -> LabelledVersion:
        """Create the version under a lease, settle races and stale leftovers, mark it ready.

        A version is created ``registering`` with a lease (owner = host:pid:start, expiry).
        Twins of the same label key left ``registering`` by a dead owner, or past their lease,
        are deleted here, so a killed registration never wedges the model. Of live twins the
        lowest version number wins; a ready twin wins over this one unless ``force``.
        """
        from mlflow.exceptions import MlflowException

        try:
            self.call(lambda: self.client.create_registered_model(name, tags={
                "mll.model_ref_scheme": res.ref.scheme, "mll.source": res.ref.source,
                "mll.naming": NAMING}), "create registered model")
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                raise
        head = label.headline()
        top = label.summary.sort_values("acc1", ascending=False).head(5)["node_id"].tolist()
        # models:/<logged model>: what models:/NAME@alias downloads (label files + MLmodel)
        model_id = model[0] if model else None
        source = f"models:/{model_id}" if model_id else f"runs:/{run_id}/label"
        v = self.call(lambda: self._create_version(name, source, run_id, model_id, tags={
                "mll.status": "registering", "mll.revision": res.revision,
                "mll.graph_version": label.graph_version, "mll.model_ref": str(res.ref),
                "mll.source": res.ref.source, "mll.label_hash": label.label_hash,
                "mll.pinned_source": version_source(res),
                **({"mll.content": str(label.meta["content"])} if label.meta.get("content")
                   else {}),
                **({"mll.model_id": model_id} if model_id else {}),
                **lease_tags(self.lease_s)},
            description=f"MLL label of {res.ref} at {res.revision} on graph {label.graph_version}"),
            "create model version")
        try:
            winner = None if force else self._settle(name, int(v.version), res.revision,
                                                     label.graph_version, label.label_hash)
            if winner is not None:
                self.client.delete_model_version(name, v.version)
                self.client.set_tag(run_id, "mll.duplicate_of", f"{name}/{winner.version}")
                return version_entry(winner)
            for k, val in {"mll.mean_acc1": head["mean_acc1"], "mll.mean_acc5": head["mean_acc5"],
                           "mll.nodes": head["nodes"], "mll.top_concepts": ",".join(top),
                           "mll.label_artifact": f"runs:/{run_id}/label",
                           "mll.code_version": __version__, **lineage_tags(label),
                           **cost_tags(label.meta.get("cost"))}.items():
                self.client.set_model_version_tag(name, v.version, k, str(val))
            self.client.set_model_version_tag(name, v.version, "mll.status", "ready")
            for k in ("mll.lease_owner", "mll.lease_until"):  # the claim is over
                with contextlib.suppress(Exception):
                    self.client.delete_model_version_tag(name, v.version, k)
            self._supersede(name, int(v.version), label)
            self._update_alias(name)
            from mll_registry.registry.index_cache import mark_stale

            mark_stale(self.root, label.graph_version)  # the next query or selection sees it
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.delete_model_version(name, v.version)
            raise
        return version_entry(self.client.get_model_version(name, v.version))

    def _supersede(self, name: str, mine: int, label: ModelLabel) -> None:
        """Tag the older ready versions of ``name`` on the same graph and settings
        ``mll.superseded_by`` = ``mine``: the model's weights or config changed (or it was
        relabelled with ``force``); they stay, readable, for whatever pinned them."""
        for old in self.versions(name):
            t = old.tags or {}
            if (int(old.version) < mine and t.get("mll.status") == "ready"
                    and t.get("mll.graph_version") == label.graph_version
                    and t.get("mll.label_hash") == label.label_hash
                    and "mll.superseded_by" not in t):
                self.call(functools.partial(self.client.set_model_version_tag, name,
                                            old.version, "mll.superseded_by", str(mine)),
                          "tag superseded")

    def _create_version(self, name: str, source: str, run_id: str, model_id: str | None,
                        tags: dict[str, str], description: str) -> Any:
        """create_model_version; MLflow's embedded store resolves a ``models:/`` source through
        the process-wide tracking URI, so it is pointed at this registry for the call."""
        with self.process_uri():
            return self.client.create_model_version(name, source, run_id=run_id, tags=tags,
                                                    description=description, model_id=model_id)

    def _settle(self, name: str, mine: int, revision: str, graph_version: str,
                label_hash: str) -> Any | None:
        """The ready twin this registration should yield to, or None to go on with ``mine``.

        Stale twins (owner dead, lease expired) are deleted; a live earlier twin still
        registering is waited for, at most until its lease expires.
        """
        while True:
            twins = [t for t in self.same_label(name, revision, graph_version, label_hash)
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
        """Move the aliases by the documented rule (README "MLflow").

        ``labeled-<hash>`` -> the newest ready version with those label settings;
        ``labeled`` -> the newest ready version with the default label settings
        (:data:`mll_registry.settings.DEFAULTS`), or, when the model has none, the newest ready
        version of any settings.

        Concurrent registrations each apply the rule to what they read, so one that read
        before another's version was ready could move an alias back after that one set it.
        So the versions and aliases are read again after setting, and set again, until a read
        agrees with the rule: the last registration to write also checks after its write.
        """
        for _ in range(ALIAS_CHECKS):
            want = self._alias_targets(name)
            model = self.client.get_registered_model(name)
            have = {str(a): str(v) for a, v in (getattr(model, "aliases", None) or {}).items()}
            wrong = {a: v for a, v in want.items() if have.get(a) != v}
            if not wrong:
                return
            for alias, version in wrong.items():
                self.client.set_registered_model_alias(name, alias, version)
        log.warning("%s: its aliases kept moving under concurrent registrations; the next "
                    "registration of the model settles them", name)

    def _alias_targets(self, name: str) -> dict[str, str]:
        """alias -> version number (text) by the rule of :meth:`_update_alias`, as read now."""
        ready = [v for v in self.versions(name) if (v.tags or {}).get("mll.status") == "ready"]
        if not ready:
            return {}
        newest: dict[str, Any] = {}
        for v in sorted(ready, key=lambda v: int(v.version)):
            newest[(v.tags or {}).get("mll.label_hash", "")] = v
        out = {f"{ALIAS}-{h}": str(v.version) for h, v in newest.items() if h}
        main = newest.get(DEFAULTS.label_hash()) or max(ready, key=lambda v: int(v.version))
        out[ALIAS] = str(main.version)
        return out

    # -- reading ------------------------------------------------------------------------------
    def labelled_versions(self, graph_version: str | None = None) -> list[LabelledVersion]:
        """Every ready labelled version (optionally of one graph version), all pages."""
        out: list[LabelledVersion] = []
        token: str | None = None
        filt = "tag.`mll.status` = 'ready'"

        def page_at(t: str | None) -> Any:
            return self.call(lambda: self.client.search_model_versions(
                filt, max_results=1000, page_token=t), "search model versions")

        while True:
            page = page_at(token)
            out += [version_entry(v) for v in page]
            token = getattr(page, "token", None)
            if not token:
                break
        if graph_version:
            out = [v for v in out if v.graph_version == graph_version]
        return sorted(out, key=lambda v: (v.name, v.version))

    def aliases_by_version(self) -> dict[tuple[str, int], list[str]]:
        """(name, version) -> its aliases, for every registered model (one paged search: the
        version searches do not return aliases)."""
        out: dict[tuple[str, int], list[str]] = {}
        token: str | None = None
        while True:
            page = self.call(functools.partial(self.client.search_registered_models,
                                               max_results=1000, page_token=token),
                             "search registered models")
            for rm in page:
                for alias, version in (getattr(rm, "aliases", None) or {}).items():
                    out.setdefault((rm.name, int(version)), []).append(str(alias))
            token = getattr(page, "token", None)
            if not token:
                return {k: sorted(v) for k, v in out.items()}

    def latest_per_model(self, graph_version: str | None,
                         label_hash: str | None = None) -> list[LabelledVersion]:
        """The newest ready version per model source for ``graph_version`` (None: any graph).

        Grouped by the source each version records (not by registered name), so even versions
        registered under a shared legacy name by two different sources both stay visible.
        """
        best: dict[tuple[str, str], LabelledVersion] = {}
        for v in self.labelled_versions(graph_version):
            if label_hash is not None and v.label_hash != label_hash:
                continue
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

    def migrate(self) -> list[dict[str, Any]]:
        """Bring a registry written by mll-registry 0.1 up to date (idempotent, cheap when done).

        Names move to :func:`registered_name` (:meth:`migrate_names`), and versions without a
        label-settings hash get the hash of the settings their label run recorded.
        """
        moved = self.migrate_names()
        for v in self.call(lambda: list(self.client.search_model_versions(
                "tag.`mll.status` = 'ready'", max_results=1000)), "search model versions"):
            if (v.tags or {}).get("mll.label_hash") or not v.run_id:
                continue
            p = self.client.get_run(v.run_id).data.params
            try:
                h = label_identity_hash(json.loads(p.get("templates", "null")) or
                                        DEFAULTS.templates, p.get("text_source", "lemma"),
                                        int(p["top_k"]))
            except (KeyError, ValueError, TypeError):
                continue
            self.client.set_model_version_tag(v.name, v.version, "mll.label_hash", h)
            moved.append({"from": f"{v.name}/{v.version}", "to": f"label hash {h}",
                          "versions": 1})
            self._update_alias(v.name)
        return moved

    def migrate_names(self) -> list[dict[str, Any]]:
        """Move models registered under legacy (ambiguous) names to :func:`registered_name`.

        A legacy model whose versions all come from one source is renamed (versions, tags and
        aliases kept); one shared by several sources (a name take-over) is split: each version
        is re-created under its own source's name and the legacy entry removed. Idempotent.
        Returns what was moved.
        """
        moved: list[dict[str, Any]] = []
        for rm in self.call(lambda: list(self.client.search_registered_models(
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
                    self._create_version(new, v.source, v.run_id,
                                         (v.tags or {}).get("mll.model_id"),
                                         tags=dict(v.tags or {}), description=v.description)
                    self.client.delete_model_version(rm.name, v.version)
                self._update_alias(new)
                moved.append({"from": rm.name, "to": new, "versions": len(versions)})
            if not self.versions(rm.name):
                self.client.delete_registered_model(rm.name)
        return moved

    def download_label(self, v: LabelledVersion) -> Path:
        """The label directory of a version (downloaded once into the data dir cache)."""
        cached = cached_label_dir(v, self.root, verify=True)
        if cached is not None:
            return cached
        import mlflow

        from mll_registry.fsutil import atomic_dir
        from mll_registry.labels.format import LabelError, checksum_mismatch

        dest = run_cache_dir("registry-labels", v.run_id, self.root)
        # absent, partial or damaged: fetched again into a temporary directory, checked against
        # the checksums its meta.json records, then swapped in (never read half-downloaded)
        with atomic_dir(dest) as tmp:
            self.call(lambda: mlflow.artifacts.download_artifacts(
                run_id=v.run_id, artifact_path="label", dst_path=str(tmp),
                tracking_uri=self.uri), "download label")
            bad = checksum_mismatch(tmp / "label")
            if bad:
                raise LabelError(f"the label artifact of {v.name} version {v.version} (run "
                                 f"{v.run_id}) fails its checksum ({bad}): the artifact store "
                                 "holds a damaged copy; relabel with `mll label --force`")
        return dest / "label"

    def selection_label_dir(self, v: LabelledVersion) -> Path:
        """The label directory a selection reads. An ``mll-label/2`` label needs only its
        meta.json here: the chunks and files a selection reads are fetched one by one when
        first read (:meth:`fetch_label_file`). An ``mll-label/1`` label is downloaded whole."""
        from mll_registry.fsutil import atomic_path, read_json_object
        from mll_registry.labels.format import FORMAT, selection_ready

        dest = run_cache_dir("registry-labels", v.run_id, self.root) / "label"
        if selection_ready(dest):
            return dest
        cached = cached_label_dir(v, self.root)
        if cached is not None:
            return cached
        got = self._download_file(v.run_id, "label/meta.json", "download label meta.json")
        try:
            meta = read_json_object(got)
            if meta.get("format") != FORMAT:  # mll-label/1: one file, downloaded whole
                return self.download_label(v)
            dest.mkdir(parents=True, exist_ok=True)
            with atomic_path(dest / "meta.json", suffix=".json") as tmp:
                os.replace(got, tmp)
        finally:
            import shutil

            shutil.rmtree(got.parent, ignore_errors=True)
        return dest

    def fetch_label_file(self, label_dir: Path, name: str) -> None:
        """Put file ``name`` of a remote ``mll-label/2`` label into ``label_dir`` (a
        :meth:`selection_label_dir`): from the data dir's content cache
        (``cache/label-blobs/<sha256>``) when it holds that checksum, else downloaded from the
        label run's artifacts and checked against meta.json's sha256 first. Never leaves a
        partial file in either place.

        Raises:
            LabelError: ``name`` is not a file of the label, or the download fails its checksum.
        """
        import shutil

        from mll_registry.fsutil import path_under, read_json_object, sha256_file
        from mll_registry.labels.format import LabelError, stored_files

        meta = read_json_object(label_dir / "meta.json")
        sha = (meta.get("checksums") or {}).get(name)
        if name not in stored_files(meta) or not isinstance(sha, str) or not re.fullmatch(
                r"[0-9a-f]{64}", sha):
            raise LabelError(f"{label_dir}: {name!r:.80} is not a checksummed file of this label "
                             "(damaged meta.json); relabel with `mll label --force`")
        run_id = label_dir.parent.name
        blob = path_under(data_dir(self.root) / "cache" / "label-blobs", sha[:2], sha)
        if not blob.is_file():
            got = self._download_file(run_id, f"label/{name}", "download label file")
            try:
                if sha256_file(got) != sha:
                    raise LabelError(f"{name} of the label in run {run_id} fails its checksum: "
                                     "the artifact store holds a damaged copy; relabel with "
                                     "`mll label --force`")
                blob.parent.mkdir(parents=True, exist_ok=True)
                os.replace(got, blob)
            finally:
                shutil.rmtree(got.parent, ignore_errors=True)
        dest = label_dir / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{id(dest)}.tmp")
        try:
            try:
                os.link(blob, tmp)  # the cache and the label share one copy
            except OSError:
                shutil.copyfile(blob, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def _download_file(self, run_id: str, artifact_path: str, what: str) -> Path:
        """One artifact file of ``run_id`` in a fresh private temporary directory (the caller
        removes it): a killed download leaves nothing that looks whole. One GET per file: the
        run's artifact repository is resolved once per run (:meth:`_artifact_repo`)."""
        cache = data_dir(self.root) / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch.", suffix=".tmp", dir=cache))
        got = tmp / posixpath.basename(artifact_path)
        try:
            repo = self._artifact_repo(run_id)
            self.call(lambda: repo._download_file(artifact_path, str(got)), what)
        except BaseException:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return got

    def _artifact_repo(self, run_id: str) -> Any:
        """The artifact repository of run ``run_id``, resolved once per run and process (its
        ``_download_file`` is one request, where ``mlflow.artifacts.download_artifacts`` also
        fetches the run and lists the path)."""
        repos: dict[str, Any] = self.__dict__.setdefault("_repos", {})
        if run_id not in repos:
            from mlflow.store.artifact.artifact_repository_registry import (
                get_artifact_repository,
            )

            uri = self.call(lambda: self.client.get_run(run_id), "get label run").info.artifact_uri
            # mlflow-artifacts:/ URIs resolve against the process-wide tracking URI: one
            # thread at a time points it at this server
            with _REPO_LOCK, self.process_uri():
                repos[run_id] = get_artifact_repository(uri)
        return repos[run_id]

    def download_embeddings(self, v: LabelledVersion) -> Path | None:
        """The embeddings file of a version (cached beside its cached label directory), or None
        when its run has none (labelled before they were kept). Checked whole before use."""
        from mll_registry.labels.embeddings import EmbeddingsError, LabelEmbeddings

        dest = embeddings_path(run_cache_dir("registry-labels", v.run_id, self.root) / "label")
        if dest.is_file():
            return dest
        names = {a.path for a in self.call(lambda: self.client.list_artifacts(
            v.run_id, EMBEDDINGS_ARTIFACT.rsplit("/", 1)[0]), "list embeddings")}
        if EMBEDDINGS_ARTIFACT not in names:
            return None
        import mlflow

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".embeddings.", suffix=".tmp", dir=dest.parent))
        try:
            got = self.call(lambda: mlflow.artifacts.download_artifacts(
                run_id=v.run_id, artifact_path=EMBEDDINGS_ARTIFACT, dst_path=str(tmp),
                tracking_uri=self.uri), "download embeddings")
            try:
                LabelEmbeddings.open(got)
            except EmbeddingsError as exc:
                raise EmbeddingsError(f"the embeddings of {v.name} version {v.version} (run "
                                      f"{v.run_id}) are damaged in the artifact store: {exc}"
                                      ) from exc
            os.replace(got, dest)
        finally:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def embeddings(self, key: LabelKey) -> Path | None:
        v, _ = self._labelled_or_same(key)  # the embeddings depend on the content, not the commit
        return self.download_embeddings(version_entry(v)) if v is not None else None

    def download_summary(self, v: LabelledVersion) -> pd.DataFrame:
        """The per-node summary table of a version (cached by run id)."""
        import shutil
        import tempfile

        import mlflow

        dest = run_cache_dir("registry-summaries", v.run_id, self.root)
        f = dest / "summary.parquet"
        if not f.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            # a private download, renamed into place whole: concurrent readers of this data dir
            # (threads, processes) never see a half-written file, and a killed one leaves none
            tmp = Path(tempfile.mkdtemp(prefix=f".summary.{os.getpid()}.", suffix=".tmp",
                                        dir=dest))
            try:
                got = self.call(lambda: mlflow.artifacts.download_artifacts(
                    run_id=v.run_id, artifact_path="label/summary.parquet", dst_path=str(tmp),
                    tracking_uri=self.uri), "download summary")
                os.replace(got, f)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return pd.read_parquet(f)

    # -- the LabelStore port -----------------------------------------------------------------
    def has(self, key: LabelKey) -> bool:
        return self.get(key) is not None

    def get(self, key: LabelKey) -> Path | None:
        v, _ = self._labelled_or_same(key)
        return self.download_label(version_entry(v)) if v is not None else None

    def put(self, key: LabelKey, res: ResolvedModel, label: ModelLabel, label_dir: Path,
            force: bool = False) -> StoredLabel:
        entry, created = self.register_label(res, label, label_dir, force=force)
        return StoredLabel(key, entry.model_ref, label_dir if created else None, created,
                           entry.name, entry.version, entry.run_id)

    def list_labels(self, graph_version: str, label_hash: str | None = None) -> dict[str, Path]:
        """Model ref -> label directory (downloaded once, cached) of the newest label per model."""
        return {v.model_ref: self.download_label(v)
                for v in self.latest_per_model(graph_version, label_hash)}

    def find(self, key: LabelKey, model_ref: str) -> dict[str, Any] | None:
        """The ready version holding ``key``, as its entry (nothing is downloaded); one
        labelled from the same content at another commit counts, and this commit is recorded
        on it (``same_content_as``: the commit it was labelled at)."""
        v, by_content = self._labelled_or_same(key)
        if v is None:
            return None
        entry = version_entry(v).to_dict()
        if by_content:
            entry["revisions"] = self.record_revision(v, key.revision)
            entry["same_content_as"] = entry["revision"]
        return entry

    def describe(self, stored: StoredLabel) -> dict[str, Any]:
        """The version entry ``put`` registered, read back (the single-version read carries the
        aliases, as the UI shows them)."""
        if not stored.name or stored.version is None:
            return stored.to_dict()
        name, version = stored.name, str(stored.version)
        return version_entry(self.call(lambda: self.client.get_model_version(name, version),
                                       "get model version")).to_dict()

    def labelled_models(self, graph_version: str, label_hash: str | None = None) -> list[str]:
        """From the registry's tags: no label is downloaded."""
        return sorted({v.model_ref for v in self.latest_per_model(graph_version, label_hash)})

    def label_dirs(self, graph_version: str, label_hash: str) -> dict[str, Path]:
        return self.list_labels(graph_version, label_hash)

    def latest_ref(self, model: str) -> str | None:
        v = self.latest_for(model)
        return v.model_ref if v is not None else None

    def latest_label_dir(self, model: str) -> Path | None:
        v = self.latest_for(model)
        return self.download_label(v) if v is not None else None

    def selection_links(self, refs: list[str], graph_version: str | None = None,
                        label_hash: str | None = None) -> tuple[list[str], list[str]]:
        """(``name/version``, logged-model ids) of the versions behind ``refs`` (selection runs)."""
        versions = {v.model_ref: v for v in self.latest_per_model(graph_version, label_hash)}
        links = [f"{versions[m].name}/{versions[m].version}" if m in versions else m for m in refs]
        return links, [versions[m].model_id for m in refs if m in versions and versions[m].model_id]
