"""Discovery: pages of new models from a hub source, which of them need a label, and the state
(watermark, failed models) kept in the tracking server so every worker sees the same."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mll_registry.app.results import DiscoveryProgress

if TYPE_CHECKING:
    from mll_registry.app.graphs import GraphService, GraphSpec
    from mll_registry.app.parts import Parts
    from mll_registry.registry.discovery_state import DiscoveryState


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
        """The discovered models whose label key is not in the registry yet."""
        from mll_registry.models.refs import registered_name, source_of

        g = self.graphs.get(graph)
        reg = self.app.registry
        reg.migrate()  # legacy names and keys -> the current scheme (no-op once done)
        h = self.app.settings.label_hash()
        return [m for m in models if reg.find_labelled(
            registered_name(source_of(m["ref"])), m["revision"], g.version, h) is None]
