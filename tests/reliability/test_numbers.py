"""Issue 14, attack 8: a number no store can hold (``record_sizes(request_bytes=10**20)``) must not cost the
run. Out-of-range numbers are recorded as unknown (null) with a counted warning, wherever a number reaches a
sink: the call's own fields, and rollups whose sum would pass 64 bits."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import agentmeter
from agentmeter import _guard, track_call, track_run
from agentmeter.sinks import SQLiteSink

HUGE = 10**20  # past SQLite's (and BSON's) 64-bit integers


def test_out_of_range_numbers_are_recorded_as_unknown_and_the_run_is_stored(tmp_path: Path,
                                                                            record_attack: Any) -> None:
    db = tmp_path / "store.db"
    agentmeter.configure(sinks=[SQLiteSink(db)], spool_dir=str(tmp_path / "spool"), flush_interval=3600)
    with track_run("huge-numbers") as run:
        with track_call("p", "op", model="m") as call:
            call.record_sizes(request_bytes=HUGE, response_bytes=12)
            call.set_http_status(HUGE)
            call.record_retry(HUGE)
            call.record_usage(input_tokens=5, output_tokens=7)
        # two calls whose token counts each fit in 64 bits but whose sum does not
        for _ in range(2):
            with track_call("p", "op", model="m") as big:
                big.record_usage(input_tokens=2**62 + 1, output_tokens=2**62 + 1)
    result = agentmeter.flush(timeout=30)
    sink = result.sinks["sqlite"]
    record_attack(attack=8, attack_text="record_sizes(request_bytes=10**20) and token sums past 64 bits",
                  expected="run stored; the numbers recorded as unknown with a counted warning",
                  outcome=f"delivered {sink.delivered}, failed {sink.failed}",
                  passed=sink.delivered == 1 and sink.failed == 0)
    assert (sink.delivered, sink.failed, sink.dropped, sink.pending) == (1, 0, 0, 0), result
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        calls = [dict(r) for r in conn.execute("SELECT * FROM api_calls WHERE run_id = ?", (run.run_id,))]
        row = dict(conn.execute("SELECT * FROM agent_runs WHERE run_id = ?", (run.run_id,)).fetchone())
    small = next(c for c in calls if c["input_tokens"] == 5)
    assert (small["request_bytes"], small["response_bytes"], small["http_status"]) == (None, 12, None)
    assert small["retries"] is None
    assert small["total_tokens"] == 12
    big_calls = [c for c in calls if c is not small]
    assert [c["input_tokens"] for c in big_calls] == [2**62 + 1] * 2
    assert [c["total_tokens"] for c in big_calls] == [None, None]  # 2**63 + 2 does not fit
    assert row["input_tokens"] is None and row["total_tokens"] is None  # the rollups neither
    # each refused number is a counted warning: at the handle (call.*) or when frozen (record.out_of_range)
    refused = {k: v for k, v in _guard.counters.items()
               if k.startswith(("warnings.call.", "warnings.record.out_of_range"))}
    assert sum(refused.values()) >= 3, refused
    assert _guard.counters["warnings.document.out_of_range"] >= 1


def test_numbers_that_are_not_numbers_never_raise_into_the_agent(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    agentmeter.configure(sinks=[SQLiteSink(db)], spool_dir=str(tmp_path / "spool"), flush_interval=3600)
    with track_run("junk") as run, track_call("p", "op") as call:
        call.record_sizes(request_bytes=float("nan"), response_bytes="lots")  # type: ignore[arg-type]
        call.record_sizes(request_bytes=float("inf"))
        call.set_http_status(float("inf"))  # type: ignore[arg-type]
        call.record_retry(float("nan"))  # type: ignore[arg-type]
    assert agentmeter.flush(timeout=30).sinks["sqlite"].delivered == 1
    with sqlite3.connect(db) as conn:
        got = conn.execute("SELECT request_bytes, response_bytes, http_status, retries FROM api_calls "
                           "WHERE run_id = ?", (run.run_id,)).fetchone()
    assert got == (None, None, None, 0)
