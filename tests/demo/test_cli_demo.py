"""``agentmeter demo`` as a user runs it: a subprocess with no API keys, offline against the stub servers,
writing to the store given with --db; the printed report must match what the store holds."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agentmeter._percentile import percentile_cont
from agentmeter.demo import Mode, choose_mode


def _demo(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentmeter", "demo", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
    )


def _fmt_ms(v: float) -> str:  # the report's format for durations under 10 s
    return f"{v:,.1f} ms"


@pytest.mark.slow
def test_demo_runs_offline_and_prints_the_report(tmp_path: Path, offline_env: dict[str, str]) -> None:
    db = tmp_path / "demo.db"
    proc = _demo(["--runs", "5", "--db", str(db), "--seed", "3"], offline_env, tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr + out
    assert "Mode: offline" in out and "seed 3" in out
    assert not (tmp_path / "default.db").exists()  # --db wins over $AGENTMETER_DB

    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    runs = conn.execute("SELECT * FROM agent_runs").fetchall()
    calls = conn.execute("SELECT * FROM api_calls").fetchall()
    scores = conn.execute("SELECT * FROM run_scores").fetchall()
    conn.close()
    assert len(runs) == 5
    # the dimensions the Sessions, Versions and Scores views slice by
    assert {r["session_id"] for r in runs} == {"demo-session-1"} and {r["version"] for r in runs} == {
        "company-research 1.0"}
    assert {r["user_id"] for r in runs} == {"ana", "ben", "chloe"}
    succeeded = {r["run_id"] for r in runs if r["status"] == "success"}
    assert {s["run_id"] for s in scores} == succeeded and {s["name"] for s in scores} <= {"source_coverage"}
    assert all(0 <= s["value"] <= 1 and s["source"] == "eval" for s in scores)
    assert {r["agent"] for r in runs} == {"company-research"}
    companies = [json.loads(r["metadata"])["company"] for r in sorted(runs, key=lambda r: r["started_at"])]
    assert companies == ["Acme Corp", "Globex", "Initech", "Umbrella Corp", "Hooli"]  # the defaults, in turn
    ok = sum(r["status"] == "success" for r in runs)
    assert "5 runs in" in out and f"{ok} succeeded, {5 - ok} failed" in out
    openai_calls = [c for c in calls if c["provider"] == "openai" and c["status"] == "success"]
    assert openai_calls and all(c["input_tokens"] and c["cost_usd"] for c in openai_calls)

    # the TOTAL row of the report, read back and compared with the store
    (total,) = [line for line in out.splitlines() if "TOTAL" in line]
    cells = [c.strip() for c in re.split(r"[│|]", total) if c.strip()]
    assert cells[0] == "TOTAL"
    assert cells[1] == "5"
    assert cells[2] == f"{ok / 5:.1%}"
    durations = [r["duration_ms"] for r in runs]
    assert cells[3] == _fmt_ms(percentile_cont(durations, 0.5))
    assert cells[4] == _fmt_ms(percentile_cont(durations, 0.95))
    assert cells[5] == f"{sum(r['step_count'] for r in runs):,}"
    assert cells[6] == f"{len(calls):,}"
    assert cells[7] == f"{sum(r['total_tokens'] or 0 for r in runs):,}"
    cost = sum(r["cost_usd"] for r in runs if r["cost_usd"] is not None)
    assert cost > 0
    assert cells[8] == f"${cost:,.4f}"
    assert cells[9] == "0" and "no known price" not in out  # OpenAI from the price library, Tavily's list price
    assert "agentmeter dashboard" in out


@pytest.mark.slow
def test_demo_is_repeatable_with_a_seed(tmp_path: Path, offline_env: dict[str, str]) -> None:
    outcomes = []
    for name in ("a", "b"):
        db = tmp_path / f"{name}.db"
        proc = _demo(["--runs", "4", "--db", str(db), "--seed", "11", "--companies", "Acme Corp", "Hooli"],
                     offline_env, tmp_path)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        with sqlite3.connect(db) as conn:
            outcomes.append(conn.execute(
                "SELECT c.provider, c.operation, c.status, c.http_status, c.input_tokens, c.output_tokens "
                "FROM api_calls c JOIN agent_runs r USING (run_id) ORDER BY r.started_at, c.started_at"
            ).fetchall())
    assert outcomes[0] == outcomes[1] and len(outcomes[0]) >= 4 * 4


def test_bad_arguments_fail_with_a_message(tmp_path: Path, offline_env: dict[str, str]) -> None:
    proc = _demo(["--runs", "0", "--db", str(tmp_path / "x.db")], offline_env, tmp_path)
    assert proc.returncode == 2
    assert "--runs must be at least 1" in proc.stderr
    assert not (tmp_path / "x.db").exists()


def test_mode_follows_the_keys() -> None:
    assert choose_mode({}) == Mode("stub", "stub")
    assert choose_mode({"OPENAI_API_KEY": "sk-x"}) == Mode("stub", "stub")  # no live LLM on stub search
    assert choose_mode({"TAVILY_API_KEY": "tvly-x"}) == Mode("live", None)
    assert choose_mode({"TAVILY_API_KEY": "tvly-x", "OPENAI_API_KEY": "sk-x"}) == Mode("live", "live")
    assert choose_mode({"TAVILY_API_KEY": "tvly-x", "OPENAI_API_KEY": "sk-x"}, offline=True).offline
    assert choose_mode({"TAVILY_API_KEY": "  "}).label == "offline"


@pytest.mark.slow
def test_demo_uses_the_configured_store_and_sinks(tmp_path: Path, offline_env: dict[str, str]) -> None:
    # No --db: the runs go to the configured sinks; the report reads the SQLite one ($AGENTMETER_DB).
    env = {**offline_env, "AGENTMETER_SINKS": "sqlite,memory"}
    proc = _demo(["--runs", "2", "--seed", "1"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert f"agentmeter report - {env['AGENTMETER_DB']}" in proc.stdout.replace("\n", "")
    with sqlite3.connect(env["AGENTMETER_DB"]) as conn:
        assert conn.execute("SELECT count(*) FROM agent_runs").fetchone() == (2,)

    # Only sinks without a local store: the report is read from a temporary local copy, and says so.
    env = {**offline_env, "AGENTMETER_SINKS": "memory"}
    proc = _demo(["--runs", "2", "--seed", "1"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = " ".join(proc.stdout.split())
    assert "Runs were sent to: memory. The report above was read from a temporary local copy" in out
    assert "TOTAL" in out


@pytest.mark.slow
def test_example_agent_runs_on_its_own(tmp_path: Path, offline_env: dict[str, str]) -> None:
    from agentmeter.demo import agent_path

    proc = subprocess.run([sys.executable, str(agent_path()), "Acme Corp", "--seed", "2"], env=offline_env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.startswith("Mode: offline") and "# Acme Corp" in proc.stdout
    with sqlite3.connect(offline_env["AGENTMETER_DB"]) as conn:
        assert conn.execute("SELECT agent, step_count FROM agent_runs").fetchall() == [("company-research", 6)]


def test_offline_by_request_does_not_ask_for_the_key_that_is_set() -> None:
    from agentmeter.demo import DemoClients

    keys = {"TAVILY_API_KEY": "tvly-x", "OPENAI_API_KEY": "sk-x"}
    forced = choose_mode(keys, offline=True)
    assert forced.offline and forced.forced
    text = DemoClients(forced, None, None, "http://127.0.0.1:1", "http://127.0.0.1:2").describe()
    assert "Set TAVILY_API_KEY" not in text
    assert "--offline" in text and "TAVILY_API_KEY is set" in text
    plain = choose_mode({"OPENAI_API_KEY": "sk-x"})  # offline because no Tavily key: say which key
    assert not plain.forced
    assert "Set TAVILY_API_KEY" in DemoClients(plain, None, None, "u", "v").describe()


def _hint(out: str, what: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith(what)]
    return line[len(what):].strip()


@pytest.mark.slow
def test_printed_hints_work_as_typed(tmp_path: Path, offline_env: dict[str, str]) -> None:
    """As after `make demo`: the console script of a virtualenv that is not on PATH, run from the folder
    holding the virtualenv; the printed report command, typed as printed in a shell there, works."""
    script = Path(sys.executable).parent / "agentmeter"
    assert script.is_file(), f"no console script beside {sys.executable}: install the package in this venv"
    folder = script.parent.parent.parent  # the checkout, for `make demo`'s .venv
    env = {**offline_env, "PATH": "/usr/bin:/bin", "TAVILY_API_KEY": "tvly-not-used"}
    db = tmp_path / "demo.db"
    proc = subprocess.run([str(script), "demo", "--runs", "2", "--seed", "1", "--offline", "--db", str(db)],
                          env=env, cwd=folder, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Set TAVILY_API_KEY" not in proc.stdout and "TAVILY_API_KEY is set" in proc.stdout
    report = _hint(proc.stdout, "Every run in the store:")
    dashboard = _hint(proc.stdout, "Open the dashboard:")
    expected = os.path.relpath(script, folder)
    assert report.split()[0] == (expected if not expected.startswith("..") else str(script))
    assert report.split()[1:] == ["report", "--db", str(db)]
    assert dashboard.split()[1] == "dashboard"
    typed = subprocess.run(["bash", "-c", report], env=env, cwd=folder, capture_output=True, text=True,
                           timeout=120)
    assert typed.returncode == 0, typed.stderr
    assert "TOTAL" in typed.stdout


def test_command_name_is_the_bare_name_when_path_finds_this_installation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentmeter.cli.demo import command_name

    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "agentmeter"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert command_name() == "agentmeter"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert command_name() == "venv/bin/agentmeter"
    monkeypatch.chdir(bin_dir)
    assert command_name() == "./agentmeter"
    (bin_dir / "agentmeter").unlink()
    assert command_name() == f"{bin_dir / 'python'} -m agentmeter"
