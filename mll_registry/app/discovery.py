"""Discovery: pages of new models from a hub source, which of them need a label, and the state
(watermark, failed models) kept in the tracking server so every worker sees the same."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mll_registry.app.results import DiscoveryProgress

if TYPE_CHECKING:
    from mll_registry.app.graphs import GraphService, GraphSpec
    from mll_registry.app.parts import Parts
    from mll_registry.registry.discovery_state import DiscoveryState


log = logging.getLogger(__name__)


class DiscoveryService:
    """The discovery use cases over an App's :class:`~mll_registry.app.parts.Parts` and its
    graphs."""

    def __init__(self, parts: Parts, graphs: GraphService) -> None:
        self.app = parts
        self.graphs = graphs

    def _source(self, source: str, local_root: str | None) -> Any:
        from mll_registry.hub.discovery import HUB_SOURCES

        return HUB_SOURCES.get(source)(local_root=local_root)

    def state(self, source: str, local_root: str | None = None,
              graph_version: str = "") -> DiscoveryState:
        """Where discovery of ``source`` for a graph version stands (watermark, failed models),
        read from the tracking server. A new graph version starts its own watermark (its labels
        are new work)."""
        from mll_registry.registry.discovery_state import DiscoveryLog

        key = self._source(source, local_root).key + (f"@{graph_version}" if graph_version
                                                      else "")
        return DiscoveryLog(self.app.registry).load(key)

    def page(self, source: str, local_root: str | None = None, page_size: int | None = None,
             state: dict[str, Any] | None = None, *,
             retry_failed: bool = False) -> list[dict[str, Any]]:
        """The next page of new models after the state's watermark (oldest first, at most
        ``page_size`` plus ties), and with ``retry_failed`` the failed models still to retry.
        Without a state: the newest ``page_size`` models (a first look)."""
        from mll_registry.registry.discovery_state import DiscoveryState

        s = self.app.settings
        st = DiscoveryState.from_dict(state) if state else None
        src = self._source(source, local_root)
        retries = st.retries(s.discovery_attempts) if st and retry_failed else []
        seen = {m["ref"] for m in retries}
        page = [{"ref": m.ref, "revision": m.sha, "repo_id": m.repo_id,
                 "created_at": m.created_at.isoformat()}
                for m in src.list_new(since=st.since() if st else None,
                                      limit=page_size or s.discovery_page_size)]
        return retries + [m for m in page if m["ref"] not in seen]

    def updates(self, source: str, local_root: str | None = None,
                state: dict[str, Any] | None = None,
                limit: int | None = None) -> dict[str, Any]:
        """Models labelled before that changed since the state's modification watermark (the
        Hub's ``lastModified``), oldest first, each at its new commit, for :meth:`unlabelled`
        to tell a new label from a commit that left the weights alone: ``{"models": [...],
        "listed": n, "newest": ISO time}`` (``listed``/``newest``: of every model the listing
        returned, so that the watermark passes new and failing models too: those are the
        new-model pages' and their retries'). Nothing before following began
        (:meth:`record_updates` starts it) or for sources that list no modifications."""
        from mll_registry.models.refs import registered_name, source_of
        from mll_registry.registry.discovery_state import DiscoveryState

        none: dict[str, Any] = {"models": [], "listed": 0, "newest": None}
        st = DiscoveryState.from_dict(state) if state else None
        src = self._source(source, local_root)
        since = st.modified_since() if st else None
        if st is None or since is None or not hasattr(src, "list_modified"):
            return none
        listed = src.list_modified(since, limit or self.app.settings.discovery_page_size)
        if not listed:
            return none
        created = st.since()
        failing = {f["repo_id"] for f in st.failed.values()}
        reg = self.app.registry
        models = [{"ref": m.ref, "revision": m.sha, "repo_id": m.repo_id,
                   "created_at": m.created_at.isoformat(),
                   "modified_at": m.last_modified.isoformat() if m.last_modified else None}
                  for m in listed
                  if (created is None or m.created_at <= created) and m.repo_id not in failing
                  and reg.versions(registered_name(source_of(m.ref)))]
        times = [m.last_modified for m in listed if m.last_modified is not None]
        return {"models": models, "listed": len(listed),
                "newest": max(times).isoformat() if times else None}

    def record_updates(self, source: str, local_root: str | None, state: dict[str, Any],
                       updates: Sequence[dict[str, Any]], errors: dict[str, str],
                       labelled: int, newest: str | None = None) -> DiscoveryProgress:
        """Record a processed batch of updated models: the modification watermark moves to
        ``newest`` (the newest modification listed; the first time: the source's newest
        modification, where following starts)."""
        from datetime import datetime

        from mll_registry.registry.discovery_state import DiscoveryLog, DiscoveryState

        attempts = self.app.settings.discovery_attempts
        st = DiscoveryState.from_dict(state)
        start = datetime.fromisoformat(newest) if newest else None
        if st.modified_watermark is None and start is None:
            src = self._source(source, local_root)
            start = src.newest_modified() if hasattr(src, "newest_modified") else None
        if not updates and start is None:  # a source that lists no modifications
            return DiscoveryProgress(st, st.given_up(attempts))
        st.record_updates(updates, errors, start)
        DiscoveryLog(self.app.registry).save(st, updates, errors, labelled, attempts)
        return DiscoveryProgress(st, st.given_up(attempts))

    def record(self, state: dict[str, Any], page: Sequence[dict[str, Any]],
               errors: dict[str, str], labelled: int) -> DiscoveryProgress:
        """Record a processed page in the tracking server: the watermark moves past it, failed
        models are kept for the next runs."""
        from mll_registry.registry.discovery_state import DiscoveryLog, DiscoveryState

        attempts = self.app.settings.discovery_attempts
        st = DiscoveryState.from_dict(state)
        st.record(page, errors)
        DiscoveryLog(self.app.registry).save(st, page, errors, labelled, attempts)
        return DiscoveryProgress(st, st.given_up(attempts))

    def unlabelled(self, models: Sequence[dict[str, Any]],
                   graph: GraphSpec) -> list[dict[str, Any]]:
        """The discovered models whose label key is not in the registry yet. A Hub model at a
        new commit whose weights and config are those of a registered label (a README edit, a
        merged card PR) is not: the commit is recorded on that label's version instead."""
        from mll_registry.hub.discovery import HubSourceError
        from mll_registry.models.refs import ModelRef, registered_name, source_of

        g = self.graphs.get(graph)
        reg = self.app.registry
        reg.migrate()  # legacy names and keys -> the current scheme (no-op once done)
        h = self.app.settings.label_hash()
        hub: Any = None
        out = []
        for m in models:
            name = registered_name(source_of(m["ref"]))
            if reg.find_labelled(name, m["revision"], g.version, h) is not None:
                continue
            if m["ref"].startswith("hf-hub:") and reg.versions(name):
                hub = hub or self._source("hf", None)
                try:
                    content = hub.content_id(ModelRef.parse(m["ref"]).name, m["revision"])
                except HubSourceError as exc:  # unknown: labelled, which reports its own error
                    log.warning("%s: cannot read its file digests (%s); labelling it", m["ref"],
                                exc)
                    content = None
                same = reg.find_same_content(name, content or "", g.version, h)
                if same is not None:
                    reg.record_revision(same, m["revision"])
                    continue
            out.append(m)
        return out
