"""MongoDBSink with the real pymongo driver, against MongoDB's wire-protocol test server (and against a real
MongoDB when AGENTMETER_TEST_MONGODB_URI is set): step-down, dropped connection, duplicate key."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pytest
from pymongo import monitoring

import agentmeter
from agentmeter.sinks import MemorySink, MongoDBSink, sinks_from_names
from agentmeter.sinks.mongodb import INDEXES, from_bson, to_bson
from tests._servers import free_port
from tests.sinks.conftest import MongoTarget

NOT_WRITABLE_PRIMARY = 10107


class Inserts(monitoring.CommandListener):
    """Counts insert commands the driver sends (each retry, the driver's or ours, is one more)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started_count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert":
            with self.lock:
                self.started_count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _sink(mongo: MongoTarget, listener: Inserts | None = None, **kw: Any) -> MongoDBSink:
    kw.setdefault("backoff_initial", 0.001)
    kw.setdefault("backoff_max", 0.005)
    options = {"event_listeners": [listener]} if listener is not None else None
    sink = MongoDBSink(mongo.uri, database=mongo.database, client_options=options, **kw)
    mongo.sinks.append(sink)
    return sink


def _runs(n: int) -> None:
    for i in range(n):
        with agentmeter.track_run(f"run-{i}", agent="a", tags=["x"]), agentmeter.track_step("s", kind="llm"), \
                agentmeter.track_call("openai", "chat.completions", model="m") as call:
            call.record_usage(input_tokens=3, output_tokens=4, cached_input_tokens=1, cache_write_tokens=2)


def _stored(mongo: MongoTarget) -> dict[str, dict[str, Any]]:
    client = mongo.client()
    try:
        return {d["_id"]: d for d in client[mongo.database]["agent_metadata"].find({})}
    finally:
        client.close()


def test_runs_are_stored_one_document_per_run_and_read_back_exactly(mongo: MongoTarget) -> None:
    memory = MemorySink()
    agentmeter.configure(sinks=[_sink(mongo), memory], flush_interval=3600)
    _runs(4)
    assert agentmeter.flush(timeout=30).ok
    stored = _stored(mongo)
    assert set(stored) == {d["run_id"] for d in memory.documents}
    for doc in memory.documents:
        back = stored[doc["run_id"]]
        assert isinstance(back["started_at"], datetime)  # a real BSON date, for queries and indexes
        assert from_bson(back) == doc  # exact, microseconds included
        assert back["cache_write_tokens"] == back["calls"][0]["cache_write_tokens"] == 2


def test_indexes_are_created_on_first_use(mongo: MongoTarget) -> None:
    sink = _sink(mongo)
    assert sink.write([]).ok
    agentmeter.configure(sinks=[sink], flush_interval=3600)
    _runs(1)
    assert agentmeter.flush(timeout=30).ok
    client = mongo.client()
    try:
        names = {ix["name"] for ix in client[mongo.database]["agent_metadata"].list_indexes()}
    finally:
        client.close()
    assert {name for name, _ in INDEXES} <= names


def test_an_equivalent_index_under_another_name_does_not_block_writes(mongo: MongoTarget) -> None:
    # MongoDB answers IndexOptionsConflict (85) when the keys are indexed already under another name
    mongo.fail_next("createIndexes", 1, errorCode=85)
    sink = _sink(mongo)
    docs = _documents(2)
    result = sink.write(docs)
    assert result.ok, result
    assert set(_stored(mongo)) == {d["run_id"] for d in docs}


def test_a_duplicate_key_counts_as_delivered(mongo: MongoTarget) -> None:
    listener = Inserts()
    sink = _sink(mongo, listener)
    docs = _documents(3)
    assert sink.write(docs[:2]).ok
    result = sink.write(docs)  # a replay: two are already there
    assert result.ok and not result.failed and not result.rejected
    assert set(_stored(mongo)) == {d["run_id"] for d in docs}
    assert listener.started_count == 2  # no retry: a duplicate is success, not an error


def test_a_primary_step_down_is_retried_and_nothing_is_lost(mongo: MongoTarget) -> None:
    listener = Inserts()
    sink = _sink(mongo, listener, max_attempts=3)
    docs = _documents(3)
    sink.ensure_indexes()
    # three step-downs: pymongo's own retryable write takes one, our policy the next two
    mongo.fail_next("insert", 3, errorCode=NOT_WRITABLE_PRIMARY, errorLabels=["RetryableWriteError"])
    result = sink.write(docs)
    assert result.ok, result
    assert set(_stored(mongo)) == {d["run_id"] for d in docs}
    assert listener.started_count == 4  # try 1: insert + driver retry, both fail; try 2: fails, driver retry ok


def test_a_dropped_connection_is_retried(mongo: MongoTarget) -> None:
    listener = Inserts()
    sink = _sink(mongo, listener, max_attempts=2)
    docs = _documents(2)
    sink.ensure_indexes()
    mongo.fail_next("insert", 2, closeConnection=True)  # the driver's retry is cut too
    result = sink.write(docs)
    assert result.ok, result
    assert set(_stored(mongo)) == {d["run_id"] for d in docs}
    assert listener.started_count == 3


def test_exhausted_retries_report_failed_and_the_exporter_spools(mongo: MongoTarget) -> None:
    listener = Inserts()
    sink = _sink(mongo, listener, max_attempts=2)
    sink.ensure_indexes()
    mongo.fail_next("insert", 100, errorCode=NOT_WRITABLE_PRIMARY, errorLabels=["RetryableWriteError"])
    result = sink.write(_documents(2))
    assert set(result.failed) == {0, 1} and not result.rejected
    assert str(NOT_WRITABLE_PRIMARY) in result.failed[0]
    assert listener.started_count == 4  # 2 attempts x (first try + pymongo's one retry)
    mongo.clear_faults()
    assert set(_stored(mongo)) == set()

    # through the exporter: what failed is spooled, nothing raises into the agent
    agentmeter.configure(sinks=[sink], flush_interval=3600, max_attempts=1)
    mongo.fail_next("insert", 100, errorCode=NOT_WRITABLE_PRIMARY, errorLabels=["RetryableWriteError"])
    _runs(2)
    flushed = agentmeter.flush(timeout=30)
    assert flushed.sinks["mongodb"].spooled == 2 and flushed.sinks["mongodb"].delivered == 0


def test_a_dead_server_fails_within_the_short_timeouts() -> None:
    import time

    port = free_port()
    sink = MongoDBSink(f"mongodb://127.0.0.1:{port}/", server_selection_timeout_ms=200, max_attempts=2,
                       backoff_initial=0.001)
    start = time.monotonic()
    result = sink.write(_documents(1))
    elapsed = time.monotonic() - start
    assert set(result.failed) == {0} and "ServerSelectionTimeoutError" in result.failed[0]
    assert elapsed < 5  # 2 x 200 ms server selection, not pymongo's 30 s default
    sink.close()


def test_from_env_and_bad_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMETER_MONGODB_URI", "mongodb://db.example:27017/")
    monkeypatch.setenv("AGENTMETER_MONGODB_DATABASE", "metrics")
    monkeypatch.setenv("AGENTMETER_MONGODB_COLLECTION", "runs")
    (sink,) = sinks_from_names(["mongodb"])
    assert isinstance(sink, MongoDBSink)
    assert (sink.uri, sink.database_name, sink.collection_name) == ("mongodb://db.example:27017/", "metrics", "runs")
    monkeypatch.delenv("AGENTMETER_MONGODB_URI")
    with pytest.raises(ValueError, match="AGENTMETER_MONGODB_URI"):
        MongoDBSink.from_env()
    with pytest.raises(ValueError, match="mongodb://"):
        MongoDBSink("http://nope")


def test_stored_form_round_trips() -> None:
    (doc,) = _documents(1)
    stored = to_bson(doc)
    assert stored["_id"] == doc["run_id"] and stored["_iso"]["started_at"] == doc["started_at"]
    assert from_bson(stored) == doc


def _documents(n: int) -> list[dict[str, Any]]:
    from agentmeter.testing import capture_runs

    with capture_runs() as captured:
        _runs(n)
    return captured.runs


class _CloseOnFirstFailure(monitoring.CommandListener):
    """Closes the sink (as the exporter does at shutdown with a write still running) when an insert fails."""

    def __init__(self) -> None:
        self.sink: MongoDBSink | None = None
        self.clients: list[Any] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert" and self.sink is not None:
            self.clients.append(self.sink._client)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if event.command_name == "insert" and self.sink is not None and not self.sink._closed.is_set():
            threading.Thread(target=self.sink.close).start()  # close() from another thread, as shutdown does
            self.sink._closed.wait(5)


def test_close_during_a_write_stops_retrying_and_opens_no_new_client(mongo: MongoTarget) -> None:
    listener = _CloseOnFirstFailure()
    sink = MongoDBSink(mongo.uri, database=mongo.database, max_attempts=3, backoff_initial=0.001,
                       backoff_max=0.002, client_options={"event_listeners": [listener], "retryWrites": False})
    mongo.sinks.append(sink)
    listener.sink = sink
    sink.ensure_indexes()
    mongo.fail_next("insert", 100, errorCode=NOT_WRITABLE_PRIMARY, errorLabels=["RetryableWriteError"])
    result = sink.write(_documents(2))
    assert set(result.failed) == {0, 1}  # reported failed: the exporter has spooled them
    assert len(listener.clients) == 1, "a retry after close() opened a new MongoClient"
    assert sink._client is None  # nothing left open by the closed sink
