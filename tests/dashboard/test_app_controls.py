"""Every sidebar control in every view, under AppTest, on runs spread over 40 days (local store and MongoDB):
each time range (Custom with dates, a half-picked range, a range with no runs) x agent and status filters
shows the runs it should, and no view raises. The Run explorer on runs with and without calls and steps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

import agentmeter
from agentmeter import track_call, track_run, track_step
from agentmeter.queries.local import LocalSource
from agentmeter.queries.mongodb import MongoSource
from agentmeter.sinks import MemorySink, SQLiteSink

from ._apptest import SECTIONS, VIEWS, app, metrics, number, open_section
from .conftest import NASTY_AGENT, NASTY_TAG, in_range, mongo_of

Docs = list[dict[str, Any]]
#: the sidebar's time ranges and what each keeps (Custom is set to dates below)
RANGES: dict[str, timedelta | None] = {
    "Last hour": timedelta(hours=1), "Last 24 hours": timedelta(hours=24), "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30), "All time": None,
}
#: the sidebar's multi-selects picked together: key -> values (keys as Filters and the widgets name them)
FILTERS: tuple[dict[str, tuple[str, ...]], ...] = (
    {},
    {"agents": ("researcher", NASTY_AGENT), "statuses": ("success", "error")},
    {"models": ("mini-test", "no-price-model"), "tags": (NASTY_TAG,)},
)
#: every multi-select of the sidebar
SELECTS = ("agents", "statuses", "models", "tags", "sessions", "users", "versions")
#: the run field each filter matches
_RUN_FIELD = {"agents": "agent", "statuses": "status", "sessions": "session_id", "users": "user_id",
              "versions": "version"}


def page_problems(at: AppTest) -> list[str]:
    """Tracebacks and error panels on the page (a run's own error in the Run explorer is not one)."""
    shown = [e.value for e in at.exception]
    shown += [e.value for e in at.error
              if e.value.startswith("**Cannot reach") or any(e.value.startswith(f"**{v} failed:**") for v in VIEWS)]
    return shown


def shown_runs(at: AppTest, view: str) -> int:
    """How many runs the page says match."""
    if view != "Run explorer":
        return int(number(metrics(at)["Runs"]))
    return int(number(metrics(at)["Matching runs"]))


def keeps(doc: dict[str, Any], picked: dict[str, tuple[str, ...]]) -> bool:
    """Whether the run passes the sidebar's filters ``picked``, computed from its document."""
    for name, values in picked.items():
        if not values:
            continue
        if name == "models":
            if not any(c["model"] in values for c in doc["calls"]):
                return False
        elif name == "tags":
            if not set(doc["tags"]) & set(values):
                return False
        elif doc[_RUN_FIELD[name]] not in values:
            return False
    return True


def _filtered(docs: Docs, picked: dict[str, tuple[str, ...]]) -> Docs:
    return [d for d in docs if keeps(d, picked)]


def pick_filters(at: AppTest, picked: dict[str, tuple[str, ...]]) -> None:
    """Set every multi-select of the sidebar to ``picked`` (the others cleared); does not rerun."""
    for name in SELECTS:
        at.sidebar.multiselect(key=name).set_value(list(picked.get(name, ())))


def _ranges(docs: Docs) -> list[tuple[str, Callable[[AppTest], Any], Callable[[], Docs]]]:
    """(label, how to pick it, the runs it keeps, computed when the page is drawn)."""
    today = datetime.now(timezone.utc).date()

    def pick(label: str, value: Any = None) -> Callable[[AppTest], Any]:
        def go(at: AppTest) -> Any:
            at.sidebar.selectbox(key="time_range").set_value(label).run()
            if value is not None:
                at.sidebar.date_input(key="custom_range").set_value(value)
            return at.run()
        return go

    def since(delta: timedelta | None) -> Callable[[], Docs]:
        return lambda: in_range(docs, datetime.now(timezone.utc) - delta if delta else None)

    def days(first: date, last: date) -> Callable[[], Docs]:
        lo = datetime.combine(first, datetime.min.time(), timezone.utc)
        return lambda: in_range(docs, lo, datetime.combine(last, datetime.min.time(), timezone.utc) + timedelta(days=1))

    out = [(label, pick(label), since(delta)) for label, delta in RANGES.items()]
    out.append(("Custom 3 days", pick("Custom", (today - timedelta(days=3), today)), days(today - timedelta(days=3),
                                                                                           today)))
    out.append(("Custom one day picked", pick("Custom", (today - timedelta(days=2),)),
                days(today - timedelta(days=2), today - timedelta(days=2))))
    out.append(("Custom without runs", pick("Custom", (today - timedelta(days=400), today - timedelta(days=380))),
                lambda: []))
    return out


@pytest.fixture(params=["local", "mongodb"])
def aged_source(request: pytest.FixtureRequest, aged: tuple[Path, Docs]) -> tuple[Any, Docs]:
    db, docs = aged
    return (LocalSource(db) if request.param == "local" else MongoSource(mongo_of(docs))), docs


@pytest.mark.parametrize("view", VIEWS)
def test_every_time_range_and_filter_in_every_view(view: str, aged_source: tuple[Any, Docs]) -> None:
    check_every_range_and_filter(aged_source[0], aged_source[1], view)


def check_every_range_and_filter(source: Any, docs: Docs, view: str, filters: Any = FILTERS) -> None:
    """The view, under every time range x agent/status filter, shows the runs it should and never fails."""
    at = app(source).run()
    if view != "Health":
        at.sidebar.radio(key="view").set_value(view).run()
    seen = set()
    for picked in filters:
        pick_filters(at, picked)
        ranges = _ranges(docs)
        if set(picked) >= {"models", "tags"}:  # model and tag: three ranges (each works alike on every filter)
            ranges = [r for r in ranges if r[0] in ("Last 24 hours", "Last 7 days", "Custom 3 days")]
        for label, pick, kept in ranges:
            pick(at)
            assert page_problems(at) == [], (view, label, picked)
            want = len(_filtered(kept(), picked))
            assert shown_runs(at, view) == want, (view, label, picked)
            seen.add(want)
    assert len(seen) >= 2 * len(filters) + 1, seen  # the ranges and filters really select different runs


#: session, user and version filters (with a model), each view on "All time"
DIMENSION_FILTERS: tuple[dict[str, tuple[str, ...]], ...] = (
    {"sessions": ("session-1", "session-3")},
    {"users": ("user-0",), "versions": ("1.1",)},
    {"versions": ("1.0",), "models": ("gpt-test",), "tags": ("prod",)},
)


@pytest.mark.parametrize("view", VIEWS)
def test_session_user_version_filters_in_every_view(view: str, aged_source: tuple[Any, Docs]) -> None:
    check_dimension_filters(*aged_source, view)


def check_dimension_filters(source: Any, docs: Docs, view: str) -> None:
    """Every sidebar filter offers the values the runs carry, and session, user and version filters (with
    model and tag) keep the runs they should in the view."""
    at = app(source).run()
    if view != "Health":
        at.sidebar.radio(key="view").set_value(view).run()
    offered = {name: at.sidebar.multiselect(key=name).options for name in ("models", "tags", "sessions", "users",
                                                                             "versions")}
    assert offered["models"] == sorted({c["model"] for d in docs for c in d["calls"] if c["model"]})
    assert offered["tags"] == sorted({t for d in docs for t in d["tags"]})
    for name, field in (("sessions", "session_id"), ("users", "user_id"), ("versions", "version")):
        assert offered[name] == sorted({d[field] for d in docs if d[field] is not None}), name
    for picked in DIMENSION_FILTERS:
        pick_filters(at, picked)
        at.run()
        assert page_problems(at) == [], (view, picked)
        want = len(_filtered(docs, picked))
        assert 0 < want < len(docs), picked
        assert shown_runs(at, view) == want, (view, picked)


def _track(db: Path, body: Callable[[], None]) -> Docs:
    """The one run ``body`` tracks, in the store ``db``; returns its documents."""
    memory = MemorySink()
    agentmeter.configure(sinks=[SQLiteSink(db), memory])
    try:
        body()
    except RuntimeError:
        pass
    assert agentmeter.flush(timeout=10).ok
    agentmeter.shutdown()
    return list(memory.documents)


def _no_steps() -> None:
    with track_run("bare", agent="edge"):
        pass


def _steps_no_calls() -> None:
    with track_run("thinking", agent="edge"), track_step("plan", kind="plan"), track_step("reflect"):
        pass


def _failed_call_no_usage() -> None:
    with track_run("failing", agent="edge"), track_step("fetch", kind="tool"), track_call("tavily", "search"):
        raise RuntimeError("upstream 503")


def _captured() -> None:
    @track_run(agent="edge", capture=True)
    def captured(question: str, limit: int = 3) -> dict[str, Any]:
        with track_step("answer", kind="llm"), track_call("openai", "chat", model="m") as c:
            c.record_usage(input_tokens=3, output_tokens=4)
        return {"answer": "42", "sources": ["a", "b"]}

    captured("what is it?", limit=2)


@pytest.mark.parametrize("body", [_no_steps, _steps_no_calls, _failed_call_no_usage, _captured])
def test_run_explorer_shows_any_run(body: Callable[[], None], tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    docs = _track(db, body)
    (run_id,) = [d["run_id"] for d in docs]
    for source in (LocalSource(db), MongoSource(mongo_of(docs))):
        at = app(source).run()
        at.sidebar.radio(key="view").set_value("Run explorer").run()
        assert page_problems(at) == [], body.__name__
        assert at.selectbox(key="run_pick").value == run_id
        tiles = metrics(at)
        assert tiles["Status"] in ("success", "error")
        assert tiles["Run tokens"] in ("-", "7")


def test_auto_bucket_follows_the_span_the_runs_cover(aged: tuple[Path, Docs], seeded: tuple[Path, Docs]) -> None:
    from agentmeter.dashboard.app import auto_bucket

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert auto_bucket(t0, t0 + timedelta(seconds=70)) == "minute"  # `agentmeter demo`: 70 s of runs
    assert auto_bucket(t0, t0 + timedelta(hours=4)) == "minute"
    assert auto_bucket(t0, t0 + timedelta(hours=5)) == "hour"
    assert auto_bucket(t0, t0 + timedelta(days=10)) == "hour"
    assert auto_bucket(t0, t0 + timedelta(days=11)) == "day"
    assert auto_bucket(None, None) == "hour"
    for db, want in ((seeded[0], "minute"), (aged[0], "day")):
        at = app(LocalSource(db)).run()
        assert any(c.value == f"auto: {want}, for the span these runs cover" for c in at.sidebar.caption), db
        at.sidebar.selectbox(key="time_range").set_value("Last hour").run()  # the aged runs of the last hour
        assert any(c.value.startswith("auto: minute") for c in at.sidebar.caption)


@pytest.mark.parametrize("bucket", ["minute", "hour", "day"])
def test_each_time_bucket_groups_the_charts_by_it(bucket: str, aged: tuple[Path, Docs]) -> None:
    at = app(LocalSource(aged[0])).run()
    at.sidebar.selectbox(key="bucket").set_value(bucket).run()
    assert not at.exception and not at.sidebar.caption  # no auto note once a size is chosen
    for view in VIEWS[:4]:
        at.sidebar.radio(key="view").set_value(view).run()
        assert page_problems(at) == [], view
        first = at.get("vega_lite_chart")[0].proto.spec  # each view's time chart comes first
        assert f'"timeUnit": "{charts_unit(bucket)}"' in first, view


def charts_unit(bucket: str) -> str:
    from agentmeter.dashboard.charts import TIME_UNITS

    return TIME_UNITS[bucket]


def test_run_list_sort_and_search_pick_the_first_run_of_the_list(aged: tuple[Path, Docs]) -> None:
    db, docs = aged
    at = app(LocalSource(db)).run()
    at.sidebar.radio(key="view").set_value("Run explorer").run()
    assert at.selectbox(key="run_pick").value == max(docs, key=lambda d: d["started_at"])["run_id"]
    for label, order, want in (("Slowest first", "slowest", max(docs, key=lambda d: d["duration_ms"])),
                               ("Oldest first", "oldest", min(docs, key=lambda d: d["started_at"]))):
        at.selectbox(key="run_sort").set_value(label).run()
        assert page_problems(at) == []
        assert at.selectbox(key=f"run_pick:{order}:").value == want["run_id"], label
        assert metrics(at)["Status"] == want["status"]
    target = docs[5]["run_id"]
    at.text_input(key="run_id_prefix").input(target[:-3]).run()
    assert metrics(at)["Matching runs"] == "1"
    assert at.selectbox(key=f"run_pick:oldest:{target[:-3]}").value == target


@pytest.mark.parametrize("kind", ["local", "mongodb"])
def test_health_shows_run_step_and_call_errors_and_where_they_happen(kind: str, seeded: tuple[Path, Docs]) -> None:
    db, docs = seeded
    source = LocalSource(db) if kind == "local" else MongoSource(mongo_of(docs))
    at = app(source).run()
    steps = [s for d in docs for s in d["steps"]]
    calls = [c for d in docs for c in d["calls"]]
    runs_failed = sum(d["status"] == "error" for d in docs)
    steps_failed = sum(s["status"] == "error" for s in steps)
    calls_failed = sum(c["status"] == "error" for c in calls)
    assert runs_failed and steps_failed and calls_failed
    tiles = metrics(at)
    assert tiles["Error rate"] == f"{runs_failed / len(docs) * 100:.2f}%"
    assert tiles["Step error rate"] == f"{steps_failed / len(steps) * 100:.2f}%"
    assert tiles["Call error rate"] == f"{calls_failed / len(calls) * 100:.2f}%"
    assert any(c.value.startswith(f"Failed: {runs_failed} runs, {steps_failed} steps, {calls_failed} API calls")
               for c in at.caption)
    assert at.session_state["health_section"] == "Recent failures"  # open by default
    open_section(at, "Errors by step")
    by_step = next(d.value for d in at.dataframe if list(d.value.columns) == ["name", "steps", "errors", "error_rate"])
    want_steps: dict[str, list[int]] = {}
    for s in steps:
        n = want_steps.setdefault(s["name"], [0, 0])
        n[0] += 1
        n[1] += s["status"] == "error"
    assert {r.name: [r.steps, r.errors] for r in by_step.itertuples()} == {k: v for k, v in want_steps.items() if v[1]}
    open_section(at, "Errors by provider and model")
    by_model = next(d.value for d in at.dataframe
                    if list(d.value.columns) == ["model", "calls", "errors", "error_rate"])
    failing = {f"{c['provider']} · {c['model'] or '(none)'}" for c in calls if c["status"] == "error"}
    assert set(by_model["model"]) == failing
    assert by_model["errors"].sum() == calls_failed


def test_run_page_lists_errors_with_their_step_and_shows_tags_metadata_captures(tmp_path: Path) -> None:
    import json

    from .conftest import payload, seed_hostile

    db = tmp_path / "h.db"
    docs = seed_hostile(db)
    failed = next(d for d in docs if d["status"] == "error")
    ok = next(d for d in docs if d["status"] == "success")
    at = app(LocalSource(db)).run()
    at.sidebar.radio(key="view").set_value("Run explorer").run()
    at.selectbox(key="run_pick").set_value(failed["run_id"]).run()
    open_section(at, "Errors")
    errors = next(d.value for d in at.dataframe if "where" in d.value.columns)
    rows = {(r.where, r.step, r.error_message) for r in errors.itertuples()}
    assert ("step", "fetch", payload("error")) in rows  # the step the run failed in
    assert ("call openai chat · m", "fetch", payload("callerror")) in rows  # the call, with its step
    open_section(at, "About this run")
    about = next(d.value for d in at.dataframe if list(d.value.columns) == ["key", "value"])
    facts = dict(zip(about["key"], about["value"], strict=True))
    assert facts["Tags"] == payload("tag") and facts[f"metadata · {payload('metakey')}"] == payload("metavalue")
    open_section(at, "Captured values")
    codes = [c.value for c in at.code]
    assert json.dumps({"fail": True, "question": payload("input")}, indent=2, ensure_ascii=False) in codes
    at.selectbox(key="run_pick").set_value(ok["run_id"]).run()
    assert at.session_state["run_section"] == "Captured values"  # another run: the same tab stays open
    assert payload("output") in [c.value for c in at.code]  # a captured string, as it is
    open_section(at, "Errors")
    assert not any("where" in d.value.columns for d in at.dataframe)  # no errors, no errors table
    assert any(c.value == "No step or API call of this run failed." for c in at.caption)


def test_tables_use_human_column_names_and_units(seeded: tuple[Path, Docs]) -> None:
    import json

    at = app(LocalSource(seeded[0])).run()
    at.sidebar.radio(key="view").set_value("Cost").run()
    labels = {}
    for section in SECTIONS["Cost"][1]:
        open_section(at, section)
        for d in at.dataframe:
            labels.update({k: v.get("label") for k, v in json.loads(d.proto.columns).items()})
    assert labels["cost_usd"] == "Cost (USD)" and labels["duration_ms"] == "Duration (ms)"
    assert labels["started_at"] == "Started (UTC)" and labels["unpriced_call_count"] == "Unpriced calls"


@pytest.mark.parametrize("linked", ["Cost", "Run explorer"])
def test_a_link_opens_the_view_it_names_and_the_radio_still_moves(linked: str, seeded: tuple[Path, Docs]) -> None:
    at = app(LocalSource(seeded[0]))
    at.query_params["view"] = linked
    at.run()
    assert not at.exception
    assert [h.value for h in at.main.header] == [linked]
    at.sidebar.radio(key="view").set_value("Health").run()  # the link chose the first view, not every one
    assert [h.value for h in at.main.header] == ["Health"]


def test_a_link_naming_no_view_opens_health(seeded: tuple[Path, Docs]) -> None:
    at = app(LocalSource(seeded[0]))
    at.query_params["view"] = "![x](http://127.0.0.1:9/beacon.png)"
    at.run()
    assert not at.exception
    assert [h.value for h in at.main.header] == ["Health"]


def _first_model(doc: dict[str, Any]) -> str | None:
    models = [c["model"] for c in doc["calls"] if c["model"] is not None]
    return min(models) if models else None


#: each sort of the run list as Python sorts the documents: (key, descending) pairs, nulls last either way
_ORDERS: dict[str, tuple[tuple[Callable[[dict[str, Any]], Any], bool], ...]] = {
    "newest": ((lambda d: d["started_at"], True), (lambda d: d["run_id"], True)),
    "oldest": ((lambda d: d["started_at"], False), (lambda d: d["run_id"], False)),
    "slowest": ((lambda d: d["duration_ms"], True), (lambda d: d["run_id"], True)),
    "fastest": ((lambda d: d["duration_ms"], False), (lambda d: d["run_id"], True)),
    "costliest": ((lambda d: d["cost_usd"], True), (lambda d: d["run_id"], True)),
    "status": ((lambda d: {"error": 0, "cancelled": 1, "success": 2}[d["status"]], False),
               (lambda d: d["started_at"], True), (lambda d: d["run_id"], True)),
    **{name: ((key, False), (lambda d: d["started_at"], True), (lambda d: d["run_id"], True)) for name, key in (
        ("error_type", lambda d: d["error_type"]), ("model", _first_model),
        ("tag", lambda d: d["tags"][0] if d["tags"] else None), ("session", lambda d: d["session_id"]),
        ("user", lambda d: d["user_id"]), ("version", lambda d: d["version"]))},
}


def python_order(docs: Docs, order: str) -> list[str]:
    out = list(docs)
    for key, descending in reversed(_ORDERS[order]):  # stable sorts, last key first
        present = sorted((d for d in out if key(d) is not None), key=key, reverse=descending)
        out = present + [d for d in out if key(d) is None]
    return [d["run_id"] for d in out]


def listed(at: AppTest) -> list[str]:
    """The run ids of the run list, in its order."""
    (runs,) = [d.value for d in at.dataframe if {"run_id", "tags", "session_id"} <= set(d.value.columns)]
    return list(runs["run_id"])


def check_run_list_sorts_and_filters(source: Any, docs: Docs, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every sort of the run list orders the runs as Python does, and every filter of its own (error type,
    least duration, least cost) keeps the runs it should; the true count is shown when the list is cut."""
    from agentmeter.dashboard import explorer

    at = app(source).run()
    at.sidebar.radio(key="view").set_value("Run explorer").run()
    orders = set()
    for label, order in explorer.RUN_SORTS.items():
        at.selectbox(key="run_sort").set_value(label).run()
        assert page_problems(at) == [], label
        want = python_order(docs, order)
        assert listed(at) == want, label
        pick = at.selectbox(key=f"run_pick:{order}:" if order != "newest" else "run_pick")
        assert pick.value == want[0], label  # the first run of the list is opened
        orders.add(tuple(want))
    assert len(orders) >= 10, "the sorts really differ"
    at.selectbox(key="run_sort").set_value("Newest first").run()
    failed = sorted({d["error_type"] for d in docs if d["error_type"]})
    assert at.multiselect(key="run_error_types").options == failed
    at.multiselect(key="run_error_types").set_value(failed[:1]).run()
    assert listed(at) == python_order([d for d in docs if d["error_type"] == failed[0]], "newest")
    at.multiselect(key="run_error_types").set_value([]).run()
    durations = sorted(d["duration_ms"] for d in docs)
    at.number_input(key="run_min_seconds").set_value(durations[len(docs) // 2] / 1000).run()
    assert listed(at) == python_order([d for d in docs if d["duration_ms"] >= durations[len(docs) // 2]], "newest")
    at.number_input(key="run_min_seconds").set_value(None).run()
    costs = sorted(d["cost_usd"] for d in docs if d["cost_usd"])
    floor = round(costs[len(costs) // 2], 4)
    at.number_input(key="run_min_cost").set_value(floor).run()
    want = python_order([d for d in docs if d["cost_usd"] is not None and d["cost_usd"] >= floor], "newest")
    assert listed(at) == want and 0 < len(want) < len(docs)
    assert metrics(at)["Matching runs"] == str(len(want))
    at.number_input(key="run_min_cost").set_value(None).run()
    monkeypatch.setattr(explorer, "RUN_LIST_LIMIT", 7)
    at.run()
    assert listed(at) == python_order(docs, "newest")[:7]
    assert any(c.value.startswith(f"{len(docs)} runs match; showing the first 7 (newest first)") for c in at.caption)


def test_run_list_sorts_and_filters(aged_source: tuple[Any, Docs], monkeypatch: pytest.MonkeyPatch) -> None:
    check_run_list_sorts_and_filters(*aged_source, monkeypatch)
