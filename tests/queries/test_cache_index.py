"""The prompt-cache figures of the local store read the partial index of the calls with cache tokens
(ix_calls_cache): the plan uses it, covering, and the frame is the one read from the calls' rows (the store
without that index). Stores written before it get it when the SQLite sink opens them."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from agentmeter.queries import local
from agentmeter.queries.base import Filters
from agentmeter.queries.local import CACHE_INDEX, LocalSource
from agentmeter.sinks.sqlite import SQLiteSink, create_schema

MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude"), ("openai", None), (None, "x")]
FILTERS = [
    Filters(),
    Filters(agents=("a",)),
    Filters(statuses=("error",)),
    Filters(models=("gpt-4o", "claude")),
    Filters(tags=("prod",)),
    Filters(since="2026-01-10", until="2026-01-20"),
    Filters(since="2026-01-27T23:00:00Z"),
    Filters(sessions=("s1",), min_cost_usd=0.001),
]


def _store(path: Path, seed: int = 5) -> None:
    """400 runs of 0-4 calls, a third with cache reads, some with cache writes, some with zeros, nulls
    and (an odd store) a negative count."""
    rng = random.Random(seed)
    with sqlite3.connect(path) as conn:
        create_schema(conn)
        for i in range(400):
            run_id, agent = f"r{i:04d}", "ab"[i % 2]
            started = f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:{i % 60:02d}.000000Z"
            calls = []
            for c in range(rng.randrange(5)):
                provider, model = rng.choice(MODELS)
                x = rng.random()
                cached = (None if x < 0.2 else 0 if x < 0.5 else -3 if x < 0.52 else rng.randrange(1, 900))
                written = rng.choice([None, 0, 0, 0, rng.randrange(1, 200)])
                calls.append((f"{run_id}c{c}", run_id, agent, provider, model, started, cached, written,
                              rng.randrange(100, 1000)))
            conn.executemany("INSERT INTO api_calls (call_id, run_id, agent, provider, model, started_at, "
                             "cached_input_tokens, cache_write_tokens, input_tokens) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", calls)
            run_cached = sum(c[6] or 0 for c in calls)
            run_written = sum(c[7] or 0 for c in calls)
            conn.execute("INSERT INTO agent_runs (run_id, agent, status, started_at, tags, session_id, cost_usd, "
                         "call_count, cached_input_tokens, cache_write_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (run_id, agent, "error" if i % 9 == 0 else "success", started,
                          '["prod"]' if i % 3 else "[]", f"s{i % 4}", i / 100_000, len(calls), run_cached,
                          run_written))


class _Recording(LocalSource):
    """A local source that keeps the SQL of every query it runs."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.queries: list[tuple[str, list[Any]]] = []

    def _rows(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        self.queries.append((sql, list(params)))
        return super()._rows(sql, params)


def _plan(path: Path, sql: str, params: list[Any]) -> str:
    with sqlite3.connect(path) as conn:
        return " | ".join(str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the store with every index, a copy without ix_calls_cache)."""
    tmp = tmp_path_factory.mktemp("cache")
    indexed, bare = tmp / "indexed.db", tmp / "bare.db"
    _store(indexed)
    shutil.copy(indexed, bare)
    with sqlite3.connect(bare) as conn:
        conn.execute(f"DROP INDEX {CACHE_INDEX}")
    return indexed, bare


@pytest.mark.parametrize("narrow", [False, True], ids=["wide", "narrow"])
@pytest.mark.parametrize("f", FILTERS, ids=str)
def test_cache_tokens_read_the_partial_index_and_equal_the_rows(stores: tuple[Path, Path], f: Filters,
                                                                narrow: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Time ranges count as wide (the partial index) or narrow (the started_at index) as the store's size
    would make them."""
    indexed, bare = stores
    if not narrow:
        monkeypatch.setattr(local, "NARROW_MIN", 0)
        monkeypatch.setattr(local, "NARROW_RANGE", 0.0)
    source = _Recording(indexed)
    got = source.cache_tokens(f)
    want = LocalSource(bare).cache_tokens(f)
    assert len(want) > 0
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    grouped = [q for q in source.queries if "total(cached_input_tokens)" in q[0]]
    assert len(grouped) == 1
    plan = _plan(indexed, *grouped[0])
    if narrow and (f.since is not None or f.until is not None):
        assert "ix_calls_started" in plan, plan
    else:
        assert f"COVERING INDEX {CACHE_INDEX}" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # the index is in group order


def test_cache_tokens_equal_sums_computed_in_python(stores: tuple[Path, Path]) -> None:
    with sqlite3.connect(stores[0]) as conn:
        rows = conn.execute("SELECT provider, model, cached_input_tokens, cache_write_tokens FROM api_calls").fetchall()
    want: dict[tuple[Any, Any], list[int]] = {}
    for provider, model, cached, written in rows:
        sums = want.setdefault((provider, model), [0, 0, 0])
        sums[0] += 1
        sums[1] += cached or 0
        sums[2] += written or 0
    got = LocalSource(stores[0]).cache_tokens(Filters())
    assert {(r.provider, r.model): [r.calls, r.cached_input_tokens, r.cache_write_tokens]
            for r in got.itertuples()} == {k: v for k, v in want.items() if v[1] + v[2] > 0}


def test_a_store_without_the_index_gets_it_when_the_sink_opens_it(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    _store(db)
    with sqlite3.connect(db) as conn:
        conn.execute(f"DROP INDEX {CACHE_INDEX}")
    before = LocalSource(db).cache_tokens(Filters())
    sink = SQLiteSink(db)
    sink.write([])  # opens the store: create_schema brings the indexes up to date
    sink.close()
    with sqlite3.connect(db) as conn:
        (sql,), = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", [CACHE_INDEX]).fetchall()
        held = conn.execute(f"SELECT count(*) FROM api_calls INDEXED BY {CACHE_INDEX} "
                            "WHERE (cached_input_tokens <> 0 OR cache_write_tokens <> 0)").fetchone()[0]
        cached = conn.execute("SELECT count(*) FROM api_calls NOT INDEXED "
                              "WHERE coalesce(cached_input_tokens, 0) <> 0 OR coalesce(cache_write_tokens, 0) <> 0"
                              ).fetchone()[0]
    assert "WHERE" in sql
    assert held == cached > 0
    pd.testing.assert_frame_equal(LocalSource(db).cache_tokens(Filters()), before, check_exact=True)
