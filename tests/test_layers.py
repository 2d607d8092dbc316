"""The package's imports flow one way (dlforge._layers.LAYERS) and have no cycle.

Every import statement counts: at module level and inside functions (a lazy import does not
make an upward edge or a cycle go away); only ``if TYPE_CHECKING:`` blocks are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dlforge
from dlforge._layers import LAYERS

ROOT = Path(dlforge.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _target(name: str) -> str:
    """The longest known module that ``name`` (a module or a name in one) refers to."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str, path: Path, is_pkg: bool) -> set[str]:
    """The dlforge modules ``module`` imports anywhere, TYPE_CHECKING blocks aside."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                    isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(_target(a.name) for a in node.names if a.name.split(".")[0] == "dlforge")

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source.split(".")[0] != "dlforge":
                return
            for alias in node.names:
                found.add(_target(f"{source}.{alias.name}"))

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(module)
    return found


EDGES = {m: _imports(m, p, pkg) for m, (p, pkg) in MODULES.items()}


def _unit(module: str) -> tuple[int, str]:
    """(layer index, unit) of a module: the longest unit in LAYERS that contains it (the unit
    ``dlforge`` is the package's ``__init__`` alone)."""
    best = None
    for i, layer in enumerate(LAYERS):
        for unit in layer:
            inside = module == unit or (unit != "dlforge" and module.startswith(unit + "."))
            if inside and (best is None or len(unit) > len(best[1])):
                best = (i, unit)
    assert best is not None, f"{module} is in no layer of dlforge._layers.LAYERS"
    return best


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _unit(module)


def test_no_import_reaches_up_or_sideways() -> None:
    bad = []
    for module, targets in EDGES.items():
        layer, unit = _unit(module)
        for target in sorted(targets):
            t_layer, t_unit = _unit(target)
            if t_unit == unit:
                continue
            if t_layer > layer:
                bad.append(f"{module} imports {target}: up from {unit} to {t_unit}")
            elif t_layer == layer:
                bad.append(f"{module} imports {target}: sideways, {unit} and {t_unit} are "
                           "side by side")
    assert not bad, "imports against dlforge._layers.LAYERS:\n" + "\n".join(bad)


def test_no_import_cycle() -> None:
    # Tarjan's strongly connected components over the import graph.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in EDGES.get(v, ()):
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

    for v in sorted(EDGES):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_walker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The test itself can fail: a lazy import inside a function is an edge."""
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\n"
                   "if TYPE_CHECKING:\n    from dlforge.cli import main\n"
                   "def f():\n    from dlforge.serve.app import create_app\n"
                   "    from .base import DeepModel\n", encoding="utf-8")
    got = _imports("dlforge.estimators.files", src, False)
    assert got == {"dlforge.serve.app", "dlforge.estimators.base"}
