"""One error base: every exception class the package defines is an ``MLLError``."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

from mll_registry.errors import MLLError

PACKAGE = Path(__file__).resolve().parents[2] / "mll_registry"
#: modules that run something when imported
SKIP = {"mll_registry.cli.__main__"}


def defined_exceptions() -> list[type[BaseException]]:
    """The exception classes defined (not imported) in the package's modules, found in the
    source by ``class`` statement, then looked up in the imported module."""
    found: list[type[BaseException]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name in SKIP:
            continue
        classes = [n.name for n in ast.parse(path.read_text(encoding="utf-8")).body
                   if isinstance(n, ast.ClassDef)]
        if not classes:
            continue
        mod = importlib.import_module(name)
        found += [c for n in classes if inspect.isclass(c := getattr(mod, n))
                  and issubclass(c, BaseException)]
    return found


def test_every_package_exception_is_an_mll_error() -> None:
    found = defined_exceptions()
    names = {c.__name__ for c in found}
    assert {"GraphError", "PluginError", "SettingsError", "NotRegularFile", "HubUnavailable",
            "MLLError"} <= names  # the walk sees the kernel, sub-packages and subclasses
    assert [c.__qualname__ for c in found if not issubclass(c, MLLError)] == []


def test_each_error_keeps_its_builtin_base() -> None:
    """``except ValueError`` (and friends) written before the base still catch them."""
    from mll_registry.graph.bundle import GraphError
    from mll_registry.plugins import PluginError
    from mll_registry.registry.tracking import RegistryError

    builtin = {GraphError: ValueError, PluginError: LookupError, RegistryError: RuntimeError}
    for cls, base in builtin.items():
        assert issubclass(cls, MLLError) and issubclass(cls, base)
    for c in defined_exceptions():
        if c is not MLLError:
            assert any(b.__module__ == "builtins" and b is not Exception
                       for b in c.__mro__[1:-2]), c  # e.g. ValueError, RuntimeError, LookupError
