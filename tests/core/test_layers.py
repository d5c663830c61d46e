"""The package's shape is a contract: layers that only import downward and no import cycle."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "agentmeter"


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def import_graph() -> dict[str, set[str]]:
    """agentmeter module -> agentmeter modules it imports anywhere (function level and TYPE_CHECKING too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level else []  # absolute: no base
                prefix = ".".join([*base, node.module] if node.module else base)
                targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_agentmeter_modules_counting_function_level_imports() -> None:
    graph = import_graph()
    assert "agentmeter.export._processor" in graph and graph["agentmeter._tracking"]  # the graph was read
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_import_linter_layer_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe is not None, "import-linter is a test dependency (pip install -e '.[all]' --group dev)"
    proc = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


MAX_LINES = 500


def test_no_module_is_over_500_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert len(sizes) > 50  # the package was read
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def _uncommented_function_imports(source: str) -> list[int]:
    """Lines of imports inside functions with no comment saying why: on the line, or on the comment line or
    commented import just above it (a block of imports shares one comment)."""
    lines = source.splitlines()
    bad = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            k = node.lineno - 1
            while k >= 0 and "#" not in lines[k] and lines[k].strip().startswith(("import ", "from ")):
                k -= 1  # up the block of imports this one belongs to
            if k < 0 or "#" not in lines[k]:
                bad.append(node.lineno)
    return sorted(set(bad))


def test_every_function_level_import_says_why_it_is_not_at_the_top() -> None:
    found = {str(p.relative_to(ROOT)): lines for p in sorted((ROOT / "agentmeter").rglob("*.py"))
             if (lines := _uncommented_function_imports(p.read_text()))}
    assert found == {}, "give each a one-line comment (heavy optional library, import time, cycle): " + repr(found)


def test_the_import_comment_check_finds_an_uncommented_import() -> None:
    source = "def f():\n    import json\n\ndef g():\n    import pymongo  # optional extra\n    import bson\n"
    assert _uncommented_function_imports(source) == [2]
