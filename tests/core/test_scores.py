"""Issue 16: agentmeter.score(): checked at the call, a fourth record kind through the same exporter and
spool, idempotent by (run, name, source) with the latest call winning."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import agentmeter
from agentmeter import _clock, contract, track_run
from agentmeter._record import FinishedScore
from agentmeter.export._documents import Documents, Entry, record_text
from agentmeter.sinks import MemorySink, SQLiteSink
from agentmeter.sinks._base import Document, Sink, WriteResult
from agentmeter.testing import capture_runs


def _scores(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT run_id, name, source, data_type, value, label, comment FROM run_scores "
                            "ORDER BY name, source").fetchall()


@pytest.mark.parametrize(("args", "kwargs", "error", "match"), [
    ((7, "q", 1), {}, TypeError, "score run_id must be a run id"),
    (("", "q", 1), {}, ValueError, "score run_id must be a non-empty string"),
    (("r", None, 1), {}, TypeError, "score name must be a string"),
    (("r", " ", 1), {}, ValueError, "score name must be a non-empty string"),
    (("r", "q", None), {}, TypeError, "score value must be a number, a bool or a string"),
    (("r", "q", [1]), {}, TypeError, "score value must be a number"),
    (("r", "q", float("nan")), {}, ValueError, "score value must be a finite number"),
    (("r", "q", float("inf")), {}, ValueError, "score value must be a finite number"),
    (("r", "q", ""), {}, ValueError, "score value must be a non-empty string"),
    (("r", "q", 1), {"comment": 3}, TypeError, "score comment must be a string or None"),
    (("r", "q", 1), {"source": ""}, ValueError, "score source must be a non-empty string"),
    (("r", "q", 1), {"source": 5}, TypeError, "score source must be a string"),
])
def test_wrong_types_and_values_raise_at_the_call(args: tuple[Any, ...], kwargs: dict[str, Any],
                                                   error: type[Exception], match: str) -> None:
    with capture_runs() as captured, pytest.raises(error, match=match):
        agentmeter.score(*args, **kwargs)
    assert captured.scores == []


def test_numeric_boolean_and_categorical_scores_on_a_run_handle_or_id() -> None:
    with capture_runs() as captured:
        with track_run("chat") as run:
            pass
        agentmeter.score(run, "helpfulness", 4)
        agentmeter.score(run.run_id, "thumbs", False, comment="wrong answer, token sk-" + "x" * 40)
        agentmeter.score(run.run_id, "verdict", "correct", source="eval")
        assert agentmeter.stats().runs_finished == 1  # a score is not a run
    rows = {(s["name"], s["source"]): s for s in captured.scores}
    assert set(rows) == {("helpfulness", "user"), ("thumbs", "user"), ("verdict", "eval")}
    assert (rows["helpfulness", "user"]["data_type"], rows["helpfulness", "user"]["value"]) == ("numeric", 4.0)
    assert (rows["thumbs", "user"]["data_type"], rows["thumbs", "user"]["value"]) == ("boolean", 0.0)
    assert rows["thumbs", "user"]["comment"] == "wrong answer, token [REDACTED]"
    assert (rows["verdict", "eval"]["label"], rows["verdict", "eval"]["value"]) == ("correct", None)
    assert {s["run_id"] for s in captured.scores} == {run.run_id}
    assert rows["verdict", "eval"]["score_id"] == contract.score_id(run.run_id, "verdict", "eval")
    assert len(captured.runs) == 1


def test_the_latest_call_wins_and_an_older_score_arriving_late_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    memory = MemorySink()
    agentmeter.configure(sinks=[SQLiteSink(db), memory])
    agentmeter.score("run-1", "quality", 0.2)
    agentmeter.score("run-1", "quality", 0.9, comment="better")
    agentmeter.score("run-1", "quality", "great", source="eval")  # another source: a score of its own
    assert agentmeter.flush().ok
    stale = FinishedScore("00000000-0000-7000-8000-000000000000", "run-1", "quality", "user", 0.0, None,
                          "numeric", "stale", _clock.wall_us() - 10_000_000)
    from agentmeter import _state

    _state.processor().submit(stale)  # a replay from a slow process: scored earlier, delivered later
    assert agentmeter.flush().ok
    assert _scores(db) == [("run-1", "quality", "eval", "categorical", None, "great", None),
                           ("run-1", "quality", "user", "numeric", 0.9, None, "better")]
    assert [(s["source"], s["value"], s["comment"]) for s in memory.scores] == [
        ("eval", None, None), ("user", 0.9, "better")]


def test_a_spooled_score_is_replayed_by_another_process_once(tmp_path: Path) -> None:
    spool = tmp_path / "spool"

    class Down(Sink):
        name = "sqlite"
        accepts_scores = True

        def write(self, documents: Any) -> WriteResult:
            raise ConnectionError("down")

    agentmeter.configure(sinks=[Down()], spool_dir=str(spool), max_attempts=1, retry_initial=0)
    agentmeter.score("run-9", "thumbs", True)
    agentmeter.score("run-9", "thumbs", False)
    assert agentmeter.flush().sinks["sqlite"].spooled == 2
    agentmeter.shutdown()
    db = tmp_path / "store.db"
    agentmeter.configure(sinks=[SQLiteSink(db)], spool_dir=str(spool))  # the next process on that spool
    result = agentmeter.flush()
    assert result.ok and result.sinks["sqlite"].pending == 0
    assert _scores(db) == [("run-9", "thumbs", "user", "boolean", 0.0, None, None)]


def test_a_score_record_survives_the_spool_text_round_trip() -> None:
    score = FinishedScore("e1", "r1", "n", "user", 1.0, None, "numeric", "c", 1_700_000_000_000_000)
    import json

    docs = Documents(agentmeter.configure())
    entry = Entry(score)
    assert entry.key == "score:e1" and entry.is_score
    doc = docs.from_record(json.loads(record_text(entry)))
    assert doc == {**contract.score_document(score)}
    assert doc["run_id"] == "score:e1" and doc["score"]["run_id"] == "r1"
    assert contract.document_records(doc).run_scores[0]["record_id"] == contract.score_id("r1", "n", "user")


class Plain(Sink):
    """A sink of a user's own, from before scores: it never sees one."""

    name = "plain"

    def __init__(self) -> None:
        self.docs: list[Document] = []

    def write(self, documents: Any) -> WriteResult:
        self.docs.extend(documents)
        return WriteResult()


@pytest.mark.parametrize("sync", [False, True])
def test_sinks_that_do_not_accept_scores_never_receive_them(sync: bool) -> None:
    plain, memory = Plain(), MemorySink()
    agentmeter.configure(sinks=[plain, memory], sync_export=sync)
    with track_run("r") as run:
        pass
    agentmeter.score(run.run_id, "q", 1)
    assert agentmeter.flush().ok
    assert [d["run_id"] for d in plain.docs] == [run.run_id]
    assert len(memory.scores) == 1


def test_score_is_a_no_op_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = MemorySink()
    agentmeter.configure(sinks=[memory], enabled=False)
    agentmeter.score("r", "q", 1)
    with pytest.raises(TypeError):  # still checked
        agentmeter.score("r", "q", object())  # type: ignore[arg-type]
    agentmeter.flush()
    assert memory.scores == []


def test_import_agentmeter_does_not_load_the_records_for_score() -> None:
    import subprocess
    import sys

    code = ("import sys, agentmeter; assert callable(agentmeter.score); "
            "print(sorted(m for m in ('agentmeter._record', 'agentmeter._capture') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.stdout.strip() == "[]"  # loaded with the first score (~12 ms), not at import
