"""The demo works from the built wheel, outside any checkout: the agent is loaded from
agentmeter/examples by file path, not from the repository layout."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

WHERE = "import agentmeter, agentmeter.demo as d; print(agentmeter.__file__); print(d.agent_path())"


@pytest.mark.slow
def test_demo_runs_from_the_unpacked_wheel(tmp_path: Path, offline_env: dict[str, str]) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=180)
    (wheel,) = dist.glob("agentmeter-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(site)
    assert "agentmeter/examples/company_research/agent.py" in names
    assert "agentmeter/examples/walkthrough.ipynb" in names
    assert not [n for n in names if "_bundled" in n]

    work = tmp_path / "elsewhere"  # no checkout here: only the unpacked wheel is on the path
    work.mkdir()
    env = {**offline_env, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", WHERE], env=env, cwd=work, capture_output=True, text=True,
                           check=True).stdout.split()
    assert where == [str(site / "agentmeter" / "__init__.py"),
                     str(site / "agentmeter" / "examples" / "company_research" / "agent.py")]

    db = tmp_path / "wheel.db"
    proc = subprocess.run([sys.executable, "-m", "agentmeter", "demo", "--runs", "2", "--db", str(db), "--seed", "5"],
                          env=env, cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Mode: offline" in proc.stdout and "TOTAL" in proc.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*), min(agent) FROM agent_runs").fetchone() == (2, "company-research")
