"""The package's shape, checked: no import cycles, short modules that say why.

An import cycle (a TYPE_CHECKING one included: it is still a dependency a
reader must hold in mind both ways) means two modules are one idea split
badly, or a layer reaching up. The graph comes from grimp, the library
import-linter is built on, so this test and `lint-imports` read the same
imports. Module size and the opening docstring are the house's standards.
"""

from __future__ import annotations

import ast
from pathlib import Path

import factoryd
import grimp

PACKAGE_DIR = Path(factoryd.__file__).parent
MAX_LINES = 400


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph.find_modules_directly_imported_by(module)):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_level_import_cycle_type_checking_imports_included() -> None:
    graph = grimp.build_graph("factoryd", exclude_type_checking_imports=False)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_type_checking_imports() -> None:
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.a")  # as under TYPE_CHECKING
    assert _cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def _modules() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE_DIR)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_module_opens_with_a_docstring() -> None:
    bare = [
        str(p.relative_to(PACKAGE_DIR))
        for p in _modules()
        if p.stat().st_size and not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert bare == []
