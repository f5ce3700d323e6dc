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

A function-local import is allowed only where it defers a heavy import (for a
command's start-up time, or Twisted's reactor order in the Comet child), and it
says so: a comment with the word "defer" on its line or just above its block of
imports, or a paragraph of the module docstring starting "Function-local
imports" that says what it defers.  ``python tests/test_package_graph.py``
prints the function-local imports per module.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import textwrap
import tokenize
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


# -- function-local imports --------------------------------------------------------------

MODULE_NOTE = re.compile(r"^Function-local imports\b.*?\bdefer",
                         re.IGNORECASE | re.MULTILINE | re.DOTALL)
"""A module docstring paragraph starting "Function-local imports" that says what it defers:
it explains every function-local import of that module."""
REASON = re.compile(r"\bdefer", re.IGNORECASE)
"""What a comment on (or just above) a function-local import must say: that it defers."""


@dataclass(frozen=True)
class LocalImport:
    """One function-local ``import`` statement of ``module`` at ``line``."""

    module: str
    line: int
    imported: tuple[str, ...]  # absolute dotted names (a relative one resolved)
    project: bool  # of a module of the packages walked
    explained: bool  # by a comment saying it defers, or by the module's note


def _comments(source: str) -> dict[int, str]:
    """Each line's comment (tokenize, so a ``#`` inside a string is not one)."""
    return {tok.start[0]: tok.string for tok in
            tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.COMMENT}


def _bodies(node: ast.AST, inside: bool) -> Iterator[tuple[list[ast.stmt], bool]]:
    """Every statement list under ``node``, and whether it is inside a function; the body
    of an ``if TYPE_CHECKING:`` is left out (it never runs)."""
    for field_name in ("body", "orelse", "finalbody"):
        block = getattr(node, field_name, None)
        if isinstance(block, list) and block and isinstance(block[0], ast.stmt) and not (
                isinstance(node, ast.If) and field_name == "body"
                and _is_type_checking(node.test)):
            yield block, inside
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.stmt | ast.ExceptHandler | ast.match_case):
            yield from _bodies(child, inside or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef))


def _import_runs(tree: ast.Module) -> Iterator[list[ast.Import | ast.ImportFrom]]:
    """Runs of consecutive import statements inside functions (a blank line or any other
    statement ends a run)."""
    for block, inside in _bodies(tree, False):
        if not inside:
            continue
        run: list[ast.Import | ast.ImportFrom] = []
        for stmt in block:
            if isinstance(stmt, ast.Import | ast.ImportFrom) and (
                    not run or stmt.lineno == (run[-1].end_lineno or run[-1].lineno) + 1):
                run.append(stmt)
                continue
            if run:
                yield run
            run = [stmt] if isinstance(stmt, ast.Import | ast.ImportFrom) else []
        if run:
            yield run


def _absolute(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not node.level:
        return [node.module or ""]
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return [".".join([*base, *([node.module] if node.module else [])])]


def local_imports(root: Path, packages: Iterable[str]) -> list[LocalImport]:
    """Every function-local import statement in the modules of ``packages`` under ``root``."""
    packages = tuple(packages)
    found: list[LocalImport] = []
    for name, path in modules(root, packages).items():
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        noted = bool(MODULE_NOTE.search(ast.get_docstring(tree) or ""))
        comments = _comments(source)
        lines = source.splitlines()
        for run in _import_runs(tree):
            first, last = run[0].lineno, run[-1].end_lineno or run[-1].lineno
            said = [comments.get(n, "") for n in range(first, last + 1)]
            above = first - 1  # the comment lines just above the run
            while above >= 1 and lines[above - 1].strip().startswith("#"):
                said.append(comments.get(above, ""))
                above -= 1
            explained = noted or any(REASON.search(c) for c in said)
            for node in run:
                imported = tuple(_absolute(node, name, path.name == "__init__.py"))
                found.append(LocalImport(
                    name, node.lineno, imported,
                    any(i.split(".")[0] in packages for i in imported), explained))
    return found


def test_every_function_local_import_says_what_it_defers() -> None:
    unexplained = [f"{i.module} (line {i.line}) imports {', '.join(i.imported)}"
                   for i in local_imports(ROOT, LAYERS) if not i.explained]
    assert unexplained == [], (
        "function-local imports that do not say which heavy import they defer (move them "
        "to the top of the module; if that makes a cycle, move the shared thing down):\n"
        + "\n".join(unexplained))


def test_the_local_import_check_reads_comments_and_notes(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": """\
            from typing import TYPE_CHECKING

            def bare():
                from pkg import b  # a comment, but not a reason
                return b

            def commented():
                # healpy costs 0.7 s to import:
                # deferred so the CLI starts fast
                import healpy
                from . import b
                return healpy, b

            def inline():
                import json  # deferred (for the test's sake)
                if TYPE_CHECKING:
                    from pkg import b  # never runs: not counted
                try:
                    import os
                except ImportError:
                    pass
                return json, os

            def later():
                import json

                import os  # deferred, but the blank line ended the run above
                return json, os
            """,
        "pkg/b.py": '''\
            """B.

            Function-local imports: every function imports what it needs when it runs,
            deferred so that importing b is cheap.
            """

            def f():
                import healpy
                return healpy
            ''',
    })
    found = {(i.module, i.line): (i.imported, i.project, i.explained)
             for i in local_imports(tmp_path, ["pkg"])}
    assert found == {
        ("pkg.a", 4): (("pkg",), True, False),
        ("pkg.a", 10): (("healpy",), False, True),
        ("pkg.a", 11): (("pkg",), True, True),
        ("pkg.a", 15): (("json",), False, True),
        ("pkg.a", 19): (("os",), False, False),
        ("pkg.a", 25): (("json",), False, False),
        ("pkg.a", 27): (("os",), False, True),
        ("pkg.b", 8): (("healpy",), False, True),
    }


def count(found: Iterable[LocalImport]) -> str:
    """Function-local imports per module: all of them and those of project modules."""
    found = list(found)
    every = Counter(i.module for i in found)
    project = Counter(i.module for i in found if i.project)
    rows = [f"{every[m]:5d} {project[m]:8d}  {m}" for m, _ in every.most_common()]
    return "\n".join([f"{'all':>5} {'project':>8}  module", *rows,
                      f"{sum(every.values()):5d} {sum(project.values()):8d}  total"])


if __name__ == "__main__":  # python tests/test_package_graph.py [ROOT]
    print(count(local_imports(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT, LAYERS)))
