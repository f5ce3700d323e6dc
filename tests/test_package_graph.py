"""The package graph points one way and has no module cycle (issue 15).

The imports are read with :mod:`ast`, not grep and not by importing: every
``import x`` and ``from x import y`` anywhere in a module (inside functions
too, and relative ones resolved), except those under ``if TYPE_CHECKING:``,
which never run.  Layers, bottom first::

    alerts_schema  <  crossmatch  <  listeners  <  broker

``listeners`` may import ``crossmatch`` (the LVK normalizer reads sky maps with
:mod:`crossmatch.skymap`), never the reverse; nothing below ``broker`` imports it.
A cycle is looked for among every import (function-local ones too: a local
import does not make a cycle go away, it only hides it).
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS: dict[str, int] = {"alerts_schema": 0, "crossmatch": 1, "listeners": 2, "broker": 3}
"""Each project package's layer: a module may import only its own layer and lower ones."""


@dataclass(frozen=True)
class Edge:
    """``importer`` imports ``imported`` (both project modules) at ``line``."""

    importer: str
    imported: str
    line: int
    local: bool  # inside a function (runs when it is called, not at import)


def modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name (a package by its own)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: Mapping[str, Path]) -> None:
        self.module = module
        self.is_package = is_package
        self.known = known
        self.depth = 0
        self.edges: list[Edge] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:  # the body only runs under a type checker
                self.visit(child)
        else:
            self.generic_visit(node)

    def _nested(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".")
            if not self.is_package:
                base = base[:-1]
            base = base[:len(base) - (node.level - 1)]
            prefix = ".".join([*base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        for alias in node.names:
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name``
            # imports mod.
            candidate = f"{prefix}.{alias.name}"
            self._add(candidate if candidate in self.known else prefix, node)

    def _add(self, name: str, node: ast.stmt) -> None:
        while name and name not in self.known:
            name = name.rpartition(".")[0]
        if name and name != self.module:
            self.edges.append(Edge(self.module, name, node.lineno, self.depth > 0))


def import_edges(root: Path, packages: Iterable[str]) -> list[Edge]:
    """Every import between the project modules of ``packages`` under ``root``."""
    known = modules(root, packages)
    edges: list[Edge] = []
    for name, path in known.items():
        visitor = _Imports(name, path.name == "__init__.py", known)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        edges.extend(visitor.edges)
    return edges


def upward(edges: Iterable[Edge], layers: Mapping[str, int]) -> list[str]:
    """Each import of a higher layer (or of a package with no layer), as a sentence."""
    wrong = []
    for edge in edges:
        mine, theirs = (layers.get(m.split(".")[0]) for m in (edge.importer, edge.imported))
        if mine is None or theirs is None or theirs > mine:
            wrong.append(f"{edge.importer} (line {edge.line}) imports {edge.imported}")
    return wrong


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """The import cycles: each strongly connected set of two or more modules, sorted."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
        graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def _check(root: Path, layers: Mapping[str, int]) -> tuple[list[str], list[list[str]]]:
    edges = import_edges(root, layers)
    return upward(edges, layers), cycles(edges)


def test_every_import_points_down() -> None:
    wrong, _ = _check(ROOT, LAYERS)
    assert wrong == [], "imports of a higher layer:\n" + "\n".join(wrong)


def test_no_module_imports_itself_round_a_cycle() -> None:
    _, found = _check(ROOT, LAYERS)
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_walk_sees_the_real_graph() -> None:
    """The walk finds imports it must find: a function-local one, a relative one."""
    edges = {(e.importer, e.imported) for e in import_edges(ROOT, LAYERS)}
    assert ("broker.runtime.assembly", "listeners.kafka") in edges
    assert ("listeners.registry", "listeners.gcn_json") in edges  # from listeners import x
    assert ("broker.cli", "broker.runtime.assembly") in edges  # inside a command
    assert not any(imported == "broker" or imported.startswith("broker.")
                   for importer, imported in edges if not importer.startswith("broker"))


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def _tiny(tmp_path: Path, files: Mapping[str, str]) -> tuple[list[str], list[list[str]]]:
    base: dict[str, str] = {"low/__init__.py": "", "high/__init__.py": ""}
    _write(tmp_path, {**base, **files})
    return _check(tmp_path, {"low": 0, "high": 1})


def test_the_checker_fails_on_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    wrong, found = _tiny(tmp_path, {
        "low/a.py": """
            from typing import TYPE_CHECKING

            if TYPE_CHECKING:
                from high import typing_only  # never runs: not an import

            def later():
                from high.b import thing  # upward, even inside a function
                return thing
            """,
        "low/c.py": "from . import d\n",          # relative: low.d
        "low/d.py": "from .c import x\n",         # and back: a cycle
        "high/b.py": "import low.a\nthing = 1\n",  # downward: fine
        "high/typing_only.py": "",
    })
    assert wrong == ["low.a (line 8) imports high.b"]
    assert found == [["high.b", "low.a"], ["low.c", "low.d"]]


def test_the_checker_passes_a_graph_that_points_down(tmp_path: Path) -> None:
    wrong, found = _tiny(tmp_path, {
        "low/a.py": "import json\n",
        "high/b.py": "from low import a\nfrom low.a import json\n",
        "high/c.py": "def f():\n    from high import b\n",
    })
    assert (wrong, found) == ([], [])


def _names(edges: Sequence[Edge]) -> set[tuple[str, str]]:
    return {(e.importer, e.imported) for e in edges}


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    _write(tmp_path, {"pkg/__init__.py": "from .sub import mod\n",
                      "pkg/sub/__init__.py": "",
                      "pkg/sub/mod.py": "from .. import other\nfrom . import sibling\n",
                      "pkg/sub/sibling.py": "", "pkg/other.py": ""})
    assert _names(import_edges(tmp_path, ["pkg"])) == {
        ("pkg", "pkg.sub.mod"), ("pkg.sub.mod", "pkg.other"),
        ("pkg.sub.mod", "pkg.sub.sibling")}
