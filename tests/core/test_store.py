"""Property: any tree of runs, steps and calls, executed across sync, async, generators and threads,
lands in the SQLite store exactly as it was run."""

from __future__ import annotations

import concurrent.futures
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import agentmeter
import agentmeter.testing
from agentmeter.sinks import SQLiteSink
from agentmeter.sinks.sqlite import table_columns
from tests import strategies
from tests.strategies import RunSpec


def _fetch(db: Path, sql: str, *params: object) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=strategies.st.lists(strategies.runs, min_size=1, max_size=3))
def test_random_trees_land_in_the_store_exactly(tmp_path: Path, specs: list[RunSpec]) -> None:
    db = tmp_path / f"store-{id(specs)}.db"
    agentmeter.configure(sinks=[SQLiteSink(db)], prices=strategies.PRICES, flush_interval=3600)
    for spec in specs:
        strategies.execute(spec)
    result = agentmeter.flush(timeout=30)
    assert result.sinks["sqlite"].delivered == len(specs) and result.ok

    for spec in specs:
        want = strategies.expected(spec)
        (run,) = _fetch(db, "SELECT * FROM agent_runs WHERE name = ?", spec.name)
        assert run["status"] == ("error" if spec.fail else "success")
        assert run["agent"] == spec.agent
        steps = _fetch(db, "SELECT * FROM run_steps WHERE run_id = ?", run["run_id"])
        calls = _fetch(db, "SELECT * FROM api_calls WHERE run_id = ?", run["run_id"])
        name_of = {s["step_id"]: s["name"] for s in steps}
        assert {s["name"]: (name_of.get(s["parent_step_id"]), s["status"]) for s in steps} == want.steps
        assert {
            c["operation"]: (name_of.get(c["step_id"]), c["status"], c["input_tokens"], c["output_tokens"])
            for c in calls
        } == want.calls
        # rollups
        assert run["step_count"] == len(want.steps) and run["call_count"] == len(want.calls)
        assert run["error_step_count"] == sum(1 for _, st in want.steps.values() if st == "error")
        assert run["unpriced_call_count"] == want.unpriced
        if want.cost_usd is None:
            assert run["cost_usd"] is None
        else:
            assert run["cost_usd"] == pytest.approx(want.cost_usd, abs=1e-9)
        known_in = [c[2] for c in want.calls.values() if c[2] is not None]
        assert run["input_tokens"] == (sum(known_in) if known_in else None)
        # every step lies within its run's time span
        assert all(run["started_at"] <= s["started_at"] <= s["ended_at"] <= run["ended_at"] for s in steps)


def test_fifty_concurrent_runs_never_mix_their_steps(tmp_path: Path) -> None:
    db = tmp_path / "concurrent.db"
    agentmeter.configure(sinks=[SQLiteSink(db)], flush_interval=3600)

    def one_run(i: int) -> None:
        with agentmeter.track_run(f"run-{i}", agent=f"agent-{i % 5}"):
            for j in range(10):
                with agentmeter.track_step(f"run-{i}-step-{j}"), agentmeter.track_call("p", f"run-{i}-call-{j}"):
                    pass

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        list(pool.map(one_run, range(50)))
    assert agentmeter.flush(timeout=30).sinks["sqlite"].delivered == 50
    rows = _fetch(db, "SELECT r.name AS run, s.name AS step FROM run_steps s JOIN agent_runs r USING (run_id)")
    assert len(rows) == 500
    assert all(row["step"].startswith(row["run"] + "-") for row in rows)
    calls = _fetch(
        db,
        "SELECT r.name AS run, c.operation AS op, s.name AS step FROM api_calls c "
        "JOIN agent_runs r ON r.run_id = c.run_id JOIN run_steps s ON s.step_id = c.step_id",
    )
    assert len(calls) == 500
    assert all(c["op"].startswith(c["run"] + "-") and c["step"].replace("step", "call") == c["op"] for c in calls)


def test_replaying_a_document_never_duplicates(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "replay.db")
    with agentmeter.testing.capture_runs() as cap, agentmeter.track_run("r"), agentmeter.track_step("s"):
        pass
    doc = cap.runs[0]
    sink.write([doc])
    sink.write([doc, doc])
    counts = [_fetch(sink.path, f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in ("agent_runs", "run_steps")]
    assert counts == [1, 1]
    (version,) = _fetch(sink.path, "SELECT version FROM agentmeter_schema")
    assert version["version"] == 1
    journal = _fetch(sink.path, "PRAGMA journal_mode")[0][0]
    assert journal == "wal"


def test_a_store_from_an_older_version_gains_the_new_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE agent_runs (run_id TEXT PRIMARY KEY, name TEXT)")  # an older, narrower table
    conn.execute("INSERT INTO agent_runs VALUES ('old-run', 'legacy')")
    conn.commit()
    conn.close()
    agentmeter.configure(sinks=[SQLiteSink(db)])
    with agentmeter.track_run("new"):
        pass
    assert agentmeter.flush(timeout=10).ok
    rows = _fetch(db, "SELECT name, sampled, step_count FROM agent_runs ORDER BY name")
    assert [tuple(r) for r in rows] == [("legacy", None, None), ("new", 1, 0)]


def test_a_store_from_before_cache_write_tokens_gains_the_column(tmp_path: Path) -> None:
    db = tmp_path / "before.db"
    conn = sqlite3.connect(db)
    primary = {"agent_runs": "run_id", "run_steps": "step_id", "api_calls": "call_id"}
    for table in primary:  # the tables as 0.1.0 made them (no run_scores): every column but cache_write_tokens
        cols = ", ".join(c.name + (" TEXT PRIMARY KEY" if c.name == primary[table] else "")
                         for c in table_columns(table) if c.name != "cache_write_tokens")
        conn.execute(f"CREATE TABLE {table} ({cols})")
    conn.commit()
    conn.close()
    agentmeter.configure(sinks=[SQLiteSink(db)])
    with agentmeter.track_run("cached"), agentmeter.track_step("s"), \
            agentmeter.track_call("anthropic", "messages", model="m") as call:
        call.record_usage(input_tokens=2_000, cached_input_tokens=500, cache_write_tokens=1_200, output_tokens=40)
    assert agentmeter.flush(timeout=10).ok
    for table in primary:
        (row,) = _fetch(db, f"SELECT cache_write_tokens, cached_input_tokens FROM {table}")
        assert tuple(row) == (1_200, 500), table


def test_a_sink_lock_held_at_fork_time_does_not_deadlock_the_child(tmp_path: Path) -> None:
    import os
    import signal

    with agentmeter.testing.capture_runs() as cap, agentmeter.track_run("r"):
        pass
    sink = SQLiteSink(tmp_path / "fork.db")
    sink._lock.acquire()  # as if the parent's writer thread were inside write() when the fork happened
    pid = os.fork()
    if pid == 0:  # the child: must be able to write, not wait forever on the parent's lock
        signal.alarm(20)
        try:
            sink.write(cap.runs)
            os._exit(0)
        except BaseException:
            os._exit(1)
    sink._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert _fetch(sink.path, "SELECT name FROM agent_runs")[0]["name"] == "r"
