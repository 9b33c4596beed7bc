"""The package's import graph: no cycles, and no private name imported from another module.

Every import counts, at module level or inside a function (a function-level import hides a
cycle from Python's import machinery, not from the design); imports under `if TYPE_CHECKING:`
do not, as they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "convdistill"


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, packages under their own name."""
    modules = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def import_graph() -> tuple[nx.DiGraph, list[str]]:
    """Edges importer -> imported module, and the private names imported across modules."""
    modules = _modules()
    graph, private = nx.DiGraph(), []
    for name, path in modules.items():
        graph.add_node(name)
        tree = ast.parse(path.read_text(), str(path))
        skipped = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                graph.add_edges_from((name, alias.name) for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, one level up per extra dot
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                if base not in modules:
                    continue
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:  # a submodule
                        graph.add_edge(name, f"{base}.{alias.name}")
                        continue
                    graph.add_edge(name, base)
                    dunder = alias.name.startswith("__") and alias.name.endswith("__")
                    if alias.name.startswith("_") and not dunder and base != name:
                        private.append(f"{path.relative_to(SRC)}:{node.lineno}: {alias.name} from {base}")
    return graph, private


def test_the_graph_sees_every_kind_of_import() -> None:
    graph, _ = import_graph()
    # module level, function level, and a package's own __init__ importing its submodules
    assert graph.has_edge("convdistill.cli.main", "convdistill.cli.serve")
    assert graph.has_edge("convdistill.trainers", "convdistill.trainers.sft")
    assert graph.has_edge("convdistill.trainers.sft", "convdistill.trainers.steps")
    assert graph.number_of_nodes() > 100


def test_no_import_cycles() -> None:
    graph, _ = import_graph()
    cycles = [" -> ".join([*cycle, cycle[0]]) for cycle in nx.simple_cycles(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_name_is_imported_from_another_module() -> None:
    _, private = import_graph()
    assert not private, "private names imported from other modules:\n" + "\n".join(private)
