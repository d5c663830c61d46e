"""The dashboard is a normal package and every shipped file exists once: no ``sys.path`` edits, the
repository's top-level ``dashboard``, ``sql`` and ``examples`` are links into the package, and the files are
found with ``importlib.resources``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import agentmeter
from agentmeter._resources import SHIPPED, shipped_path
from agentmeter.dashboard import script_path

PACKAGE = Path(agentmeter.__file__).resolve().parent
ROOT = PACKAGE.parent


def _touches_sys_path(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "path" and isinstance(n.value, ast.Name)
               and n.value.id == "sys" for n in ast.walk(tree))


def test_no_module_of_the_package_edits_sys_path() -> None:
    offenders = [p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py")
                 if _touches_sys_path(ast.parse(p.read_text(encoding="utf-8")))]
    assert offenders == []


def test_shipped_folders_live_in_the_package_and_the_top_level_links_to_them() -> None:
    for name in SHIPPED:
        folder = shipped_path(name)
        assert folder == PACKAGE / name and folder.is_dir()
        top = ROOT / name
        if top.exists() or top.is_symlink():  # a checkout: the product's layout stays visible at the top
            assert top.is_symlink() and top.resolve() == folder.resolve(), f"{top} must link to {folder}"
    assert not (PACKAGE / "_bundled").exists()
    assert script_path() == PACKAGE / "dashboard" / "streamlit_app.py"


def test_the_entry_script_only_runs_the_package_app() -> None:
    tree = ast.parse(script_path().read_text(encoding="utf-8"))
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert [type(n).__name__ for n in body] == ["ImportFrom", "Expr"]
    assert isinstance(body[0], ast.ImportFrom) and body[0].module == "agentmeter.dashboard.app"


def test_dashboard_modules_import_as_a_package_and_the_package_alone_stays_light() -> None:
    code = ("import sys, json, agentmeter.dashboard; light = 'streamlit' not in sys.modules; "
            "import agentmeter.dashboard.app, agentmeter.dashboard.views, agentmeter.dashboard.charts, "
            "agentmeter.dashboard.format; print(json.dumps([light, agentmeter.dashboard.views.__name__]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == [True, "agentmeter.dashboard.views"]


def test_the_server_process_imports_the_page_before_the_first_visitor_and_says_nothing() -> None:
    # agentmeter dashboard runs Streamlit through _serve, which imports the page's modules first
    code = ("import sys, json; from agentmeter.dashboard._serve import preload; seconds = preload(); "
            "print(json.dumps([seconds > 0, [m in sys.modules for m in ('pandas', 'altair', 'pyarrow', "
            "'agentmeter.dashboard.app', 'agentmeter.dashboard.explorer', 'agentmeter.dashboard.rollup_views')]]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == [True, [True] * 6]
    assert proc.stderr == ""  # no "No runtime found" warning from Streamlit's caches, no traceback
