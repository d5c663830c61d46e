"""The sidebar's session, user, version and error-type values on the local store: read from the newest runs
when they can tell, otherwise grouped over every run; either way exactly what the GROUP BY of the SQL
sources gives (the latest-seen values first, ties by value, at most FILTER_VALUES_LIMIT)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from agentmeter.queries._sql import SqlSource
from agentmeter.queries.base import RUN_DIMENSIONS
from agentmeter.queries.local import VALUES_WALK, LocalSource
from agentmeter.sinks.sqlite import create_schema


def _store(path: Path, runs: list[tuple[str | None, str | None, str]]) -> LocalSource:
    """A store of runs (session_id, user_id, started_at), written with the SQLite sink's schema."""
    with sqlite3.connect(path) as conn:
        create_schema(conn)
        conn.executemany("INSERT INTO agent_runs (run_id, session_id, user_id, version, status, started_at) "
                         "VALUES (?, ?, ?, ?, 'success', ?)",
                         [(f"r{i:06d}", s, u, "1.0" if i % 2 else None, t) for i, (s, u, t) in enumerate(runs)])
    return LocalSource(path)


def _times(n: int, rng: random.Random, distinct: int) -> list[str]:
    return [f"2026-01-{1 + rng.randrange(28):02d}T{rng.randrange(24):02d}:00:{rng.randrange(distinct // 672 + 1):02d}"
            f".000000Z" for _ in range(n)]


def _same_as_group_by(source: LocalSource) -> None:
    for name in RUN_DIMENSIONS:
        assert source.filter_values(name) == SqlSource.filter_values(source, name), name


def test_many_sessions_are_read_from_the_newest_runs(tmp_path: Path) -> None:
    rng = random.Random(3)
    n = 3 * VALUES_WALK
    times = sorted(_times(n, rng, 60 * 672))
    source = _store(tmp_path / "s.db", [(f"s{i // 4}", f"u{rng.randrange(50)}" if i % 7 else None, t)
                                        for i, t in enumerate(times)])
    assert source._recent_values("session_id") is not None  # the walk answered
    assert source._recent_values("user_id") is None  # 50 users: every run is grouped
    _same_as_group_by(source)


def test_sessions_in_random_order_of_start(tmp_path: Path) -> None:
    rng = random.Random(5)
    n = 2 * VALUES_WALK
    source = _store(tmp_path / "r.db", [(f"s{rng.randrange(3000)}", None, t) for t in _times(n, rng, 60 * 672)])
    _same_as_group_by(source)


@pytest.mark.parametrize("limit_tie", [True, False])
def test_a_tie_at_the_limit_is_grouped_over_every_run(tmp_path: Path, limit_tie: bool) -> None:
    # every run starts at one of a few instants: many values share their latest start
    rng = random.Random(11)
    n = VALUES_WALK + 100
    # one instant: the runs not read may hold values that rank first; 60: the walk can still tell
    instants = ["2026-01-02T00:00:00.000000Z"] if limit_tie else [f"2026-01-01T00:{m:02d}:00.000000Z"
                                                                     for m in range(60)]
    source = _store(tmp_path / "t.db", [(f"s{rng.randrange(5000)}", None, rng.choice(instants)) for _ in range(n)])
    if limit_tie:
        assert source._recent_values("session_id") is None
    _same_as_group_by(source)


def test_a_small_store_groups_every_run(tmp_path: Path) -> None:
    source = _store(tmp_path / "small.db", [(f"s{i}", "u", f"2026-01-01T00:00:{i:02d}.000000Z") for i in range(40)])
    assert source._recent_values("session_id") is None
    assert source.filter_values("sessions") == sorted(f"s{i}" for i in range(40))
    _same_as_group_by(source)
