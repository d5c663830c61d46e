"""Seeded runs for the dashboard tests: tracked through the public API into a SQLite store and a memory
sink at once; the same documents go into a mongomock collection (stored as MongoDBSink stores them)."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import mongomock
import pytest

import agentmeter
import agentmeter.testing
from agentmeter import track_call, track_run, track_step
from agentmeter._percentile import percentile_cont
from agentmeter.sinks import MemorySink, SQLiteSink
from agentmeter.sinks.mongodb import score_to_bson, to_bson

#: an agent name made to break naive query building
NASTY_AGENT = "O'Brien\"; DROP TABLE agent_runs; --"
AGENTS = ("researcher", "writer", NASTY_AGENT)
#: a tag made to break naive JSON or LIKE matching
NASTY_TAG = 'tag"%_\\, [x]'
#: tags of run i: by i % 3
TAGS = (("prod",), ("prod", NASTY_TAG), ())
VERSIONS = ("1.0", "1.1")
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
            with track_run("research", agent=agent, tags=TAGS[i % 3], session=f"session-{i % 5}",
                           user=None if i % 4 == 3 else f"user-{i % 4}", version=VERSIONS[i * 2 // n]):
                with track_step("search", kind="tool"), track_call("tavily", "search") as c:
                    c.record_usage(units=1.0)
                with track_step("summarize", kind="llm"):
                    for _ in range(rng.randint(1, 3)):
                        model = rng.choice(["gpt-test", "mini-test", "no-price-model"])
                        with track_call("openai", "chat.completions", model=model) as c:
                            tokens_in = rng.randint(50, 900)
                            # prompt-cache reads on one model, cache writes on another (not from rng: the
                            # other numbers stay as they were)
                            c.record_usage(input_tokens=tokens_in, output_tokens=rng.randint(5, 200),
                                           cached_input_tokens=tokens_in // 4 if model == "gpt-test" else None,
                                           cache_write_tokens=tokens_in // 10 if model == "mini-test" else None)
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


#: how far back the runs of :func:`aged` start, in hours: inside the last hour, the last 24 hours, the last
#: 7 days, 30 days and before, each at least 30 minutes away from a range boundary
AGES_H = (*(i + 0.5 for i in range(24)), 48.5, 72.5, 96.5, 120.5, 240.5, 960.5)
ISO = "%Y-%m-%dT%H:%M:%S.%fZ"


def _shift(value: Any, delta: timedelta) -> Any:
    if not isinstance(value, str):
        return value
    return (datetime.strptime(value, ISO).replace(tzinfo=timezone.utc) - delta).strftime(ISO)


def age(doc: dict[str, Any], delta: timedelta) -> dict[str, Any]:
    """The document with every timestamp (run, steps, calls) moved ``delta`` into the past."""
    out = copy.deepcopy(doc)
    for item in (out, *out["steps"], *out["calls"]):
        for key in ("started_at", "ended_at"):
            item[key] = _shift(item[key], delta)
    return out


def aged_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The seeded runs spread over 40 days (see :data:`AGES_H`), each moved back from now."""
    now = datetime.now(timezone.utc)
    ordered = sorted(docs, key=lambda d: (d["started_at"], d["run_id"]))
    assert len(ordered) == len(AGES_H)
    out = []
    for doc, hours in zip(ordered, AGES_H, strict=True):
        started = datetime.strptime(doc["started_at"], ISO).replace(tzinfo=timezone.utc)
        out.append(age(doc, started - (now - timedelta(hours=hours))))
    return out


def in_range(docs: list[dict[str, Any]], since: datetime | None, until: datetime | None = None) -> list[dict[str, Any]]:
    """The runs a time range keeps (by the run's own start)."""
    lo = since.strftime(ISO) if since else ""
    hi = until.strftime(ISO) if until else "~"
    return [d for d in docs if lo <= d["started_at"] < hi]


@pytest.fixture
def aged(seeded: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """(store path, documents): the seeded runs spread over the last 40 days, written for this test."""
    docs = aged_docs(seeded[1])
    db = tmp_path / "aged.db"
    sink = SQLiteSink(db)
    sink.write(docs)
    sink.close()
    return db, docs


def mongo_of(docs: list[dict[str, Any]], scores: Sequence[dict[str, Any]] = ()) -> Any:
    """The documents (and score rows, as MemorySink keeps them) in a fresh mongomock collection (and its
    ``run_scores`` beside it), as MongoDBSink stores them."""
    coll = mongomock.MongoClient(tz_aware=True)["agentmeter"]["agent_metadata"]
    coll.insert_many([to_bson(d) for d in docs])
    if scores:
        coll.database["run_scores"].insert_many([score_to_bson({"score": row}) for row in scores])
    return coll


def score_runs(db: Path, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Score two of every three runs into the store ``db`` (a numeric score, a boolean one by another
    source, a categorical one for every fourth run; one score given twice); returns the score rows stored
    (the latest per run, name and source)."""
    memory = MemorySink()
    agentmeter.configure(sinks=[SQLiteSink(db), memory])
    for i, doc in enumerate(docs):
        if i % 3 == 2:
            continue
        agentmeter.score(doc["run_id"], "helpfulness", round(i / len(docs), 3))
        agentmeter.score(doc["run_id"], "thumbs", i % 2 == 0, source="human")
        if i % 4 == 0:
            agentmeter.score(doc["run_id"], "verdict", "correct" if i % 8 == 0 else "wrong", comment=f"run {i}")
    agentmeter.score(docs[0]["run_id"], "helpfulness", 0.25)  # given again: the later one wins
    assert agentmeter.flush(timeout=10).ok
    agentmeter.shutdown()
    return memory.scores


def score_documents(scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The score rows as the score documents sinks receive (for the Firehose/Snowflake path)."""
    return [{"schema_version": 1, "record_type": "run_score", "score": row} for row in scores]


@pytest.fixture
def scored(aged: tuple[Path, list[dict[str, Any]]]) -> tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]:
    """(store path, documents, score rows): the aged runs with scores (:func:`score_runs`)."""
    db, docs = aged
    return db, docs, score_runs(db, docs)


@pytest.fixture(autouse=True)
def _clear_streamlit_caches() -> Iterator[None]:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    return


def payload(where: str, port: int = 9) -> str:
    """A user string that markdown or HTML would turn into an image fetched from a beacon, bold text, a
    coloured directive and maths: displayed as text, it reads exactly like this."""
    return (f"{where} ![x](http://127.0.0.1:{port}/beacon-{where}.png) "
            f"<img src=\"http://127.0.0.1:{port}/img-{where}.png\"> **bold-{where}** :red[red-{where}] $x^2$")


#: every kind of user string a run carries, by the name :func:`payload` gets
USER_STRINGS = ("run", "agent", "tag", "metakey", "metavalue", "errortype", "error", "step", "stepmeta",
                "provider", "operation", "model", "callerror", "input", "output", "session", "user", "version",
                "scorename", "scorelabel", "scorecomment")


def seed_hostile(db: Path, port: int = 9) -> list[dict[str, Any]]:
    """Two runs whose every user-written string is a :func:`payload` (one fails), into the store ``db``."""
    memory = MemorySink()
    agentmeter.configure(sinks=[SQLiteSink(db), memory])
    hostile_error = type(payload("errortype", port), (Exception,), {})

    @track_run(name=payload("run", port), agent=payload("agent", port), tags=[payload("tag", port)],
               metadata={payload("metakey", port): payload("metavalue", port)}, capture=True,
               session=payload("session", port), user=payload("user", port), version=payload("version", port))
    def hostile(question: str, fail: bool) -> str:
        with track_step(payload("step", port), kind="tool") as step:
            step.set_metadata(note=payload("stepmeta", port))
            with track_call(payload("provider", port), payload("operation", port), model=payload("model", port)) as c:
                c.record_usage(input_tokens=5, output_tokens=7)
        if fail:
            with track_step("fetch", kind="tool"):
                try:
                    with track_call("openai", "chat", model="m"):
                        raise hostile_error(payload("callerror", port))
                except hostile_error:
                    pass
                raise hostile_error(payload("error", port))
        return payload("output", port)

    hostile(payload("input", port), fail=False)
    try:
        hostile(payload("input", port), fail=True)
    except hostile_error:
        pass
    assert agentmeter.flush(timeout=10).ok
    for doc in memory.documents:  # a categorical and a numeric score, every string of them hostile
        agentmeter.score(doc["run_id"], payload("scorename", port), payload("scorelabel", port),
                         comment=payload("scorecomment", port), source=payload("scorename", port))
        agentmeter.score(doc["run_id"], payload("scorename", port) + " #2", 0.5)
    assert agentmeter.flush(timeout=10).ok
    agentmeter.shutdown()
    return list(memory.documents)
