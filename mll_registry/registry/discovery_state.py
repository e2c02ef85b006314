"""Where discovery stands, kept in the tracking server so that every worker sees the same state.

A scheduled labelling run reads the state of its source (the watermark: the newest ``created_at``
processed, and the models that failed), lists the models after the watermark a page at a time
(oldest first, see :mod:`mll_registry.hub.discovery`), labels each page, and records the outcome: the
watermark moves past the page, failed models are kept with their error and retried by the next
runs (``discovery_attempts`` runs in all, then reported as given up), succeeded ones are dropped.

Each recorded page is one run of the ``mll-discovery`` MLflow experiment, tagged with the source,
with the counts as metrics and the whole state as ``state.json``: the newest finished run of a
source is its state, and the runs are the audit log (what was found, labelled, failed, when).
A run that dies before recording leaves the previous state: the same page is listed again and the
labels already registered are skipped, so nothing is lost or labelled twice.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mll_registry.registry.tracking import Tracking

DISCOVERY_EXPERIMENT = "mll-discovery"
FORMAT = "mll-discovery/1"


@dataclass
class DiscoveryState:
    """The watermark of one source and its failed models (ref -> what happened)."""

    source: str
    watermark: str | None = None  # ISO created_at of the newest model processed
    at_watermark: list[str] = field(default_factory=list)  # repo ids processed at that time
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    pages: int = 0
    #: ISO lastModified of the newest update processed (models changed after they were found)
    modified_watermark: str | None = None

    def since(self) -> datetime | None:
        return datetime.fromisoformat(self.watermark) if self.watermark else None

    def modified_since(self) -> datetime | None:
        return datetime.fromisoformat(self.modified_watermark) if self.modified_watermark \
            else None

    def record_updates(self, updates: Sequence[Mapping[str, Any]], errors: Mapping[str, str],
                       start: datetime | None = None) -> None:
        """Apply the outcome of a batch of updated models (failures kept like new models'):
        the modification watermark moves past them and to ``start`` (the newest modification
        listed; before the first batch, the source's newest, where following begins)."""
        self.record(updates, errors)
        self.pages -= 1  # record() counted a page of new models
        times = [datetime.fromisoformat(m["modified_at"]) for m in updates if m.get("modified_at")]
        newest = max([*times, *([start] if start is not None else [])], default=None)
        current = self.modified_since()
        if newest is not None and (current is None or newest > current):
            self.modified_watermark = newest.isoformat()

    def retries(self, max_attempts: int) -> list[dict[str, Any]]:
        """Failed models still to retry, oldest first (as discovered-model dicts)."""
        return sorted(({k: f[k] for k in ("ref", "revision", "repo_id", "created_at")}
                       for f in self.failed.values() if f["attempts"] < max_attempts),
                      key=lambda m: (m["created_at"], m["ref"]))

    def given_up(self, max_attempts: int) -> list[dict[str, Any]]:
        return [f for f in self.failed.values() if f["attempts"] >= max_attempts]

    def record(self, page: Sequence[Mapping[str, Any]], errors: Mapping[str, str]) -> None:
        """Apply one page's outcome: ``errors`` maps the refs that failed to their error."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for m in page:
            ref = str(m["ref"])
            if ref in errors:
                old = self.failed.get(ref, {})
                self.failed[ref] = {"ref": ref, "revision": m["revision"],
                                    "repo_id": m["repo_id"], "created_at": m["created_at"],
                                    "attempts": int(old.get("attempts", 0)) + 1,
                                    "error": str(errors[ref])[:500], "last_tried": now}
            else:
                self.failed.pop(ref, None)
        since = self.since()
        new = [m for m in page if m.get("created_at") and (
            since is None or datetime.fromisoformat(m["created_at"]) > since)]
        if new:
            newest = max(datetime.fromisoformat(m["created_at"]) for m in new)
            ids = {m["repo_id"] for m in new if datetime.fromisoformat(m["created_at"]) == newest}
            self.watermark = newest.isoformat()
            self.at_watermark = sorted(ids)
        self.pages += 1

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiscoveryState:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a discovery state ({d.get('format')!r})")
        return cls(source=str(d["source"]), watermark=d.get("watermark"),
                   at_watermark=list(d.get("at_watermark", [])),
                   failed=dict(d.get("failed", {})), pages=int(d.get("pages", 0)),
                   modified_watermark=d.get("modified_watermark"))


class DiscoveryLog:
    """The discovery states of every source, as runs of the ``mll-discovery`` experiment."""

    def __init__(self, tracking: Tracking) -> None:
        self.tracking = tracking

    def load(self, source: str) -> DiscoveryState:
        """The newest recorded state of ``source`` (a fresh one before the first run)."""
        import mlflow

        t = self.tracking
        exp = t.experiment(DISCOVERY_EXPERIMENT)
        runs = t.call(lambda: t.client.search_runs(
            [exp], filter_string=f"tags.`mll.source` = '{source}' and "
                                 "attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1), "read the discovery state")
        if not runs:
            return DiscoveryState(source)
        rid = runs[0].info.run_id
        with tempfile.TemporaryDirectory(prefix="mll-discovery-") as tmp:
            path = t.call(lambda: mlflow.artifacts.download_artifacts(
                run_id=rid, artifact_path="state.json", dst_path=tmp, tracking_uri=t.uri),
                "read the discovery state")
            return DiscoveryState.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def save(self, state: DiscoveryState, page: Sequence[Mapping[str, Any]],
             errors: Mapping[str, str], labelled: int, max_attempts: int) -> str:
        """Record a page: one finished run holding the new state; returns its run id."""
        t = self.tracking
        tags = {"mll.kind": "discovery", "mll.source": state.source,
                "mll.watermark": state.watermark or ""}
        with t.run(DISCOVERY_EXPERIMENT, f"discover {state.source}", tags) as rid:
            t.client.log_metric(rid, "found", float(len(page)))
            t.client.log_metric(rid, "labelled", float(labelled))
            t.client.log_metric(rid, "failed", float(len(errors)))
            t.client.log_metric(rid, "failed_pending", float(len(state.retries(max_attempts))))
            t.client.log_metric(rid, "given_up", float(len(state.given_up(max_attempts))))
            t.call(lambda: t.client.log_dict(rid, state.to_dict(), "state.json"),
                   "record the discovery state")
        return rid
