"""The sidebar's session, user, version, error-type and tag values on the local store: every value with a
DISTINCT when there are few, else read from the newest runs when they can tell, else grouped over every run;
either way exactly what the GROUP BY of the SQL sources gives (the latest-seen values first, ties by value, at
most FILTER_VALUES_LIMIT)."""

from __future__ import annotations

import json
import random
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmeter.queries import base
from agentmeter.queries._sql import SqlSource
from agentmeter.queries.base import FILTER_VALUES_LIMIT, RUN_DIMENSIONS
from agentmeter.queries.local import VALUES_WALK, LocalSource
from agentmeter.sinks.sqlite import create_schema

#: a tag made to break naive JSON or LIKE matching (as the dashboard tests' NASTY_TAG)
NASTY_TAG = 'tag"%_\\, [x]'


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


def _tagged_store(path: Path, runs: list[tuple[str | None, str | None, str | None, str]]) -> LocalSource:
    """A store of runs (user_id, version, tags as stored, started_at), with the SQLite sink's schema."""
    with sqlite3.connect(path) as conn:
        create_schema(conn)
        conn.executemany("INSERT INTO agent_runs (run_id, user_id, version, tags, error_type, status, started_at) "
                         "VALUES (?, ?, ?, ?, ?, 'success', ?)",
                         [(f"r{i:06d}", u, v, tags, v and f"E{v}", t) for i, (u, v, tags, t) in enumerate(runs)])
    return LocalSource(path)


_TAG_LISTS = st.lists(st.sampled_from(["prod", "a", NASTY_TAG, "B", "1"]), max_size=3).map(json.dumps)
_RUN = st.tuples(st.none() | st.sampled_from([f"u{i}" for i in range(8)]),
                 st.none() | st.sampled_from(["1.0", "2", "x"]),
                 st.none() | _TAG_LISTS | st.sampled_from(["[]", "[1, 2.5, null]", '[["n"], {"k": 1}]', '"solo"']),
                 st.sampled_from([f"2026-01-0{d}T00:00:00.000000Z" for d in range(1, 4)]))


@settings(max_examples=60, deadline=None)
@given(st.lists(_RUN, max_size=30), st.integers(1, 8))
def test_few_values_are_what_the_group_by_gives(runs: list[tuple[Any, ...]], limit: int) -> None:
    # at a small limit both ways are taken: every value when there are at most `limit`, the ranking otherwise
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(base, "FILTER_VALUES_LIMIT", limit)
        source = _tagged_store(Path(tmp) / "h.db", runs)
        for name in (*RUN_DIMENSIONS, "tags"):
            assert source.filter_values(name) == SqlSource.filter_values(source, name), name


@pytest.mark.parametrize("users", [FILTER_VALUES_LIMIT, FILTER_VALUES_LIMIT + 1])
def test_values_at_the_limit(tmp_path: Path, users: int) -> None:
    rng = random.Random(users)
    runs = [(f"u{i % users}", None, json.dumps([f"t{i % users}"]), t)
            for i, t in enumerate(_times(3 * users, rng, 60 * 672))]
    source = _tagged_store(tmp_path / "limit.db", runs)
    assert (source._few_values("users") is None) == (users > FILTER_VALUES_LIMIT)
    assert (source._few_values("tags") is None) == (users > FILTER_VALUES_LIMIT)
    for name in ("users", "tags"):
        assert source.filter_values(name) == SqlSource.filter_values(source, name), name


def test_few_values_of_a_store_without_the_column(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("CREATE TABLE agent_runs (run_id TEXT PRIMARY KEY, started_at TEXT, status TEXT)")
        conn.execute("INSERT INTO agent_runs VALUES ('r1', '2026-01-01T00:00:00.000000Z', 'success')")
    source = LocalSource(tmp_path / "old.db")
    assert source._few_values("users") is None
    assert source.filter_values("users") == [] and source.filter_values("tags") == []
