"""Issue 16, must show: Hypothesis-generated runs with sessions, users, versions, child runs and scores give
the same per-session, per-user, per-version, per-agent and parent-rollup numbers from the local store,
MongoDB (mongomock, written by MongoDBSink's own code) and Snowflake (fakesnow: Firehose's records through
the pipe's COPY), equal to Python's own computation from the documents."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import mongomock
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import agentmeter
from agentmeter import track_call, track_run
from agentmeter.queries import Filters
from agentmeter.queries.local import LocalSource
from agentmeter.queries.mongodb import MongoSource
from agentmeter.queries.rollups import BY, by_dimension, run_trees
from agentmeter.queries.snowflake import SnowflakeSource
from agentmeter.sinks import MemorySink, MongoDBSink, SQLiteSink
from agentmeter.sinks.firehose import document_payloads
from agentmeter.snowflake_sql import RAW_TABLE

from ._fakesnow import Snowflake
from ._workload import PRICES


class Boom(Exception):
    pass


_label = st.sampled_from([None, "a", "b", "c"])
_call = st.tuples(st.sampled_from(["gpt-test", "mini-test", "no-price"]), st.integers(0, 5000), st.integers(0, 900))
_run = st.fixed_dictionaries({
    "session": _label, "user": _label, "version": st.sampled_from([None, "1.3", "1.4"]),
    "agent": st.sampled_from(["planner", "coder", None]), "calls": st.lists(_call, max_size=3),
    "fails": st.booleans(), "scores": st.lists(st.one_of(st.floats(0, 1), st.booleans()), max_size=2),
})
_tree = st.tuples(_run, st.lists(st.tuples(_run, st.lists(_run, max_size=2)), max_size=2))


def _track(spec: dict[str, Any], children: list[Any], ids: list[tuple[str, list[Any]]]) -> None:
    kwargs = {k: spec[k] for k in ("session", "user", "version") if spec[k] is not None}
    try:
        with track_run("task", agent=spec["agent"], **kwargs) as run:
            for model, tokens_in, tokens_out in spec["calls"]:
                with track_call("openai", "chat.completions", model=model) as call:
                    call.record_usage(input_tokens=tokens_in, output_tokens=tokens_out)
            for child, grandchildren in children:
                _track(child, [(g, []) for g in grandchildren], ids)
            if spec["fails"]:
                raise Boom("no")
    except Boom:
        pass
    ids.append((run.run_id, spec["scores"]))


def _expected(docs: list[dict[str, Any]], scores: list[dict[str, Any]], by: str) -> dict[Any, dict[str, Any]]:
    column = {"session": "session_id", "user": "user_id", "version": "version", "agent": "agent"}[by]
    values: dict[str, list[float]] = defaultdict(list)
    for s in scores:
        values[s["run_id"]].append(s["value"])
    out: dict[Any, dict[str, Any]] = {}
    for d in docs:
        g = out.setdefault(d[column], {"runs": 0, "cost_usd": 0.0, "total_tokens": 0, "unpriced_calls": 0,
                                       "error_runs": 0, "given": []})
        g["runs"] += 1
        g["cost_usd"] += sum(c["cost_usd"] for c in d["calls"] if c["priced"])
        g["total_tokens"] += sum(c["total_tokens"] or 0 for c in d["calls"])
        g["unpriced_calls"] += sum(1 for c in d["calls"] if not c["priced"])
        g["error_runs"] += d["status"] == "error"
        g["given"] += values.get(d["run_id"], [])
    return out


def _expected_trees(docs: list[dict[str, Any]]) -> dict[str, tuple[int, float]]:
    by_id = {d["run_id"]: d for d in docs}

    def cost(d: dict[str, Any]) -> float:
        return sum(c["cost_usd"] for c in d["calls"] if c["priced"])

    trees: dict[str, tuple[int, float]] = {}
    for d in docs:
        root = d
        while root["parent_run_id"] is not None:  # walk up to the root: each run counts in one tree
            root = by_id[root["parent_run_id"]]
        n, c = trees.get(root["run_id"], (0, 0.0))
        trees[root["run_id"]] = (n + 1, c + cost(d))
    return trees


# no shrinking: each example deploys a store, a collection and a COPY; a failure prints its example as is
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(_tree, min_size=1, max_size=5), st.sampled_from([None, "day", "week", "month"]))
def test_rollups_agree_across_sources_and_with_python(sf: Snowflake, forest: list[Any], period: str | None) -> None:
    folder = Path(tempfile.mkdtemp(prefix="rollups-"))
    memory = MemorySink()
    agentmeter.configure(sinks=[SQLiteSink(folder / "store.db"), memory], prices=PRICES, sync_export=True,
                         spool_dir=str(folder / "spool"))
    ids: list[tuple[str, list[Any]]] = []
    for root, children in forest:
        _track(root, children, ids)
    for run_id, values in ids:
        for i, value in enumerate(values):
            agentmeter.score(run_id, "first" if i == 0 else "second", value)
        if values:  # given again: the later one wins everywhere
            agentmeter.score(run_id, "first", values[-1])
    assert agentmeter.flush().ok
    docs, scores = memory.documents, memory.scores
    score_docs = [{"schema_version": 1, "record_type": "run_score", "run_id": f"score:{s['event_id']}", "score": s}
                  for s in scores]

    # MongoDB: MongoDBSink's own writes, into mongomock; scores written twice (a replay) change nothing
    client = mongomock.MongoClient(tz_aware=True)
    sink = MongoDBSink("mongodb://unused", database="agentmeter")
    sink._collection, sink._indexes_ready = client["agentmeter"]["agent_metadata"], True
    assert sink.write([*docs, *score_docs]).ok and sink.write(score_docs).ok
    mongo = MongoSource(client["agentmeter"]["agent_metadata"])

    # Snowflake: Firehose's records of every document (scores as given, each key more than once) via COPY
    stage = folder / "stage"
    stage.mkdir()
    with (stage / "part-1.json").open("wb") as fh:
        for doc in docs:
            for _id, data in document_payloads(doc):
                fh.write(data)
    sf.query(f"DELETE FROM {sf.table(RAW_TABLE)}")
    sf.point_stage_at(stage)
    sf.run_pipe()
    with (stage / "part-2.json").open("wb") as fh:  # each key's latest score and an older one, after it
        for doc in _score_docs_with_stale_copies(folder / "store.db"):
            for _id, data in document_payloads(doc):
                fh.write(data)
    sf.run_pipe()
    snow = SnowflakeSource(database=sf.names.database, schema=sf.names.schema)
    local = LocalSource(folder / "store.db")
    try:
        f = Filters()
        for by in BY:
            frames = [by_dimension(s, f, by, period) for s in (local, mongo, snow)]
            for other in frames[1:]:
                pd.testing.assert_frame_equal(frames[0], other, check_exact=False, rtol=1e-9, obj=by)
            if period is None:
                want = _expected(docs, scores, by)
                got = {row.key if isinstance(row.key, str) else None: row for row in frames[0].itertuples()}
                assert set(got) == set(want), by
                for key, w in want.items():
                    g = got[key]
                    assert (g.runs, g.total_tokens, g.unpriced_calls, g.error_runs) == (
                        w["runs"], w["total_tokens"], w["unpriced_calls"], w["error_runs"]), (by, key)
                    assert g.cost_usd == pytest.approx(w["cost_usd"], rel=1e-9, abs=1e-12)
                    assert g.scores == len(w["given"])
                    if w["given"]:
                        assert g.mean_score == pytest.approx(sum(w["given"]) / len(w["given"]))
            assert sum(frames[0]["runs"]) == len(docs)
        trees = [run_trees(s, f) for s in (local, mongo, snow)]
        for other in trees[1:]:
            pd.testing.assert_frame_equal(trees[0], other, check_exact=False, rtol=1e-9)
        want_trees = _expected_trees(docs)
        assert set(trees[0]["run_id"]) == set(want_trees) == {d["run_id"] for d in docs if d["parent_run_id"] is None}
        for row in trees[0].itertuples():
            assert row.runs == want_trees[row.run_id][0]
            assert row.cost_usd == pytest.approx(want_trees[row.run_id][1], rel=1e-9, abs=1e-12)
        assert sum(trees[0]["cost_usd"]) == pytest.approx(sum(frames[0]["cost_usd"]), rel=1e-9, abs=1e-12)
        # the dashboard's score reads: every score of the runs (the latest per key), and one run's scores
        given = [source.scores(f) for source in (local, mongo, snow)]
        for other in given[1:]:
            pd.testing.assert_frame_equal(given[0], other, check_exact=False, rtol=1e-9, obj="scores")
        assert sorted(zip(given[0]["run_id"], given[0]["name"], given[0]["value"], strict=True)) == sorted(
            (s["run_id"], s["name"], s["value"]) for s in scores)
        for run_id in sorted({s["run_id"] for s in scores})[:3]:
            one = [source.run_scores(run_id) for source in (local, mongo, snow)]
            for other in one[1:]:
                pd.testing.assert_frame_equal(one[0], other, check_exact=False, rtol=1e-9, obj=run_id)
            assert sorted(one[0]["name"]) == sorted(s["name"] for s in scores if s["run_id"] == run_id)
    finally:
        snow.close()
        agentmeter.shutdown()


def _score_docs_with_stale_copies(db: Path) -> list[dict[str, Any]]:
    """The score documents of the local store's rows, each preceded in delivery order by an older score of
    the same key (a slow process's): the older one arrives later and must not win."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM run_scores")]
    docs = []
    for row in rows:
        older = {**row, "value": -1.0, "scored_at": "2000-01-01T00:00:00.000000Z",
                 "event_id": "00000000-0000-7000-8000-000000000000"}
        for r in (row, older):
            docs.append({"schema_version": 1, "record_type": "run_score", "run_id": f"score:{r['event_id']}",
                         "score": r})
    return docs
