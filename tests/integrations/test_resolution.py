"""``agentmeter[openai]`` installs beside the agent frameworks that pin openai 2.x (issue 17).

pip resolves this checkout's extras together with each framework, as a user's ``pip install`` would
(``--dry-run --report``: nothing is installed). Needs PyPI, which these machines and CI reach.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def resolve(tmp_path: Path, *requirements: str) -> dict[str, str]:
    """name -> version pip would install for this checkout's ``requirements``."""
    report = tmp_path / "report.json"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-build-isolation",
         "--quiet", "--disable-pip-version-check", "--report", str(report), *requirements],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    data: dict[str, Any] = json.loads(report.read_text())
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in data["install"]}


def major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["crewai==1.15.30", "llama-index-llms-openai"])
def test_openai_extra_resolves_beside_frameworks_pinned_to_openai_2(framework: str, tmp_path: Path) -> None:
    chosen = resolve(tmp_path, ".[openai,anthropic]", framework)
    assert chosen["agentmeter"] and chosen[framework.split("==")[0]]
    assert (2, 31) <= major_minor(chosen["openai"]) < (3, 0)  # a 2.x the integration handles
    assert "genai-prices" in chosen


@pytest.mark.slow
def test_openai_extra_alone_takes_openai_3(tmp_path: Path) -> None:
    chosen = resolve(tmp_path, ".[openai]")
    assert (3, 0) <= major_minor(chosen["openai"]) < (4, 0)
