"""The rendered Snowflake script: names, validation, execution on fakesnow, and the pipe's COPY."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentmeter import contract
from agentmeter.cli import main
from agentmeter.snowflake_sql import (
    PIPE_NAME,
    RAW_TABLE,
    SnowflakeNames,
    pipe_copy_statements,
    render,
    split_statements,
)

from ._fakesnow import NAMES, Snowflake, is_nop, write_ndjson

TYPED = {"agent_runs": "AGENT_RUNS", "run_steps": "RUN_STEPS", "api_calls": "API_CALLS", "run_scores": "RUN_SCORES"}
DASHBOARD_VIEWS = ("DAILY_HEALTH", "DAILY_RUN_LATENCY", "DAILY_STEP_LATENCY", "DAILY_CALL_LATENCY",
                   "DAILY_USAGE", "DAILY_COST")
SNOWFLAKE_TYPES = {"text": "VARCHAR", "integer": "NUMBER", "real": "FLOAT", "boolean": "BOOLEAN",
                   "timestamp": "TIMESTAMP_TZ", "json": "VARIANT"}


def test_whole_script_runs_on_fakesnow_with_only_unsupported_kinds_skipped(sf: Snowflake) -> None:
    statements = split_statements(sf.script)
    assert sf.executed == statements
    skipped = [s for s in statements if is_nop(s)]
    kinds = {" ".join(s.replace(",", " ").split()[:2]).upper() for s in skipped}
    assert kinds == {"CREATE ROLE", "GRANT USAGE", "GRANT ROLE", "GRANT SELECT", "CREATE STORAGE",
                     "CREATE PIPE", "DESC INTEGRATION", "DESC PIPE"}
    # everything else really ran: the objects exist
    tables = sf.query("SELECT table_name FROM AM_TEST.information_schema.tables WHERE table_schema = 'METRICS'")
    assert tables == [{"table_name": RAW_TABLE}]
    views = sf.query("SELECT table_name FROM AM_TEST.information_schema.views WHERE table_schema = 'METRICS'")
    assert sorted(v["table_name"] for v in views) == sorted((*TYPED.values(), *DASHBOARD_VIEWS))
    stages = sf.query("SHOW STAGES IN SCHEMA AM_TEST.METRICS")
    assert [(s["name"], s["url"]) for s in stages] == [
        ("AGENTMETER_STAGE", "s3://agentmeter-test-bucket/firehose/agentmeter/")]


def test_running_the_script_twice_is_harmless(sf: Snowflake) -> None:
    sf.query(f"INSERT INTO {sf.table(RAW_TABLE)} SELECT PARSE_JSON('{{\"record_type\":\"agent_run\","
             "\"record_id\":\"r1\",\"run_id\":\"r1\",\"schema_version\":1}')")
    sf.deploy()
    assert sf.query(f"SELECT run_id FROM {sf.table('AGENT_RUNS')}") == [{"run_id": "r1"}]


@pytest.mark.parametrize("table", list(TYPED))
def test_typed_views_carry_every_contract_column_with_its_type(sf: Snowflake, table: str) -> None:
    rows = sf.query(
        "SELECT column_name, data_type FROM AM_TEST.information_schema.columns "
        "WHERE table_schema = 'METRICS' AND table_name = %s ORDER BY ordinal_position", (TYPED[table],))
    got = [(r["column_name"].lower(), r["data_type"]) for r in rows]
    want = [c.name for c in contract.TABLES[table]]
    assert [name for name, _ in got] == want
    for (name, data_type), col in zip(got, contract.TABLES[table], strict=True):
        assert data_type.startswith(SNOWFLAKE_TYPES[col.type]) or (
            col.type == "text" and data_type == "TEXT"), (name, data_type, col.type)


def test_pipe_copy_is_the_one_inside_create_pipe() -> None:
    script = render(NAMES)
    (create_pipe,) = [s for s in split_statements(script) if s.upper().startswith("CREATE PIPE")]
    assert "AUTO_INGEST = TRUE" in create_pipe
    assert f"AM_TEST.METRICS.{PIPE_NAME}" in create_pipe
    (copy,) = pipe_copy_statements(script)
    assert create_pipe.endswith(copy)
    assert copy.startswith(f"COPY INTO AM_TEST.METRICS.{RAW_TABLE}")
    assert "@AM_TEST.METRICS.AGENTMETER_STAGE" in copy


def _documents(n: int) -> list[dict[str, object]]:
    docs = []
    for i in range(n):
        run_id = f"run-{i:03d}"
        docs.append({
            "schema_version": 1, "run_id": run_id, "name": "r", "agent": "a", "status": "success",
            "started_at": f"2026-01-0{1 + i % 3}T00:00:00.000000Z", "ended_at": "2026-01-01T00:00:01.000000Z",
            "duration_ms": 1000.0 + i, "tags": [], "metadata": {}, "steps": [],
            "calls": [{"call_id": f"call-{i:03d}", "run_id": run_id, "provider": "openai", "model": "m",
                       "status": "success", "started_at": "2026-01-01T00:00:00.000000Z",
                       "total_tokens": 10, "priced": True, "cost_usd": 0.5, "metadata": {}}],
        })
    return docs


def test_copy_again_loads_nothing_twice(sf: Snowflake, tmp_path: Path) -> None:
    folder = tmp_path / "s3"
    write_ndjson(folder / "part-1.json", _documents(4))
    sf.point_stage_at(folder)
    first = sf.run_pipe()
    assert [(Path(r[0]).name, r[1], r[3]) for r in first] == [("part-1.json", "LOADED", 8)]
    second = sf.run_pipe()
    assert [(Path(r[0]).name, r[1], r[3]) for r in second] == [("part-1.json", "LOAD_SKIPPED", 0)]
    write_ndjson(folder / "part-2.json", _documents(6)[4:])
    third = sf.run_pipe()
    assert sorted((Path(r[0]).name, r[1]) for r in third) == [("part-1.json", "LOAD_SKIPPED"),
                                                              ("part-2.json", "LOADED")]
    assert sf.query(f"SELECT COUNT(*) AS n FROM {sf.table(RAW_TABLE)}") == [{"n": 12}]
    assert sf.query(f"SELECT COUNT(*) AS n FROM {sf.table('AGENT_RUNS')}") == [{"n": 6}]


def test_records_delivered_twice_count_once(sf: Snowflake, tmp_path: Path) -> None:
    folder = tmp_path / "s3"
    docs = _documents(5)
    write_ndjson(folder / "part-1.json", docs)
    write_ndjson(folder / "part-1-retry.json", docs[1:3])  # Firehose re-sent part of a batch
    sf.point_stage_at(folder)
    sf.run_pipe()
    assert sf.query(f"SELECT COUNT(*) AS n FROM {sf.table(RAW_TABLE)}") == [{"n": 14}]
    assert sf.query(f"SELECT COUNT(*) AS n, COUNT(DISTINCT run_id) AS d FROM {sf.table('AGENT_RUNS')}") == [
        {"n": 5, "d": 5}]
    assert sf.query(f"SELECT COUNT(*) AS n, SUM(cost_usd) AS c FROM {sf.table('API_CALLS')}") == [
        {"n": 5, "c": 2.5}]
    health = sf.query(f"SELECT SUM(runs) AS runs FROM {sf.table('DAILY_HEALTH')}")
    assert health == [{"runs": 5}]
    cost = sf.query(f"SELECT model, SUM(cost_usd) AS c, SUM(calls) AS n FROM {sf.table('DAILY_COST')} GROUP BY model")
    assert cost == [{"model": "m", "c": 2.5, "n": 5}]


def test_cache_write_tokens_reach_the_typed_view_and_daily_usage(sf: Snowflake, tmp_path: Path) -> None:
    folder = tmp_path / "s3"
    docs = _documents(3)
    for i, doc in enumerate(docs):
        doc["calls"][0].update(input_tokens=100, cached_input_tokens=10, cache_write_tokens=20 + i)
    write_ndjson(folder / "part-1.json", docs)
    sf.point_stage_at(folder)
    sf.run_pipe()
    calls = sf.query(f"SELECT cache_write_tokens FROM {sf.table('API_CALLS')} ORDER BY call_id")
    assert [r["cache_write_tokens"] for r in calls] == [20, 21, 22]
    usage = sf.query(f"SELECT SUM(cache_write_tokens) AS w, SUM(cached_input_tokens) AS r, "
                     f"SUM(input_tokens) AS i FROM {sf.table('DAILY_USAGE')}")
    assert usage == [{"w": 63, "r": 30, "i": 300}]


def test_raw_line_with_unknown_fields_and_newer_schema_still_loads(sf: Snowflake, tmp_path: Path) -> None:
    folder = tmp_path / "s3"
    folder.mkdir()
    line = {"record_type": "agent_run", "record_id": "r9", "run_id": "r9", "schema_version": 2,
            "a_future_column": {"x": 1}, "status": "success", "started_at": "2026-02-01T00:00:00.000000Z"}
    (folder / "f.json").write_text(json.dumps(line) + "\n")
    sf.point_stage_at(folder)
    sf.run_pipe()
    assert sf.query(f"SELECT run_id, schema_version, status FROM {sf.table('AGENT_RUNS')}") == [
        {"run_id": "r9", "schema_version": 2, "status": "success"}]


# -- names ----------------------------------------------------------------------------------------


def test_render_fills_every_name_and_leaves_no_placeholder() -> None:
    script = render(NAMES)
    assert "{{" not in script and "}}" not in script
    for text in ("AM_TEST.METRICS", "s3://agentmeter-test-bucket/firehose/agentmeter/", "AM_S3", "AM_LOADER",
                 "AM_LOADER_READER", "arn:aws:iam::123456789012:role/snowflake-agentmeter", "WAREHOUSE AM_WH"):
        assert text in script


def test_without_arn_the_integration_is_used_not_created() -> None:
    script = render(SnowflakeNames(bucket="b-1"))
    assert "CREATE STORAGE INTEGRATION" not in script
    assert "GRANT USAGE ON INTEGRATION AGENTMETER_S3 TO ROLE AGENTMETER;" in script
    assert "WAREHOUSE" not in script
    assert "s3://b-1/agentmeter/" in script


def test_prefix_gets_a_trailing_slash() -> None:
    assert SnowflakeNames(bucket="b-1", prefix="a/b").prefix == "a/b/"


BAD = ["x'y", 'x"y', "x;y", "x y", "", "1abc", "a-b", "a.b", "x\ny", "a--b", "ab;DROP TABLE t"]


@pytest.mark.parametrize("option", ["database", "schema", "integration", "role", "reader_role", "warehouse"])
@pytest.mark.parametrize("value", BAD)
def test_invalid_identifiers_are_refused(option: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"--{option.replace('_', '-')} must be"):
        SnowflakeNames(bucket="b-1", **{option: value})


@pytest.mark.parametrize("value", ["b'1", "b;1", "b 1", "B1x", "a", "-ab", "ab..c", "ab/c"])
def test_invalid_buckets_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="--bucket must be"):
        SnowflakeNames(bucket=value)


@pytest.mark.parametrize("value", ["a'b/", "a;b", "a b/", "/abs", "a/../b", "a//b", "", "a\\b"])
def test_invalid_prefixes_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="--prefix must be"):
        SnowflakeNames(bucket="b-1", prefix=value)


def test_invalid_arn_is_refused() -> None:
    with pytest.raises(ValueError, match="--aws-role-arn must"):
        SnowflakeNames(bucket="b-1", aws_role_arn="arn:aws:iam::1:role/x'; DROP")


def test_cli_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sql", "--database", "AM_TEST", "--schema", "METRICS", "--bucket", "agentmeter-test-bucket",
            "--prefix", "firehose/agentmeter/", "--integration", "AM_S3", "--role", "AM_LOADER",
            "--aws-role-arn", "arn:aws:iam::123456789012:role/snowflake-agentmeter", "--warehouse", "AM_WH"]
    assert main(args) == 0
    assert capsys.readouterr().out == render(NAMES)


def test_cli_refuses_a_bad_name_with_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--bucket", "b-1", "--database", "prod; DROP DATABASE x"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "agentmeter sql: error: --database must be a plain Snowflake identifier" in captured.err


def test_templates_keep_semicolons_and_quotes_out_of_comments() -> None:
    # snowsql and other clients split scripts on ';' and may not know that a comment holds one
    from agentmeter._resources import shipped_path
    from agentmeter.snowflake_sql import template_files

    files = template_files()
    assert [p.name for p in files] == ["01_account.sql", "02_ingest.sql", "03_tables.sql", "04_views.sql"]
    assert all(p.parent == shipped_path("sql") for p in files)
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("--"):
                assert ";" not in line and "'" not in line, f"{path.name}:{number}: {line}"


def test_every_statement_ends_with_a_semicolon_on_its_own_terms() -> None:
    script = render(NAMES)
    statements = split_statements(script)
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    assert code.count(";") == len(statements)
    assert not code.rstrip().endswith(tuple("abcdefghijklmnopqrstuvwxyz)")), "last statement lacks ';'"


def test_gzip_objects_load_too(sf: Snowflake, tmp_path: Path) -> None:
    # Firehose with CompressionFormat GZIP writes .gz objects: COMPRESSION = AUTO in the file format reads them
    import gzip

    folder = tmp_path / "s3"
    plain = write_ndjson(tmp_path / "plain.json", _documents(3))
    folder.mkdir()
    (folder / "part-1.gz").write_bytes(gzip.compress(plain.read_bytes()))
    sf.point_stage_at(folder)
    assert [(r[1], r[3]) for r in sf.run_pipe()] == [("LOADED", 6)]
    assert sf.query(f"SELECT COUNT(*) AS n FROM {sf.table('API_CALLS')}") == [{"n": 3}]
