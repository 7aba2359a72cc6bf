"""The package's shape: no import cycles anywhere, and function-level imports only with a reason.

The room layering itself is an import-linter contract (pyproject.toml, run by ``lint-imports`` in
.ci/run); see docs/architecture.md.
"""

from __future__ import annotations

import ast

import grimp
import pytest

from repo_paths import REPO

PKG = REPO / "src" / "pandafine"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (the import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_cycle_finder_knows_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    g = grimp.build_graph("pandafine")
    graph = {m: g.find_modules_directly_imported_by(m) for m in g.modules if m.startswith("pandafine")}
    assert strongly_connected(graph) == [], "import cycles between these modules"


def function_level_imports() -> list[tuple[str, int, str]]:
    """(file, line, source line) of every import of a pandafine module inside a function."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("pandafine")):
                    found.append((str(path.relative_to(PKG)), node.lineno, lines[node.lineno - 1].strip()))
                elif isinstance(node, ast.Import) and any(a.name.startswith("pandafine") for a in node.names):
                    found.append((str(path.relative_to(PKG)), node.lineno, lines[node.lineno - 1].strip()))
    return found


def test_function_level_imports_of_the_package_say_why():
    found = function_level_imports()
    unexplained = [f"{f}:{n}: {src}" for f, n, src in found if "# lazy:" not in src]
    assert not unexplained, "a function-level import of a pandafine module needs a '# lazy: <reason>' comment"
    assert len(found) <= 5, f"{len(found)} function-level imports of the package's own modules: {found}"


@pytest.mark.parametrize("room", ["core", "sensors", "models", "synthetic", "sources", "preprocess", "tiles",
                                  "training", "product", "inference", "studies", "cli"])
def test_every_room_has_a_docstring(room):
    init = PKG / room / "__init__.py"
    assert init.is_file(), f"{init}: missing"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{init}: say what this room holds"
