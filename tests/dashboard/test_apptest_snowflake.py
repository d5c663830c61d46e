"""The Streamlit app under AppTest on the Snowflake source: the dashboard's seeded runs, loaded into
fakesnow exactly as Snowpipe loads them (the rendered DDL deployed, the runs' records as an NDJSON object
on the stage, the pipe's COPY run verbatim), read by the real snowflake-connector-python over fakesnow's
HTTP server. Every view shows the numbers the local store shows and the numbers computed in Python;
an empty deployment shows the empty state; an unreachable account or missing views show the error panel.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from agentmeter.queries.local import LocalSource
from agentmeter.queries.snowflake import SnowflakeSource
from agentmeter.snowflake_sql import SnowflakeNames, render, split_statements

from .._servers import free_port
from ..snowflake._fakesnow import NAMES, Snowflake, is_nop, write_ndjson
from ._apptest import APP, SECTIONS, VIEWS, Seeded, app, check_headline, metrics, number, open_section
from .conftest import NASTY_AGENT, aged_docs, expected, score_documents, score_runs
from .test_app_controls import (
    FILTERS,
    check_dimension_filters,
    check_every_range_and_filter,
    check_run_list_sorts_and_filters,
)
from .test_app_rollup_views import check_scores, check_sessions, check_versions

#: a second database on the same server with the DDL deployed and nothing loaded
EMPTY = dataclasses.replace(NAMES, database="AM_EMPTY")
#: a third with the seeded runs spread over 40 days (tests/dashboard/conftest.py aged_docs)
AGED = dataclasses.replace(NAMES, database="AM_AGED")


def _deploy(conn: Any, names: SnowflakeNames) -> Snowflake:
    script = render(names)
    for stmt in split_statements(script):
        if not is_nop(stmt):  # the server takes no nop_regexes: skip exactly those statements client-side
            conn.cursor().execute(stmt)
    return Snowflake(conn, names, script)


@pytest.fixture(scope="module")
def snowflake(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """fakesnow's server with the rendered DDL deployed and the seeded runs loaded through the pipe's
    COPY; yields the real connector's keyword arguments for it."""
    import snowflake.connector

    folder = tmp_path_factory.mktemp("snowflake-stage")
    docs = seeded[1]
    write_ndjson(folder / "part-1.json", docs[: len(docs) // 2])
    write_ndjson(folder / "part-2.json", docs[len(docs) // 2:])
    write_ndjson(folder / "part-2-redelivered.json", docs[len(docs) // 2:])  # at-least-once delivery
    with _fakesnow_server() as kwargs:
        conn = snowflake.connector.connect(**kwargs)
        try:
            env = _deploy(conn, NAMES)
            env.point_stage_at(folder)
            env.run_pipe()
            _deploy(conn, EMPTY)
            yield kwargs
        finally:
            conn.close()


@contextmanager
def _fakesnow_server() -> Iterator[dict[str, Any]]:
    """``fakesnow -s`` in its own process (as the dashboard's Snowflake is another process); yields the
    connector's keyword arguments. Not ``fakesnow.server()``: it works once per interpreter (its first call
    imports the submodule ``fakesnow.server``, which then shadows the function), and tests/snowflake calls it.
    """
    port = free_port()
    exe = Path(sys.executable).with_name("fakesnow")
    proc = subprocess.Popen([str(exe), "-s", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # uvicorn announces the listening socket once it accepts connections
            seen.append(line)
            if "running on" in line.lower():
                break
        else:
            raise RuntimeError(f"fakesnow server exited ({proc.wait()}): {''.join(seen)[-2000:]}")
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe drained
        yield {"user": "fake", "password": "snow", "account": "fakesnow", "host": "127.0.0.1", "port": port,
               "protocol": "http", "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
               "network_timeout": 5}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def aged_snowflake(snowflake: dict[str, Any], seeded: Seeded,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SnowflakeSource, list[dict[str, Any]]]]:
    """The aged runs loaded through the pipe's COPY into their own database; (source, documents)."""
    from snowflake import connector

    docs = aged_docs(seeded[1])
    folder = tmp_path_factory.mktemp("snowflake-aged")
    write_ndjson(folder / "part-1.json", docs)
    conn = connector.connect(**snowflake)
    try:
        env = _deploy(conn, AGED)
        env.point_stage_at(folder)
        env.run_pipe()
    finally:
        conn.close()
    source = SnowflakeSource(database=AGED.database, schema=AGED.schema, **snowflake)
    yield source, docs
    source.close()


@pytest.mark.parametrize("view", VIEWS)
def test_snowflake_every_time_range_and_filter(view: str, aged_snowflake: tuple[SnowflakeSource, Any]) -> None:
    # the agent and status filters together, model and tag together (the local store and MongoDB also run
    # every range unfiltered)
    check_every_range_and_filter(*aged_snowflake, view, filters=FILTERS[1:])


def test_snowflake_run_list_sorts_and_filters(aged_snowflake: tuple[SnowflakeSource, Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    check_run_list_sorts_and_filters(*aged_snowflake, monkeypatch)


@pytest.mark.parametrize("view", VIEWS)
def test_snowflake_session_user_version_filters(view: str, aged_snowflake: tuple[SnowflakeSource, Any]) -> None:
    check_dimension_filters(*aged_snowflake, view)


#: a fourth with the aged runs and their scores
SCORED = dataclasses.replace(NAMES, database="AM_SCORED")


@pytest.fixture(scope="module")
def scored_snowflake(snowflake: dict[str, Any], seeded: Seeded, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[tuple[SnowflakeSource, list[dict[str, Any]], list[dict[str, Any]]]]:
    """The aged runs and their scores (conftest.score_runs) loaded through the pipe's COPY; (source,
    documents, score rows)."""
    from snowflake import connector

    docs = aged_docs(seeded[1])
    folder = tmp_path_factory.mktemp("snowflake-scored")
    scores = score_runs(folder / "scores.db", docs)
    write_ndjson(folder / "stage" / "part-1.json", [*docs, *score_documents(scores)])
    conn = connector.connect(**snowflake)
    try:
        env = _deploy(conn, SCORED)
        env.point_stage_at(folder / "stage")
        env.run_pipe()
    finally:
        conn.close()
    source = SnowflakeSource(database=SCORED.database, schema=SCORED.schema, **snowflake)
    yield source, docs, scores
    source.close()


def test_snowflake_sessions_versions_and_scores_views(scored_snowflake: Any) -> None:
    source, docs, scores = scored_snowflake
    check_sessions(source, docs)
    check_versions(source, docs, scores)
    check_scores(source, docs, scores)


@pytest.fixture
def snow(snowflake: dict[str, Any]) -> Iterator[SnowflakeSource]:
    source = SnowflakeSource(database=NAMES.database, schema=NAMES.schema, **snowflake)
    yield source
    source.close()


def _tables(at: AppTest) -> list[pd.DataFrame]:
    return [pd.DataFrame(d.value).reset_index(drop=True) for d in at.dataframe]


def _page(source: Any, view: str, agents: tuple[str, ...] = ()) -> AppTest:
    at = app(source).run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    if agents:
        at.sidebar.multiselect(key="agents").set_value(list(agents)).run()
    if view != "Health":
        at.sidebar.radio(key="view").set_value(view).run()
    assert not at.exception, (view, [e.value for e in at.exception])
    # the only error a page may show is the picked run's own error (Run explorer), never the error panel
    assert all("Cannot reach" not in e.value for e in at.error), (view, [e.value for e in at.error])
    return at


# Scores: these runs are not scored (scored ones: test_snowflake_sessions_versions_and_scores_views)
@pytest.mark.parametrize("view", [v for v in VIEWS if v != "Scores"])
def test_snowflake_shows_what_the_local_store_shows(view: str, snow: SnowflakeSource, seeded: Seeded) -> None:
    """Same metrics (as displayed), same tables, same charts' row counts as the local store, per view, in
    every tab of the view."""
    local_at = _page(LocalSource(seeded[0]), view)
    snow_at = _page(snow, view)
    local_metrics, snow_metrics = metrics(local_at), metrics(snow_at)
    assert snow_metrics == local_metrics
    assert [e.value for e in snow_at.error] == [e.value for e in local_at.error]
    assert len(snow_metrics) >= (5 if view == "Run explorer" else 6)
    local_tables: list[pd.DataFrame] = []
    snow_tables: list[pd.DataFrame] = []
    charts = []
    for label in SECTIONS[view][1]:
        for at in (local_at, snow_at):
            open_section(at, label)
            assert not at.exception, (view, label, [e.value for e in at.exception])
        local_tables += _tables(local_at)
        snow_tables += _tables(snow_at)
        charts.append((len(snow_at.get("vega_lite_chart")), len(local_at.get("vega_lite_chart"))))
    assert len(snow_tables) == len(local_tables) > 0
    for i, (lo, sn) in enumerate(zip(local_tables, snow_tables, strict=True)):
        pd.testing.assert_frame_equal(sn, lo, check_exact=False, rtol=1e-9, atol=1e-12, obj=f"{view} table {i}")
    assert all(sn == lo for sn, lo in charts) and sum(lo for _, lo in charts) > 0, charts
    if view != "Run explorer":
        check_headline(snow_metrics, expected(seeded[1]), error_rate_and_p50=False)


def test_snowflake_headline_equals_python_for_hostile_agent_filter(snow: SnowflakeSource, seeded: Seeded) -> None:
    at = _page(snow, "Health", agents=(NASTY_AGENT,))
    want = expected(seeded[1], (NASTY_AGENT,))
    assert 0 < want["runs"] < len(seeded[1])
    check_headline(metrics(at), want, error_rate_and_p50=False)
    assert metrics(at) == metrics(_page(LocalSource(seeded[0]), "Health", agents=(NASTY_AGENT,)))


def test_snowflake_status_filter_shows_only_those_runs(snow: SnowflakeSource, seeded: Seeded) -> None:
    at = app(snow).run()
    at.sidebar.multiselect(key="statuses").select("error").run()
    assert not at.exception and not at.error
    shown = metrics(at)
    assert int(number(shown["Runs"])) == sum(1 for d in seeded[1] if d["status"] == "error") > 0
    assert shown["Success rate"] == "0.00%"


def test_snowflake_cost_per_model_equals_python(snow: SnowflakeSource, seeded: Seeded) -> None:
    at = _page(snow, "Cost")
    by_model = at.dataframe[0].value
    want = expected(seeded[1])["cost_by_model"]
    got = {label: cost for label, cost in zip(by_model["model"], by_model["cost_usd"], strict=True)}
    assert got == pytest.approx({f"{p} · {m or '(none)'}": v for (p, m), v in want.items()})
    assert any("no known price" in w.value for w in at.warning)


def test_empty_snowflake_deployment_shows_how_to_make_data(snowflake: dict[str, Any]) -> None:
    source = SnowflakeSource(database=EMPTY.database, schema=EMPTY.schema, **snowflake)
    try:
        at = app(source).run()
    finally:
        source.close()
    assert not at.exception and not at.error
    assert any("agentmeter demo" in i.value for i in at.info)
    assert not at.metric


def test_snowflake_without_the_views_shows_what_to_check(snowflake: dict[str, Any]) -> None:
    source = SnowflakeSource(database=NAMES.database, schema="NOT_DEPLOYED", **snowflake)
    try:
        at = app(source).run()
    finally:
        source.close()
    assert not at.exception
    assert any("Cannot reach the snowflake source" in e.value and "NOT_DEPLOYED" in e.value for e in at.error)
    assert any("agentmeter sql" in m.value for m in at.markdown)
    assert not at.metric


def test_unreachable_snowflake_from_the_environment_shows_what_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """As `agentmeter dashboard --source snowflake` runs it: the standard SNOWFLAKE_* variables, the real
    connector, an account endpoint on a loopback port nobody listens on."""
    port = free_port()  # an account endpoint nobody listens on
    for key, value in {"AGENTMETER_DASHBOARD_SOURCE": "snowflake", "SNOWFLAKE_ACCOUNT": "unreachable-acct",
                       "SNOWFLAKE_USER": "dash", "SNOWFLAKE_PASSWORD": "not-shown-anywhere",
                       "SNOWFLAKE_HOST": "127.0.0.1", "SNOWFLAKE_PORT": str(port),
                       "SNOWFLAKE_PROTOCOL": "http"}.items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("Cannot reach the snowflake source" in e.value for e in at.error)
    assert any("SNOWFLAKE_ACCOUNT" in m.value for m in at.markdown)
    page = " ".join([*(e.value for e in at.error), *(m.value for m in at.markdown)])
    assert "not-shown-anywhere" not in page
    assert not at.metric
