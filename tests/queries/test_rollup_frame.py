"""The vectorized :func:`agentmeter.queries.rollups.rollup` gives the numbers of the pure-Python
:func:`~agentmeter.queries.rollups.rollup_rows` (the definition the CLI's report prints), for random runs:
null keys, durations, costs and counts, empty start times, runs without scores, every grouping and period."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmeter.queries.base import Filters, conform
from agentmeter.queries.rollups import BY, DIMENSION_FIELDS, PERIODS, ROLLUP, rollup, rollup_rows

_maybe = st.none() | st.sampled_from(["a", "b", "c'\"; --"])
_number = st.none() | st.integers(0, 10**6)
_run = st.fixed_dictionaries({
    "parent_run_id": st.none(), "name": st.just("run"), "agent": _maybe, "session_id": _maybe, "user_id": _maybe,
    "version": _maybe, "status": st.sampled_from(["success", "error", "cancelled"]),
    "started_at": st.none() | st.just("") | st.sampled_from([
        "2026-01-01T10:00:00.000000Z", "2026-01-04T23:59:59.999999Z", "2026-01-05T00:00:00.000000Z",
        "2026-02-28T12:00:00.000000Z", "2025-12-31T23:00:00.000000Z"]),
    "duration_ms": st.none() | st.floats(0, 1e6, allow_nan=False) | st.just(float("nan")),
    "call_count": _number, "input_tokens": _number, "output_tokens": _number, "total_tokens": _number,
    "cost_usd": st.none() | st.floats(0, 100, allow_nan=False), "unpriced_call_count": _number,
})


def _runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"run_id": f"r{i}", **r} for i, r in enumerate(runs)]


def _python(runs: list[dict[str, Any]], scores: list[tuple[str, float]], by: str, period: str | None) -> pd.DataFrame:
    rows = rollup_rows(runs, scores, by, period)
    return conform(pd.DataFrame(rows, columns=[name for name, _ in ROLLUP]), ROLLUP)


@settings(max_examples=150, deadline=None)
@given(st.lists(_run, max_size=40), st.lists(st.tuples(st.integers(0, 45), st.floats(-5, 5, allow_nan=False)),
                                             max_size=30),
       st.sampled_from(BY), st.sampled_from([None, *PERIODS]), st.booleans())
def test_vectorized_rollup_equals_the_python_definition(runs: list[dict[str, Any]], picks: list[tuple[int, float]],
                                                        by: str, period: str | None, twice: bool) -> None:
    runs = _runs(runs)
    if twice and runs:  # a run read twice (a source that lists a run more than once)
        runs.append(dict(runs[0]))
    scores = [(f"r{i}", v) for i, v in picks]  # some name no run (r40..r45 never exist)
    want = _python(runs, scores, by, period)
    for given_runs in (runs, pd.DataFrame(runs, columns=list(DIMENSION_FIELDS))):
        got = rollup(given_runs, scores, by, period)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12, atol=1e-12)


def test_percentiles_are_percentile_cont_exactly() -> None:
    runs = _runs([{"parent_run_id": None, "name": "r", "agent": "a", "session_id": "s", "user_id": None,
                   "version": None, "status": "success", "started_at": "2026-01-01T00:00:00.000000Z",
                   "duration_ms": d, "call_count": 1, "input_tokens": 1, "output_tokens": 1, "total_tokens": 2,
                   "cost_usd": 0.1, "unpriced_call_count": 0} for d in (0.1, 0.7, 0.2, 1e-9, 3.3, None)])
    got = rollup(runs, [], "session")
    want = _python(runs, [], "session", None)
    assert got["p50_ms"].tolist() == want["p50_ms"].tolist()  # bit for bit
    assert got["p95_ms"].tolist() == want["p95_ms"].tolist()


def test_sums_that_could_pass_64_bits_are_left_to_python() -> None:
    runs = _runs([{"parent_run_id": None, "name": "r", "agent": "a", "session_id": None, "user_id": None,
                   "version": None, "status": "success", "started_at": None, "duration_ms": None,
                   "call_count": 1, "input_tokens": 2**61, "output_tokens": 0, "total_tokens": 2**61,
                   "cost_usd": None, "unpriced_call_count": 0} for _ in range(3)])
    got = rollup(runs, [], "agent")
    assert got["input_tokens"].tolist() == [3 * 2**61]  # exact: Python's int sum, not a wrapped int64
    pd.testing.assert_frame_equal(got, _python(runs, [], "agent", None))


def test_unknown_by_or_period_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="by must be"):
        rollup([], [], "model")
    with pytest.raises(ValueError, match="period must be"):
        rollup([], [], "session", "year")


def test_a_local_dimension_frame_is_the_dimension_runs(tmp_path: Path) -> None:
    import agentmeter
    from agentmeter import track_call, track_run
    from agentmeter.queries.local import LocalSource
    from agentmeter.queries.rollups import by_dimension
    from agentmeter.sinks import SQLiteSink

    agentmeter.configure(sinks=[SQLiteSink(tmp_path / "d.db")], spool_dir=str(tmp_path / "spool"))
    try:
        for i in range(12):
            with track_run("r", agent="a", session=f"s{i % 4}" if i % 5 else None, user=f"u{i % 3}",
                           version="1.0" if i < 6 else "1.1"), \
                    track_call("openai", "chat.completions", model="m") as call:
                call.record_usage(input_tokens=10 * i, output_tokens=i)
        assert agentmeter.flush().ok
    finally:
        agentmeter.shutdown()
    source = LocalSource(tmp_path / "d.db")
    for f in (Filters(), Filters(versions=("1.1",))):
        frame = source.dimension_frame(f)
        assert list(frame.columns) == list(DIMENSION_FIELDS)
        assert frame.astype(object).where(frame.notna(), None).to_dict("records") == source.dimension_runs(f)
        for by in BY:
            pd.testing.assert_frame_equal(by_dimension(source, f, by),
                                          rollup(source.dimension_runs(f), source.latest_scores(), by))
