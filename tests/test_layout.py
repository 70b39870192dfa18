"""The tree's architecture, checked from the sources with `ast`: no import cycles between modules
or between packages, and the stage rules of lumamba.export (onnx <- quant <- codegen <- project
<- cli/verify). Imports inside functions count: a lazy import is still a dependency.

Command-line modules (`cli.py`) are entry points on top of every library: they may import any
package, so they take part in the module graph but not in the package graph (`lumamba-train`
scoring the test split with lumamba.evaluate does not make training depend on evaluation)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder -> installed package name (setup.py's mapping)
FOLDERS = {"lumamba": "lumamba", "export": "lumamba.export", "quant": "lumamba.quant"}


def _modules() -> dict[str, Path]:
    modules = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _modules()


def _package(module: str) -> str:
    """The package a module belongs to (a package's __init__ belongs to the package itself)."""
    path = MODULES[module]
    return module if path.name == "__init__.py" else module.rsplit(".", 1)[0]


def _resolve(name: str) -> str | None:
    """The project module `name` refers to (longest known prefix), or None for other libraries."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    package = _package(module)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        found.update(t for t in map(_resolve, names) if t and t != module)
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        if module.endswith(".cli"):
            continue
        src = _package(module)
        # a module's own package (its __init__) is not a dependency on the package's siblings
        graph.setdefault(src, set()).update(t for t in map(_package, targets) if t != src)
    return graph


def test_the_graph_sees_the_stages():
    assert "lumamba.export.onnx.manifest" in MODULES and "lumamba.export.codegen.arena" in MODULES
    assert "lumamba.export.onnx.manifest" in GRAPH["lumamba.quant.golden"]


def test_no_import_cycle_between_modules():
    assert _cycle(GRAPH) is None, " -> ".join(_cycle(GRAPH))


def test_no_import_cycle_between_packages():
    graph = _package_graph()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


@pytest.mark.parametrize("package, forbidden", [
    ("lumamba.export.onnx", ("lumamba.quant", "lumamba.export.codegen", "lumamba.export.project",
                             "lumamba.export.cli", "lumamba.export.verify")),
    ("lumamba.quant", ("lumamba.export.codegen", "lumamba.export.project", "lumamba.export.cli",
                       "lumamba.export.verify")),
    ("lumamba.export.codegen", ("lumamba.export.project", "lumamba.export.cli", "lumamba.export.verify")),
    ("lumamba.export.project", ("lumamba.export.cli", "lumamba.export.verify")),
])
def test_stage_rules(package, forbidden):
    bad = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() if m.startswith(package)
                 for t in targets if t.startswith(forbidden))
    assert not bad, bad


def test_detector_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
