"""The over-time counts of the local store over every run, read as index ranges (agentmeter/queries/_ranges.py):
exactly the rows of the GROUP BY the SQL sources run, on random stores with odd starts (short, past the
bucket's characters, ending where the next bucket starts, with NUL, not ASCII, null, a blob), null and
hostile keys, in every bucket size."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmeter.queries import _ranges
from agentmeter.queries._sql import SqlSource
from agentmeter.queries.base import BUCKETS, Filters
from agentmeter.queries.local import LocalSource
from agentmeter.sinks.sqlite import create_schema

_STARTS = (st.sampled_from(["2026-01-01T00:00:00.000000Z", "2026-01-01T00:59:59.999999Z", "2026-01-01T01:00:00Z",
                            "2026-01-02T23:59:00.000000Z", "2026-01-31T10:10:10.000000Z", "2026-02-01T00:00:00Z",
                            "2026-01-01", "2026-01-01T00", "2026", "2026-01-01T00:00:00+01:00", "2026-01-0é",
                            "2026-01-01T00:00:00\x00x", "", "2026\x00", "2026\x00\x00", "2026\x01",
                            # exactly where the bucket before ends (minute, hour, day)
                            "2026-01-01T00:01", "2026-01-01T01", "2026-01-02"])
           | st.text(alphabet="0129-:TZé \x00", max_size=20) | st.none())
_KEYS = st.none() | st.sampled_from(["success", "error", "cancelled", "O'Brien\"; --", "", "é"])


def _store(path: Path, runs: list[tuple[Any, Any, Any]]) -> LocalSource:
    """A store of runs (started_at, status, agent), with the SQLite sink's schema."""
    with sqlite3.connect(path) as conn:
        create_schema(conn)
        conn.executemany("INSERT INTO agent_runs (run_id, started_at, status, agent) VALUES (?, ?, ?, ?)",
                         [(f"r{i:05d}", *run) for i, run in enumerate(runs)])
    return LocalSource(path)


def _outcome(read: Any) -> Any:
    """The frame ``read()`` gives, or the error it raises (a start no time parser reads fails both ways)."""
    try:
        return read()
    except ValueError as exc:
        return repr(exc)


def _same(source: LocalSource, bucket: str, ranged: bool = True) -> None:
    """The ranges give the GROUP BY's rows and frames (``ranged``: they are read, not left to the GROUP BY)."""
    from agentmeter.queries._dialect import SQLITE

    for column, index in (("status", "ix_runs_status"), ("agent", "ix_runs_agent")):  # the rows, before parsing
        grouped = source._rows(f"SELECT {SQLITE.bucket(bucket)} AS b, {column}, COUNT(*) FROM agent_runs "
                               f"GROUP BY b, {column} ORDER BY b, {column}")
        got = source._ranged_rows(Filters(), bucket, column, index)
        assert (got is not None) == ranged, column
        assert got is None or got == grouped, column
    for method in ("status_over_time", "runs_per_agent"):
        got = _outcome(lambda method=method: getattr(source, method)(Filters(), bucket))
        want = _outcome(lambda method=method: getattr(SqlSource, method)(source, Filters(), bucket))
        if isinstance(want, str) or isinstance(got, str):
            assert got == want, method
        else:
            pd.testing.assert_frame_equal(got, want)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_STARTS, _KEYS, _KEYS), max_size=40), st.sampled_from(BUCKETS[1:]))
def test_ranges_give_the_group_by(runs: list[tuple[Any, Any, Any]], bucket: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _same(_store(Path(tmp) / "r.db", runs), bucket)


def test_the_ranges_are_read_and_starts_that_are_not_text_are_grouped(tmp_path: Path) -> None:
    runs = [("2026-01-01T00:00:00.000000Z", "success", "a"), ("2026-01-02T00:00:00Z", "error", None)]
    source = _store(tmp_path / "text.db", runs)
    with source._one_connection() as rows:
        assert _ranges.bucket_ranges(rows, 10) == [("2026-01-01", "2026-01-01", "2026-01-02"),
                                                   ("2026-01-02", "2026-01-02", "2026-01-03")]
        assert _ranges.bucket_ranges(rows, 13) == [("2026-01-01T00", "2026-01-01T00", "2026-01-01T01"),
                                                   ("2026-01-02T00", "2026-01-02T00", "2026-01-02T01")]
        assert _ranges.keys_of(rows, "agent") == [None, "a"]
    for bucket in BUCKETS[1:]:
        _same(source, bucket)
    blob = _store(tmp_path / "blob.db", [*runs, (b"2026-01-03", "success", "a")])  # TEXT keeps a blob a blob
    with blob._one_connection() as rows:
        assert _ranges.bucket_ranges(rows, 10) is None  # a blob sorts after text: the GROUP BY
    _same(blob, "day", ranged=False)


def test_too_many_buckets_or_keys_are_grouped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = [(f"2026-01-{d:02d}T00:00:00Z", f"s{d % 4}", None) for d in range(1, 11)]
    source = _store(tmp_path / "many.db", runs)
    monkeypatch.setattr(_ranges, "MAX_BUCKETS", 9)
    monkeypatch.setattr(_ranges, "MAX_KEYS", 3)
    with source._one_connection() as rows:
        assert _ranges.bucket_ranges(rows, 10) is None
        assert _ranges.keys_of(rows, "status") is None
    _same(source, "day", ranged=False)


def test_the_prefixes_are_the_dialects(tmp_path: Path) -> None:
    from agentmeter.queries._dialect import SQLITE

    for bucket, length in _ranges.PREFIX.items():
        assert SQLITE.buckets[bucket].startswith(f"substr({{col}}, 1, {length}) ||"), bucket


def test_a_filter_or_an_empty_store_takes_the_group_by(tmp_path: Path) -> None:
    source = _store(tmp_path / "f.db", [("2026-01-01T00:00:00Z", "success", "a")])
    assert source._ranged_counts(Filters(agents=("a",)), "day", "agent", "ix_runs_agent", ()) is None
    empty = _store(tmp_path / "e.db", [])
    assert empty.status_over_time(Filters(), "day").empty
    _same(empty, "hour")
    missing = LocalSource(tmp_path / "none.db")
    assert missing.status_over_time(Filters(), "day").empty


def _timed_store(path: Path, runs: list[tuple[Any, Any]]) -> LocalSource:
    """A store of runs (started_at, duration_ms), with the SQLite sink's schema."""
    with sqlite3.connect(path) as conn:
        create_schema(conn)
        conn.executemany("INSERT INTO agent_runs (run_id, started_at, status, duration_ms) VALUES (?, ?, 'success', ?)",
                         [(f"r{i:05d}", *run) for i, run in enumerate(runs)])
    return LocalSource(path)


def _latency_same(source: LocalSource, bucket: str) -> None:
    from agentmeter.queries._dialect import SQLITE

    def grouped(durations: str) -> tuple[str, list[Any]]:
        return (f"SELECT {SQLITE.bucket(bucket)} AS b, count(*), {durations} FROM agent_runs "
                "WHERE duration_ms IS NOT NULL GROUP BY b ORDER BY b", [])

    ranged = source._latency_ranges(Filters(), bucket)
    assert ranged is not None
    got = [(b, n, d.tolist()) for b, n, d in source._duration_rows(ranged) if n]
    want = [(b, n, d.tolist()) for b, n, d in source._duration_rows(grouped)]
    # the same durations per bucket, in any order (a percentile sorts them)
    assert [(b, n, sorted(d)) for b, n, d in got] == [(b, n, sorted(d)) for b, n, d in want]
    frame = _outcome(lambda: source.latency_over_time(Filters(), bucket))
    if not isinstance(frame, str):
        assert frame["runs"].sum() == sum(n for _, n, _ in want)


_DURATIONS = st.none() | st.sampled_from([0.0, 1.5, 0.001, 12.345678, 2.0 ** 70, -3.25, 0.1234567])


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(_STARTS, _DURATIONS), max_size=30), st.sampled_from(BUCKETS[1:]))
def test_latency_ranges_give_the_group_by(runs: list[tuple[Any, Any]], bucket: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _latency_same(_timed_store(Path(tmp) / "l.db", runs), bucket)


def test_latency_over_time_by_ranges_is_the_frame_of_the_group_by(tmp_path: Path) -> None:
    class Grouped(LocalSource):
        """The same store read with the GROUP BY."""

        def _latency_ranges(self, f: Filters, bucket: str) -> Any:
            return None

    runs = [(f"2026-01-0{1 + i % 3}T{i % 24:02d}:{i % 60:02d}:00.000000Z", None if i % 7 == 0 else i * 1.25)
            for i in range(200)]
    source = _timed_store(tmp_path / "t.db", runs)
    for bucket in BUCKETS[1:]:
        assert source._latency_ranges(Filters(), bucket) is not None
        pd.testing.assert_frame_equal(source.latency_over_time(Filters(), bucket),
                                      Grouped(source.path).latency_over_time(Filters(), bucket))
    assert source._latency_ranges(Filters(agents=("a",)), "day") is None
