"""examples/walkthrough.ipynb runs top to bottom offline in a real kernel, and its outputs say what they should."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from agentmeter._resources import shipped_path

KERNEL = "agentmeter-test-python"


def _kernel_for_this_interpreter(root: Path) -> Path:
    """A kernelspec that starts ipykernel with this very interpreter (the .venv's), whatever else is
    installed on the machine."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "agentmeter test kernel",
        "language": "python",
    }))
    return root


def _text(cell: Any) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts.append(out["data"].get("text/plain", ""))
            parts.append(out["data"].get("text/html", ""))
        elif out["output_type"] == "error":
            parts.append("\n".join(out["traceback"]))
    return "".join(parts)


def _cell(nb: Any, tag: str) -> Any:
    (cell,) = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    return cell


@pytest.mark.slow
@pytest.mark.usefixtures("no_live_keys")
def test_walkthrough_runs_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel_for_this_interpreter(tmp_path / "jupyter")))
    monkeypatch.setenv("COLUMNS", "160")
    db = tmp_path / "agentmeter.db"  # the root conftest points AGENTMETER_DB here; the kernel inherits it
    work = tmp_path / "work"
    work.mkdir()

    nb = nbformat.read(shipped_path("examples") / "walkthrough.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    NotebookClient(nb, kernel_name=KERNEL, timeout=120, resources={"metadata": {"path": str(work)}}).execute()

    assert not [c for c in nb.cells if c.cell_type == "code" and any(o["output_type"] == "error" for o in c.outputs)]
    assert str(db) in _text(_cell(nb, "setup"))

    decorate = _text(_cell(nb, "decorate"))
    assert "'name': 'hello_agent', 'agent': 'hello-agent', 'status': 'success', 'step_count': 2" in decorate
    assert "call dictionary define dict-v1 7 12 unpriced" in decorate

    assert "def search(self, query: str)" in _text(_cell(nb, "agent-source"))

    run_agent = _text(_cell(nb, "run-agent"))
    assert run_agent.startswith("Mode: offline")
    assert "# Acme Corp" in run_agent
    assert "13 runs:" in run_agent and "all in the store: True" in run_agent

    # what the notebook showed is what the store holds
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT count(*) FROM agent_runs WHERE agent = 'company-research'").fetchone()[0]
        llm_cost = conn.execute("SELECT sum(cost_usd) FROM api_calls WHERE provider = 'openai'").fetchone()[0]
        run_ids = [r for (r,) in conn.execute("SELECT run_id FROM agent_runs WHERE agent = 'company-research'")]
        unpriced = conn.execute(
            "SELECT sum(unpriced_call_count) FROM agent_runs WHERE agent = 'company-research'").fetchone()[0]
    assert stored == 13
    assert llm_cost > 0
    assert unpriced == 0  # OpenAI from the price library, Tavily from the notebook's configured price
    assert "13 runs of the research agent in the store" in _text(_cell(nb, "runs-table"))
    steps = _text(_cell(nb, "steps-table"))
    for name in ("plan_queries", "web_search", "extract_pages", "summarize"):
        assert name in steps
    calls = _text(_cell(nb, "calls-table"))
    assert "chat.completions" in calls and "search" in calls and "extract" in calls

    (html,) = [o["data"]["text/html"] for o in _cell(nb, "charts").outputs if "text/html" in o.get("data", {})]
    assert "vegaEmbed" in html and '"title": "Run latency"' in html and '"title": "Cost per run"' in html
    assert all(html.count(run_id) == 2 for run_id in run_ids)  # both charts carry every run

    report = _text(_cell(nb, "report"))
    assert "company-research" in report and "TOTAL" in report and "no known price" not in report

    assert "mongodb MongoDBSink" in _text(_cell(nb, "sinks")) and "firehose FirehoseSink" in _text(_cell(nb, "sinks"))
