"""Drill-down by clicking, under AppTest (a click is a selection written into the element's state, as the
browser sends it): a row of any run table opens that run in the Run explorer, a bar sets its filter, a
brushed time range becomes the time range with its exact times. The real clicks in Chromium:
test_browser_drilldown.py."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from agentmeter.queries.local import LocalSource
from agentmeter.queries.mongodb import MongoSource

from ._apptest import SECTIONS, app, metrics, number, open_section
from .conftest import in_range, mongo_of
from .test_app_controls import _filtered, page_problems

Docs = list[dict[str, Any]]


def click_row(at: AppTest, key: str, row: int) -> None:
    at.session_state[key] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    at.run()


def click_bar(at: AppTest, key: str, field: str, value: Any) -> None:
    at.session_state[key] = {"selection": {"pick": [{field: value}]}}
    at.run()


def _table(at: AppTest, key: str) -> Any:
    (df,) = [d.value for d in at.dataframe if d.key == key]
    return df


@pytest.fixture(params=["local", "mongodb"])
def source(request: pytest.FixtureRequest, scored: tuple[Path, Docs, list[dict[str, Any]]]) -> tuple[Any, Docs]:
    db, docs, scores = scored
    return (LocalSource(db) if request.param == "local" else MongoSource(mongo_of(docs, scores))), docs


@pytest.fixture
def local(scored: tuple[Path, Docs, list[dict[str, Any]]]) -> tuple[Any, Docs]:
    """The local store: what a click on a chart does is the page's, the same for every source (the filters
    it sets are tested on every source in test_app_controls.py)."""
    return LocalSource(scored[0]), scored[1]


@pytest.mark.parametrize(("view", "section", "table"), [
    ("Health", "Recent failures", "recent_failures"), ("Performance", "Slowest runs", "slowest_runs"),
    ("Cost", "Most expensive runs", "expensive_runs"), ("Run explorer", None, "run_list")])
def test_a_row_of_a_run_table_opens_that_run(view: str, section: str | None, table: str,
                                            source: tuple[Any, Docs]) -> None:
    docs = {d["run_id"]: d for d in source[1]}
    at = app(source[0]).run()
    at.sidebar.radio(key="view").set_value(view).run()
    if section is not None:
        assert not [d for d in at.dataframe if d.key == table] or section == SECTIONS[view][1][0]
        open_section(at, section)
    rows = _table(at, table)
    assert len(rows) > 2
    run_id = str(rows["run_id"].iloc[2])
    if view == "Run explorer":
        assert at.selectbox(key="run_pick").value != run_id  # the newest is open before the click
    click_row(at, table, 2)
    assert page_problems(at) == []
    assert at.sidebar.radio(key="view").value == "Run explorer"
    assert at.selectbox(key="run_pick").value == run_id
    tiles = metrics(at)
    assert tiles["Status"] == docs[run_id]["status"]
    assert number(tiles["Duration"]) == pytest.approx(docs[run_id]["duration_ms"], rel=5.1e-4)
    at.run()  # the click is not applied again: another run can be picked
    other = next(r for r in docs if r != run_id)
    at.selectbox(key="run_pick").set_value(other).run()
    assert at.selectbox(key="run_pick").value == other


#: (view, the tab it is in (None: the headline), chart key, field clicked, value, sidebar filter it sets)
BARS = (
    ("Health", None, "health_status", "status", "error", "statuses"),
    ("Performance", "API latency by provider and model", "performance_api", "model_name", "mini-test", "models"),
    ("Usage", None, "usage_agents", "agent", "writer", "agents"),
    ("Usage", "Tokens by model", "usage_tokens", "model_name", "gpt-test", "models"),
    ("Cost", "By model", "cost_by_model", "model_name", "no-price-model", "models"),
    ("Cost", "By agent", "cost_by_agent", "agent", "researcher", "agents"),
    ("Sessions", "Costliest sessions", "sessions_cost", "session_id", "session-2", "sessions"),
    ("Versions", "Latency and success rate", "versions_p95", "version", "1.1", "versions"),
    ("Versions", "Latency and success rate", "versions_success", "version", "1.0", "versions"),
)


def _drawn(at: AppTest, key: str) -> bool:
    return any(key in c.proto.id for c in at.get("vega_lite_chart"))


@pytest.mark.parametrize(("view", "section", "key", "field", "value", "filter_key"), BARS)
def test_a_bar_sets_its_filter(view: str, section: str | None, key: str, field: str, value: str, filter_key: str,
                               local: tuple[Any, Docs]) -> None:
    source = local
    at = app(source[0]).run()
    at.sidebar.radio(key="view").set_value(view).run()
    if section is not None and section != SECTIONS[view][1][0]:
        assert not _drawn(at, key), "a closed tab draws nothing"
        open_section(at, section)
    assert _drawn(at, key), key
    click_bar(at, key, field, value)
    assert page_problems(at) == []
    assert at.sidebar.radio(key="view").value == view
    if section is not None:  # the click reran the page with its tab still open
        assert at.session_state[SECTIONS[view][0]] == section and _drawn(at, key)
    assert at.sidebar.multiselect(key=filter_key).value == [value]
    want = _filtered(source[1], {filter_key: (value,)})
    assert 0 < len(want) < len(source[1])
    assert int(number(metrics(at)["Runs"])) == len(want)
    click_bar(at, key, field, "(none)")  # the label of a missing value filters nothing
    assert at.sidebar.multiselect(key=filter_key).value == [value]


def _ms(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


@pytest.mark.parametrize(("view", "key"), [("Health", "health_status"), ("Performance", "performance_latency"),
                                           ("Usage", "usage_agents"), ("Cost", "cost_over_time")])
def test_brushing_a_time_chart_sets_the_time_range(view: str, key: str, local: tuple[Any, Docs]) -> None:
    source = local
    docs = sorted(source[1], key=lambda d: d["started_at"])
    low, high = docs[3]["started_at"], docs[12]["started_at"]  # hours apart (the runs span 40 days)
    at = app(source[0]).run()
    at.sidebar.radio(key="view").set_value(view).run()
    at.session_state[key] = {"selection": {"brush": {"bucket": [_ms(low), _ms(high)]}}}
    at.run()
    assert page_problems(at) == []
    assert at.sidebar.selectbox(key="time_range").value == "Custom"
    since = datetime.fromisoformat(low.replace("Z", "+00:00"))
    until = datetime.fromisoformat(high.replace("Z", "+00:00"))
    assert any(c.value == f"From the chart: {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"
               for c in at.sidebar.caption)
    # Vega's brush is in milliseconds: the runs from its first to its last millisecond
    want = in_range(source[1], since.replace(microsecond=since.microsecond // 1000 * 1000),
                    until.replace(microsecond=until.microsecond // 1000 * 1000))
    assert 3 <= len(want) < len(docs)
    assert int(number(metrics(at)["Runs"])) == len(want)
    at.sidebar.selectbox(key="time_range").set_value("All time").run()  # any other range ends it
    assert int(number(metrics(at)["Runs"])) == len(docs)
    assert not any(c.value.startswith("From the chart") for c in at.sidebar.caption)
    at.sidebar.selectbox(key="time_range").set_value("Custom").run()  # the brush is not applied again
    assert not any(c.value.startswith("From the chart") for c in at.sidebar.caption)


def test_a_run_opened_from_another_view_stays_open_outside_the_list(local: tuple[Any, Docs],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from agentmeter.dashboard import explorer

    monkeypatch.setattr(explorer, "RUN_LIST_LIMIT", 2)  # the list holds the 2 newest runs only
    docs = {d["run_id"]: d for d in local[1]}
    newest = sorted(docs, key=lambda r: (docs[r]["started_at"], r), reverse=True)[:2]
    at = app(local[0]).run()
    failures = list(_table(at, "recent_failures")["run_id"])
    row = next(i for i, r in enumerate(failures) if r not in newest)
    click_row(at, "recent_failures", row)
    assert at.selectbox(key="run_pick").value == failures[row]
    assert f"{failures[row]} (opened)" in at.selectbox(key="run_pick").options
    at.run()  # another rerun (any click): still open
    assert page_problems(at) == []
    assert at.selectbox(key="run_pick").value == failures[row]
    assert metrics(at)["Status"] == docs[failures[row]]["status"] == "error"
