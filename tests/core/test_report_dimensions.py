"""Issue 16: ``agentmeter report --by session|user|version|agent|model|run``, ``--every day|week|month``,
``--limit``: the numbers equal Python's own from the documents, every flag used."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

import agentmeter
from agentmeter import track_call, track_run
from agentmeter.cli import main
from agentmeter.cli.report import breakdown
from agentmeter.sinks import MemorySink, SQLiteSink

PRICES = {"gpt-test": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}}


def _seed(db: Path) -> tuple[list[dict[str, Any]], str]:
    memory = MemorySink()
    agentmeter.configure(sinks=[SQLiteSink(db), memory], prices=PRICES)
    for i in range(6):
        with track_run("chat", agent="support", session=f"s{i % 2}", user=f"u{i % 3}",
                       version="1.3" if i < 3 else "1.4") as run:
            with track_call("openai", "chat.completions", model="gpt-test") as call:
                call.record_usage(input_tokens=1000 * (i + 1), output_tokens=100)
            with track_run("sub-agent", agent="researcher"):  # inherits session, user and version
                with track_call("openai", "chat.completions", model="gpt-test") as call:
                    call.record_usage(input_tokens=500, output_tokens=50)
                with track_call("openai", "chat.completions", model="unknown-model") as call:
                    call.record_usage(input_tokens=10, output_tokens=1)
        agentmeter.score(run.run_id, "thumbs", i % 2 == 0)
        if i == 0:
            root = run.run_id
    assert agentmeter.flush().ok
    agentmeter.shutdown()
    return memory.documents, root


def _cost(doc: dict[str, Any]) -> float:
    return sum(c["cost_usd"] for c in doc["calls"] if c["priced"])


@pytest.mark.parametrize(("by", "column"), [("session", "session_id"), ("user", "user_id"),
                                             ("version", "version"), ("agent", "agent")])
def test_breakdown_by_a_dimension_equals_python(tmp_path: Path, by: str, column: str) -> None:
    db = tmp_path / "store.db"
    docs, _ = _seed(db)
    rows = {r["key"]: r for r in breakdown(db, by, since="all")}
    assert set(rows) == {d[column] for d in docs}
    for key, row in rows.items():
        mine = [d for d in docs if d[column] == key]
        assert row["runs"] == len(mine)
        assert row["cost_usd"] == pytest.approx(sum(_cost(d) for d in mine))
        assert row["total_tokens"] == sum(c["total_tokens"] for d in mine for c in d["calls"])
        assert row["unpriced_calls"] == sum(not c["priced"] for d in mine for c in d["calls"])
    assert sum(r["cost_usd"] for r in rows.values()) == pytest.approx(sum(_cost(d) for d in docs))  # once each
    if by == "version":
        assert rows["1.3"]["runs"] == rows["1.4"]["runs"] == 6  # 3 chats and their 3 sub-agents each
        assert rows["1.3"]["scores"] == 3 and rows["1.3"]["mean_score"] == pytest.approx(2 / 3)
        assert rows["1.4"]["mean_score"] == pytest.approx(1 / 3)


def test_report_by_session_prints_the_rollup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "store.db"
    _seed(db)
    assert main(["report", "--db", str(db), "--since", "7d", "--by", "session"]) == 0
    out = capsys.readouterr().out
    assert "report --by session" in out and " s0 " in out and " s1 " in out
    assert "mean score" in out


def test_report_by_version_every_week_buckets_from_monday(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "store.db"
    docs, _ = _seed(db)
    today = date.fromisoformat(docs[0]["started_at"][:10])
    monday = (today - timedelta(days=today.weekday())).isoformat()
    rows = breakdown(db, "version", since="all", every="week")
    assert {(r["bucket"], r["key"]) for r in rows} == {(monday + "T00:00:00Z", "1.3"), (monday + "T00:00:00Z", "1.4")}
    assert main(["report", "--db", str(db), "--since", "30d", "--by", "version", "--every", "week"]) == 0
    assert monday in capsys.readouterr().out


def test_report_every_month_without_by_groups_by_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "store.db"
    docs, _ = _seed(db)
    month = docs[0]["started_at"][:7] + "-01"
    assert main(["report", "--db", str(db), "--since", "all", "--every", "month"]) == 0
    out = capsys.readouterr().out
    assert "report --by agent" in out and month in out and "researcher" in out and "support" in out


def test_report_by_model_every_day(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "store.db"
    docs, _ = _seed(db)
    rows = {r["model"]: r for r in breakdown(db, "model", since="all", every="day")}
    calls = [c for d in docs for c in d["calls"]]
    assert rows["gpt-test"]["calls"] == sum(c["model"] == "gpt-test" for c in calls) == 12
    assert rows["gpt-test"]["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in calls if c["priced"]))
    assert rows["unknown-model"]["unpriced_calls"] == 6 and rows["unknown-model"]["cost_usd"] == 0
    assert {r["bucket"] for r in rows.values()} == {docs[0]["started_at"][:10] + "T00:00:00Z"}
    assert main(["report", "--db", str(db), "--since", "7d", "--by", "model", "--every", "day"]) == 0
    assert "unknown-model" in capsys.readouterr().out


def test_report_by_run_includes_child_runs_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "store.db"
    docs, root = _seed(db)
    by_id = {d["run_id"]: d for d in docs}
    rows = breakdown(db, "run", since="all", limit=100)
    assert len(rows) == 6 and all(r["runs"] == 2 for r in rows)  # each chat and its sub-agent
    first = next(r for r in rows if r["run_id"] == root)
    child = next(d for d in docs if d["parent_run_id"] == root)
    assert first["own_cost_usd"] == pytest.approx(_cost(by_id[root]))
    assert first["cost_usd"] == pytest.approx(_cost(by_id[root]) + _cost(child))
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(sum(_cost(d) for d in docs))  # no double counting
    assert [r["cost_usd"] for r in rows] == sorted((r["cost_usd"] for r in rows), reverse=True)
    assert main(["report", "--db", str(db), "--since", "7d", "--by", "run", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert rows[0]["run_id"] in out and rows[1]["run_id"] not in out


def test_report_since_limits_the_breakdown(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    _seed(db)
    assert breakdown(db, "session", since="all") and not breakdown(db, "session", since="0s")
    assert sum(r["runs"] for r in breakdown(db, "session", since="1h")) == 12


def test_report_bad_limit_and_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "store.db"
    _seed(db)
    assert main(["report", "--db", str(db), "--by", "run", "--limit", "0"]) == 2
    assert "--limit must be a positive integer" in capsys.readouterr().err
    assert main(["report", "--db", str(tmp_path / "missing.db"), "--by", "user"]) == 1
