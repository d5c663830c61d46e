"""MongoDBSink with the real pymongo driver, against MongoDB's wire-protocol test server (and against a real
MongoDB when AGENTMETER_TEST_MONGODB_URI is set): step-down, dropped connection, duplicate key.

The sink makes one bulk write per write, which pymongo's retryable writes may retry once; the exporter
owns every other retry. Insert commands are counted by a command listener, and at the test server too."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pytest
from pymongo import monitoring

import agentmeter
from agentmeter.sinks import MemorySink, MongoDBSink, sinks_from_names
from agentmeter.sinks.mongodb import INDEXES, SCORE_INDEXES, from_bson, to_bson
from tests._servers import free_port
from tests.sinks.conftest import MongoTarget

NOT_WRITABLE_PRIMARY = 10107


#: the exporter's retry policy in these tests: three attempts per batch, waits of a few milliseconds
RETRIES = {"max_attempts": 3, "retry_initial": 0.01, "retry_max": 0.02}


class Inserts(monitoring.CommandListener):
    """Counts insert commands the driver sends (each retry, the driver's or the exporter's, is one more)."""

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
    options = {"event_listeners": [listener]} if listener is not None else None
    sink = MongoDBSink(mongo.uri, database=mongo.database, client_options=options, **kw)
    mongo.sinks.append(sink)
    return sink


def _runs(n: int) -> None:
    for i in range(n):
        with agentmeter.track_run(f"run-{i}", agent="a", tags=["x"]), agentmeter.track_step("s", kind="llm"), \
                agentmeter.track_call("openai", "chat.completions", model="m") as call:
            call.record_usage(input_tokens=3, output_tokens=4, cached_input_tokens=1, cache_write_tokens=2)


def _inserts(mongo: MongoTarget, listener: Inserts) -> int:
    """Insert commands sent, as the driver counted them; the test server must have seen as many."""
    if mongo.mini is not None:
        assert mongo.mini.commands.count("insert") == listener.started_count
    return listener.started_count


def _configure(*sinks: Any, **kw: Any) -> None:
    """Configure the exporter, then flush once with nothing queued: the lane then schedules its own spool
    check ``flush_interval`` (an hour) ahead, so during the test only ``flush()`` replays the spool and the
    inserts counted do not depend on thread timing."""
    agentmeter.configure(sinks=list(sinks), flush_interval=3600, **kw)
    assert agentmeter.flush(timeout=30).ok


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
    assert {"session_id_1_started_at_-1", "user_id_1_started_at_-1"} <= names  # the Sessions view, filters


def test_the_scores_collection_gets_its_indexes_with_the_first_score(mongo: MongoTarget) -> None:
    sink = _sink(mongo)
    agentmeter.configure(sinks=[sink], flush_interval=3600)
    with agentmeter.track_run("r") as run:
        pass
    agentmeter.score(run, "helpful", True)
    assert agentmeter.flush(timeout=30).ok
    client = mongo.client()
    try:
        scores = client[mongo.database]["run_scores"]
        names = {ix["name"] for ix in scores.list_indexes()}
        stored = list(scores.find({"run_id": run.run_id}))
    finally:
        client.close()
    assert {name for name, _ in SCORE_INDEXES} <= names
    assert [(d["name"], d["value"]) for d in stored] == [("helpful", 1.0)]


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
    assert _inserts(mongo, listener) == 2  # no retry: a duplicate is success, not an error


def test_one_write_is_one_bulk_write_which_pymongo_retries_once(mongo: MongoTarget) -> None:
    listener = Inserts()
    sink = _sink(mongo, listener)
    docs = _documents(3)
    sink.ensure_indexes()
    # three step-downs: the first write's insert and pymongo's retry of it take two, and it reports failed
    mongo.fail_next("insert", 3, errorCode=NOT_WRITABLE_PRIMARY, errorLabels=["RetryableWriteError"])
    first = sink.write(docs)
    assert set(first.failed) == {0, 1, 2} and not first.rejected
    assert str(NOT_WRITABLE_PRIMARY) in first.failed[0]
    assert _inserts(mongo, listener) == 2
    # the next write (what the exporter's retry does): its insert fails, pymongo's retry succeeds
    second = sink.write(docs)
    assert second.ok, second
    assert _inserts(mongo, listener) == 4
    assert set(_stored(mongo)) == {d["run_id"] for d in docs}


def test_a_primary_step_down_is_retried_by_the_exporter_and_nothing_is_lost(mongo: MongoTarget) -> None:
    listener = Inserts()
    sink = _sink(mongo, listener)
    sink.ensure_indexes()
    _configure(sink, **RETRIES)
    mongo.fail_next("insert", 3, errorCode=NOT_WRITABLE_PRIMARY, errorLabels=["RetryableWriteError"])
    _runs(3)
    result = agentmeter.flush(timeout=30)
    assert result.ok and result.sinks["mongodb"].delivered == 3, result
    assert len(_stored(mongo)) == 3
    # attempt 1: insert + pymongo's retry, both fail; attempt 2: fails, pymongo's retry succeeds
    assert _inserts(mongo, listener) == 4
    assert agentmeter.stats().sinks["mongodb"].retries == 1


def test_a_dropped_connection_is_retried_once_by_pymongo(mongo: MongoTarget) -> None:
    listener = Inserts()
    sink = _sink(mongo, listener)
    docs = _documents(2)
    sink.ensure_indexes()
    mongo.fail_next("insert", 1, closeConnection=True)
    assert sink.write(docs).ok
    assert _inserts(mongo, listener) == 2
    assert set(_stored(mongo)) == {d["run_id"] for d in docs}

    more = _documents(2)
    mongo.fail_next("insert", 2, closeConnection=True)  # pymongo's retry is cut too
    result = sink.write(more)
    assert set(result.failed) == {0, 1} and "AutoReconnect" in result.failed[0]
    assert _inserts(mongo, listener) == 4


def test_a_dead_primary_gets_max_attempts_bulk_writes_then_the_batch_is_spooled_and_replayed(
    mongo: MongoTarget,
) -> None:
    listener = Inserts()
    sink = _sink(mongo, listener)
    sink.ensure_indexes()
    _configure(sink, **RETRIES)
    mongo.fail_next("insert", 100, errorCode=NOT_WRITABLE_PRIMARY, errorLabels=["RetryableWriteError"])
    _runs(2)
    flushed = agentmeter.flush(timeout=30)
    assert flushed.sinks["mongodb"].spooled == 2 and flushed.sinks["mongodb"].delivered == 0
    # max_attempts (3) bulk writes of two inserts each (pymongo's retry), then flush() tries the spool once
    assert _inserts(mongo, listener) == 3 * 2 + 2
    assert set(_stored(mongo)) == set()

    mongo.clear_faults()
    later = agentmeter.flush(timeout=30)  # the primary is back: flush replays the spool
    assert later.ok and later.sinks["mongodb"].delivered == 2, later
    assert _inserts(mongo, listener) == 3 * 2 + 2 + 1
    assert len(_stored(mongo)) == 2


def test_a_document_failing_validation_is_rejected_and_never_retried(mongo: MongoTarget) -> None:
    client = mongo.client()
    try:  # a collection validator: code 121 for the run named "poison", as a real server answers
        client[mongo.database].command("create", "agent_metadata", validator={"name": {"$ne": "poison"}})
    finally:
        client.close()
    listener = Inserts()
    sink = _sink(mongo, listener)
    _configure(sink, **RETRIES)
    for name in ("a", "poison", "b"):
        with agentmeter.track_run(name):
            pass
    result = agentmeter.flush(timeout=30)
    assert result.sinks["mongodb"].delivered == 2 and result.sinks["mongodb"].failed == 1
    assert result.sinks["mongodb"].spooled == 0  # kept in the dead-letter lane, not for a retry
    assert _inserts(mongo, listener) == 1 and agentmeter.stats().sinks["mongodb"].retries == 0
    assert sorted(d["name"] for d in _stored(mongo).values()) == ["a", "b"]


@pytest.mark.parametrize("mib", [17, 47])  # refused by the server; by pymongo (over its 48 MB message limit)
def test_a_document_over_16_mib_is_rejected_and_the_others_are_stored(mongo: MongoTarget, mib: int) -> None:
    sink = _sink(mongo)
    docs = _documents(3)
    docs[1] = {**docs[1], "metadata": {"blob": "x" * (mib * 1024 * 1024)}}
    result = sink.write(docs)
    assert set(result.rejected) == {1} and "too large" in result.rejected[1]
    assert not result.failed
    assert set(_stored(mongo)) == {docs[0]["run_id"], docs[2]["run_id"]}


def test_a_dead_server_fails_within_the_short_timeouts() -> None:
    import time

    port = free_port()
    sink = MongoDBSink(f"mongodb://127.0.0.1:{port}/", server_selection_timeout_ms=200)
    start = time.monotonic()
    result = sink.write(_documents(1))
    elapsed = time.monotonic() - start
    assert set(result.failed) == {0} and "ServerSelectionTimeoutError" in result.failed[0]
    assert elapsed < 5  # one 200 ms server selection (pymongo never retries it), not pymongo's 30 s default
    sink.close()


@pytest.mark.parametrize("removed", ["max_attempts", "backoff_initial", "backoff_max"])
def test_the_removed_retry_parameters_are_refused(removed: str) -> None:
    untyped: Any = MongoDBSink  # called as code written for the old signature would call it
    with pytest.raises(TypeError, match=removed):
        untyped("mongodb://db.example:27017/", **{removed: 3})


def test_pymongo_retries_once_and_never_for_overload() -> None:
    sink = MongoDBSink("mongodb://db.example:27017/")  # no I/O: the client connects on first use
    options = sink.collection.database.client.options
    assert options.retry_writes is True
    assert options.max_adaptive_retries == 0  # pymongo 4.17+: no second, sleeping retry layer
    sink.close()
    custom = MongoDBSink("mongodb://db.example:27017/", client_options={"max_adaptive_retries": 2})
    assert custom.collection.database.client.options.max_adaptive_retries == 2
    custom.close()


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
        self.inserts = 0
        self.closed = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert" and self.sink is not None:
            self.inserts += 1
            self.clients.append(self.sink._client)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if event.command_name == "insert" and self.sink is not None and not self.closed:
            self.closed = True
            closer = threading.Thread(target=self.sink.close)  # from another thread, as shutdown does
            closer.start()
            closer.join(5)


def test_close_during_a_write_cuts_it_short_and_opens_no_new_client(mongo: MongoTarget) -> None:
    listener = _CloseOnFirstFailure()
    sink = MongoDBSink(mongo.uri, database=mongo.database, client_options={"event_listeners": [listener]})
    mongo.sinks.append(sink)
    listener.sink = sink
    sink.ensure_indexes()
    mongo.fail_next("insert", 100, errorCode=NOT_WRITABLE_PRIMARY, errorLabels=["RetryableWriteError"])
    result = sink.write(_documents(2))
    assert set(result.failed) == {0, 1}  # reported failed: the exporter spools them
    assert listener.inserts == 1, "pymongo retried the insert on a closed client"
    assert len(listener.clients) == 1, "the write opened a new MongoClient after close()"
    assert sink._client is None  # nothing left open by the closed sink
