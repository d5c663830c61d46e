"""Seeded runs for the dashboard tests: tracked through the public API into a SQLite store and a memory
sink at once; the same documents go into a mongomock collection (stored as MongoDBSink stores them)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mongomock
import pytest

import agentmeter
import agentmeter.testing
from agentmeter import track_call, track_run, track_step
from agentmeter._percentile import percentile_cont
from agentmeter.sinks import MemorySink, SQLiteSink
from agentmeter.sinks.mongodb import to_bson

#: an agent name made to break naive query building
NASTY_AGENT = "O'Brien\"; DROP TABLE agent_runs; --"
AGENTS = ("researcher", "writer", NASTY_AGENT)
PRICES = {"gpt-test": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
          "mini-test": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}


class Boom(Exception):
    pass


def seed_runs(db: Path, n: int = 30, seed: int = 3) -> list[dict[str, Any]]:
    """Track ``n`` runs (mixed agents, statuses, providers, priced and unpriced models) into ``db``;
    returns their documents."""
    rng = random.Random(seed)
    memory = MemorySink()
    agentmeter.configure(sinks=[SQLiteSink(db), memory], prices=PRICES)
    for i in range(n):
        agent = AGENTS[i % len(AGENTS)]
        try:
            with track_run("research", agent=agent):
                with track_step("search", kind="tool"), track_call("tavily", "search") as c:
                    c.record_usage(units=1.0)
                with track_step("summarize", kind="llm"):
                    for _ in range(rng.randint(1, 3)):
                        model = rng.choice(["gpt-test", "mini-test", "no-price-model"])
                        with track_call("openai", "chat.completions", model=model) as c:
                            c.record_usage(input_tokens=rng.randint(50, 900), output_tokens=rng.randint(5, 200))
                if i % 4 == 1:
                    with track_step("answer", kind="llm"), track_call("openai", "responses", model="gpt-test"):
                        raise Boom(f"rate limited 'quota' #{i}")
                if i % 7 == 3:
                    raise KeyboardInterrupt  # recorded as cancelled
        except Boom:
            pass
        except KeyboardInterrupt:
            pass
    result = agentmeter.flush()
    assert not result.timed_out
    agentmeter.shutdown()
    return list(memory.documents)


def expected(docs: list[dict[str, Any]], agents: tuple[str, ...] = ()) -> dict[str, Any]:
    """The headline numbers computed in plain Python from the documents."""
    runs = [d for d in docs if not agents or d["agent"] in agents]
    n = len(runs)
    ok = sum(1 for r in runs if r["status"] == "success")
    return {
        "runs": n,
        "success_rate": ok / n if n else None,
        "error_rate": sum(1 for r in runs if r["status"] == "error") / n if n else None,
        "p50_ms": percentile_cont([r["duration_ms"] for r in runs], 0.5),
        "p95_ms": percentile_cont([r["duration_ms"] for r in runs], 0.95),
        "total_tokens": sum(c["total_tokens"] or 0 for r in runs for c in r["calls"]),
        "cost_usd": sum(c["cost_usd"] for r in runs for c in r["calls"] if c["priced"]),
        "unpriced_calls": sum(1 for r in runs for c in r["calls"] if not c["priced"]),
        "cost_by_model": _cost_by_model(runs),
    }


def _cost_by_model(runs: list[dict[str, Any]]) -> dict[tuple[str, str | None], float]:
    out: dict[tuple[str, str | None], float] = {}
    for r in runs:
        for c in r["calls"]:
            key = (c["provider"], c["model"])
            out[key] = out.get(key, 0.0) + (c["cost_usd"] if c["priced"] else 0.0)
    return out


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """(store path, documents): 30 runs, built once per session (tests only read it)."""
    db = tmp_path_factory.mktemp("dash") / "seeded.db"
    docs = seed_runs(db)
    agentmeter.testing.reset(timeout=0)
    return db, docs


@pytest.fixture
def mongo_collection(seeded: tuple[Path, list[dict[str, Any]]]) -> Any:
    """The seeded documents in a mongomock ``agent_metadata`` collection, in MongoDBSink's stored form."""
    client = mongomock.MongoClient(tz_aware=True)
    coll = client["agentmeter"]["agent_metadata"]
    coll.insert_many([to_bson(d) for d in seeded[1]])
    return coll


@pytest.fixture(autouse=True)
def _clear_streamlit_caches() -> Iterator[None]:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    return
