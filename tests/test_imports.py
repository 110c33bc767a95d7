"""No import cycle in keras_mtl/: module-level imports only, read from the source (nothing runs).

Module level means what runs when a module is imported: top-level statements, including those
inside `if`/`try`/`with` blocks and class bodies, but not function bodies (those import at call
time) nor `if TYPE_CHECKING:` blocks. `import a.b.c` and `from a.b import c` also run the
`__init__.py` of every package on the way, unless the importing module lives inside that
package (its package is then already being imported). `from pkg import name`, where `name` is
not a submodule, needs `pkg/__init__.py` to have finished, even from inside `pkg`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "keras_mtl"


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `package` under `root`."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue  # runs when called
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With | ast.ClassDef | ast.For | ast.While):
                visit(node.body)
                visit(getattr(node, "orelse", []))

    visit(tree.body)
    return found


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the project modules its import runs (see the module docstring)."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}

    def inside(module: str, pkg: str) -> bool:
        return module.startswith(pkg + ".")

    def add_with_parents(module: str, target: str) -> None:
        parts = target.split(".")
        for end in range(1, len(parts)):
            parent = ".".join(parts[:end])
            if parent in modules and parent != module and not inside(module, parent):
                graph[module].add(parent)
        if target in modules and target != module:
            graph[module].add(target)

    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add_with_parents(module, alias.name)
                continue
            source = _absolute(module, is_package, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:
                    add_with_parents(module, submodule)
                    continue
                add_with_parents(module, source)
                if source in modules and source != module:
                    graph[module].add(source)  # a name that source's __init__ must define
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (or a self-loop),
    as a path `[a, b, ..., a]`."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for component in components:
        members = set(component)
        start = min(component)
        # A shortest way back to the start inside the component names one concrete cycle.
        paths = {start: [start]}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            following = []
            for node in frontier:
                for successor in sorted(graph[node] & members):
                    if successor == start:
                        cycle = [*paths[node], start]
                        break
                    if successor not in paths:
                        paths[successor] = [*paths[node], successor]
                        following.append(successor)
                if cycle:
                    break
            frontier = following
        cycles.append(cycle)
    return cycles


def test_keras_mtl_has_no_import_cycle():
    graph = import_graph(ROOT, PACKAGE)
    assert len(graph) > 30 and graph["keras_mtl.checkpoints"], "the package was not read"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_sees_every_import_form(tmp_path: Path):
    def write(name: str, text: str) -> None:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    write("pkg/__init__.py", "from pkg.sub import helper\n")
    write("pkg/sub/__init__.py", "from .deep import helper\n")
    write("pkg/sub/deep.py", "import pkg.top\ndef helper():\n    import pkg.late\n")
    write("pkg/top.py", "from . import leaf\nclass A:\n    from pkg.sub import deep\n")
    write(
        "pkg/leaf.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.top\n"
    )
    write("pkg/late.py", "import pkg.leaf\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.deep"] == {"pkg.top"}  # function body: not at import time
    assert graph["pkg.leaf"] == set()  # TYPE_CHECKING block: never runs
    assert graph["pkg.top"] == {"pkg.leaf", "pkg.sub", "pkg.sub.deep"}  # relative; class body
    assert graph["pkg.sub"] == {"pkg.sub.deep"}  # relative import inside a package
    (cycle,) = find_cycles(graph)
    assert cycle[0] == cycle[-1] and {"pkg.sub.deep", "pkg.top"} <= set(cycle)
    write("pkg/top.py", "from . import leaf\n")
    assert find_cycles(import_graph(tmp_path, "pkg")) == []
