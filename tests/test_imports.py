"""No import cycles in the package: every module's top-level imports, read with ast, form a graph without cycles.

A cycle makes the import order matter (a module half-initialised when the other one reads it) and ties two
concepts into one. Imports inside functions (lazy, to keep ``--help`` light) run after every module has
loaded and are allowed; so are imports under ``if TYPE_CHECKING:`` (never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sencache_bench"


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _top_level(body: list[ast.stmt]):
    """Import statements that run when the module is imported: the module body, its if/try/with blocks and class
    bodies; not function bodies, not ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            test = node.test
            if not (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
                    or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
                yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _top_level(block)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _top_level(node.body)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that importing ``name`` imports at top level (with the packages above them)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _top_level(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import sub`` imports the submodule pkg.sub when there is one
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            parts = target.split(".")
            for k in range(2, len(parts) + 1):  # the module and every package above it, root excluded
                dotted = ".".join(parts[:k])
                if dotted in modules and dotted != name and not name.startswith(f"{dotted}."):
                    found.add(dotted)
    return found


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_the_graph_reader_on_known_imports():
    """Edges worked out by hand from the source of three modules (relative, package-relative and absolute)."""
    graph = import_graph()
    assert {"sencache_bench.errors", "sencache_bench.results", "sencache_bench.results.store",
            "sencache_bench.calibration.experts",
            "sencache_bench.calibration.schedules"} <= graph["sencache_bench.calibration.lemica"]
    # policies/__init__.py: ``from .base import PolicyConfig`` is relative to the package itself
    assert "sencache_bench.policies.base" in graph["sencache_bench.policies"]
    assert graph["sencache_bench"] == set()  # the root re-exports the API lazily
    # plugins build on the loading machinery; the registry discovers through it; it imports the Registry type only
    # under TYPE_CHECKING (plugins import the policies' and models' registries lazily, inside functions)
    assert graph["sencache_bench.plugins"] == {"sencache_bench.errors", "sencache_bench.discovery"}
    assert graph["sencache_bench.registry"] == {"sencache_bench.errors", "sencache_bench.discovery"}
    assert graph["sencache_bench.discovery"] == {"sencache_bench.errors"}


def test_find_cycles_on_a_hand_made_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}, "f": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"], ["e", "e2"]]


def test_no_import_cycles_in_the_package():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (top-level imports): " + "; ".join(" <-> ".join(c) for c in cycles)
