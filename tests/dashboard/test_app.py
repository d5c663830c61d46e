"""The Streamlit app under AppTest: the same seeded runs through each source show the same numbers, equal
to values computed in Python; every view renders; empty state; unreachable sources; hostile filters."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agentmeter.queries.local import LocalSource
from agentmeter.queries.mongodb import MongoSource

from .._servers import free_port
from ._apptest import VIEWS, Seeded, app, check_headline, metrics, number, open_section
from .conftest import NASTY_AGENT, expected


@pytest.fixture(params=["local-env", "local", "mongodb"])
def source(request: pytest.FixtureRequest, seeded: Seeded, mongo_collection: Any,
           monkeypatch: pytest.MonkeyPatch) -> Any:
    """None = the app opens the store named by the environment (as `agentmeter dashboard` does)."""
    if request.param == "local-env":
        monkeypatch.setenv("AGENTMETER_DB", str(seeded[0]))
        return None
    return LocalSource(seeded[0]) if request.param == "local" else MongoSource(mongo_collection)


def test_every_source_shows_the_python_numbers_in_every_view(source: Any, seeded: Seeded) -> None:
    at = app(source).run()
    assert not at.exception and not at.error
    want = expected(seeded[1])
    check_headline(metrics(at), want)
    assert at.get("vega_lite_chart"), "Health draws the status chart"
    for view in VIEWS[1:]:
        at.sidebar.radio(key="view").set_value(view).run()
        assert not at.exception, (view, [e.value for e in at.exception])
        if view == "Scores":  # these runs are not scored: the view says so (scored runs: test_app_rollup_views)
            assert any(c.value.startswith("No scores") for c in at.caption), view
        else:
            assert at.get("vega_lite_chart"), view
        if view != "Run explorer":
            assert int(number(metrics(at)["Runs"])) == want["runs"]
    # Run explorer: the newest run is picked and drawn as a waterfall with its steps and calls
    newest = max(seeded[1], key=lambda d: (d["started_at"], d["run_id"]))
    assert at.selectbox(key="run_pick").value == newest["run_id"]
    assert metrics(at)["Status"] == newest["status"]
    # the search results and the open tab's table (about this run) only; each other tab when opened
    assert [list(d.value.columns) for d in at.dataframe][1:] == [["key", "value"]]
    open_section(at, "Steps")
    (steps,) = [d.value for d in at.dataframe if "step_id" in d.value and "call_id" not in d.value]
    assert len(steps) == len(newest["steps"]) and len(at.dataframe) == 2
    open_section(at, "API calls")
    (calls,) = [d.value for d in at.dataframe if "call_id" in d.value]
    assert len(calls) == len(newest["calls"]) and len(at.dataframe) == 2


def test_cost_view_shows_cost_per_model_equal_to_python(seeded: Seeded) -> None:
    at = app(LocalSource(seeded[0])).run()
    at.sidebar.radio(key="view").set_value("Cost").run()
    assert not at.exception
    assert at.session_state["cost_section"] == "By model"  # the tab open by default
    (by_model,) = [d.value for d in at.dataframe]  # "By model" table: provider · model labels
    want = expected(seeded[1])["cost_by_model"]
    got = {label: cost for label, cost in zip(by_model["model"], by_model["cost_usd"], strict=True)}
    assert got == pytest.approx({f"{p} · {m or '(none)'}": v for (p, m), v in want.items()})
    assert any("no known price" in w.value for w in at.warning)


def test_agent_filter_with_quotes_and_sql_changes_only_the_filter(seeded: Seeded) -> None:
    db, docs = seeded
    at = app(LocalSource(db)).run()
    at.sidebar.multiselect(key="agents").select(NASTY_AGENT).run()
    assert not at.exception and not at.error
    check_headline(metrics(at), expected(docs, (NASTY_AGENT,)))
    at.sidebar.radio(key="view").set_value("Run explorer").run()
    at.text_input(key="run_id_prefix").input("' OR '1'='1' --").run()
    assert not at.exception
    assert any("No run matches" in i.value for i in at.info)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM agent_runs").fetchone()[0] == len(docs)


def test_status_filter_shows_only_those_runs(seeded: Seeded, mongo_collection: Any) -> None:
    docs = seeded[1]
    for source in (LocalSource(seeded[0]), MongoSource(mongo_collection)):
        at = app(source).run()
        at.sidebar.multiselect(key="statuses").select("error").run()
        shown = metrics(at)
        assert int(number(shown["Runs"])) == sum(1 for d in docs if d["status"] == "error") > 0
        assert shown["Success rate"] == "0.00%"


def test_empty_store_shows_how_to_make_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMETER_DB", str(tmp_path / "never-written.db"))
    at = app().run()
    assert not at.exception and not at.error
    assert any("agentmeter demo" in i.value for i in at.info)
    assert not at.metric


def test_empty_mongodb_collection_shows_the_empty_state() -> None:
    import mongomock

    at = app(MongoSource(mongomock.MongoClient()["agentmeter"]["agent_metadata"])).run()
    assert any("agentmeter demo" in i.value for i in at.info)


def test_unreadable_local_store_shows_what_to_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"definitely not sqlite " * 200)
    monkeypatch.setenv("AGENTMETER_DB", str(bad))
    at = app().run()
    assert not at.exception
    assert any("Cannot reach the local source" in e.value for e in at.error)
    assert any("What to check" in m.value for m in at.markdown)


def test_unreachable_mongodb_shows_what_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # a port nobody listens on
    monkeypatch.setenv("AGENTMETER_DASHBOARD_SOURCE", "mongodb")
    monkeypatch.setenv("AGENTMETER_MONGODB_URI", f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=300")
    at = app().run()  # the real pymongo driver, failing server selection
    assert not at.exception
    assert any("Cannot reach the mongodb source" in e.value for e in at.error)
    assert any("AGENTMETER_MONGODB_URI" in m.value for m in at.markdown)


def test_mongodb_without_uri_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMETER_DASHBOARD_SOURCE", "mongodb")
    at = app().run()
    assert any("AGENTMETER_MONGODB_URI is not set" in e.value for e in at.error)


def test_new_runs_show_after_refresh_data_and_the_button_says_how_long_results_are_cached(tmp_path: Path) -> None:
    from agentmeter.dashboard.views import CACHE_TTL

    from .conftest import seed_runs

    db = tmp_path / "fresh.db"  # a store of its own: no other test's cached results
    seed_runs(db, n=6)
    at = app(LocalSource(db)).run()
    assert int(number(metrics(at)["Runs"])) == 6
    seed_runs(db, n=3, seed=4)  # an agent writes more runs while the page is open
    at.run()
    assert int(number(metrics(at)["Runs"])) == 6  # within the cache's time: the numbers read before
    (refresh,) = [b for b in at.sidebar.button if b.label == "Refresh data"]
    assert f"cached for {CACHE_TTL} seconds" in (refresh.help or "")
    refresh.click().run()  # the run the click starts reads the store again, sidebar and view alike
    assert int(number(metrics(at)["Runs"])) == 9
