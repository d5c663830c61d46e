"""Issue 16: ``agentmeter reprice`` after changing an override changes exactly the affected calls' and
runs' (and steps') cost; --since, --dry-run, --prices and --db each used."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import agentmeter
from agentmeter import track_call, track_run, track_step
from agentmeter.cli import main
from agentmeter.repricing import reprice
from agentmeter.sinks import SQLiteSink

OLD = {"model-a": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
       "model-b": {"input_per_mtok": 5.0, "output_per_mtok": 10.0}}
NEW = {**OLD, "model-a": {"input_per_mtok": 3.0, "output_per_mtok": 2.0}}


def _call(model: str, tokens_in: int, tokens_out: int) -> None:
    with track_call("openai", "chat.completions", model=model) as call:
        call.record_usage(input_tokens=tokens_in, output_tokens=tokens_out)


def _seed(db: Path) -> dict[str, str]:
    agentmeter.configure(sinks=[SQLiteSink(db)], prices=OLD)
    ids = {}
    with track_run("mixed") as run:
        with track_step("think", kind="llm"):
            _call("model-a", 1_000_000, 10)
        with track_step("other", kind="llm"):
            _call("model-b", 1000, 100)
        _call("model-a", 2000, 0)  # outside any step
    ids["mixed"] = run.run_id
    with track_run("only-b") as run, track_step("s", kind="llm"):
        _call("model-b", 3000, 300)
    ids["only-b"] = run.run_id
    with track_run("unpriced") as run, track_step("s", kind="llm"):
        _call("model-c", 4000, 400)
    ids["unpriced"] = run.run_id
    with track_run("old-a") as run, track_step("s", kind="llm"):
        _call("model-a", 5000, 0)
    ids["old-a"] = run.run_id
    with track_run("no-calls") as run:
        pass
    ids["no-calls"] = run.run_id
    assert agentmeter.flush().ok
    agentmeter.shutdown()
    with sqlite3.connect(db) as conn:  # the old-a run happened two months ago
        for table in ("agent_runs", "run_steps", "api_calls"):
            conn.execute(f"UPDATE {table} SET started_at = '2020-01-01T00:00:00.000000Z' WHERE run_id = ?",
                         (ids["old-a"],))
    return ids


def _dump(db: Path) -> dict[str, dict[str, dict[str, Any]]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {table: {r[key]: dict(r) for r in conn.execute(f"SELECT * FROM {table}")}
                for table, key in (("agent_runs", "run_id"), ("run_steps", "step_id"), ("api_calls", "call_id"))}


def _prices_file(tmp_path: Path, prices: dict[str, Any]) -> str:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(prices))
    return str(path)


def test_changing_an_override_changes_exactly_the_affected_calls_steps_and_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "store.db"
    ids = _seed(db)
    before = _dump(db)
    assert main(["reprice", "--db", str(db), "--since", "30d", "--prices", _prices_file(tmp_path, NEW)]) == 0
    assert "changed 2 call(s), 1 step(s), 1 run(s)" in capsys.readouterr().out
    after = _dump(db)
    a_calls = {k for k, c in before["api_calls"].items() if c["model"] == "model-a" and c["run_id"] == ids["mixed"]}
    assert len(a_calls) == 2
    for call_id, call in after["api_calls"].items():
        if call_id in a_calls:
            want = call["input_tokens"] * 3.0 / 1e6 + call["output_tokens"] * 2.0 / 1e6
            assert call["cost_usd"] == pytest.approx(want) and call["priced"] == 1
            assert call["cost_usd"] != before["api_calls"][call_id]["cost_usd"]
            assert {k: v for k, v in call.items() if k != "cost_usd"} == {
                k: v for k, v in before["api_calls"][call_id].items() if k != "cost_usd"}
        else:
            assert call == before["api_calls"][call_id]  # untouched: model-b, model-c, the old model-a call
    mixed = after["agent_runs"][ids["mixed"]]
    run_calls = [c for c in after["api_calls"].values() if c["run_id"] == ids["mixed"]]
    assert mixed["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in run_calls))
    assert {k: v for k, v in mixed.items() if k != "cost_usd"} == {
        k: v for k, v in before["agent_runs"][ids["mixed"]].items() if k != "cost_usd"}
    for run_id, run in after["agent_runs"].items():
        if run_id != ids["mixed"]:
            assert run == before["agent_runs"][run_id]
    changed_steps = [s for s, row in after["run_steps"].items() if row != before["run_steps"][s]]
    assert len(changed_steps) == 1 and after["run_steps"][changed_steps[0]]["name"] == "think"
    think_call = next(c for c in run_calls if c["step_id"] == changed_steps[0])
    assert after["run_steps"][changed_steps[0]]["cost_usd"] == pytest.approx(think_call["cost_usd"])


def test_a_late_override_prices_unpriced_calls_and_all_of_history_without_since(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    ids = _seed(db)
    before = _dump(db)
    assert before["agent_runs"][ids["unpriced"]]["cost_usd"] is None
    late = {**NEW, "model-c": {"input_per_mtok": 1.0, "output_per_mtok": 1.0}}
    result = reprice(db, None, late)
    assert result.calls == 6 and result.calls_changed == 4 and result.runs_changed == 3  # mixed, unpriced, old-a
    after = _dump(db)
    unpriced = after["agent_runs"][ids["unpriced"]]
    assert unpriced["cost_usd"] == pytest.approx(4400 / 1e6) and unpriced["unpriced_call_count"] == 0
    assert after["agent_runs"][ids["old-a"]]["cost_usd"] == pytest.approx(5000 * 3.0 / 1e6)
    assert after["agent_runs"][ids["only-b"]] == before["agent_runs"][ids["only-b"]]
    assert after["agent_runs"][ids["no-calls"]] == before["agent_runs"][ids["no-calls"]]  # 0, no calls
    assert reprice(db, None, late).calls_changed == 0  # idempotent


def test_dropping_an_override_makes_calls_unpriced_not_zero(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    ids = _seed(db)
    assert reprice(db, None, {"model-a": OLD["model-a"]}).calls_changed == 2  # model-b now has no price
    run = _dump(db)["agent_runs"][ids["only-b"]]
    assert run["cost_usd"] is None and run["unpriced_call_count"] == 1


def test_dry_run_counts_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "store.db"
    _seed(db)
    before = _dump(db)
    assert main(["reprice", "--db", str(db), "--dry-run", "--prices", _prices_file(tmp_path, NEW)]) == 0
    assert "would change 3 call(s), 2 step(s), 2 run(s)" in capsys.readouterr().out
    assert _dump(db) == before


def test_bad_prices_file_and_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "store.db"
    _seed(db)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["reprice", "--db", str(db), "--prices", str(bad)]) == 2
    assert "--prices must be a readable JSON file" in capsys.readouterr().err
    assert main(["reprice", "--db", str(db), "--prices", _prices_file(tmp_path, {"m": {"input_per_mtok": -1}})]) == 2
    assert main(["reprice", "--db", str(tmp_path / "missing.db")]) == 1
