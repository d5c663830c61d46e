"""End to end: runs tracked through the public API -> FirehoseSink -> moto's HTTP server -> S3 objects ->
the pipe's COPY on fakesnow -> typed views and dashboard views, checked against Python."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import boto3
import pytest

import agentmeter
from agentmeter._percentile import percentile_cont
from agentmeter.queries import Filters
from agentmeter.queries.snowflake import SnowflakeSource
from agentmeter.sinks.firehose import FirehoseSink
from agentmeter.sinks.memory import MemorySink
from agentmeter.snowflake_sql import RAW_TABLE, SnowflakeNames

from ._fakesnow import Snowflake, mirror_prefix
from ._workload import PRICES, expected, track_workload
from .conftest import REGION


def _by(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(str(r[k]) if k == "day" else r[k] for k in keys): r for r in rows}


def _python_groups(docs: list[dict[str, Any]]) -> dict[str, Any]:
    runs: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for d in docs:
        runs[(d["started_at"][:10], d["agent"])].append(d)
    cost: dict[str | None, float] = defaultdict(float)
    tokens: dict[str | None, int] = defaultdict(int)
    calls: dict[str | None, int] = defaultdict(int)
    for d in docs:
        for c in d["calls"]:
            calls[c["model"]] += 1
            if c["priced"]:
                cost[c["model"]] += c["cost_usd"]
            tokens[c["model"]] += c["total_tokens"] or 0
    return {"runs": runs, "cost": cost, "tokens": tokens, "calls": calls}


def _check_views(sf: Snowflake, docs: list[dict[str, Any]]) -> None:
    """Every number the dashboard views hold equals the one computed in Python from ``docs``."""
    want = expected(docs)
    py = _python_groups(docs)

    overall = sf.query(
        "SELECT COUNT(*) AS runs, COUNT_IF(status = 'success')::FLOAT / COUNT(*) AS success_rate, "
        "PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50, "
        "PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95, "
        f"SUM(total_tokens) AS tokens FROM {sf.table('AGENT_RUNS')}")[0]
    assert overall["runs"] == want["runs"]
    assert overall["success_rate"] == pytest.approx(want["success_rate"], rel=1e-12)
    assert overall["p50"] == pytest.approx(want["p50_ms"], rel=1e-12)
    assert overall["p95"] == pytest.approx(want["p95_ms"], rel=1e-12)
    assert overall["tokens"] == want["total_tokens"]
    assert sf.query(f"SELECT COUNT(*) AS n FROM {sf.table('RUN_STEPS')}")[0]["n"] == want["steps"]
    assert sf.query(f"SELECT COUNT(*) AS n FROM {sf.table('API_CALLS')}")[0]["n"] == want["calls"]

    health = _by(sf.query(f"SELECT * FROM {sf.table('DAILY_HEALTH')}"), "day", "agent")
    latency = _by(sf.query(f"SELECT * FROM {sf.table('DAILY_RUN_LATENCY')}"), "day", "agent")
    assert set(health) == set(latency) == set(py["runs"])
    assert len({day for day, _ in health}) >= 3  # the workload spans several UTC days
    for key, group in py["runs"].items():
        n = len(group)
        ok = sum(r["status"] == "success" for r in group)
        assert (health[key]["runs"], health[key]["success_runs"]) == (n, ok), key
        assert health[key]["error_runs"] == sum(r["status"] == "error" for r in group)
        assert health[key]["cancelled_runs"] == sum(r["status"] == "cancelled" for r in group)
        assert health[key]["success_rate"] == pytest.approx(ok / n, rel=1e-12)
        durations = [r["duration_ms"] for r in group]
        for col, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            assert latency[key][col] == pytest.approx(percentile_cont(durations, q), rel=1e-12), (key, col)

    cost = {r["model"]: r for r in sf.query(
        f"SELECT model, SUM(calls) AS calls, SUM(unpriced_calls) AS unpriced, SUM(cost_usd) AS cost_usd "
        f"FROM {sf.table('DAILY_COST')} GROUP BY model")}
    usage = {r["model"]: r for r in sf.query(
        f"SELECT model, SUM(total_tokens) AS total_tokens FROM {sf.table('DAILY_USAGE')} GROUP BY model")}
    assert set(cost) == set(usage) == set(py["calls"])
    assert len([m for m in py["cost"] if py["cost"][m] > 0]) == 2  # both priced models were used
    for model in py["calls"]:
        assert cost[model]["calls"] == py["calls"][model]
        if model in py["cost"]:
            assert cost[model]["cost_usd"] == pytest.approx(py["cost"][model], rel=1e-9), model
        else:
            assert cost[model]["cost_usd"] is None and cost[model]["unpriced"] == py["calls"][model]
        assert (usage[model]["total_tokens"] or 0) == py["tokens"][model], model

    kpis = SnowflakeSource(database=sf.names.database, schema=sf.names.schema).kpis(Filters()).iloc[0]
    assert (kpis["runs"], kpis["total_tokens"]) == (want["runs"], want["total_tokens"])
    assert kpis["p95_ms"] == pytest.approx(want["p95_ms"], rel=1e-12)


def test_runs_flow_from_the_api_through_firehose_and_the_pipe_into_the_views(
    sf: Snowflake, names: SnowflakeNames, moto_url: str, firehose_stream: str, tmp_path: Path
) -> None:
    # the stage the script created reads exactly where the delivery stream writes
    stage = sf.query(f"SHOW STAGES IN SCHEMA {names.database}.{names.schema}")[0]
    assert stage["url"] == f"s3://{names.bucket}/{names.prefix}"

    firehose = FirehoseSink(firehose_stream, region=REGION, endpoint_url=moto_url)
    firehose.preferred_batch_size = None  # batches of 7 runs: several PutRecordBatch calls, several S3 objects
    memory = MemorySink()
    agentmeter.configure(sinks=[firehose, memory], prices=PRICES, flush_interval=3600, batch_size=7)
    track_workload(n_runs=40, seed=3)
    result = agentmeter.flush()
    assert not result.timed_out
    docs = memory.documents
    assert len(docs) == 40
    records = sum(1 + len(d["steps"]) + len(d["calls"]) for d in docs)
    assert firehose.stats["records"] == records and firehose.stats["failed_records"] == 0

    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    folder = tmp_path / "stage"
    landed = mirror_prefix(s3, names.bucket, names.prefix, folder)
    assert len(landed) >= 2  # one object per PutRecordBatch call
    sf.point_stage_at(folder)
    loads = sf.run_pipe()
    assert {r[1] for r in loads} == {"LOADED"} and sum(r[3] for r in loads) == records
    _check_views(sf, docs)

    # COPY again (Snowpipe re-notified, or ALTER PIPE ... REFRESH): nothing is loaded twice
    again = sf.run_pipe()
    assert {r[1] for r in again} == {"LOAD_SKIPPED"} and sum(r[3] for r in again) == 0
    assert sf.query(f"SELECT COUNT(*) AS n FROM {sf.table(RAW_TABLE)}")[0]["n"] == records

    # Firehose delivers some records a second time (a retried batch lands in a new object)
    assert firehose.write(docs[5:12]).failed == {}
    new = mirror_prefix(s3, names.bucket, names.prefix, folder)
    assert len(new) >= 1
    loads = sf.run_pipe()
    duplicated = sum(1 + len(d["steps"]) + len(d["calls"]) for d in docs[5:12])
    assert sum(r[3] for r in loads) == duplicated
    assert sf.query(f"SELECT COUNT(*) AS n FROM {sf.table(RAW_TABLE)}")[0]["n"] == records + duplicated
    _check_views(sf, docs)  # ... and is counted once
