"""The data contract: documents, records, ids, timestamps, and the generated ERD."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import agentmeter
from agentmeter import _guard, contract, track_call, track_run, track_step
from agentmeter._ids import new_id
from agentmeter.contract_erd import erd_markdown
from agentmeter.testing import DeterministicClock, capture_runs

ROOT = Path(__file__).resolve().parents[2]


def test_ids_are_uuid7_unique_and_ordered_by_creation() -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        local = [new_id() for _ in range(2000)]
        assert local == sorted(local)
        with lock:
            ids.extend(local)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 8000
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


@given(st.lists(st.integers(min_value=0, max_value=2**48 * 1_000_000 - 1), min_size=1, max_size=20))
def test_id_time_fields_are_those_of_the_clock(times: list[int]) -> None:
    # the millisecond prefix is cached and built from parts: every id still carries its own time exactly
    from agentmeter import _ids

    real = _ids._time_ns
    try:
        for ns in times:
            _ids._time_ns = lambda ns=ns: ns
            parsed = uuid.UUID(_ids._uuid7())
            ms, sub = divmod(ns, 1_000_000)
            assert parsed.int >> 80 == ms and (parsed.int >> 64) & 0xFFF == sub * 4096 // 1_000_000
            assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    finally:
        _ids._time_ns = real


_FORK_IDS = """
import json, os, sys
from agentmeter._ids import new_id
new_id()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read)
    with os.fdopen(write, "w") as pipe:
        pipe.write(json.dumps([new_id() for _ in range(5000)]))
    os._exit(0)
os.close(write)
mine = [new_id() for _ in range(5000)]
with os.fdopen(read) as pipe:
    theirs = json.loads(pipe.read())
os.waitpid(pid, 0)
print(json.dumps([mine, theirs]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_ids_made_after_a_fork_differ_between_parent_and_child() -> None:
    # the id's last 62 bits are a counter from a random start: a forked child must not repeat its parent's.
    # Forked in a fresh interpreter (one thread): forking this one, with the exporter's threads, could hang.
    out = subprocess.run([sys.executable, "-c", _FORK_IDS], capture_output=True, text=True, timeout=60,
                         check=True, cwd=ROOT)
    mine, theirs = json.loads(out.stdout)
    assert len(theirs) == 5000 and len(set(mine) | set(theirs)) == 10000
    # "...-vccc-ccccccccc" + 3 hex digits: the counter's upper bits, never the same range in both
    assert {i[-17:-3] for i in mine}.isdisjoint({i[-17:-3] for i in theirs})


def test_records_carry_type_id_and_version_and_match_the_declared_columns() -> None:
    with capture_runs() as cap:
        with track_run("r", agent="a") as run, track_step("s"), track_call("p", "op", model="m") as c:
            c.record_usage(input_tokens=3, output_tokens=4, reasoning_tokens=1)
        agentmeter.score(run.run_id, "quality", 0.5)
        records = cap.records
    for table, rows in zip(contract.TABLES, records, strict=True):
        (row,) = rows
        assert list(row) == [col.name for col in contract.TABLES[table]], table
        assert row["record_type"] == {"agent_runs": "agent_run", "run_steps": "run_step",
                                      "api_calls": "api_call", "run_scores": "run_score"}[table]
        assert row["schema_version"] == contract.SCHEMA_VERSION
    assert records.api_calls[0]["record_id"] == records.api_calls[0]["call_id"]
    assert records.api_calls[0]["agent"] == "a" and records.run_steps[0]["agent"] == "a"


def test_deterministic_capture_gives_stable_ids_timestamps_and_durations() -> None:
    def once() -> dict[str, object]:
        with capture_runs(deterministic=True) as cap, track_run("r"), track_step("s"):
            pass
        return cap.runs[0]

    first, second = once(), once()
    assert first == second
    assert first["run_id"] == "id-000001"
    assert first["started_at"] == "2026-01-01T00:00:00.001000Z"
    # the clock advances 1 ms per reading; after the run's start, the step's start and end and the run's end
    assert first["duration_ms"] == 3.0


def test_timestamps_are_utc_iso_with_microseconds_and_durations_monotonic() -> None:
    clock = DeterministicClock(start_us=1_767_225_600_123_456, step_us=1500)
    with capture_runs(clock=clock) as cap, track_run("r"):
        pass
    run = cap.runs[0]
    assert run["started_at"].endswith("Z") and len(run["started_at"]) == len("2026-01-01T00:00:00.000000Z")
    assert run["duration_ms"] == 1.5


def test_unknown_tokens_stay_null_and_unpriced_cost_is_null_not_zero() -> None:
    with capture_runs() as cap, track_run("r"), track_call("p", "op", model="no-price"):
        pass
    (run,) = cap.runs
    (call,) = run["calls"]
    assert call["input_tokens"] is None and call["total_tokens"] is None
    assert call["cost_usd"] is None and call["priced"] is False
    assert run["cost_usd"] is None and run["unpriced_call_count"] == 1
    with capture_runs() as cap, track_run("no calls"):
        pass
    assert cap.runs[0]["cost_usd"] == 0 and cap.runs[0]["unpriced_call_count"] == 0


def test_price_overrides_apply_in_the_exporter() -> None:
    prices = {"my-model": {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cached_input_per_mtok": 0.3}}
    with capture_runs(prices=prices) as cap, track_run("r"), track_call("self-hosted", "chat", model="my-model") as c:
        c.record_usage(input_tokens=1_000_000, cached_input_tokens=400_000, output_tokens=10_000)
    assert agentmeter.stats().runs_finished == 0  # capture_runs restored the previous exporter
    (call,) = cap.calls
    assert call["priced"] is True
    assert abs(call["cost_usd"] - (600_000 * 3.0 + 400_000 * 0.3 + 10_000 * 15.0) / 1e6) < 1e-9


def test_erd_doc_is_generated_from_the_contract() -> None:
    assert (ROOT / "docs" / "data_model_erd.md").read_text() == erd_markdown()


def test_cache_write_tokens_roll_up_like_the_other_token_counts() -> None:
    with capture_runs() as cap, track_run("r"):
        with track_step("a"):
            with track_call("anthropic", "messages", model="x") as c:
                c.record_usage(input_tokens=1_000, cached_input_tokens=200, cache_write_tokens=600, output_tokens=5)
            with track_call("anthropic", "messages", model="x") as c:
                c.record_usage(input_tokens=10, output_tokens=1)  # cache writes not reported: unknown
        with track_step("b"), track_call("anthropic", "messages", model="x") as c:
            c.record_usage(input_tokens=10, cache_write_tokens=-1)  # invalid: warned, recorded as unknown
    (run,) = cap.runs
    assert [call["cache_write_tokens"] for call in run["calls"]] == [600, None, None]
    steps = {s["name"]: s for s in run["steps"]}
    assert steps["a"]["cache_write_tokens"] == 600 and steps["b"]["cache_write_tokens"] is None
    assert run["cache_write_tokens"] == 600 and run["cached_input_tokens"] == 200
    assert _guard.counters["warnings.usage.cache_write_tokens"] == 1
    assert sorted(r["cache_write_tokens"] or 0 for r in cap.records.api_calls) == [0, 0, 600]
