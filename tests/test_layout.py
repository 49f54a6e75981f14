"""The shape of the code a newcomer reads: modules of one job, no import circles, no borrowing
of another module's private names. Imports inside functions count as much as those at the top.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("include", "operators", "dags", "plugins")
MAX_LINES = 700


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(path: Path, name: str, modules: dict) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import in the file, at any depth."""
    out = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [a.name for a in node.names]
            # "from include.store import layout": a submodule, not a name
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            out += [(s, []) for s in subs]
            out.append((base, [n for n in names if f"{base}.{n}" not in modules]))
    return [(m, n) for m, n in out if m in modules]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m, _ in _imports(path, name, modules) if m != name}
            for name, path in modules.items()}


def test_no_module_is_over_700_lines():
    big = {str(p.relative_to(REPO)): n for p in _modules().values()
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, big


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    borrowed = []
    for name, path in modules.items():
        for module, names in _imports(path, name, modules):
            if module != name:
                borrowed += [f"{path.relative_to(REPO)}: {module}.{n}" for n in names
                             if n.startswith("_") and not n.startswith("__")]
    assert not borrowed, borrowed


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    # a package's __init__ that re-exports its modules is not a circle with them
    graph = _graph()
    for name in list(graph):
        if (REPO / name.replace(".", "/") / "__init__.py").is_file():
            graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    assert _cycles(graph) == []


def test_the_checker_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
