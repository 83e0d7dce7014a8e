"""The package's import graph: no cycles, and every module imports on its own.

The graph is read from the source (``ast``): every ``import`` / ``from ... import`` of a
``dac`` module, at module level or inside a function (a lazy import that closes a loop is a
cycle all the same), except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "dac"
#: modules that import a GPU build of vLLM at import time
GPU_ONLY = {"dac.engines.vllm.flash_attn_backend", "dac.engines.vllm.flashinfer_backend"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports_of(name: str, path: Path) -> set[str]:
    """The ``dac`` modules ``name`` imports (a ``from pkg import x`` of a submodule counts
    as importing ``pkg.x``)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking(node):
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "dac")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "dac":
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    out.add(sub if sub in MODULES else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in out if m in MODULES and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
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
            strong(v)
    return out


def test_no_import_cycles():
    graph = {name: imports_of(name, path) for name, path in MODULES.items()}
    assert cycles(graph) == []


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve(tmp_path):
    graph = imports_of("dac.engines.hf.generate", MODULES["dac.engines.hf.generate"])
    assert "dac.engines.hf.session" in graph and "dac.runtime" in graph


def test_no_engine_imports_another():
    graph = {name: imports_of(name, path) for name, path in MODULES.items()}
    engines = ("hf", "fast", "vllm")
    for name, deps in graph.items():
        for eng in engines:
            if name.startswith(f"dac.engines.{eng}"):
                others = [d for d in deps for o in engines
                          if o != eng and d.startswith(f"dac.engines.{o}")]
                assert not others, f"{name} imports {others}"


@pytest.mark.parametrize("name", sorted(set(MODULES) - GPU_ONLY))
def test_module_imports(name):
    importlib.import_module(name)
