"""Named implementations of a port: the library's plug points, as data rather than if/elif.

Each port (model-reference schemes, hub sources, label stores, caption providers, text
embedders, orchestrators) is one :class:`Plugins` table mapping a name to a factory. The built-in
implementations register themselves when their module is imported; a user adds their own either
in code (``SCHEMES.register("s3", MyScheme())``) or, without touching this library, through a
Python entry point in the group ``mll_registry.<port>`` of their own package::

    [project.entry-points."mll_registry.models.schemes"]
    s3 = "my_company.mll:S3Scheme"
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar, cast

from mll_registry.errors import MLLError

T = TypeVar("T")


class PluginError(MLLError, LookupError):
    """No implementation of that name; the message lists the known ones."""


class Plugins(Generic[T]):
    """A table of named implementations of one port.

    Args:
        port: the port's name (``schemes``, ``caption_providers``, ...): the entry-point group is
            ``mll_registry.<port>``.
        builtins: module that registers the built-in implementations (imported on first use,
            so importing the table stays cheap).
    """

    def __init__(self, port: str, builtins: str | None = None) -> None:
        self.port = port
        self._builtins = builtins
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        """Add ``item`` under ``name`` (``replace=True`` to override an existing one)."""
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"plugin name {name!r} must be letters, digits, '-' or '_'")
        if name in self._items and not replace and self._items[name] is not item:
            raise ValueError(f"{self.port}: {name!r} is already registered; pass replace=True")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._builtins:
            importlib.import_module(self._builtins)
        from importlib.metadata import entry_points

        for ep in entry_points(group=f"mll_registry.{self.port}"):
            if ep.name not in self._items:
                self._items[ep.name] = _Lazy(ep.value)  # type: ignore[assignment]

    def get(self, name: str) -> T:
        """The implementation named ``name``.

        Raises:
            PluginError: unknown name (the message lists the registered ones).
        """
        self._load()
        try:
            item = self._items[name]
        except KeyError:
            raise PluginError(f"unknown {self.port.rstrip('s').replace('_', ' ')} {name!r}; "
                              f"known: {', '.join(self.names()) or 'none'}") from None
        if isinstance(item, _Lazy):
            item = self._items[name] = cast(T, item.resolve())
        return item

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items


class _Lazy:
    """An entry point's ``module:attr``, imported when first asked for."""

    def __init__(self, target: str) -> None:
        self.target = target

    def resolve(self) -> object:
        module, _, attr = self.target.partition(":")
        obj: object = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
        return obj
