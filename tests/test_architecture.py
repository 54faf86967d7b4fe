"""The shape of the package: the layer contracts hold (and catch a breach), no import circles, no module
over 500 lines. The contracts themselves are in pyproject.toml ([tool.importlinter])."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

pytestmark = pytest.mark.lint

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "slurm_gpu"
MAX_LINES = 500


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(tool), "--no-cache"], cwd=cwd, capture_output=True, text=True)


def test_layer_contracts_hold():
    out = _lint_imports(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("breach,broken", [
    ("from slurm_gpu.state import fsutil  # noqa", "Layers"),  # core -> adapter
    ("import subprocess  # noqa", "The core is pure"),
    ("def _late():\n    import yaml  # noqa\n", "The core is pure"),  # inside a function counts too
])
def test_layer_contracts_catch_a_breach(tmp_path, breach, broken):
    shutil.copytree(PACKAGE, tmp_path / "slurm_gpu", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / "slurm_gpu" / "core" / "geometry.py"
    target.write_text(target.read_text() + "\n" + breach + "\n")
    out = _lint_imports(tmp_path)
    assert out.returncode != 0
    assert f"{broken}" in out.stdout and "BROKEN" in out.stdout, out.stdout


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> Set[str]:
    """Modules of the package that ``path`` imports anywhere (functions too), except under
    ``if TYPE_CHECKING:`` (never executed)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1]
                                    + ([child.module] if child.module else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in child.names)
            visit(child)

    visit(tree)
    return found


def _graph() -> Dict[str, Set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path, name) if m in files and m != name}
            for name, path in files.items()}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_circles():
    graph = _graph()
    # A package's __init__ is imported by each of its modules; it must not import them back.
    assert _cycles(graph) == []


def test_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_module_over_500_lines():
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_test_modules_have_unique_basenames():
    # tests/ has no __init__.py files, so pytest imports each test module by its basename: two files of
    # one name anywhere under tests/ stop the whole collection ("import file mismatch").
    seen: Dict[str, List[str]] = {}
    for path in sorted((REPO / "tests").rglob("*.py")):
        if "fixtures" not in path.parts:
            seen.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}
