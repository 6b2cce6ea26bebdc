"""The direction of dependencies between the packages, checked on the source text (AST) without importing it.

- ``method_zoo`` imports torch, the standard library and itself, nothing else;
- ``launch`` imports nothing of ``orchestra``, ``method_zoo``, torch or Lightning;
- the subpackages of ``orchestra`` import each other without a cycle (every import statement counts, also those
  inside functions; cycles between modules of one subpackage are that subpackage's business);
- ``orchestra/`` holds only ``__init__.py`` and ``errors.py`` at its top; everything else lives in a subpackage;
- (the CLI's quick commands never importing torch or Lightning is run for real in
  tests/orchestra/test_cli_commands.py.)

Every violation is reported as one line naming the file, the line and the import. ARCHITECTURE.md explains the rules.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
TRAINING_LIBRARIES = {"torch", "torchvision", "lightning", "pytorch_lightning", "lightning_fabric"}


@dataclass(frozen=True)
class Import:
    path: Path  # the importing file
    line: int
    module: str  # the absolute dotted name imported (for `from a.b import c`: a.b, or a.b.c when c is a module)
    text: str  # the statement as written

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: `{self.text}`"


def _package_of(path: Path) -> list[str]:
    """The dotted package a file's relative imports start from."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1]


def _is_module(dotted: str) -> bool:
    location = ROOT / Path(*dotted.split("."))
    return location.is_dir() or location.with_suffix(".py").is_file()


def _imports(path: Path) -> Iterator[Import]:
    """Every import statement in a file, at any depth (functions, classes, `if TYPE_CHECKING:` blocks)."""
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            text = ast.get_source_segment(source, node) or ""
            for alias in node.names:
                yield Import(path, node.lineno, alias.name, " ".join(text.split()))
        elif isinstance(node, ast.ImportFrom):
            text = " ".join((ast.get_source_segment(source, node) or "").split())
            if node.level:
                package = _package_of(path)
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                # `from pkg import sub` imports the module pkg.sub when such a module exists; otherwise a name of pkg.
                candidate = f"{module}.{alias.name}"
                yield Import(path, node.lineno, candidate if _is_module(candidate) else module, text)


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _all_imports(package: str) -> list[Import]:
    return [imp for path in _sources(package) for imp in dict.fromkeys(_imports(path))]


def _fail(rule: str, violations: list[str]) -> None:
    if violations:
        pytest.fail(f"{rule}:\n" + "\n".join(violations), pytrace=False)


def test_method_zoo_imports_only_torch_and_the_standard_library():
    allowed = STDLIB | {"torch", "method_zoo"}
    _fail("method_zoo imports only torch, the standard library and itself",
          [f"{imp.where()} imports {imp.top}" for imp in _all_imports("method_zoo") if imp.top not in allowed])


def test_launch_imports_no_training_code():
    forbidden = {"orchestra", "method_zoo"} | TRAINING_LIBRARIES
    _fail("launch imports nothing of orchestra, method_zoo, torch or Lightning",
          [f"{imp.where()} imports {imp.top}" for imp in _all_imports("launch") if imp.top in forbidden])


def test_orchestra_top_level_holds_only_init_and_errors():
    stray = sorted(p.name for p in (ROOT / "orchestra").glob("*.py") if p.name not in ("__init__.py", "errors.py"))
    _fail("orchestra/ holds only __init__.py and errors.py at its top (move modules into a subpackage)",
          [f"orchestra/{name}: a module at orchestra's top level" for name in stray])


def _node(module: str) -> str | None:
    """The node of the dependency graph a module belongs to: `orchestra.<subpackage>`, `orchestra.errors`, or
    `orchestra` itself (its __init__); None outside orchestra."""
    parts = module.split(".")
    if parts[0] != "orchestra":
        return None
    return ".".join(parts[:2])


def _file_node(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return "orchestra" if parts == ["orchestra", "__init__"] else ".".join(parts[:2])


def subpackage_graph() -> dict[str, dict[str, list[Import]]]:
    """orchestra.<a> -> orchestra.<b> -> the import statements that make the edge."""
    graph: dict[str, dict[str, list[Import]]] = {}
    for path in _sources("orchestra"):
        source = _file_node(path)
        graph.setdefault(source, {})
        for imp in dict.fromkeys(_imports(path)):  # `from a import x, y` is one import of a
            target = _node(imp.module)
            if target is not None and target != source:
                graph[source].setdefault(target, []).append(imp)
    return graph


def _strongly_connected(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """Tarjan's algorithm; the components with more than one node, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, {})):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _cycle_in(graph: dict[str, dict[str, list[Import]]], component: list[str]) -> list[str]:
    """One shortest cycle through the component's first node, as a list of nodes ending where it starts."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph.get(node, {})):
                if succ not in members:
                    continue
                if succ == start:
                    return paths[node] + [start]
                if succ not in paths:
                    paths[succ] = paths[node] + [succ]
                    following.append(succ)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {component}")  # cannot happen for a strong component


def test_no_import_cycle_between_orchestra_subpackages():
    graph = subpackage_graph()
    lines = []
    for component in _strongly_connected(graph):
        cycle = _cycle_in(graph, component)
        hops = []
        for a, b in pairwise(cycle):
            first = graph[a][b][0]
            more = f" (+{len(graph[a][b]) - 1} more)" if len(graph[a][b]) > 1 else ""
            hops.append(f"{a} -> {b} at {first.where()}{more}")
        wider = f" [all of {', '.join(component)} reach each other]" if len(component) > len(cycle) - 1 else ""
        lines.append(f"cycle {' -> '.join(cycle)}: " + "; ".join(hops) + wider)
    _fail("orchestra's subpackages import each other in one direction only", lines)
