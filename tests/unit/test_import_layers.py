"""The packages' imports go one way: no circle between modules, even through imports inside
functions (which would hide one from Python's import machinery until a call), and inside the
engine no module imports a method's own folder (``drafters/sd2/``): what methods share lives in
``specdec/tree/`` and at ``drafters/``' top level."""
from __future__ import annotations

import ast
from pathlib import Path

from sd2.paths import REPO_ROOT

PACKAGES = {"specdec": "inference/specdec", "evaluation": "inference/evaluation", "sd2": "sd2",
            "sd2train": "train/sd2train"}
METHOD_FOLDERS = ["specdec.drafters.sd2"]


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in (REPO_ROOT / folder).rglob("*.py"):
            parts = [package, *path.relative_to(REPO_ROOT / folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(module: str, path: Path, node) -> list[str]:
    """The dotted names an import statement may refer to (``from a import b``: a, and a.b if a
    module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module
    return [source] + [f"{source}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports anywhere in its file."""
    known = modules()
    graph = {}
    for module, path in known.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in imported_names(module, path, node):
                    while name and name not in known:  # an attribute of a module: the module
                        name = name.rpartition(".")[0]
                    if name and name != module:
                        deps.add(name)
        graph[module] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_even_through_function_level_imports():
    graph = import_graph()
    assert len(graph) > 80 and "specdec.tree.dynamic" in graph["specdec.drafters.feature_drafter"]
    assert circles(graph) == []


def test_the_circle_finder_finds_a_planted_circle():
    graph = {**import_graph(), "specdec.tree.masks": {"specdec.engine"}}  # the engine imports tree.masks
    assert any({"specdec.engine", "specdec.tree.masks"} <= set(c) for c in circles(graph))


def test_no_engine_module_imports_a_methods_own_folder():
    for module, deps in import_graph().items():
        for folder in METHOD_FOLDERS:
            if module.startswith("specdec.") and not module.startswith(folder):
                assert not any(d == folder or d.startswith(folder + ".") for d in deps), (module, deps)
