"""The run list sorted by model on the local store: the two plans (each kept run's model looked up, or every
call grouped by run) give the same runs in the same order, the one RUN_ORDERS defines: the run's smallest
model name, runs without a model last, then newest first."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from agentmeter.queries import local
from agentmeter.queries.base import Filters
from agentmeter.queries.local import LocalSource
from agentmeter.sinks.sqlite import create_schema

MODELS = ["gpt-4o", "claude", "o3", None]


def _store(path: Path) -> dict[str, tuple[str | None, str]]:
    """300 runs with 0-3 calls each (some with no model); returns run_id -> (first model, started_at)."""
    rng = random.Random(9)
    expected: dict[str, tuple[str | None, str]] = {}
    with sqlite3.connect(path) as conn:
        create_schema(conn)
        for i in range(300):
            run_id, started = f"r{i:04d}", f"2026-01-{1 + i % 28:02d}T00:00:{i % 60:02d}.000000Z"
            agent = "a" if i % 3 else "b"
            conn.execute("INSERT INTO agent_runs (run_id, agent, status, started_at) VALUES (?, ?, 'success', ?)",
                         (run_id, agent, started))
            models = [rng.choice(MODELS) for _ in range(rng.randrange(4))]
            for c, model in enumerate(models):
                conn.execute("INSERT INTO api_calls (call_id, run_id, agent, provider, model, started_at) "
                             "VALUES (?, ?, ?, 'p', ?, ?)", (f"{run_id}c{c}", run_id, agent, model, started))
            known = [m for m in models if m is not None]
            expected[run_id] = (min(known) if known else None, started)
    return expected


@pytest.mark.parametrize("plan", ["lookup", "group"])
@pytest.mark.parametrize("f", [Filters(), Filters(agents=("b",)), Filters(since="2026-01-20")])
def test_both_plans_sort_by_the_first_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plan: str,
                                            f: Filters) -> None:
    expected = _store(tmp_path / "m.db")
    if plan == "group":  # every filter counts as keeping many runs
        monkeypatch.setattr(local, "FEW_RUNS", 0.0)
        monkeypatch.setattr(local, "FEW_RUNS_MIN", 0)
    got = LocalSource(tmp_path / "m.db").search_runs(f, "", 1000, "model")
    kept = [r for r, (_, started) in expected.items()
            if (not f.agents or (int(r[1:]) % 3 == 0) == (f.agents == ("b",)))
            and (f.since is None or started >= f.since)]
    want = sorted(kept, key=lambda r: r, reverse=True)  # ties: run_id descending
    want.sort(key=lambda r: expected[r][1], reverse=True)  # newest first
    want.sort(key=lambda r: (expected[r][0] is None, expected[r][0] or ""))  # model ascending, none last
    assert list(got["run_id"]) == want
