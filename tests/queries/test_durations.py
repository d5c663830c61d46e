"""The local store's latency percentiles read durations as integer microseconds and give exactly what the
REALs themselves give (the path before: ``group_concat(duration_ms)``), bit for bit; a duration that is
not a whole number of microseconds (finer, negative, huge) makes the query read the REALs instead."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from agentmeter._clock import ms3
from agentmeter._percentile import percentile_cont
from agentmeter.queries import local
from agentmeter.queries.base import Filters
from agentmeter.queries.local import LocalSource
from agentmeter.sinks.sqlite import create_schema

#: the frames whose percentiles come from the durations
METHODS = ("kpis", "agent_kpis", "latency_over_time", "step_latency", "api_latency")
#: durations no integer count of microseconds gives back exactly
ODD = [1 / 3, 0.0005, 2.5e-7, -1.5, -0.004, 123.4565, 1e300, 9.3e15, 5e-324]


def _durations(rng: random.Random, n: int) -> list[float | None]:
    """Durations as the SDK stores them (:func:`agentmeter._clock.ms3`), with ties, zeros and nulls."""
    out: list[float | None] = []
    for _ in range(n):
        x = rng.random()
        out.append(None if x < 0.1 else 0.0 if x < 0.15 else 250.0 if x < 0.3 else
                   ms3(rng.randrange(1, 10**11)) if x < 0.9 else ms3(rng.randrange(500, 5000) * 1000 + 500))
    return out


def _store(path: Path, extra: Sequence[float] = (), seed: int = 11) -> dict[str, list[float | None]]:
    """Runs, steps and calls with :func:`_durations` (``extra`` added to each table); returns them."""
    rng = random.Random(seed)
    d = {t: _durations(rng, n) + list(extra) for t, n in (("agent_runs", 300), ("run_steps", 500),
                                                          ("api_calls", 800))}
    with sqlite3.connect(path) as conn:
        create_schema(conn)
        for i, dur in enumerate(d["agent_runs"]):
            conn.execute("INSERT INTO agent_runs (run_id, agent, status, started_at, duration_ms) "
                         "VALUES (?, ?, ?, ?, ?)", (f"r{i:04d}", "abc"[i % 3], "error" if i % 7 == 0 else "success",
                                                    f"2026-01-{1 + i % 9:02d}T{i % 24:02d}:00:00.000000Z", dur))
        for i, dur in enumerate(d["run_steps"]):
            conn.execute("INSERT INTO run_steps (step_id, run_id, agent, name, status, started_at, duration_ms) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", (f"s{i:04d}", f"r{i % 300:04d}", "abc"[i % 3],
                                                          ["plan", "search", None][i % 3], "success",
                                                          f"2026-01-{1 + i % 9:02d}T00:00:00.000000Z", dur))
        for i, dur in enumerate(d["api_calls"]):
            conn.execute("INSERT INTO api_calls (call_id, run_id, agent, provider, model, status, started_at, "
                         "duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (f"c{i:04d}", f"r{i % 300:04d}", "abc"[i % 3], ["openai", "anthropic"][i % 2],
                          ["m1", "m2", None][i % 3], "error" if i % 11 == 0 else "success",
                          f"2026-01-{1 + i % 9:02d}T00:00:00.000000Z", dur))
    return d


class _Recording(LocalSource):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.queries: list[str] = []

    def _rows(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        self.queries.append(sql)
        return super()._rows(sql, params)


def _frames(source: LocalSource, f: Filters) -> dict[str, pd.DataFrame]:
    return {m: getattr(source, m)(f) for m in METHODS}


def _as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local source reading the durations as REALs, as before the microseconds."""
    monkeypatch.setattr(local, "READ_MICROS", False)


@pytest.mark.parametrize("f", [Filters(), Filters(agents=("a",)), Filters(since="2026-01-03", until="2026-01-06"),
                               Filters(statuses=("error",))], ids=str)
def test_microseconds_give_the_same_percentiles_as_the_reals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             f: Filters) -> None:
    _store(tmp_path / "d.db")
    source = _Recording(tmp_path / "d.db")
    got = _frames(source, f)
    assert not any("group_concat(duration_ms)" in q for q in source.queries)  # never read as REALs
    _as_before(monkeypatch)
    want = _frames(LocalSource(tmp_path / "d.db"), f)
    for method in METHODS:
        assert len(got[method]) > 0, method
        pd.testing.assert_frame_equal(got[method], want[method], check_exact=True, obj=method)


def test_percentiles_equal_percentile_cont_of_the_stored_values(tmp_path: Path) -> None:
    d = _store(tmp_path / "d.db")
    source = LocalSource(tmp_path / "d.db")
    runs = [v for v in d["agent_runs"] if v is not None]
    k = source.kpis(Filters()).iloc[0]
    for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        assert k[name] == pytest.approx(percentile_cont(runs, q), rel=1e-12)
    calls = source.api_latency(Filters())
    m1 = calls[(calls["provider"] == "openai") & (calls["model"] == "m1")].iloc[0]
    values = [v for i, v in enumerate(d["api_calls"]) if i % 2 == 0 and i % 3 == 0 and v is not None]
    assert m1["calls"] == len([i for i in range(len(d["api_calls"])) if i % 2 == 0 and i % 3 == 0])
    assert m1["p95_ms"] == pytest.approx(percentile_cont(values, 0.95), rel=1e-12)
    assert m1["mean_ms"] == pytest.approx(sum(values) / len(values), rel=1e-12)


@pytest.mark.parametrize("odd", ODD, ids=repr)
def test_a_duration_not_in_whole_microseconds_reads_the_reals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              odd: float) -> None:
    _store(tmp_path / "d.db", extra=[odd, odd, 250.0])
    source = _Recording(tmp_path / "d.db")
    got = _frames(source, Filters())
    assert sum("group_concat(duration_ms)" in q for q in source.queries) == len(METHODS)  # each read again
    _as_before(monkeypatch)
    want = _frames(LocalSource(tmp_path / "d.db"), Filters())
    for method in METHODS:
        pd.testing.assert_frame_equal(got[method], want[method], check_exact=True, obj=method)


def test_no_durations_and_an_empty_store(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    with sqlite3.connect(db) as conn:
        create_schema(conn)
        conn.execute("INSERT INTO agent_runs (run_id, agent, status, started_at) "
                     "VALUES ('r1', 'a', 'success', '2026-01-01T00:00:00.000000Z')")
    source = LocalSource(db)
    k = source.kpis(Filters()).iloc[0]
    assert k["runs"] == 1 and pd.isna(k["p50_ms"])
    assert source.latency_over_time(Filters()).empty
    assert source.kpis(Filters(agents=("nobody",))).iloc[0]["runs"] == 0
    assert pd.isna(source.agent_kpis(Filters()).iloc[0]["p99_ms"])
