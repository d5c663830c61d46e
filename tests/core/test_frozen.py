"""The frozen record: what is exported is the run as it was when it ended, read once on the caller's thread.

Nothing done to a handle, a metadata dict or a tag list after the run ended reaches a sink, and no value's
own code (a ``__repr__`` that blocks or raises) can stop the delivery of any other run.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import attrs
import pytest

import agentmeter
from agentmeter import _guard, track_call, track_run, track_step
from agentmeter.sinks import MemorySink, SQLiteSink


def test_changes_after_the_run_ended_never_reach_any_sink(tmp_path: Path) -> None:
    memory, store = MemorySink(), SQLiteSink(tmp_path / "store.db")
    agentmeter.configure(sinks=[memory, store], flush_interval=3600)
    metadata: dict[str, Any] = {"k": "v", "nested": {"a": 1}}
    tags = ["t1"]
    with track_run("r", metadata=metadata, tags=tags) as run:
        with track_step("s") as step:
            step.set_metadata(x=1)
        with track_call("p", "op") as call:
            call.record_usage(input_tokens=1, output_tokens=2)
            call.set_metadata(m=1)
    # the handles, the user's dict and the user's list, all changed after the run ended
    run.set_metadata(late=True)
    run.add_tags("late")
    run.set_output("late output")
    step.set_metadata(late=True)
    step.set_output("late")
    call.record_usage(input_tokens=999)
    call.set_metadata(late=True)
    call.set_http_status(500)
    call.record_sizes(request_bytes=5)
    metadata["k"] = "changed"
    metadata["nested"]["a"] = 2
    tags.append("t2")
    assert agentmeter.flush(timeout=30).ok

    (doc,) = memory.documents
    assert doc["metadata"] == {"k": "v", "nested": {"a": 1}} and doc["tags"] == ["t1"]
    assert doc["output"] is None
    (s,) = doc["steps"]
    (c,) = doc["calls"]
    assert s["metadata"] == {"x": 1} and s["output"] is None
    assert (c["input_tokens"], c["metadata"], c["http_status"], c["request_bytes"]) == (1, {"m": 1}, None, None)
    with sqlite3.connect(store.path) as conn:
        meta, tag_text = conn.execute("SELECT metadata, tags FROM agent_runs").fetchone()
        (tokens,) = conn.execute("SELECT input_tokens FROM api_calls").fetchone()
    assert json.loads(meta) == {"k": "v", "nested": {"a": 1}} and json.loads(tag_text) == ["t1"] and tokens == 1
    assert _guard.counters["warnings.handle.after_end"] == 9
    assert agentmeter.stats().warnings >= 9


def test_a_metadata_dict_changed_by_another_thread_while_runs_end_is_never_lost(tmp_path: Path) -> None:
    memory = MemorySink()
    agentmeter.configure(sinks=[memory], flush_interval=3600, max_queue_runs=100_000)
    shared: dict[str, Any] = {"seed": 0}
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            shared[f"k{i % 50}"] = i
            shared.pop(f"k{(i + 25) % 50}", None)
            i += 1

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(3000):
            with track_run("r") as run:
                run.set_metadata(shared=shared)
    finally:
        stop.set()
        worker.join()
    assert agentmeter.flush(timeout=60).ok
    assert len(memory.documents) == 3000
    assert all(isinstance(d["metadata"]["shared"], dict) for d in memory.documents)


class _Blocking:
    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def __repr__(self) -> str:
        self.release.wait(30)
        return "<blocking>"


class _Raising:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


def test_a_value_whose_repr_blocks_or_raises_cannot_stop_other_runs(tmp_path: Path) -> None:
    store = SQLiteSink(tmp_path / "store.db")
    agentmeter.configure(sinks=[store], capture=True, flush_interval=3600)
    release = threading.Event()

    @track_step(kind="tool")
    def tool(value: Any) -> Any:
        return value

    try:
        with track_run("blocking", metadata={"value": _Blocking(release)}):
            tool(_Blocking(release))
        with track_run("raising", metadata={"value": _Raising()}):
            tool(_Raising())
        for i in range(1000):
            with track_run("after", metadata={"i": i}):
                pass
        result = agentmeter.flush(timeout=10)
    finally:
        release.set()
    assert not result.timed_out and result.ok, result
    # every run delivered (full batches may go out before flush() begins: count since the start)
    assert agentmeter.stats().sinks["sqlite"].delivered == 1002
    with sqlite3.connect(store.path) as conn:
        rows = dict(conn.execute("SELECT name, metadata FROM agent_runs WHERE name != 'after'").fetchall())
        (after,) = conn.execute("SELECT count(*) FROM agent_runs WHERE name = 'after'").fetchone()
        step_inputs = [json.loads(r[0]) for r in conn.execute("SELECT inputs FROM run_steps ORDER BY started_at")]
    assert after == 1000
    # each hostile value is a placeholder naming its type; the rest of its own run is intact
    assert json.loads(rows["blocking"]) == {"value": f"<{__name__}._Blocking object>"}
    assert json.loads(rows["raising"]) == {"value": f"<{__name__}._Raising object>"}
    assert step_inputs == [{"value": f"<{__name__}._Blocking object>"}, {"value": f"<{__name__}._Raising object>"}]
    assert _guard.counters["capture.opaque"] == 6  # metadata, inputs and output of both runs


def test_stats_has_the_same_typed_shape_before_and_after_the_first_run(tmp_path: Path) -> None:
    agentmeter.configure(sinks=[MemorySink(), SQLiteSink(tmp_path / "s.db")], flush_interval=3600)
    agentmeter.shutdown(timeout=5)  # no processor now: nothing tracked since
    before = agentmeter.stats()
    with track_run("r"):
        pass
    agentmeter.flush(timeout=10)
    after = agentmeter.stats()
    assert type(before) is type(after) is agentmeter.Stats
    assert set(before.sinks) == set(after.sinks) == {"memory", "sqlite"}
    assert before.sinks["sqlite"] == agentmeter.SinkStats()
    assert (before.runs_finished, after.runs_finished, after.sinks["sqlite"].delivered) == (0, 1, 1)
    assert after.as_dict()["sinks"]["memory"]["delivered"] == 1
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        after.runs_finished = 5  # type: ignore[misc]
