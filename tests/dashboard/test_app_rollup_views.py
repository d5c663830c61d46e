"""The Sessions, Versions and Scores views under AppTest (local store and MongoDB; Snowflake in
test_apptest_snowflake.py): every number equals the one computed in Python from the runs and scores, and
the run page lists the run's scores."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from agentmeter._percentile import percentile_cont
from agentmeter.queries.local import LocalSource
from agentmeter.queries.mongodb import MongoSource

from ._apptest import app, open_section
from .conftest import mongo_of
from .test_app_controls import page_problems

Docs = list[dict[str, Any]]


def _cost(doc: dict[str, Any]) -> float:
    return sum(c["cost_usd"] for c in doc["calls"] if c["priced"])


def _table_with(at: Any, *columns: str) -> Any:
    (df,) = [d.value for d in at.dataframe if set(columns) <= set(d.value.columns)]
    return df


def check_sessions(source: Any, docs: Docs) -> None:
    at = app(source).run()
    at.sidebar.radio(key="view").set_value("Sessions").run()
    assert page_problems(at) == []
    assert not at.dataframe and len(at.get("vega_lite_chart")) == 1  # the costliest sessions' tab only
    open_section(at, "Latest sessions")
    assert page_problems(at) == [] and not at.get("vega_lite_chart")
    table = _table_with(at, "session_id", "total_ms", "error_rate")
    by: dict[str, Docs] = defaultdict(list)
    for d in docs:
        if d["session_id"] is not None:
            by[d["session_id"]].append(d)
    assert set(table["session_id"]) == set(by) and len(by) == 5
    for row in table.itertuples():
        runs = by[row.session_id]
        assert row.runs == len(runs)
        assert row.cost_usd == pytest.approx(sum(_cost(d) for d in runs), rel=1e-9)
        assert row.error_rate == pytest.approx(sum(d["status"] == "error" for d in runs) / len(runs))
        # durations are shown in the unit of the column (ms, s or min): compare with the p50 column's ratio
        assert row.total_ms / row.p50_ms == pytest.approx(
            sum(d["duration_ms"] for d in runs) / percentile_cont([d["duration_ms"] for d in runs], 0.5), rel=1e-6)
    assert any(c.value == "The 5 latest sessions of 5." for c in at.caption)


def _means(docs: Docs, scores: list[dict[str, Any]], field: str, name: str) -> dict[str, float]:
    key = {d["run_id"]: d[field] for d in docs}
    values: dict[str, list[float]] = defaultdict(list)
    for s in scores:
        if s["name"] == name and s["value"] is not None:
            values[key[s["run_id"]]].append(s["value"])
    return {k: sum(v) / len(v) for k, v in values.items()}


def check_versions(source: Any, docs: Docs, scores: list[dict[str, Any]]) -> None:
    at = app(source).run()
    at.sidebar.radio(key="view").set_value("Versions").run()
    assert page_problems(at) == []
    assert len(at.get("vega_lite_chart")) == 2 and not at.dataframe  # the bars' tab, open by default
    open_section(at, "Side by side")
    assert page_problems(at) == [] and not at.get("vega_lite_chart")
    table = _table_with(at, "version", "cost_per_run_usd", "success_rate")
    assert sorted(table["version"]) == ["1.0", "1.1"]
    helpful, thumbs = _means(docs, scores, "version", "helpfulness"), _means(docs, scores, "version", "thumbs")
    for row in table.to_dict("records"):
        runs = [d for d in docs if d["version"] == row["version"]]
        assert row["runs"] == len(runs)
        assert row["success_rate"] == pytest.approx(sum(d["status"] == "success" for d in runs) / len(runs))
        assert row["cost_per_run_usd"] == pytest.approx(sum(_cost(d) for d in runs) / len(runs), rel=1e-9)
        assert row["score · helpfulness"] == pytest.approx(helpful[row["version"]])
        assert row["score · thumbs"] == pytest.approx(thumbs[row["version"]])


def check_scores(source: Any, docs: Docs, scores: list[dict[str, Any]]) -> None:
    at = app(source).run()
    at.sidebar.radio(key="view").set_value("Scores").run()
    assert page_problems(at) == []
    assert at.selectbox(key="score_name").value == "helpfulness"
    assert '"Mean score"' in at.get("vega_lite_chart")[0].proto.spec and not at.dataframe
    at.selectbox(key="score_name").set_value("verdict").run()
    assert page_problems(at) == []
    assert "labels given" in at.get("vega_lite_chart")[0].proto.spec
    open_section(at, "Summary")
    assert page_problems(at) == [] and not at.get("vega_lite_chart")
    table = _table_with(at, "name", "data_type", "count", "mean", "label")
    assert list(table["name"]) == ["helpfulness", "thumbs", "verdict"]
    for row in table.to_dict("records"):
        given = [s for s in scores if s["name"] == row["name"]]
        assert row["count"] == len(given) > 0
        if row["name"] != "verdict":
            assert row["mean"] == pytest.approx(sum(s["value"] for s in given) / len(given))
    labels = {lab: sum(s["label"] == lab for s in scores) for lab in ("correct", "wrong")}
    verdict = table[table["name"] == "verdict"].iloc[0]["label"]
    assert verdict == ", ".join(f"{k} ({v})" for k, v in sorted(labels.items(), key=lambda kv: (-kv[1], kv[0])))
    # the run page lists the scores of the run
    scored_run = scores[0]["run_id"]
    at.sidebar.radio(key="view").set_value("Run explorer").run()
    at.selectbox(key="run_pick").set_value(scored_run).run()
    shown = _table_with(at, "name", "source", "value", "comment")
    want = sorted((s["name"], s["source"]) for s in scores if s["run_id"] == scored_run)
    assert sorted(zip(shown["name"], shown["source"], strict=True)) == want


@pytest.fixture(params=["local", "mongodb"])
def scored_source(request: pytest.FixtureRequest, scored: tuple[Path, Docs, list[dict[str, Any]]]) -> Any:
    db, docs, scores = scored
    source = LocalSource(db) if request.param == "local" else MongoSource(mongo_of(docs, scores))
    return source, docs, scores


def test_sessions_view(scored_source: Any) -> None:
    check_sessions(*scored_source[:2])


def test_versions_view(scored_source: Any) -> None:
    check_versions(*scored_source)


def test_scores_view_and_the_run_page_scores(scored_source: Any) -> None:
    check_scores(*scored_source)
