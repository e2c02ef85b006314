"""The MLflow connection and the runs the tool logs (selection, reuse, bench).

``MLFLOW_TRACKING_URI`` points it at a server; with nothing set MLflow runs embedded:
``sqlite:///<data>/mlflow.db`` with artifacts under ``<data>/mlartifacts``, initialised once under
a file lock so that concurrent writers are safe. Every MLflow call goes through one retry policy
(:mod:`mll_registry.retries`); an unreachable server ends in a :class:`RegistryError` that says
what to do.

MLflow records absolute artifact locations, so an embedded store copied or moved with its data
dir still reads and writes the original's artifacts: the data dir it was made in is recorded
(:data:`HOME_FILE`), a store opened elsewhere is refused, and :func:`relocate` rewrites its
artifact locations for the new place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from mll_registry.config import data_dir
from mll_registry.errors import MLLError, disk_full

LABEL_EXPERIMENT = "mll-labels"
SELECTION_EXPERIMENT = "mll-selection"
BENCH_EXPERIMENT = "mll-bench"
T = TypeVar("T")
RUN_ID = re.compile(r"[0-9a-f]{32}")  # the shape of MLflow's run ids (uuid4 hex)
#: in the data dir: the data dir whose ``mlartifacts`` the embedded store's locations name
HOME_FILE = "mlflow.home.json"
#: the embedded store's columns holding artifact locations (MLflow 3's schema; absent ones skipped)
ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("model_versions", "source"), ("model_versions", "storage_location"),
                    ("logged_models", "artifact_location"))


class RegistryError(MLLError, RuntimeError):
    """The registry is unreachable or inconsistent; the message says what to do (redacted: it
    may name the tracking URI, never credentials in it)."""

    def __init__(self, message: str) -> None:
        from mll_registry.redaction import redact

        super().__init__(redact(message))


# -- connection ----------------------------------------------------------------------------------
def tracking_uri(root: str | os.PathLike[str] | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded sqlite store in the data directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir(root) / 'mlflow.db'}"


def _artifact_root(root: str | os.PathLike[str] | None = None) -> str:
    return (data_dir(root) / "mlartifacts").as_uri()


# -- the embedded store's place -------------------------------------------------------------------
def _home_in_store(db: Path) -> str | None:
    """The data dir whose ``mlartifacts`` the experiments of ``db`` name (a store made before
    :data:`HOME_FILE` was recorded), or None: no such experiment, or no store yet."""
    import sqlite3
    from urllib.parse import unquote, urlsplit

    if not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT artifact_location FROM experiments "
                               "ORDER BY experiment_id").fetchall()
        finally:
            con.close()
    except sqlite3.Error:  # an empty or half-made store: MLflow makes or migrates it next
        return None
    for (loc,) in rows:
        if isinstance(loc, str) and loc.startswith("file://") and loc.endswith("/mlartifacts"):
            return str(Path(unquote(urlsplit(loc).path)).parent)
    return None


def store_home(data: Path) -> str:
    """The data dir whose ``mlartifacts`` the embedded store in ``data`` reads and writes: the
    one recorded in :data:`HOME_FILE`, else (a store from before the record) the one its own
    experiments name, else ``data``; then recorded. Call under the store's init lock.

    Raises:
        RegistryError: :data:`HOME_FILE` is damaged.
    """
    from mll_registry.fsutil import read_json_object, write_json

    marker = data / HOME_FILE
    try:
        home = read_json_object(marker).get("data_dir")
    except FileNotFoundError:
        home = _home_in_store(data / "mlflow.db") or str(data)
        write_json(marker, {"data_dir": home})
    except ValueError:
        home = None
    if not isinstance(home, str) or not os.path.isabs(home):
        raise RegistryError(f"{marker} is damaged (no absolute data_dir in a JSON object): "
                            "delete it (it is rebuilt from mlflow.db on the next open)")
    return home


def check_store_home(data: Path) -> None:
    """Refuse the embedded store in ``data`` when it was made in another data dir (the data dir
    was copied or moved): its runs and models would read and write the original's artifacts.
    Call under the store's init lock.

    Raises:
        RegistryError: naming both places and the two ways out.
    """
    home = store_home(data)
    if home != str(data):
        raise RegistryError(
            f"the data dir {data} was copied or moved from {home}: its MLflow store (mlflow.db) "
            f"keeps the artifacts of its runs and models in {Path(home) / 'mlartifacts'}, and "
            "would read and write them there; run `mll registry relocate --data-dir "
            f"{data}` to keep them in this data dir, or set MLL_DATA_DIR={home} to use the "
            "original")


def _rewrite_prefix(db: Path, old: str, new: str) -> int:
    """Every artifact location (:data:`ARTIFACT_COLUMNS`) at or under directory ``old``, as a
    ``file://`` URI or a path, moved under ``new``, in one transaction. Returns the rows."""
    import sqlite3

    pairs = ((Path(old).as_uri(), Path(new).as_uri()), (old, new))
    con = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        rows = 0
        for table, col in ARTIFACT_COLUMNS:
            if col not in {r[1] for r in con.execute(f'PRAGMA table_info("{table}")')}:
                continue
            for a, b in pairs:
                rows += con.execute(
                    f'UPDATE "{table}" SET "{col}" = ? || substr("{col}", ?) '
                    f'WHERE "{col}" = ? OR substr("{col}", 1, ?) = ?',
                    (b, len(a) + 1, a, len(a) + 1, a + "/")).rowcount
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.close()
    return rows


def relocate(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Keep the embedded store of data dir ``root`` in it after the data dir was copied or
    moved: every artifact location under the data dir it was made in is rewritten to the same
    place under this one (one sqlite transaction), then this place is recorded. Idempotent;
    killed between the two steps, the next run records it.

    Returns:
        ``{"from": old data dir, "to": this one, "rows": artifact locations rewritten}``.

    Raises:
        RegistryError: no embedded store in ``root``, or a damaged :data:`HOME_FILE`.
    """
    from filelock import FileLock

    from mll_registry.fsutil import write_json

    data = data_dir(root)
    db = data / "mlflow.db"
    if not db.is_file():
        raise RegistryError(f"no embedded MLflow store in {data} (no mlflow.db): nothing to "
                            "relocate; check --data-dir or MLL_DATA_DIR")
    with FileLock(db.with_suffix(".init.lock")):
        home = store_home(data)
        rows = 0
        if home != str(data):
            rows = _rewrite_prefix(db, home, str(data))
            write_json(data / HOME_FILE, {"data_dir": str(data)})
    return {"from": home, "to": str(data), "rows": rows}


#: OSErrors about local files, not the connection: never retried
_LOCAL_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR,
                           errno.EISDIR})


def _transient(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        # an answer from the store is not a connection problem, whatever its text quotes
        # (a concurrent "already exists" carries SQL and driver text)
        if exc.error_code in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST",
                              "INVALID_PARAMETER_VALUE") or "already exists" in str(exc):
            return False
        return not disk_full(exc) and any(
            s in str(exc) for s in ("Max retries", "Connection", "connect", "503", "502", "504",
                                    "timed out"))
    # an OSError is the network (a reset, a refused or timed-out connection) unless it is a full
    # disk or a local file that cannot be used: those fail at once, with their own message
    return isinstance(exc, OSError) and not disk_full(exc) and exc.errno not in _LOCAL_ERRNOS


def retrying(fn: Callable[[], T], what: str, uri: str, tries: int = 4,
             delay: float = 0.5) -> T:
    """Call ``fn``, retrying connection failures with backoff; then a clear RegistryError."""
    from mll_registry.redaction import redact
    from mll_registry.retries import call_with_retries

    def give_up(exc: BaseException) -> BaseException:
        if _invalid_url(exc):
            return RegistryError(
                f"MLFLOW_TRACKING_URI {redact(uri)} is not a valid URL ({what}); percent-encode "
                "reserved characters in its user name and password (/ as %2F, @ as %40, : as "
                "%3A) or pass them as MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD")
        if (refused := _refused(exc, what, uri)) is not None:
            return refused
        if not _transient(exc):
            return exc
        if (failing := _server_failing(exc, what, uri)) is not None:
            return failing
        # redacted before it is cut, so a cut cannot leave half a password behind
        return RegistryError(
            f"MLflow at {redact(uri)} is not reachable ({what} failed after {tries} tries: "
            f"{redact(exc)[:200]}). Start the server or fix MLFLOW_TRACKING_URI; nothing was "
            "registered.")

    return call_with_retries(fn, what, transient=_transient, give_up=give_up, tries=tries,
                             base_delay=delay)


def _refused(exc: BaseException, what: str, uri: str) -> RegistryError | None:
    """The server's authentication app does not know the caller (401). A 403 stays MLflow's
    error: its basic-auth app also answers 403 to reading an alias of a model that does not
    exist, which callers treat as absent."""
    from mll_registry.redaction import redact

    if re.search(r"error code 401\b", str(exc)):
        return RegistryError(
            f"MLflow at {redact(uri)} refused {what}: not authenticated (401); set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user the MLflow admin "
            "created (deploy/mlflow-users.sh)")
    return None


def _server_failing(exc: BaseException, what: str, uri: str) -> RegistryError | None:
    """A server that answers errors or hangs, as one whose database is down does: MLflow's
    server retries its database ~100 s inside a request, then answers 500."""
    from mll_registry.redaction import redact
    from mll_registry.retries import budget_s

    text = str(exc)
    if re.search(r"too many 5\d\d error responses|error code 5\d\d", text):
        how = "answered with server errors (HTTP 5xx)"
    elif "timed out" in text:
        how = (f"did not answer within MLFLOW_HTTP_REQUEST_TIMEOUT="
               f"{os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '?')} s")
    else:
        return None
    return RegistryError(
        f"MLflow at {redact(uri)} {how} to {what}, retried for MLL_RETRY_BUDGET_S={budget_s():g} "
        "s: the server runs but its database (the backend store, e.g. PostgreSQL) or artifact "
        "store is down or failing; start it (the server's log names it), then retry; nothing "
        "was registered.")


#: the MLFLOW_HTTP_REQUEST_TIMEOUT this module set, if any (one the user set is kept)
_own_timeout: str | None = None


def bound_request_timeout() -> None:
    """Keep one MLflow HTTP request within the retry budget (``retry_budget_s``).

    MLflow waits 120 s for an answer by default, and a server whose database is down holds a
    request ~100 s: one try outlasted any budget. A timeout the user set is kept.
    """
    import math

    from mll_registry.retries import budget_s

    global _own_timeout
    current = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT")
    if current is not None and current != _own_timeout:
        return
    _own_timeout = str(max(1, math.ceil(budget_s())))
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = _own_timeout


def _invalid_url(exc: BaseException) -> bool:
    from mlflow.exceptions import InvalidUrlException

    return isinstance(exc, InvalidUrlException)


class Tracking:
    """An MLflow client for one tracking URI (embedded sqlite by default, or a server)."""

    def __init__(self, uri: str | None = None, root: str | os.PathLike[str] | None = None,
                 tries: int = 4) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # one retry layer per service: ours (retrying); MLflow's own HTTP retries would multiply
        # it (4 x 7 tries with backoff: a down server was reported after ~17 minutes)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        bound_request_timeout()  # and one request no longer than the whole budget
        # against a server MLflow prints "View run ... at: URL" to stdout when a run ends, which
        # would corrupt `--json` output (the runs' links are in the results instead)
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        # artifacts go through the tracking server (proxied), as deployed: an MLflow server on
        # S3 also offers presigned URLs of its own object store endpoint, which a worker on
        # another host may not reach (the server's MLFLOW_S3_ENDPOINT_URL, often a loopback
        # or internal address). Set these to true where every client reaches the store.
        os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
        os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "false")
        from mlflow import MlflowClient

        self.root = root
        self.uri = uri or tracking_uri(root)
        self.tries = tries
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri[len("sqlite:///"):])
            from filelock import FileLock

            db.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(db.with_suffix(".init.lock")):  # one migration, then many writers
                if db == data_dir(root) / "mlflow.db":  # the data dir's own store: in place?
                    check_store_home(db.parent)
                self.client = MlflowClient(self.uri)
                self.client.search_experiments(max_results=1)
        else:
            self.client = MlflowClient(self.uri)
        self._exp: dict[str, str] = {}

    def call(self, fn: Callable[[], T], what: str) -> T:
        return retrying(fn, what, self.uri, self.tries)

    def experiment(self, name: str) -> str:
        """Experiment id, created on first use (artifacts in the data dir when embedded)."""
        if name not in self._exp:
            exp = self.call(lambda: self.client.get_experiment_by_name(name), "get experiment")
            if exp is None:
                loc = _artifact_root(self.root) if self.uri.startswith("sqlite") else None
                try:
                    eid = self.call(lambda: self.client.create_experiment(
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
    def run(self, experiment: str, run_name: str, tags: dict[str, str],
            started: float | None = None) -> Iterator[str]:
        """A run that ends FINISHED when the block completes and FAILED when it raises.

        ``started`` (epoch seconds) backdates the start to when the work began, so the run's
        duration covers the work and not only the logging.
        """
        exp = self.experiment(experiment)
        start_ms = int(started * 1000) if started else None
        run = self.call(lambda: self.client.create_run(exp, run_name=run_name, tags=tags,
                                                       start_time=start_ms), "create run")
        rid = str(run.info.run_id)
        try:
            yield rid
            self.client.set_terminated(rid, "FINISHED")
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.set_terminated(rid, "FAILED")
            raise

    @contextlib.contextmanager
    def process_uri(self) -> Iterator[None]:
        """MLflow's process-wide tracking URI pointed at this client's for the block (what
        ``models:/`` resolution in MLflow's embedded store and ``mlflow.pyfunc.load_model``
        read). MLflow's own context manager "restores" the environment variable from its
        process-wide URI (unsetting it, or setting it to a URI some earlier caller gave
        ``mlflow.set_tracking_uri``), so the variable is put back exactly as it was after it."""
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        env = os.environ.get("MLFLOW_TRACKING_URI")
        try:
            with _use_tracking_uri(self.uri):
                yield
        finally:
            if env is not None:
                os.environ["MLFLOW_TRACKING_URI"] = env
            else:
                os.environ.pop("MLFLOW_TRACKING_URI", None)

    def register_model_dir(self, run_id: str, model_dir: str | os.PathLike[str], name: str,
                           tags: dict[str, str], description: str = "") -> str:
        """Upload the MLflow model folder ``model_dir`` as run ``run_id``'s ``ensemble`` artifact
        and register it as a new version of registered model ``name`` (created on first use).
        Returns the version."""
        from mlflow.exceptions import MlflowException

        self.call(lambda: self.client.log_artifacts(run_id, str(model_dir), "ensemble"),
                  "upload the ensemble model")
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.call(lambda: self.client.create_registered_model(
                name, tags={"mll.kind": "ensemble"},
                description="MLL selections of one task, as deployable ensembles"),
                "create the registered model")
        source = self.client.get_run(run_id).info.artifact_uri.rstrip("/") + "/ensemble"
        mv = self.call(lambda: self.client.create_model_version(
            name, source, run_id=run_id, tags=tags, description=description),
            "register the ensemble")
        return str(mv.version)

    def log_selection(self, task: Any, selection: Any, reuse: Any = None,
                      links: list[str] | None = None,
                      settings: dict[str, Any] | None = None,
                      model_ids: list[str] | None = None) -> str:
        """One run in ``mll-selection``: params, selection table, composition, metrics, tags.

        ``links``: the model versions used (``name/version``), tagged on the run;
        ``model_ids``: their MLflow logged models, logged as the run's model inputs (the run
        page lists them, and each model links back to its versions).
        """
        used = selection.selected_models()
        links = links if links is not None else list(used)
        with self.run(SELECTION_EXPERIMENT, f"select {task.name}", {
                "mll.kind": "reuse" if reuse else "selection", "mll.task": task.name,
                "mll.model_versions": ",".join(links)[:5000]}) as rid:
            if model_ids:
                from mlflow.entities import LoggedModelInput

                self.call(lambda: self.client.log_inputs(
                    rid, models=[LoggedModelInput(m) for m in model_ids]), "log model inputs")
            p = selection.params
            params = {"task": task.name, "domain": task.domain, "task_type": task.task,
                      "classes": len(task.classes), "k": p.get("k"), "alpha": p.get("alpha"),
                      "metric": p.get("metric"), "top_n": p.get("top_n"),
                      "caption_provider": p.get("caption_provider"),
                      "embedding_model": p.get("embedding_model"),
                      "graph_version": p.get("graph_version"),
                      "models_considered": len(selection.models),
                      "source_weighting": p.get("source_weighting"),
                      "reuse_mode": p.get("reuse_mode"), "fallback_z": p.get("fallback_z"),
                      "calibration": p.get("calibration", "none")}
            sw = p.get("source_weights") or {}
            if sw:
                params["source_temperature"] = sw.get("temperature")
                params["source_weights_uniform_because"] = sw.get("reason") or "-"
            for k, val in params.items():
                self.client.log_param(rid, k, str(val))
            if sw:  # the weights used: one metric per source, and the whole record
                for src, w in sw.get("weights", {}).items():
                    self.client.log_metric(rid, f"source_weight_{_metric_key(src)}", float(w))
                self.client.log_dict(rid, sw, "source_weights.json")
            if settings:
                self.client.log_dict(rid, settings, "settings.json")
            self.client.log_text(rid, json.dumps(selection.to_dict(), indent=2),
                                 "selection.json")
            rows = [{"class": c["class"], "rank": i + 1, "model": m["model"],
                     "reuse": m["reuse"], "score": m["score"], "weak_match": c["weak_match"],
                     "top_node": c["nodes"][0]["node"] if c["nodes"] else "",
                     "margin": c.get("margin"), "margin_se": c.get("margin_se"),
                     "fell_back": c.get("fell_back")}
                    for c in selection.per_class() for i, m in enumerate(c["models"])]
            self.client.log_text(rid, pd.DataFrame(rows).to_csv(index=False), "selection.csv")
            comp: dict[str, list[str]] = {}
            for c in selection.per_class():
                for m in c["models"]:
                    comp.setdefault(m["model"], []).append(c["class"])
            self.client.log_dict(rid, comp, "ensemble_composition.json")
            self.client.log_metric(rid, "models_used", float(len(used)))
            self.client.log_metric(rid, "weak_matches", float(len(selection.weak)))
            self.client.log_metric(rid, "classes_fell_back", float(p.get("fell_back") or 0))
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


    def log_bench(self, result: Any, markdown: str, plot_path: Path | None,
                  settings: dict[str, Any] | None = None) -> str:
        """The benchmark as one run in ``mll-bench`` (the same client as every other run)."""
        with self.run(BENCH_EXPERIMENT, "bench", {"mll.kind": "bench"}) as rid:
            cfg = result.config
            params = {"alpha": cfg.alpha, "metric": cfg.metric, "top_n": cfg.top_n,
                      "weighting": cfg.weighting, "models": len(result.models),
                      "tasks": ",".join(r.task.name for r in result.runs)}
            for k, val in params.items():
                self.client.log_param(rid, k, str(val)[:6000])
            for m, v in result.averages().items():
                self.client.log_metric(rid, f"avg_top1_{_metric_key(m.lower())}", v)
            for r in result.runs:
                for m, v in r.top1.items():
                    self.client.log_metric(rid, f"{_metric_key(r.task.name)}_top1_"
                                                f"{_metric_key(m.lower())}", v)
            if settings:
                self.client.log_dict(rid, settings, "settings.json")
            self.client.log_text(rid, markdown, "bench.md")
            self.client.log_text(rid, json.dumps(result.to_dict(), indent=2), "bench.json")
            if plot_path:
                self.client.log_artifact(rid, str(plot_path))
        return rid


def _metric_key(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)[:200]


