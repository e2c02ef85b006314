"""Where new open_clip models come from: discovery and download behind one small interface.

A :class:`HubSource` answers two questions for a scheduled labelling run:

* ``list_new(since, limit)``: which models appeared after ``since`` (their ``created_at``)?
  Each :class:`HubModel` carries the exact revision and the MODEL_REF to label
  (``hf-hub:ORG/NAME@SHA`` or ``local-dir:PATH``), so a label always names the content it measured.
* ``fetch(repo_id, revision)``: a local directory with only what loading needs (config, the
  safetensors weights, tokenizer files), never pickled weights.

Two sources: :class:`HfHubSource` (the Hugging Face Hub, or any endpoint speaking its API) and
:class:`LocalDirHubSource` (a directory laid out as ``ROOT/ORG/NAME/``, e.g. ``demo_hub/``).
The watermark (the newest ``created_at`` processed) is kept by
:mod:`mll_registry.registry.discovery_state`, so each run sees only new models.

Paging policy (both sources): with a watermark, the *oldest* ``limit`` new models are returned,
oldest first, so advancing the watermark after processing them never skips one; models sharing the
cut-off ``created_at`` are kept together. Without a watermark (first run) the newest ``limit`` are
returned: a registry starts from the current models, not from the Hub's whole history.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from mll_registry.errors import MLLError, ModelRefError, exception_chain
from mll_registry.models.refs import (
    CONFIG_NAME,
    hub_files,  # the one place that decides which files (and which weights) are safe to load
    read_config,
    resolve,
)
from mll_registry.plugins import Plugins

log = logging.getLogger(__name__)
T = TypeVar("T")
_REPO_RE = re.compile(r"^[\w.\-]+/[\w.\-]+$")
_EXPAND: list[Any] = ["createdAt", "lastModified", "sha", "tags", "library_name"]


class HubSourceError(MLLError, RuntimeError):
    """The source could not answer: repo or revision missing, access denied, Hub unreachable.

    Its message is redacted (:func:`~mll_registry.redaction.redact`): it names the endpoint,
    never credentials in it.
    """

    def __init__(self, message: str) -> None:
        from mll_registry.redaction import redact

        super().__init__(redact(message))


class HubUnavailable(HubSourceError):
    """Transient failures (connection errors, HTTP 5xx/429) persisted through every retry."""


@dataclass(frozen=True)
class HubModel:
    """A model found by a source, pinned to the revision that was listed."""

    repo_id: str
    sha: str
    created_at: datetime
    last_modified: datetime | None
    tags: tuple[str, ...]
    ref: str  # MODEL_REF to label: hf-hub:ORG/NAME@SHA or local-dir:PATH

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (ISO times)."""
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        d["last_modified"] = self.last_modified.isoformat() if self.last_modified else None
        d["tags"] = list(self.tags)
        return d


class HubSource(Protocol):
    """Discovery + download of open_clip models (see the module docstring for the paging policy)."""

    key: str  # stable, filesystem-safe name of the source (one watermark per source)

    def list_new(self, since: datetime | None = None, limit: int = 50) -> list[HubModel]:
        """Models created after ``since``, oldest first (at most about ``limit``)."""
        ...

    def fetch(self, repo_id: str, revision: str | None = None) -> Path:
        """A local directory holding the files needed to load the model at ``revision``."""
        ...


# -- time helpers ---------------------------------------------------------------------------------
def _utc(t: datetime | str | None) -> datetime | None:
    """Aware UTC datetime from a datetime or ISO string (naive times are taken as UTC)."""
    if t is None:
        return None
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _page(models: list[HubModel], since: datetime | None, limit: int) -> list[HubModel]:
    """Apply the paging policy to models sorted oldest first."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if since is None:
        return models[-limit:]
    new = [m for m in models if m.created_at > since]
    if len(new) <= limit:
        return new
    cut = limit
    while cut < len(new) and new[cut].created_at == new[limit - 1].created_at:
        cut += 1  # never split models sharing a created_at: the watermark would skip the rest
    return new[:cut]


# -- errors and retries ---------------------------------------------------------------------------
def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: connection/timeout errors or HTTP 5xx/429, anywhere in the cause chain."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    for e in exception_chain(exc):
        if isinstance(e, OfflineModeIsEnabled):
            return False
        if type(e).__module__.startswith(("httpx", "httpcore")) and any(
                c.__name__ == "TransportError" for c in type(e).__mro__):
            return True
        if isinstance(e, ConnectionError | TimeoutError):
            return True
        status = _status(e)
        if status is not None and (status >= 500 or status == 429):
            return True
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)


def describe_error(exc: BaseException, what: str, endpoint: str) -> HubSourceError:
    """A one-line error naming the problem and the fix (never includes a token)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    for e in exception_chain(exc):
        if isinstance(e, OfflineModeIsEnabled):
            return HubSourceError(f"{what}: huggingface_hub is in offline mode (HF_HUB_OFFLINE=1); "
                                  "unset HF_HUB_OFFLINE to reach the Hub")
        if isinstance(e, RevisionNotFoundError):
            return HubSourceError(f"{what}: revision not found on {endpoint}; list the models "
                                  "again (the branch may have moved or been deleted)")
        if isinstance(e, RepositoryNotFoundError):
            return HubSourceError(f"{what}: repository not found on {endpoint}; check the repo id "
                                  "(private or gated repos need a token: set HF_TOKEN)")
        if isinstance(e, EntryNotFoundError) and not is_transient(exc):
            return HubSourceError(f"{what}: a file is missing from the repo on {endpoint} "
                                  f"({_first_line(e)})")
        if _status(e) in (401, 403):
            return HubSourceError(f"{what}: access denied by {endpoint} (HTTP {_status(e)}); set "
                                  "HF_TOKEN to a token that can read the repo")
    if is_transient(exc):
        return HubUnavailable(f"{what}: {endpoint} is unreachable or failing "
                              f"({type(exc).__name__}: {_first_line(exc)}); check the network "
                              "and HF_ENDPOINT, then retry later")
    return HubSourceError(f"{what}: {type(exc).__name__}: {_first_line(exc)}")


def with_retries(fn: Callable[[], T], what: str, endpoint: str, tries: int = 4,
                 base_delay: float = 0.5, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn``; retry transient failures with exponential backoff (``base_delay`` * 2^n, <= 8 s).

    Model-reference errors (not an open_clip repo, pickled weights) pass through unchanged; other
    failures become a :class:`HubSourceError` with a clear message.
    """
    from mll_registry.retries import call_with_retries

    def give_up(exc: BaseException) -> BaseException:
        if isinstance(exc, ModelRefError | HubSourceError):
            return exc
        return describe_error(exc, what, endpoint)

    return call_with_retries(
        fn, what, tries=tries, base_delay=base_delay, sleep=sleep, give_up=give_up,
        transient=lambda e: not isinstance(e, ModelRefError | HubSourceError) and is_transient(e))


# -- the Hugging Face Hub -------------------------------------------------------------------------
class HfHubSource:
    """open_clip models on the Hugging Face Hub (or any server speaking its HTTP API).

    Args:
        endpoint: Hub URL; default ``HF_ENDPOINT`` or https://huggingface.co.
        token: read token; default ``HF_TOKEN`` or the stored login (never logged or shown).
        library: the library tag listed (``open_clip``).
        cache_dir: huggingface_hub cache for downloads (default: its own cache).
        tries, base_delay: retry policy for transient failures.
        max_scan: refuse to page through more new models than this in one listing.
    """

    def __init__(self, endpoint: str | None = None, token: str | None = None, *,
                 library: str = "open_clip", cache_dir: str | os.PathLike[str] | None = None,
                 tries: int = 4, base_delay: float = 0.5, max_scan: int = 10_000,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        from huggingface_hub import HfApi

        from mll_registry.redaction import redact

        self._api = HfApi(endpoint=endpoint, token=token)
        self._token = token
        self.endpoint: str = self._api.endpoint
        self.library = library
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.tries, self.base_delay, self.max_scan, self._sleep = tries, base_delay, max_scan, sleep
        shown = redact(self.endpoint)  # user info in the endpoint is no part of its name
        host = re.sub(r"[^A-Za-z0-9_.-]+", "_", shown.split("://")[-1]).strip("_")
        self.key = f"hf-{host}-{library}"

    def __repr__(self) -> str:  # never show the token, nor credentials in the endpoint
        from mll_registry.redaction import redact

        return f"HfHubSource(endpoint={redact(self.endpoint)!r}, library={self.library!r})"

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        return with_retries(fn, what, self.endpoint, self.tries, self.base_delay, self._sleep)

    def list_new(self, since: datetime | None = None, limit: int = 50) -> list[HubModel]:
        """open_clip models created after ``since`` (newest-first listing, stopped at ``since``)."""
        since = _utc(since)

        def scan() -> list[Any]:
            found: list[Any] = []
            previous: datetime | None = None
            for info in self._api.list_models(filter=self.library, sort="created_at",
                                              limit=None if since else limit, expand=_EXPAND):
                created = _utc(info.created_at or info.last_modified)
                if created is None:
                    log.warning("%s has no creation time; skipped", info.id)
                    continue
                if previous is not None and created > previous:
                    raise HubSourceError(
                        f"{self.endpoint} did not list models newest first ({info.id} is newer "
                        "than the one before it); the watermark cannot be applied safely")
                previous = created
                if since is not None and created <= since:
                    break
                found.append(info)
                if len(found) > self.max_scan:
                    raise HubSourceError(
                        f"more than {self.max_scan} new {self.library} models since "
                        f"{since.isoformat() if since else '-'}; move the watermark forward or "
                        "raise max_scan")
            return found

        infos = self._retry(scan, f"listing {self.library} models on {self.endpoint}")
        return _page([self._model(info) for info in reversed(infos)], since, limit)  # oldest 1st

    def _model(self, info: Any) -> HubModel:
        """A listing entry as a :class:`HubModel` pinned to its listed (or current) commit."""
        sha = info.sha or self.resolve_revision(info.id)
        created = _utc(info.created_at or info.last_modified)
        assert created is not None
        return HubModel(info.id, str(sha), created, _utc(info.last_modified),
                        tuple(info.tags or ()), f"hf-hub:{info.id}@{sha}")

    def list_modified(self, since: datetime, limit: int = 50) -> list[HubModel]:
        """open_clip models whose newest commit is after ``since`` (a README edit, a merged
        card PR, new weights), oldest first; at most ``limit`` (ties kept)."""
        since_utc = _utc(since)

        def scan() -> list[Any]:
            found: list[Any] = []
            for info in self._api.list_models(filter=self.library, sort="last_modified",
                                              expand=_EXPAND):
                modified = _utc(info.last_modified)
                if modified is None or (since_utc is not None and modified <= since_utc):
                    break
                found.append(info)
                if len(found) > self.max_scan:
                    raise HubSourceError(
                        f"more than {self.max_scan} {self.library} models modified since "
                        f"{since.isoformat()}; move the watermark forward or raise max_scan")
            return found

        infos = self._retry(scan, f"listing modified {self.library} models on {self.endpoint}")
        models = [self._model(info)
                  for info in sorted(infos, key=lambda i: (_utc(i.last_modified), i.id))]
        if len(models) > limit:  # never split models sharing a modification time
            cut = limit
            while cut < len(models) and models[cut].last_modified == models[cut - 1].last_modified:
                cut += 1
            models = models[:cut]
        return models

    def newest_modified(self) -> datetime | None:
        """The newest modification time of any listed model (where following starts)."""
        infos = self._retry(lambda: list(self._api.list_models(
            filter=self.library, sort="last_modified", limit=1, expand=_EXPAND)),
            f"listing {self.library} models on {self.endpoint}")
        return _utc(infos[0].last_modified) if infos else None

    def resolve_revision(self, repo_id: str, revision: str | None = None) -> str:
        """The commit sha a branch/tag/PR ref (default ``main``) points at now."""
        info = self._retry(lambda: self._api.model_info(repo_id, revision=revision),
                           f"hf-hub:{repo_id}@{revision or 'main'}")
        if not info.sha:
            raise HubSourceError(f"hf-hub:{repo_id}: {self.endpoint} returned no commit sha")
        return str(info.sha)

    def content_id(self, repo_id: str, revision: str) -> str | None:
        """The :func:`~mll_registry.models.refs.content_id` of ``repo_id`` at ``revision`` from
        the Hub's per-file metadata (one request, no download); None when it cannot be told
        (not an open_clip repo, weights outside LFS)."""
        from mll_registry.errors import ModelRefError
        from mll_registry.models.refs import hub_content_id

        info = self._retry(lambda: self._api.model_info(repo_id, revision=revision,
                                                        files_metadata=True),
                           f"hf-hub:{repo_id}@{revision}")
        try:
            return hub_content_id(info.siblings, f"hf-hub:{repo_id}@{revision}")
        except ModelRefError:
            return None  # labelling it reports why

    def fetch(self, repo_id: str, revision: str | None = None) -> Path:
        """Download config + safetensors weights (+ tokenizer files) of ``repo_id`` at ``revision``.

        Raises:
            ModelRefError: not an open_clip repo (no ``open_clip_config.json``), only pickled
                weights, or a config that fails the allow-list.
            HubSourceError: repo/revision missing, access denied, Hub unreachable after retries.
        """
        path, sha, _, repo_id = self.fetch_files(repo_id, revision)
        read_config(path, f"hf-hub:{repo_id}@{sha}")
        return path

    def _cached_spelling(self, repo_id: str) -> str:
        """``repo_id`` as the local Hugging Face cache spells it (downloads use the Hub's own
        spelling), when exactly one cached repo matches it ignoring case; else as given."""
        from huggingface_hub import constants

        want = f"models--{repo_id.replace('/', '--')}".casefold()
        try:
            hits = [p.name for p in Path(self.cache_dir or constants.HF_HUB_CACHE).iterdir()
                    if p.name.casefold() == want]
        except OSError:
            return repo_id
        return hits[0][len("models--"):].replace("--", "/", 1) if len(hits) == 1 else repo_id

    def fetch_files(self, repo_id: str, revision: str | None = None, *,
                    allow_pickle: bool = False) -> tuple[Path, str, str, str]:
        """(local snapshot directory, commit sha, weights file name, repo id as the Hub spells
        it): the one Hub download path.

        The Hub answers ids case-insensitively; its own spelling (``model_info``'s ``id``) is
        returned and downloaded, so ``Org/Name`` and ``org/name`` are one model under one name.
        Offline (``HF_HUB_OFFLINE=1``) it answers from the local Hugging Face cache.
        """
        from huggingface_hub import constants, snapshot_download

        if not _REPO_RE.match(repo_id):
            raise ModelRefError(f"bad repo id {repo_id!r}: expected ORG/NAME")
        where = f"hf-hub:{repo_id}@{revision or 'main'}"
        if constants.HF_HUB_OFFLINE:
            repo_id = self._cached_spelling(repo_id)
            try:
                path = Path(snapshot_download(repo_id, revision=revision, cache_dir=self.cache_dir,
                                              local_files_only=True))
            except Exception as exc:
                raise describe_error(exc, where, self.endpoint) from exc
            weights, _ = hub_files(sorted(p.name for p in path.iterdir()), where, allow_pickle)
            return path, path.name, weights, repo_id
        info = self._retry(lambda: self._api.model_info(repo_id, revision=revision), where)
        sha = str(info.sha or revision)
        canonical = str(info.id or repo_id)
        if canonical.casefold() != repo_id.casefold() or not _REPO_RE.match(canonical):
            raise HubSourceError(f"{where}: {self.endpoint} answered for another repo "
                                 f"({canonical[:200]!r}); check HF_ENDPOINT")
        repo_id = canonical
        where = f"hf-hub:{repo_id}@{sha}"
        weights, wanted = hub_files(sorted(s.rfilename for s in info.siblings or []), where,
                                    allow_pickle)
        path = Path(self._retry(lambda: snapshot_download(
            repo_id, revision=sha, allow_patterns=wanted, cache_dir=self.cache_dir,
            endpoint=self.endpoint, token=self._token), where))
        return path, sha, weights, repo_id


# -- a local directory hub ------------------------------------------------------------------------
class LocalDirHubSource:
    """Models in ``ROOT/ORG/NAME/`` directories (open_clip layout), like the committed demo hub.

    ``created_at`` comes from a ``created_at`` key in the README front matter, else the directory's
    modification time; the revision is the weights' content digest (as for ``local-dir:`` refs).
    Hidden directories (half-written models) and directories without a config are not models.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.key = "local-" + hashlib.sha1(str(self.root).encode()).hexdigest()[:10]

    def __repr__(self) -> str:
        return f"LocalDirHubSource({str(self.root)!r})"

    def _dirs(self) -> list[Path]:
        if not self.root.is_dir():
            raise HubSourceError(f"local hub {self.root} is not a directory; pass the folder "
                                 "holding ORG/NAME/ model directories (e.g. demo_hub/)")
        return [d for org in sorted(self.root.iterdir()) if org.is_dir()
                and not org.name.startswith(".") for d in sorted(org.iterdir())
                if d.is_dir() and not d.name.startswith(".") and (d / CONFIG_NAME).is_file()]

    @staticmethod
    def _card(d: Path) -> dict[str, Any]:
        from huggingface_hub import metadata_load

        readme = d / "README.md"
        if not readme.is_file():
            return {}
        try:
            return metadata_load(readme) or {}
        except Exception as exc:  # a broken card must not hide the model
            log.warning("%s: unreadable README front matter (%s)", readme, exc)
            return {}

    def _created(self, d: Path, card: dict[str, Any]) -> datetime:
        value = card.get("created_at")
        if isinstance(value, datetime | str):
            try:
                t = _utc(value)
                if t is not None:
                    return t
            except ValueError:
                log.warning("%s: created_at %r is not an ISO time; using the mtime", d, value)
        return datetime.fromtimestamp(d.stat().st_mtime, UTC)

    def list_new(self, since: datetime | None = None, limit: int = 50) -> list[HubModel]:
        """Model directories created after ``since``, oldest first."""
        since = _utc(since)
        found = []
        for d in self._dirs():
            card = self._card(d)
            created = self._created(d, card)
            if since is not None and created <= since:
                continue
            found.append((created, d, card))
        found.sort(key=lambda t: (t[0], str(t[1])))
        models = []
        for created, d, card in found:
            try:
                res = resolve(f"local-dir:{d}")
            except ModelRefError as exc:
                log.warning("skipping %s: %s", d, exc)
                continue
            mtime = max(p.stat().st_mtime for p in d.iterdir() if p.is_file())
            tags = card.get("tags") or []
            models.append(HubModel(
                f"{d.parent.name}/{d.name}", res.revision, created,
                datetime.fromtimestamp(mtime, UTC),
                tuple(str(t) for t in (tags if isinstance(tags, list) else [tags])),
                f"local-dir:{d}"))
        return _page(models, since, limit)

    def fetch(self, repo_id: str, revision: str | None = None) -> Path:
        """The model's directory, checked loadable; ``revision`` must match its content digest."""
        if not _REPO_RE.match(repo_id) or ".." in repo_id:
            raise ModelRefError(f"bad repo id {repo_id!r}: expected ORG/NAME")
        d = self.root / repo_id
        if not d.is_dir():
            raise HubSourceError(f"{repo_id} is not in the local hub {self.root}")
        res = resolve(f"local-dir:{d}")
        if revision is not None and revision != res.revision:
            raise HubSourceError(
                f"local-dir:{d} changed since it was listed (revision {revision}, now "
                f"{res.revision}); list the models again")
        return d


#: hub sources by name: factory(local_root=None, cache_dir=None) -> HubSource
HUB_SOURCES: Plugins[Any] = Plugins("hub_sources")
HUB_SOURCES.register("hf", lambda local_root=None, cache_dir=None: HfHubSource(
    cache_dir=cache_dir))


def _local_source(local_root: str | None = None, cache_dir: Any = None) -> LocalDirHubSource:
    if not local_root:
        raise ValueError("source 'local' needs local_root (a folder of ORG/NAME model dirs)")
    return LocalDirHubSource(local_root)


HUB_SOURCES.register("local", _local_source)

