"""Issue 16: a run's session, user and version: set on track_run or the handle, inherited by child runs
(nested, in a thread pool, in a forked child), AGENTMETER_VERSION as the process default, stored by
the local store (old stores gain the columns on open)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import sqlite3
from pathlib import Path

import pytest

import agentmeter
from agentmeter import _guard, track_run, track_step
from agentmeter._config import load_settings
from agentmeter.sinks import MemorySink, SQLiteSink
from agentmeter.testing import capture_runs, reset


def _dims(doc: dict[str, object]) -> tuple[object, object, object]:
    return doc["session_id"], doc["user_id"], doc["version"]


def test_track_run_sets_session_user_and_version() -> None:
    with capture_runs() as captured:
        with track_run("chat", session="conv-1", user="alice@example.com", version="1.4.2"):
            pass
        with track_run("plain"):
            pass
    chat, plain = captured.runs
    assert _dims(chat) == ("conv-1", "alice@example.com", "1.4.2")
    assert _dims(plain) == (None, None, None)
    assert "session_id" not in chat["metadata"]


def test_the_handle_sets_and_clears_them_and_refuses_other_types_with_a_warning() -> None:
    before = _guard.counters["warnings"]
    with capture_runs() as captured:
        with track_run("chat", session="s0", user="u0") as run:
            run.set_session("s1")
            run.set_user(None)  # cleared
            run.set_version("2.0")
            run.set_session(42)  # type: ignore[arg-type]  # ignored, counted
        run.set_session("late")  # after the end: ignored, counted
    (doc,) = captured.runs
    assert _dims(doc) == ("s1", None, "2.0")
    assert _guard.counters["warnings"] >= before + 2
    assert _guard.counters["warnings.run.session_id"] >= 1
    assert _guard.counters["warnings.handle.after_end"] >= 1


@pytest.mark.parametrize(("kwargs", "named"), [({"session": 7}, "session"), ({"user": b"u"}, "user"),
                                               ({"version": ""}, "version"), ({"session": ["a"]}, "session")])
def test_bad_values_are_a_value_error_at_the_decorator(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=f"track_run {named} must be a non-empty string"):
        track_run("x", **kwargs)  # type: ignore[arg-type]


def test_secrets_are_scrubbed_and_long_values_cut() -> None:
    with capture_runs() as captured, track_run("x", session="sk-" + "a" * 40, user="u" * 500):
        pass
    (doc,) = captured.runs
    assert doc["session_id"] == "[REDACTED]"
    assert doc["user_id"] == "u" * 200


def test_child_runs_inherit_what_they_are_not_given() -> None:
    with capture_runs() as captured, track_run("parent", session="s", user="u", version="1.0") as parent:
        with track_run("child") as child, track_run("grandchild", user="other"):
            pass
        parent.set_session("s2")  # children started from now on get the new value
        with track_run("late-child"):
            pass
    by_name = {d["name"]: d for d in captured.runs}
    assert _dims(by_name["child"]) == ("s", "u", "1.0")
    assert by_name["child"]["parent_run_id"] == parent.run_id
    assert _dims(by_name["grandchild"]) == ("s", "other", "1.0")
    assert by_name["grandchild"]["parent_run_id"] == child.run_id
    assert _dims(by_name["late-child"]) == ("s2", "u", "1.0")
    assert _dims(by_name["parent"]) == ("s2", "u", "1.0")


def test_runs_in_a_thread_pool_inherit_from_the_submitting_run() -> None:
    def work(i: int) -> str:
        with track_run(f"worker-{i}") as run:
            return run.run_id

    with capture_runs() as captured, track_run("parent", session="pool-s", user="pool-u") as parent, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        ids = list(pool.map(work, range(4)))
    workers = [d for d in captured.runs if d["run_id"] in ids]
    assert len(workers) == 4
    assert {(d["session_id"], d["user_id"], d["parent_run_id"]) for d in workers} == {
        ("pool-s", "pool-u", parent.run_id)}


def test_a_forked_childs_runs_inherit_from_the_run_it_was_forked_in(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    agentmeter.configure(sinks=[SQLiteSink(db)], spool_dir=str(tmp_path / "spool"), flush_interval=3600)
    read, write = os.pipe()
    with track_run("parent", session="fork-s", user="fork-u", version="9") as parent:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read)
                with track_run("child-run"):
                    pass
                with track_step("child-step"):  # an implicit run of the child's, pointing at the parent
                    pass
                result = agentmeter.flush(timeout=30)
                os.write(write, json.dumps({"delivered": result.delivered}).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and child["delivered"] == 2
    assert agentmeter.flush(timeout=30).ok
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, session_id, user_id, version, parent_run_id FROM agent_runs "
                            "WHERE name != 'parent' ORDER BY name").fetchall()
    assert rows == [("child-run", "fork-s", "fork-u", "9", parent.run_id),
                    ("child-step", "fork-s", "fork-u", "9", parent.run_id)]


def test_agentmeter_version_is_the_process_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTMETER_VERSION", " 1.3.0 ")
    reset(timeout=1, spool_dir=str(tmp_path / "spool"))
    with capture_runs() as captured:
        with track_run("a"), track_run("nested"):
            pass
        with track_run("b", version="1.4.0-rc1"), track_run("nested-b"):
            pass
    assert {d["name"]: d["version"] for d in captured.runs} == {
        "a": "1.3.0", "nested": "1.3.0", "b": "1.4.0-rc1", "nested-b": "1.4.0-rc1"}
    memory = MemorySink()
    assert agentmeter.configure(sinks=[memory], version="2.0").version == "2.0"  # wins over the variable
    with track_run("c"):
        pass
    assert agentmeter.flush().ok
    assert [d["version"] for d in memory.documents] == ["2.0"]


@pytest.mark.parametrize("bad", [3, 1.4, "", "   ", "v" * 201, ["1.0"]])
def test_a_bad_version_setting_is_a_value_error_naming_it(bad: object) -> None:
    with pytest.raises(ValueError, match="version must be None or a non-empty string"):
        agentmeter.configure(version=bad)  # type: ignore[arg-type]
    assert agentmeter.configure().version is None  # nothing changed


def test_a_bad_agentmeter_version_variable_is_reported_and_left_out() -> None:
    settings, problems = load_settings({"AGENTMETER_VERSION": "v" * 300, "AGENTMETER_BATCH_SIZE": "7"})
    assert settings.version is None and settings.batch_size == 7
    assert [p.variable for p in problems] == ["AGENTMETER_VERSION"]
    assert "AGENTMETER_VERSION" in problems[0].message
    assert load_settings({"AGENTMETER_VERSION": "1.2"})[0].version == "1.2"


def test_an_old_store_gains_the_columns_on_open(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    SQLiteSink(db)._connect()
    with sqlite3.connect(db) as conn:  # the store as an agentmeter without these columns made it
        for column in ("session_id", "user_id", "version"):
            conn.execute(f"ALTER TABLE agent_runs DROP COLUMN {column}")
        conn.execute("INSERT INTO agent_runs (run_id, name) VALUES ('old-run', 'from before')")
    agentmeter.configure(sinks=[SQLiteSink(db)])
    with track_run("new", session="s-new", user="u-new", version="3"):
        pass
    assert agentmeter.flush().ok
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, session_id, user_id, version FROM agent_runs ORDER BY name").fetchall()
    assert rows == [("from before", None, None, None), ("new", "s-new", "u-new", "3")]
