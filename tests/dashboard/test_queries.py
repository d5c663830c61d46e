"""The query interface: every source returns the documented frames, and they agree with each other and
with numbers computed in Python from the same runs."""

from __future__ import annotations

import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from agentmeter._percentile import percentile_cont
from agentmeter.queries import open_source
from agentmeter.queries._stats import percentiles
from agentmeter.queries.base import FRAMES, RUN_ORDERS, Filters
from agentmeter.queries.local import LocalSource
from agentmeter.queries.mongodb import MongoSource

from .conftest import NASTY_AGENT, NASTY_TAG, expected

Seeded = tuple[Path, list[dict[str, Any]]]


def _call(source: Any, method: str, f: Filters) -> pd.DataFrame:
    return source.agents() if method == "agents" else getattr(source, method)(f)


def _filters(docs: list[dict[str, Any]]) -> list[Filters]:
    times = sorted(d["started_at"] for d in docs)
    return [
        Filters(),
        Filters(agents=("researcher",)),
        Filters(agents=(NASTY_AGENT,)),
        Filters(statuses=("error", "cancelled")),
        Filters(since=times[5], until=times[20]),
        Filters(since=times[10], agents=("writer", NASTY_AGENT), statuses=("success",)),
        Filters(models=("mini-test",), tags=(NASTY_TAG,)),
        Filters(sessions=("session-1", "session-2"), users=("user-0", "user-2"), versions=("1.1",)),
        Filters(since=times[3], models=("gpt-test", "no-price-model"), statuses=("error", "success")),
    ]


def test_frames_have_the_documented_columns(seeded: Seeded, mongo_collection: Any) -> None:
    for source in (LocalSource(seeded[0]), MongoSource(mongo_collection)):
        for method, spec in FRAMES.items():
            df = _call(source, method, Filters())
            assert list(df.columns) == [name for name, _ in spec], (source.kind, method)
            assert len(df) > 0, (source.kind, method)


@pytest.mark.parametrize("index", range(9))
def test_local_and_mongodb_return_the_same_frames(seeded: Seeded, mongo_collection: Any, index: int) -> None:
    f = _filters(seeded[1])[index]
    local, mongo = LocalSource(seeded[0]), MongoSource(mongo_collection)
    for method in FRAMES:
        a, b = _call(local, method, f), _call(mongo, method, f)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12, obj=f"{method} {f}")
    for bucket in ("minute", "hour", "day"):
        for method in ("status_over_time", "latency_over_time", "runs_per_agent", "cost_over_time"):
            pd.testing.assert_frame_equal(getattr(local, method)(f, bucket), getattr(mongo, method)(f, bucket))
    for order in RUN_ORDERS:
        pd.testing.assert_frame_equal(local.search_runs(f, "", 100, order), mongo.search_runs(f, "", 100, order),
                                      check_exact=False, rtol=1e-9, obj=order)
    assert local.count_runs(f) == mongo.count_runs(f) == len(local.search_runs(f, "", 1000))
    run_id = local.search_runs(f)["run_id"].iloc[0] if len(local.search_runs(f)) else None
    if run_id is not None:
        for x, y in zip(local.run_detail(run_id), mongo.run_detail(run_id), strict=True):
            pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=1e-9)


@pytest.mark.parametrize("agents", [(), ("writer",), (NASTY_AGENT,)])
def test_kpis_equal_values_computed_in_python(seeded: Seeded, mongo_collection: Any, agents: tuple[str, ...]) -> None:
    want = expected(seeded[1], agents)
    for source in (LocalSource(seeded[0]), MongoSource(mongo_collection)):
        k = source.kpis(Filters(agents=agents)).iloc[0]
        assert k["runs"] == want["runs"] > 0
        assert k["success_rate"] == pytest.approx(want["success_rate"])
        assert k["error_rate"] == pytest.approx(want["error_rate"])
        assert k["p50_ms"] == pytest.approx(want["p50_ms"])
        assert k["p95_ms"] == pytest.approx(want["p95_ms"])
        assert k["total_tokens"] == want["total_tokens"]
        assert k["cost_usd"] == pytest.approx(want["cost_usd"], rel=1e-9)
        assert k["unpriced_calls"] == want["unpriced_calls"]
        by_model = source.cost_by_model(Filters(agents=agents))
        got = {(r.provider, r.model): r.cost_usd for r in by_model.itertuples()}
        assert got == pytest.approx(want["cost_by_model"])


def test_hostile_filter_values_change_nothing_but_the_filter(seeded: Seeded) -> None:
    db, docs = seeded
    source = LocalSource(db)
    for hostile in ("' OR '1'='1", "x'); DROP TABLE agent_runs; --", '" OR ""="', "%", "_", "\\"):
        assert source.kpis(Filters(agents=(hostile,))).iloc[0]["runs"] == 0
        assert source.search_runs(Filters(), run_id_prefix=hostile).empty
        assert source.run_detail(hostile) is None
    nasty = source.kpis(Filters(agents=(NASTY_AGENT,))).iloc[0]
    assert nasty["runs"] == expected(docs, (NASTY_AGENT,))["runs"] > 0
    with sqlite3.connect(db) as conn:  # the store is intact
        assert conn.execute("SELECT count(*) FROM agent_runs").fetchone()[0] == len(docs)


def test_run_id_prefix_finds_runs(seeded: Seeded) -> None:
    source = LocalSource(seeded[0])
    run_id = seeded[1][7]["run_id"]
    found = source.search_runs(Filters(), run_id_prefix=run_id)
    assert list(found["run_id"]) == [run_id]
    detail = source.run_detail(run_id)
    assert detail is not None
    doc = seeded[1][7]
    assert len(detail.steps) == len(doc["steps"]) and len(detail.calls) == len(doc["calls"])
    assert detail.run.iloc[0]["status"] == doc["status"]


def test_empty_and_missing_stores_read_as_empty(tmp_path: Path) -> None:
    source = LocalSource(tmp_path / "nothing-here.db")
    source.check()
    assert not source.has_runs()
    k = source.kpis(Filters()).iloc[0]
    assert k["runs"] == 0 and math.isnan(k["success_rate"]) and math.isnan(k["p95_ms"])
    for method in FRAMES:
        if method != "kpis":
            assert _call(source, method, Filters()).empty


def test_unreadable_store_raises_source_unavailable(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    from agentmeter.queries import SourceUnavailable

    with pytest.raises(SourceUnavailable) as info:
        LocalSource(bad).check()
    assert "--db" in info.value.hint


def test_open_source_picks_by_name_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_source("local", db=tmp_path / "a.db"), LocalSource)
    monkeypatch.setenv("AGENTMETER_DASHBOARD_SOURCE", "local")
    assert open_source().kind == "local"
    with pytest.raises(ValueError, match="source must be one of"):
        open_source("postgres")


def test_filters_normalize_and_validate() -> None:
    f = Filters(since="2026-01-02", until="2026-01-03T04:05Z", agents=["b", "a", "b"], statuses=["error"])
    assert f.since == "2026-01-02T00:00:00.000000Z" and f.until == "2026-01-03T04:05:00.000000Z"
    assert f.agents == ("a", "b")
    with pytest.raises(ValueError, match="statuses"):
        Filters(statuses=("success'; --",))
    with pytest.raises(ValueError, match="ISO"):
        Filters(since="yesterday'; DROP TABLE x")
    # what datetime.isoformat() writes (the dashboard's time ranges once crashed on it), in UTC or not
    from datetime import datetime, timedelta, timezone

    moment = datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=timezone.utc)
    assert Filters(since=moment.isoformat()).since == "2026-03-04T05:06:07.000890Z" == Filters(since=moment).since
    cet = moment.astimezone(timezone(timedelta(hours=1)))
    assert Filters(until=cet.isoformat()).until == "2026-03-04T05:06:07.000890Z"
    with pytest.raises(ValueError, match="ISO"):
        Filters(since="2026-03-04T05:06:07+0100x")


def test_vectorized_percentiles_equal_percentile_cont() -> None:
    rng = random.Random(5)
    for n in (1, 2, 3, 10, 101, 1000):
        values = [rng.lognormvariate(5, 1) for _ in range(n)]
        for q, got in zip((0.5, 0.95, 0.99), percentiles(values), strict=True):
            assert got == pytest.approx(percentile_cont(values, q), rel=1e-12)


def test_dashboard_command_runs_streamlit_on_the_bundled_app(tmp_path: Path) -> None:
    from agentmeter.cli import build_parser
    from agentmeter.cli.dashboard import build_command

    args = build_parser().parse_args(["dashboard", "--db", str(tmp_path / "x.db"), "--port", "8611"])
    cmd, env = build_command(args)
    assert cmd[1:4] == ["-m", "agentmeter.dashboard._serve", "run"]  # streamlit run, after the preload
    assert cmd[4].endswith("app.py") and Path(cmd[4]).exists()
    assert cmd[cmd.index("--server.port") + 1] == "8611"
    assert env["AGENTMETER_DASHBOARD_SOURCE"] == "local" and env["AGENTMETER_DB"] == str(tmp_path / "x.db")
    bad = build_parser().parse_args(["dashboard", "--port", "70000"])
    with pytest.raises(ValueError, match="--port"):
        build_command(bad)


def test_kpis_count_step_and_call_errors_as_python_does(seeded: Seeded, mongo_collection: Any) -> None:
    docs = seeded[1]
    steps = sum(len(d["steps"]) for d in docs)
    calls = sum(len(d["calls"]) for d in docs)
    error_steps = sum(1 for d in docs for s in d["steps"] if s["status"] == "error")
    error_calls = sum(1 for d in docs for c in d["calls"] if c["status"] == "error")
    assert 0 < error_steps < steps and 0 < error_calls < calls
    for source in (LocalSource(seeded[0]), MongoSource(mongo_collection)):
        k = source.kpis(Filters()).iloc[0]
        assert (k["steps"], k["error_steps"], k["calls"], k["error_calls"]) == (steps, error_steps, calls, error_calls)
        assert k["step_error_rate"] == pytest.approx(error_steps / steps)
        assert k["call_error_rate"] == pytest.approx(error_calls / calls)


def test_agent_kpis_are_the_kpis_of_each_agent(seeded: Seeded, mongo_collection: Any) -> None:
    for source in (LocalSource(seeded[0]), MongoSource(mongo_collection)):
        by_agent = source.agent_kpis(Filters())
        assert sorted(by_agent["agent"]) == sorted({d["agent"] for d in seeded[1]})
        for row in by_agent.itertuples(index=False):
            one = source.kpis(Filters(agents=(row.agent,)))
            pd.testing.assert_frame_equal(
                pd.DataFrame([row]).drop(columns=["agent"]), one, check_exact=False, rtol=1e-12, obj=row.agent)


def test_report_shows_the_query_layers_kpis_without_pandas(seeded: Seeded) -> None:
    """`agentmeter report` reads the KPIs the dashboard shows, with a bare install (no pandas, no numpy)."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; from agentmeter.cli.report import summarize; "
            f"s = summarize({str(seeded[0])!r}, since='all'); "
            "print(json.dumps([s, sorted({'pandas', 'numpy'} & set(sys.modules))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    summary, heavy = json.loads(out)
    assert heavy == []
    source = LocalSource(seeded[0])
    total = source.kpis(Filters()).iloc[0]
    groups = {r["agent"]: r for _, r in source.agent_kpis(Filters()).iterrows()}
    pairs = [(summary["total"], total), *((summary["agents"][a], groups[a]) for a in groups)]
    assert len(pairs) == 4
    for shown, k in pairs:
        assert shown["runs"] == k["runs"] and shown["success"] == k["success_runs"]
        assert shown["errors"] == k["error_runs"] and shown["cancelled"] == k["cancelled_runs"]
        assert shown["success_rate"] == pytest.approx(k["success_rate"], rel=1e-12)
        assert shown["p50_ms"] == pytest.approx(k["p50_ms"], rel=1e-12)
        assert shown["p95_ms"] == pytest.approx(k["p95_ms"], rel=1e-12)
        for key in ("steps", "calls", "input_tokens", "output_tokens", "total_tokens"):
            assert shown[key] == k[key], key
        # the report splits the unpriced calls: no price for the model, or tokens unknown
        assert shown["unpriced_calls"] + shown["tokens_unknown_calls"] == k["unpriced_calls"]
        assert shown["cost_usd"] == pytest.approx(k["cost_usd"], rel=1e-12)


def test_run_orders_sort_by_the_store_and_counts_are_true(seeded: Seeded, mongo_collection: Any) -> None:
    docs = seeded[1]
    rank = {"error": 0, "cancelled": 1, "success": 2}
    want = {
        "newest": sorted(docs, key=lambda d: (d["started_at"], d["run_id"]), reverse=True),
        "oldest": sorted(docs, key=lambda d: (d["started_at"], d["run_id"])),
        "slowest": sorted(docs, key=lambda d: (-d["duration_ms"], [-ord(c) for c in d["run_id"]])),
        "fastest": sorted(docs, key=lambda d: (d["duration_ms"], [-ord(c) for c in d["run_id"]])),
        "status": sorted(docs, key=lambda d: (rank[d["status"]], [-ord(c) for c in d["started_at"] + d["run_id"]])),
    }
    for source in (LocalSource(seeded[0]), MongoSource(mongo_collection)):
        for order, runs in want.items():
            got = list(source.search_runs(Filters(), "", 7, order)["run_id"])
            assert got == [d["run_id"] for d in runs[:7]], (source.kind, order)
        costly = source.search_runs(Filters(), "", 100, "costliest")["cost_usd"].tolist()
        assert costly == sorted(costly, reverse=True) and len(costly) == len(docs)
        assert source.count_runs(Filters()) == len(docs)
        assert source.count_runs(Filters(statuses=("error",))) == sum(d["status"] == "error" for d in docs) > 0
        assert source.count_runs(Filters(), docs[3]["run_id"][:-1]) == 1
        with pytest.raises(ValueError, match="order must be one of"):
            source.search_runs(Filters(), "", 5, "random'; DROP TABLE agent_runs")


def test_run_detail_has_tags_metadata_and_captured_values(tmp_path: Path) -> None:
    import json

    from .conftest import mongo_of, payload, seed_hostile

    db = tmp_path / "h.db"
    docs = seed_hostile(db)
    for source in (LocalSource(db), MongoSource(mongo_of(docs))):
        for doc in docs:
            detail = source.run_detail(doc["run_id"])
            assert detail is not None
            run = detail.run.iloc[0]
            assert json.loads(run["tags"]) == [payload("tag")]
            assert json.loads(run["metadata"]) == {payload("metakey"): payload("metavalue")}
            inputs = json.loads(run["inputs"])
            assert inputs == doc["inputs"] and inputs["question"] == payload("input")
            assert (run["output"] is None) == (doc["status"] == "error")
            step = detail.steps[detail.steps["name"] == payload("step")].iloc[0]
            assert json.loads(step["metadata"]) == {"note": payload("stepmeta")}


def test_local_kpis_and_run_list_read_indexes_not_rows(seeded: Seeded) -> None:
    """The KPI row (step and error counts included) reads only the runs' covering index, and the newest
    runs come from the started_at order of an index, not a sort of every run."""
    from agentmeter.queries import _kpis
    from agentmeter.queries._dialect import order_by

    with sqlite3.connect(seeded[0]) as conn:
        def plan(sql: str, params: list[Any]) -> str:
            return " | ".join(str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))

        assert "COVERING INDEX ix_runs_rollup2" in plan(*_kpis.sqlite_query(Filters()))
        newest = plan(f"SELECT run_id FROM agent_runs ORDER BY {order_by(RUN_ORDERS['newest'])} LIMIT 5", [])
        assert "TEMP B-TREE FOR ORDER BY" not in newest, newest
