"""The CLI's report, and the promise that ``import agentmeter`` imports no sink library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import agentmeter
from agentmeter import track_call, track_run, track_step
from agentmeter.cli import main
from agentmeter.cli.report import summarize
from agentmeter.sinks import SQLiteSink

HEAVY = ("pymongo", "boto3", "botocore", "snowflake", "streamlit", "openai", "tavily", "pandas", "genai_prices",
         "opentelemetry", "agents", "langchain_core", "langgraph", "pydantic_ai", "google")


def test_import_agentmeter_imports_no_sink_or_client_library() -> None:
    code = (
        "import sys, json, agentmeter, agentmeter.sinks, agentmeter.testing, agentmeter.integrations;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_an_exit_with_nothing_tracked_loads_nothing() -> None:
    # the exit handler returns before reading the settings: no attrs, pricing, sqlite3, orjson or threads
    code = (
        "import atexit, json, sys\n"
        "state = {}\n"
        "# registered first, so it runs last: after agentmeter's handler (atexit is last in, first out)\n"
        "atexit.register(lambda: print(json.dumps(sorted(set(sys.modules) - state['before']))))\n"
        "import agentmeter\n"
        "state['before'] = set(sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [] and out.stderr == ""


def _seed(db: Path) -> None:
    agentmeter.configure(sinks=[SQLiteSink(db)], prices={"m": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}})
    for i in range(4):
        try:
            with track_run("research", agent="alpha" if i < 3 else "beta"), track_step("s"):
                with track_call("openai", "chat", model="m") as c:
                    c.record_usage(input_tokens=1000, output_tokens=500)
                with track_call("openai", "chat", model="mystery") as c:
                    c.record_usage(input_tokens=1, output_tokens=1)
                if i == 3:
                    raise RuntimeError("fail")
        except RuntimeError:
            pass
    assert agentmeter.flush(timeout=10).ok


def test_report_summarizes_runs_success_latency_tokens_cost(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    _seed(db)
    s = summarize(db, since="24h")
    total = s["total"]
    assert total["runs"] == 4 and total["success"] == 3 and total["success_rate"] == 0.75
    assert total["total_tokens"] == 4 * 1502
    assert total["cost_usd"] == pytest.approx(4 * (1000 * 1.0 + 500 * 2.0) / 1e6)
    assert total["unpriced_calls"] == 4
    assert set(s["agents"]) == {"alpha", "beta"} and s["agents"]["beta"]["errors"] == 1
    assert total["p50_ms"] is not None and total["p95_ms"] >= total["p50_ms"]
    assert summarize(db, since="24h", agent="beta")["total"]["runs"] == 1


def test_report_command_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.db"
    _seed(db)
    assert main(["report", "--db", str(db), "--since", "7d"]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "beta" in out and "75.0%" in out and "no known price" in out


def test_report_says_tokens_unknown_apart_from_unpriced_models(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.db"
    agentmeter.configure(sinks=[SQLiteSink(db)], prices={"m": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}})
    with track_run("r", agent="alpha"):
        with track_call("openai", "chat.completions", model="m") as c:  # a stream read without its usage
            c.set_metadata(stream=True)
        with track_call("anthropic", "messages", model="m") as c:  # a stream closed before its output count
            c.set_metadata(stream=True)
            c.record_usage(input_tokens=900)
        with track_call("openai", "chat", model="mystery") as c:  # a model without a price
            c.record_usage(input_tokens=1, output_tokens=1)
    with track_run("r2", agent="beta"), track_call("openai", "chat", model="m") as c:
        c.record_usage(input_tokens=10, output_tokens=10)
    assert agentmeter.flush(timeout=10).ok
    s = summarize(db, since="24h")
    assert (s["total"]["unpriced_calls"], s["total"]["tokens_unknown_calls"]) == (1, 2)
    assert (s["agents"]["alpha"]["unpriced_calls"], s["agents"]["alpha"]["tokens_unknown_calls"]) == (1, 2)
    assert (s["agents"]["beta"]["unpriced_calls"], s["agents"]["beta"]["tokens_unknown_calls"]) == (0, 0)
    assert summarize(db, since="24h", agent="beta")["total"]["tokens_unknown_calls"] == 0
    assert main(["report", "--db", str(db), "--since", "7d"]) == 0
    out = capsys.readouterr().out
    assert "2 call(s) have tokens unknown" in out and "1 call(s) have no known price" in out


def test_report_without_store_and_bad_since(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", str(tmp_path / "missing.db")]) == 1
    assert "agentmeter demo" in capsys.readouterr().out
    _seed(tmp_path / "r.db")
    assert main(["report", "--db", str(tmp_path / "r.db"), "--since", "yesterday"]) == 2
    assert "--since" in capsys.readouterr().err


def test_version_and_help_list_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "agentmeter", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"agentmeter {agentmeter.__version__}"
    helptext = subprocess.run([sys.executable, "-m", "agentmeter", "--help"], capture_output=True, text=True).stdout
    from agentmeter.cli import COMMANDS

    assert all(cmd in helptext for cmd in COMMANDS)
