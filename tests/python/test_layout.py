"""The package's shape: no import circle between its modules (lazy imports inside functions count
too: a circle is a design knot whether or not Python trips on it), and the subpackages the README's
layout names."""

from __future__ import annotations

import ast
from pathlib import Path

import mlebench_hpc

PKG = Path(mlebench_hpc.__file__).resolve().parent


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules NAME imports, anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    base = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                mod = ".".join(anchor + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # A package's __init__ is not an edge target of its own submodules' imports of siblings.
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def test_the_scanner_sees_a_circle() -> None:
    """The detector itself: a planted circle is found (else the test below could not fail)."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_known_edges_are_seen() -> None:
    g = graph()
    assert "mlebench_hpc.run.store" in g["mlebench_hpc.run.phases"]
    assert "mlebench_hpc.net" in g["mlebench_hpc.config"]  # a lazy import inside a function


def test_no_import_circle() -> None:
    assert circles(graph()) == []


def test_layout_subpackages() -> None:
    for pkg in ("run", "slurm", "sweep", "server", "llm", "images", "grading", "results"):
        assert (PKG / pkg / "__init__.py").is_file(), pkg
    flat = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")
    assert len(flat) <= 12, flat  # the top level holds only what every layer shares
