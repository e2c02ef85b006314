"""The import contract: the package's layers, each importing only from below, and no circles.

Read from the source (every ``import``, also those inside functions and ``TYPE_CHECKING``
blocks), so a lazy import cannot hide an upward dependency. The layers, lowest first, are
those of docs/architecture.md.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mll_registry"
#: lowest first; names in one tuple are peers that must not import each other
LAYERS: tuple[tuple[str, ...], ...] = (
    ("kernel",), ("graph",), ("models",), ("labels",), ("hub", "registry"), ("selection",),
    ("evaluation",), ("demo",), ("app",), ("cli",))


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group_of(module: str, package: Path) -> str:
    """The layer group of a module: its sub-package, or ``kernel`` for a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (package / parts[1]).is_dir() else "kernel"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (``from pkg import mod`` names the module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                target = sub if sub in modules else node.module
                if target in modules:
                    out.add(target)
    return out


def import_graph(package: Path) -> dict[str, set[str]]:
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    mods = set(files)
    return {m: imports_of(p, mods) - {m} for m, p in files.items()}


def layer_violations(package: Path) -> list[str]:
    """Imports that go up a layer or across peers, as ``importer -> imported``."""
    rank = {g: i for i, peers in enumerate(LAYERS) for g in peers}
    bad = []
    for m, targets in sorted(import_graph(package).items()):
        gm = group_of(m, package)
        for t in sorted(targets):
            gt = group_of(t, package)
            if gt != gm and (gt not in rank or gm not in rank or rank[gt] >= rank[gm]):
                bad.append(f"{m} -> {t}")
    return bad


def circles(package: Path) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = import_graph(package)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_sub_package_has_a_layer() -> None:
    groups = {group_of(m, PACKAGE) for m in import_graph(PACKAGE)}
    assert groups == {g for peers in LAYERS for g in peers}


#: test folders for concerns that cut across the layers (the flows, security, the server stack)
CROSS_CUTTING = {"flows", "security", "production"}


def test_tests_mirror_the_layers() -> None:
    """One test folder per layer (``kernel`` for the top-level modules), plus the cross-cutting
    ones; no test module left at the top."""
    tests = PACKAGE.parent / "tests"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders == {g for peers in LAYERS for g in peers} | CROSS_CUTTING
    assert sorted(p.name for p in tests.glob("test_*.py")) == []


def test_each_layer_imports_only_from_below() -> None:
    assert layer_violations(PACKAGE) == []


def test_no_import_circles() -> None:
    assert circles(PACKAGE) == []


@pytest.mark.parametrize(("module", "line", "expected"), [
    # a lower layer importing a higher one, lazily inside a function
    ("graph/bundle.py", "\ndef _x() -> None:\n    from mll_registry.selection import matching\n",
     "mll_registry.graph.bundle -> mll_registry.selection.matching"),
    # a peer importing its peer
    ("hub/cards.py", "\nfrom mll_registry.registry.tracking import Tracking\n",
     "mll_registry.hub.cards -> mll_registry.registry.tracking"),
    # the kernel importing a layer
    ("settings.py", "\nimport mll_registry.labels.format\n",
     "mll_registry.settings -> mll_registry.labels.format"),
])
def test_the_contract_fails_on_an_upward_import(tmp_path: Path, module: str, line: str,
                                                expected: str) -> None:
    copy = tmp_path / "mll_registry"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert layer_violations(copy) == []
    with (copy / module).open("a", encoding="utf-8") as f:
        f.write(line)
    assert layer_violations(copy) == [expected]


def test_the_contract_finds_a_circle(tmp_path: Path) -> None:
    copy = tmp_path / "mll_registry"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "registry" / "index_cache.py").open("a", encoding="utf-8") as f:
        f.write("\nfrom mll_registry.registry.label_index import LabelIndex\n")
    found = circles(copy)
    assert len(found) == 1
    assert {"mll_registry.registry.index_cache", "mll_registry.registry.label_index"} <= set(found[0])
