"""The dashboard's Snowflake source returns the same frames as the local store for the same runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import agentmeter
from agentmeter.queries import FRAMES, Filters, SourceUnavailable, open_source
from agentmeter.queries.base import RUN_ORDERS
from agentmeter.queries.local import LocalSource
from agentmeter.queries.snowflake import SnowflakeSource, connection_params, from_env
from agentmeter.sinks.memory import MemorySink
from agentmeter.sinks.sqlite import SQLiteSink

from ._fakesnow import Snowflake, write_ndjson
from ._workload import PRICES, expected, track_workload

SPECIAL = "x' OR '1'='1; DROP VIEW AGENT_RUNS; --"


@pytest.fixture
def seeded(sf: Snowflake, tmp_path: Path) -> Iterator[tuple[LocalSource, SnowflakeSource, list[dict[str, Any]]]]:
    """The same workload in a local store and (through NDJSON files and the pipe's COPY) in fakesnow."""
    memory = MemorySink()
    db = tmp_path / "local.db"
    agentmeter.configure(sinks=[SQLiteSink(db), memory], prices=PRICES, flush_interval=3600)
    track_workload(n_runs=36, seed=5)
    agentmeter.flush()
    docs = memory.documents
    folder = tmp_path / "s3"
    write_ndjson(folder / "part-1.json", docs[:20])
    write_ndjson(folder / "part-2.json", docs[20:])
    write_ndjson(folder / "part-2-redelivered.json", docs[15:25])  # at-least-once delivery
    sf.point_stage_at(folder)
    sf.run_pipe()
    source = SnowflakeSource(database=sf.names.database, schema=sf.names.schema)
    yield LocalSource(db), source, docs
    source.close()


def _filters(docs: list[dict[str, Any]]) -> list[Filters]:
    starts = sorted(d["started_at"] for d in docs)
    return [
        Filters(),
        Filters(since=starts[5], until=starts[-5]),
        Filters(since=starts[10][:10]),  # a date prefix
        Filters(agents=("researcher",)),
        Filters(agents=("writer", SPECIAL)),
        Filters(statuses=("error", "cancelled")),
        Filters(statuses=("success",), agents=("researcher", "writer"), since=starts[3]),
        Filters(agents=(SPECIAL,)),  # nothing matches: empty frames, KPI row of zeros
        Filters(tags=("batch-1",), models=("mini-test",)),
        Filters(tags=(SPECIAL, "batch-0"), statuses=("success", "error")),
    ]


def _assert_same(local: pd.DataFrame, snow: pd.DataFrame, what: str) -> None:
    pd.testing.assert_frame_equal(snow, local, check_exact=False, rtol=1e-9, atol=1e-9, obj=what)


def test_every_frame_equals_the_local_store(seeded: Any) -> None:
    local, snow, docs = seeded
    calls = 0
    for f in _filters(docs):
        for method in FRAMES:
            args: tuple[Any, ...] = () if method == "agents" else (f,)
            _assert_same(getattr(local, method)(*args), getattr(snow, method)(*args), f"{method} {f}")
            calls += 1
        for method in ("status_over_time", "latency_over_time", "runs_per_agent", "cost_over_time"):
            for bucket in ("minute", "hour"):
                _assert_same(getattr(local, method)(f, bucket), getattr(snow, method)(f, bucket),
                             f"{method} {bucket} {f}")
        for order in RUN_ORDERS:
            _assert_same(local.search_runs(f, "", 50, order), snow.search_runs(f, "", 50, order), f"{order} {f}")
        assert local.count_runs(f) == snow.count_runs(f) == len(local.search_runs(f, "", 1000))
        for limit in (1, 3):
            for method in ("slowest_runs", "recent_failures", "expensive_runs"):
                _assert_same(getattr(local, method)(f, limit), getattr(snow, method)(f, limit), method)
    assert calls == len(FRAMES) * 10


def test_kpis_match_python_and_are_not_trivial(seeded: Any) -> None:
    _, snow, docs = seeded
    want = expected(docs)
    k = snow.kpis(Filters()).iloc[0]
    assert k["runs"] == want["runs"] == 36
    assert k["success_rate"] == pytest.approx(want["success_rate"])
    assert 0 < want["success_rate"] < 1 and want["errors"] > 0
    assert k["p50_ms"] == pytest.approx(want["p50_ms"]) and k["p95_ms"] == pytest.approx(want["p95_ms"])
    assert k["total_tokens"] == want["total_tokens"] > 0
    by_model = snow.cost_by_model(Filters())
    got = {m: c for m, c, n in zip(by_model["model"], by_model["cost_usd"], by_model["calls"], strict=True) if n}
    for model, cost in want["cost_by_model"].items():
        assert got[model] == pytest.approx(cost)
    assert snow.kpis(Filters(agents=(SPECIAL,))).iloc[0]["runs"] == 0


def test_search_and_run_detail_match(seeded: Any) -> None:
    local, snow, docs = seeded
    doc = max(docs, key=lambda d: len(d["calls"]))
    for prefix in ("", doc["run_id"][:8], doc["run_id"], "%", "_", SPECIAL):
        _assert_same(local.search_runs(Filters(), prefix), snow.search_runs(Filters(), prefix), prefix)
    lo, sn = local.run_detail(doc["run_id"]), snow.run_detail(doc["run_id"])
    assert lo is not None and sn is not None
    for a, b, name in zip(lo, sn, ("run", "steps", "calls"), strict=True):
        _assert_same(a, b, name)
    assert len(sn.calls) == len(doc["calls"]) > 0
    assert snow.run_detail(SPECIAL) is None
    assert snow.has_runs()


def test_views_still_exist_after_hostile_filters(seeded: Any, sf: Snowflake) -> None:
    _, snow, _ = seeded
    snow.search_runs(Filters(agents=(SPECIAL,)), SPECIAL)
    snow.kpis(Filters(agents=(SPECIAL,), statuses=("error",)))
    assert sf.query(f"SELECT COUNT(*) AS n FROM {sf.table('AGENT_RUNS')}") == [{"n": 36}]


def test_empty_store_gives_empty_frames(sf: Snowflake) -> None:
    snow = SnowflakeSource(database=sf.names.database, schema=sf.names.schema)
    snow.check()
    assert not snow.has_runs()
    for method, spec in FRAMES.items():
        frame = getattr(snow, method)() if method == "agents" else getattr(snow, method)(Filters())
        assert list(frame.columns) == [name for name, _ in spec]
        assert len(frame) == (1 if method == "kpis" else 0), method
    assert snow.kpis(Filters()).iloc[0]["runs"] == 0


def test_missing_views_are_reported_with_a_hint(sf: Snowflake) -> None:
    snow = SnowflakeSource(database=sf.names.database, schema="NOT_DEPLOYED")
    with pytest.raises(SourceUnavailable) as info:
        snow.check()
    assert "agentmeter sql" in info.value.hint and "NOT_DEPLOYED" in str(info.value)


def test_unreachable_account_is_reported_with_a_hint() -> None:
    # the real connector (not patched here) against a closed loopback port: fails fast, no internet
    snow = SnowflakeSource(account="nobody", user="u", password="p", host="127.0.0.1", port=9, protocol="http",
                           login_timeout=5)
    with pytest.raises(SourceUnavailable) as info:
        snow.check()
    assert "SNOWFLAKE_ACCOUNT" in info.value.hint


def test_connection_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert connection_params({}) == {}
    env = {"SNOWFLAKE_ACCOUNT": "acme-xy12345", "SNOWFLAKE_USER": "dash", "SNOWFLAKE_PASSWORD": "s3cret",
           "SNOWFLAKE_ROLE": "AGENTMETER_READER", "SNOWFLAKE_WAREHOUSE": "WH", "SNOWFLAKE_PORT": "8443"}
    assert connection_params(env) == {"account": "acme-xy12345", "user": "dash", "password": "s3cret",
                                      "role": "AGENTMETER_READER", "warehouse": "WH", "port": 8443}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AGENTMETER_SNOWFLAKE_DATABASE", "AM")
    source = open_source("snowflake")
    assert isinstance(source, SnowflakeSource)
    assert (source.database, source.schema) == ("AM", "METRICS")
    assert "s3cret" not in source.describe() and "acme-xy12345" in source.describe()
    named = from_env(connection_name="prod")
    assert named._params["connection_name"] == "prod" and "password" not in named._params
    with pytest.raises(ValueError, match="schema must be"):
        from_env(schema="METRICS; DROP")


def test_real_connector_over_fakesnow_server_gives_the_same_frames(tmp_path: Path) -> None:
    """The real connector end to end over HTTP (its own client-side parameter binding, as in production),
    against fakesnow's server: same frames as the local store, hostile filters included."""
    import fakesnow
    import snowflake.connector

    from agentmeter.snowflake_sql import render, split_statements

    from ._fakesnow import NAMES, is_nop

    memory = MemorySink()
    db = tmp_path / "local.db"
    agentmeter.configure(sinks=[SQLiteSink(db), memory], prices=PRICES, flush_interval=3600)
    track_workload(n_runs=12, seed=9)
    agentmeter.flush()
    write_ndjson(tmp_path / "s3" / "part-1.json", memory.documents)
    with fakesnow.server() as kwargs:
        conn = snowflake.connector.connect(**kwargs)
        script = render(NAMES)
        for stmt in split_statements(script):
            if not is_nop(stmt):  # the server has no nop_regexes: skip the same statements client-side
                conn.cursor().execute(stmt)
        env = Snowflake(conn, NAMES, script)
        env.point_stage_at(tmp_path / "s3")
        env.run_pipe()
        snow = SnowflakeSource(database=NAMES.database, schema=NAMES.schema, **kwargs)
        local = LocalSource(db)
        try:
            for f in (Filters(), Filters(agents=("writer", SPECIAL)), Filters(statuses=("error",))):
                for method in FRAMES:
                    args: tuple[Any, ...] = () if method == "agents" else (f,)
                    _assert_same(getattr(local, method)(*args), getattr(snow, method)(*args), f"{method} {f}")
            assert snow.kpis(Filters()).iloc[0]["runs"] == 12
            _assert_same(local.search_runs(Filters(), SPECIAL), snow.search_runs(Filters(), SPECIAL), "search")
        finally:
            snow.close()
            conn.close()


def test_filter_values_equal_the_local_store(seeded: Any) -> None:
    local, snow, docs = seeded
    for name in ("models", "tags", "sessions", "users", "versions"):
        assert snow.filter_values(name) == local.filter_values(name), name
    assert snow.filter_values("tags") == sorted({t for d in docs for t in d["tags"]}) == ["batch-0", "batch-1", "e2e"]
    assert snow.filter_values("models") == sorted({c["model"] for d in docs for c in d["calls"] if c["model"]})
