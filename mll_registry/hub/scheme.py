"""The ``hf-hub:`` model-reference scheme: a Hub repo in open_clip layout.

It registers through the ``mll_registry.schemes`` entry point (pyproject.toml), as a scheme of
another package would: the models layer below never imports the Hub code.
"""

from __future__ import annotations

import os
import re
from typing import Any

from mll_registry.errors import ModelRefError
from mll_registry.models.refs import ModelRef, ResolvedModel, read_config

# ASCII only, as the Hub's own repo-id rule: non-ASCII names must not fold into another name
_HF_RE = re.compile(r"^(?P<repo>[A-Za-z0-9_.\-]{1,96}/[A-Za-z0-9_.\-]{1,96})"
                    r"(?:@(?P<rev>[A-Za-z0-9_.\-/]{1,200}))?$")


class HfHubScheme:
    """``hf-hub:ORG/NAME[@REVISION]``: a Hub repo (or ``HF_ENDPOINT``) in open_clip layout."""

    def parse(self, rest: str, ref: str) -> ModelRef:
        m = _HF_RE.match(rest)
        if not m or "--" in m.group("repo") or ".." in m.group("repo"):
            raise ModelRefError(
                f"bad Hub reference {ref!r}: expected hf-hub:ORG/NAME[@REVISION] with ASCII "
                "letters, digits, '-', '_' and '.' (no '--' or '..', as on the Hub)")
        return ModelRef("hf-hub", m.group("repo"), m.group("rev"))

    def resolve(self, ref: ModelRef, *, allow_pickle: bool,
                cache_dir: str | os.PathLike[str] | None) -> ResolvedModel:
        """Download through :class:`mll_registry.hub.discovery.HfHubSource` (the one download path)."""
        from mll_registry.hub.discovery import HfHubSource

        path, sha, weights, repo_id = HfHubSource(cache_dir=cache_dir).fetch_files(
            ref.name, ref.revision, allow_pickle=allow_pickle)
        cfg = read_config(path, f"hf-hub:{repo_id}@{sha}")
        # the Hub's spelling of the id: one registered name however the id was typed
        return ResolvedModel(ModelRef("hf-hub", repo_id, ref.revision), path, path / weights,
                             sha, cfg)

    def build(self, res: ResolvedModel, device: str) -> tuple[Any, Any, Any]:
        from mll_registry.models.loading import build_from_dir

        return build_from_dir(res, device)

    def registered_name(self, ref: ModelRef) -> str:
        return "hf--" + ref.name.replace("/", "--")  # Hub ids hold no '--': one-to-one

    def version_source(self, res: ResolvedModel) -> str:
        return f"hf://{res.ref.name}@{res.revision}"


#: the instance the entry point names
HF_HUB = HfHubScheme()
