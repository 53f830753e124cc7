"""The import graph of `stanchat/` and `training/` points down: no import circles, no front end below the core.

Every .py file is parsed with `ast` (nothing is imported): its imports at module level and inside
functions alike, relative ones resolved against its package, and `from pkg import name` resolved to
the module `pkg.name` when that is a module, else to `pkg` itself (its `__init__`, which must run to
hand out `name`). Importing `pkg.mod` also runs `pkg/__init__.py`, but that implicit step is not an
edge: Python has the package in `sys.modules` before its `__init__` body runs, so a submodule
importing a sibling through its package is no circle; a package `__init__` that imports its own
submodule which imports a name back from the package is (an edge each way).

Imports under `if TYPE_CHECKING:` never run: they are listed apart (`Graph.type_only`) and are not
edges. Imports a module makes by string (`importlib.import_module`, the lazy faces of `stanchat`
and `stanchat.convert`) are not seen either.

The layers (STYLE.md, "Layout we aim for"):
- core: everything in `stanchat/` except the front ends; it imports no front end, nor a core
  module that imports one (each hop of such a chain is listed);
- front ends: `stanchat/api/`, `stanchat/app/`, `stanchat/commands/`, `stanchat/cli.py`, `stanchat/lmms/`,
  `stanchat/__main__.py`; `stanchat/api/` does not import `stanchat/app/`;
- `stanchat/` never imports `training/`, `demo/` or `benchmarks/`;
- the models (STAN, Mug, the video-text models and their registry) import no converter:
  `stanchat/convert/` imports them, never the reverse.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("stanchat", "training")
FRONT_ENDS = ("stanchat.api", "stanchat.app", "stanchat.commands", "stanchat.cli", "stanchat.__main__", "stanchat.lmms")
NEVER_FROM_STANCHAT = ("training", "demo", "benchmarks")
MODELS = ("stanchat.stan", "stanchat.mug", "stanchat.videomodel", "stanchat.videoclip", "stanchat.cocaclip",
          "stanchat.architectures", "stanchat.openclip_blocks")
CONVERTERS = ("stanchat.convert",)

# (importer, imported) module pairs that break the rules today: being removed by issue 22; must end empty
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module, dotted (one of ours, or a forbidden top-level package's)
    where: str  # "path/to/file.py:line"

    def __str__(self) -> str:
        return f"{self.where}: {self.source} -> {self.target}"


@dataclass
class Graph:
    modules: set[str] = field(default_factory=set, repr=False)
    edges: list[Edge] = field(default_factory=list, repr=False)  # imports that run (module level or in a function)
    type_only: list[Edge] = field(default_factory=list, repr=False)  # under `if TYPE_CHECKING:`: never run, not edges


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Every import statement of one file as (candidate module names, line, type-only)."""

    def __init__(self, module: str, is_package: bool):
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[list[str], int, bool]] = []
        self.type_only = 0

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            return self.generic_visit(node)
        self.type_only += 1
        for child in node.body:
            self.visit(child)
        self.type_only -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append(([alias.name], node.lineno, self.type_only > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.package.split(".")
            anchor = ".".join(package[: len(package) - node.level + 1])
            base = f"{anchor}.{base}" if base else anchor
        for alias in node.names:
            # `from pkg import name`: the submodule pkg.name if there is one, else pkg's __init__
            candidates = [base] if alias.name == "*" else [f"{base}.{alias.name}", base]
            self.found.append((candidates, node.lineno, self.type_only > 0))


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = SCANNED) -> Graph:
    """Parse every .py under `root/<package>` into module -> module edges (see the module docstring)."""
    files = sorted(p for package in packages for p in (root / package).rglob("*.py"))
    graph = Graph(modules={module_name(p, root) for p in files})
    ours = set(packages) | set(NEVER_FROM_STANCHAT)
    for path in files:
        source = module_name(path, root)
        visitor = _Imports(source, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for candidates, line, type_only in visitor.found:
            target = next((c for c in candidates if c in graph.modules), candidates[-1])
            if target not in graph.modules and target.split(".")[0] not in ours:
                continue  # torch, the standard library, ...
            edge = Edge(source, target, f"{path.relative_to(root)}:{line}")
            (graph.type_only if type_only else graph.edges).append(edge)
    graph.edges = list(dict.fromkeys(graph.edges))  # `from m import a, b`: one edge per line
    graph.type_only = list(dict.fromkeys(graph.type_only))
    return graph


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _is_core(module: str) -> bool:
    return _within(module, ("stanchat",)) and not _within(module, FRONT_ENDS)


def reaching_front_ends(edges: list[Edge]) -> set[str]:
    """Core modules whose imports reach a front end, directly or through other modules."""
    reach: set[str] = set()
    while True:
        more = {e.source for e in edges if _is_core(e.source) and e.source not in reach
                and (_within(e.target, FRONT_ENDS) or e.target in reach)}
        if not more:
            return reach
        reach |= more


def layer_violations(graph: Graph) -> list[Edge]:
    """Edges that import upward: core -> front end (directly, or into a core module that reaches one:
    every hop of the chain is listed), stanchat -> training/demo/benchmarks, api -> app, model -> converter."""
    reach = reaching_front_ends(graph.edges)
    bad = []
    for edge in graph.edges:
        if not _within(edge.source, ("stanchat",)):
            continue
        if _within(edge.target, NEVER_FROM_STANCHAT):
            bad.append(edge)
        elif _is_core(edge.source) and (_within(edge.target, FRONT_ENDS) or edge.target in reach):
            bad.append(edge)
        elif _within(edge.source, ("stanchat.api",)) and _within(edge.target, ("stanchat.app",)):
            bad.append(edge)
        elif _within(edge.source, MODELS) and _within(edge.target, CONVERTERS):
            bad.append(edge)
    return bad


def import_cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    succ: dict[str, set[str]] = {}
    for edge in edges:
        succ.setdefault(edge.source, set()).add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(succ.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(succ):
        if node not in index:
            visit(node)
    return sorted(components)


def cycle_edges(graph: Graph, cycles: list[list[str]]) -> list[Edge]:
    """The edges that run inside the circles: what to cut."""
    members = {module: i for i, cycle in enumerate(cycles) for module in cycle}
    return [e for e in graph.edges if e.source in members and members[e.source] == members.get(e.target)]


def _known(edge: Edge) -> bool:
    return (edge.source, edge.target) in KNOWN_VIOLATIONS


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph()


def test_the_graph_sees_stanchat_and_training(graph):
    """A guard for the checks below: the scan found the packages and their imports of every kind."""
    assert {"stanchat", "stanchat.cli", "stanchat.convert.openclip_models", "training.train"} <= graph.modules
    edges = {(e.source, e.target) for e in graph.edges}
    assert ("stanchat.convert.openclip_models", "stanchat.cocaclip") in edges  # module level
    assert ("stanchat.commands.convert", "stanchat.convert") in edges  # inside a function
    assert ("training.model", "stanchat.architectures") in edges


def test_no_import_circles(graph):
    edges = [e for e in graph.edges if not _known(e)]
    cycles = import_cycles(edges)
    inside = cycle_edges(Graph(graph.modules, edges), cycles)
    assert not cycles, "import circles (cut one edge of each; an import inside a function counts):\n" + "\n".join(
        [" <-> ".join(c) for c in cycles] + [f"  {e}" for e in inside])


def test_imports_point_down(graph):
    bad = [e for e in layer_violations(graph) if not _known(e)]
    assert not bad, ("imports that point up (core -> front end, stanchat -> training/demo/benchmarks, api -> app, "
                     "model -> converter):\n" + "\n".join(f"  {e}" for e in bad))


def test_known_violations_are_still_there(graph):
    """KNOWN_VIOLATIONS shrinks as issue 22 lands: an entry whose import is gone must go too."""
    cycles = import_cycles(graph.edges)
    current = {(e.source, e.target) for e in layer_violations(graph) + cycle_edges(graph, cycles)}
    stale = sorted(KNOWN_VIOLATIONS - current)
    assert not stale, "no longer violations; remove them from KNOWN_VIOLATIONS: " + ", ".join(
        f"{a} -> {b}" for a, b in stale)


SYNTHETIC = {
    "stanchat/__init__.py": "",
    "stanchat/a.py": "from stanchat import b\n",  # -> the submodule stanchat.b
    "stanchat/b.py": "def f():\n    from . import a\n",  # in a function, relative: a circle with a
    "stanchat/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stanchat.api import server\n",
    "stanchat/d.py": "import torch\n\n\ndef g():\n    from stanchat.api.server import serve\n",
    "stanchat/f.py": "from stanchat.d import g\n",  # core -> core that reaches a front end
    "stanchat/e.py": "import benchmarks.speed\n",
    "stanchat/videoclip.py": "from stanchat.convert.openclip import x\n",
    "stanchat/convert/__init__.py": "",
    "stanchat/convert/openclip.py": "from stanchat.videoclip import y\n",  # converter -> model: fine, but a circle
    "stanchat/api/__init__.py": "from stanchat.api.server import serve\n",
    "stanchat/api/server.py": "from stanchat.api import helpers\nfrom ..app import ui\n",
    "stanchat/api/helpers.py": "",
    "stanchat/app/__init__.py": "from .ui import thing\n",
    "stanchat/app/ui.py": "from stanchat.app import other\n",  # a name of the package: its __init__
    "stanchat/video/__init__.py": "from stanchat.video.load import load_video\n",
    "stanchat/video/load.py": "from stanchat.video import sample\n",  # a sibling through the package: no circle
    "stanchat/video/sample.py": "",
    "training/__init__.py": "",
    "training/x.py": "from stanchat.api import server\nfrom stanchat.app import ui\n",
}


def test_the_checks_find_circles_and_upward_imports(tmp_path):
    for name, text in SYNTHETIC.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert import_cycles(graph.edges) == [["stanchat.a", "stanchat.b"], ["stanchat.app", "stanchat.app.ui"],
                                          ["stanchat.convert.openclip", "stanchat.videoclip"]]
    assert [str(e) for e in cycle_edges(graph, [["stanchat.a", "stanchat.b"]])] == [
        "stanchat/a.py:1: stanchat.a -> stanchat.b", "stanchat/b.py:2: stanchat.b -> stanchat.a"]
    assert sorted(str(e) for e in layer_violations(graph)) == [
        "stanchat/api/server.py:2: stanchat.api.server -> stanchat.app.ui",
        "stanchat/d.py:5: stanchat.d -> stanchat.api.server",
        "stanchat/e.py:1: stanchat.e -> benchmarks.speed",
        "stanchat/f.py:1: stanchat.f -> stanchat.d",
        "stanchat/videoclip.py:1: stanchat.videoclip -> stanchat.convert.openclip",
    ]
    assert [str(e) for e in graph.type_only] == ["stanchat/c.py:3: stanchat.c -> stanchat.api.server"]
