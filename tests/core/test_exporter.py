"""The exporter from the caller's side: never blocks, never raises; flush says what happened."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

import agentmeter
import agentmeter.testing
from agentmeter import track_run, track_step
from agentmeter.export import Spool
from agentmeter.sinks import MemorySink, Sink, SQLiteSink, WriteResult
from agentmeter.sinks._base import Document


class GatedSink(Sink):
    """Blocks inside write() until released: proves the caller never waits on a sink."""

    def __init__(self) -> None:
        self.name = "gated"
        self.entered = threading.Event()
        self.release = threading.Event()
        self.received: list[str] = []

    def write(self, documents: Sequence[Document]) -> WriteResult:
        self.entered.set()
        assert self.release.wait(30), "test never released the sink"
        self.received.extend(d["run_id"] for d in documents)
        return WriteResult()


class CountingMemorySink(MemorySink):
    """A MemorySink that sets ``reached`` once it holds ``target`` documents (no polling, no timing)."""

    def __init__(self, target: int) -> None:
        super().__init__()
        self.target = target
        self.reached = threading.Event()

    def write(self, documents: Sequence[Document]) -> WriteResult:
        result = super().write(documents)
        if len(self.documents) >= self.target:
            self.reached.set()
        return result


class RaisingSink(Sink):
    name = "raising"

    def __init__(self) -> None:
        self.calls = 0

    def write(self, documents: Sequence[Document]) -> WriteResult:
        self.calls += 1
        raise ConnectionError("backend down")


def test_a_blocked_sink_never_holds_up_the_decorated_function() -> None:
    gated, memory = GatedSink(), CountingMemorySink(target=49)
    agentmeter.configure(sinks=[gated, memory], batch_size=1)

    @track_run
    def agent(i: int) -> int:
        with track_step("s"):
            return i

    assert agent(1) == 1
    assert gated.entered.wait(10)  # the sink is now blocked inside write() on its worker thread...
    results = [agent(i) for i in range(2, 50)]  # ...and the caller still runs freely
    assert results == list(range(2, 50))
    assert gated.received == []
    # the other sink is not held up by the blocked one...
    assert memory.reached.wait(30) and len(memory.documents) == 49
    assert agentmeter.flush(timeout=0.2).timed_out is True  # ...while flush() waits for the blocked one
    gated.release.set()
    result = agentmeter.flush(timeout=30)
    assert result.ok, result
    assert len(set(gated.received)) == 49


def test_a_raising_sink_never_raises_into_user_code_and_nothing_is_lost(tmp_path: Path) -> None:
    raising = RaisingSink()
    agentmeter.configure(sinks=[raising], max_attempts=2, retry_initial=0, retry_max=0,
                         spool_dir=str(tmp_path / "spool"))

    @track_run
    def agent() -> str:
        return "ok"

    assert [agent() for _ in range(5)] == ["ok"] * 5
    result = agentmeter.flush(timeout=30)
    assert result.sinks["raising"].delivered == 0
    assert result.sinks["raising"].spooled == 5 and result.sinks["raising"].pending == 5
    assert not result.ok
    stats = agentmeter.stats()
    assert stats.runs_finished == 5 and stats.sinks["raising"].spooled == 5
    assert raising.calls >= 2


def test_flush_reports_delivered_per_sink_and_stats_count(tmp_path: Path) -> None:
    memory = MemorySink()
    sqlite = SQLiteSink(tmp_path / "x.db")
    agentmeter.configure(sinks=[memory, sqlite], flush_interval=3600)
    for _ in range(7):
        with track_run("r"):
            pass
    result = agentmeter.flush(timeout=30)
    assert {name: r.delivered for name, r in result.sinks.items()} == {"memory": 7, "sqlite": 7}
    assert result.ok and result.delivered == 14
    stats = agentmeter.stats()
    assert stats.runs_finished == 7 and stats.runs_exported == 14 and stats.runs_dropped == 0
    assert agentmeter.flush(timeout=5).delivered == 0  # nothing new


def test_shutdown_delivers_then_a_new_exporter_starts_on_next_run() -> None:
    memory = MemorySink()
    agentmeter.configure(sinks=[memory], flush_interval=3600)
    with track_run("before"):
        pass
    assert agentmeter.shutdown(timeout=10).sinks["memory"].delivered == 1
    with track_run("after"):
        pass
    assert agentmeter.flush(timeout=10).sinks["memory"].delivered == 1
    assert [d["name"] for d in memory.documents] == ["before", "after"]


def test_default_sink_is_the_local_store_at_agentmeter_db(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "default.db"
    monkeypatch.setenv("AGENTMETER_DB", str(db))
    agentmeter.testing.reset()
    with track_run("zero-setup"):
        pass
    assert agentmeter.flush(timeout=10).sinks["sqlite"].delivered == 1
    assert db.exists()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"flush_interval": -1}, "flush_interval"),
        ({"sinks": ["sqlite"]}, "sinks"),
        ({"sample_rate": 2}, "sample_rate"),
        ({"spool_full_policy": "drop_all"}, "spool_full_policy"),
        ({"redact": 3}, "redact"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_invalid_settings_raise_value_error_naming_the_setting(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        agentmeter.configure(**kwargs)


@pytest.mark.parametrize(
    ("var", "value"),
    [("AGENTMETER_BATCH_SIZE", "lots"), ("AGENTMETER_CAPTURE", "maybe"), ("AGENTMETER_SINKS", "sqlite,kafka")],
)
def test_invalid_environment_is_named_by_configure(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=var):
        agentmeter.configure()


def test_invalid_tracking_options_raise_at_decoration_time() -> None:
    with pytest.raises(ValueError, match="kind"):
        track_step("x", kind="banana")
    with pytest.raises(ValueError, match="agent"):
        track_run("x", agent=3)  # type: ignore[arg-type]


def test_a_sink_can_ask_for_bigger_batches() -> None:
    class Big(MemorySink):
        preferred_batch_size = 50

        def __init__(self) -> None:
            super().__init__("big")
            self.sizes: list[int] = []

        def write(self, documents: Sequence[Document]) -> WriteResult:
            self.sizes.append(len(documents))
            return super().write(documents)

    big, small = Big(), MemorySink("small")
    agentmeter.configure(sinks=[big, small], batch_size=10, flush_interval=3600)
    for _ in range(120):
        with track_run("r"):
            pass
    assert agentmeter.flush(timeout=30).ok
    assert max(big.sizes) == 50 and sum(big.sizes) == 120
    assert len(small.documents) == 120 and small.writes >= 12  # never more than 10 per write


def test_invalid_prices_are_refused_at_configure_time() -> None:
    with pytest.raises(ValueError, match="prices"):
        agentmeter.configure(prices={"gpt-x": {"input_per_mtok": "cheap"}})
    with pytest.raises(ValueError, match="prices"):
        agentmeter.configure(prices=["gpt-x"])


def test_a_document_the_sink_always_refuses_does_not_block_the_spool(tmp_path: Path) -> None:
    class Picky(SQLiteSink):
        def write(self, documents: Sequence[Document]) -> WriteResult:
            if any(d["name"] == "poison" for d in documents):
                raise OverflowError("cannot store this one")
            return super().write(documents)

    sink = Picky(tmp_path / "picky.db", name="picky")
    agentmeter.configure(sinks=[sink], max_attempts=1, retry_initial=0, retry_max=0, flush_interval=3600)
    for name in ("a", "b", "poison", "c", "d"):
        with track_run(name):
            pass
    result = agentmeter.flush(timeout=30).sinks["picky"]
    # the batch held the poison: all five went to the spool; the replay wrote them one by one, delivered
    # four and moved the one the sink can never take to the dead-letter lane
    assert (result.spooled, result.delivered, result.failed, result.pending) == (5, 4, 1, 0)
    import sqlite3

    names = sorted(r[0] for r in sqlite3.connect(sink.path).execute("SELECT name FROM agent_runs"))
    assert names == ["a", "b", "c", "d"]
    spool = Spool(tmp_path / "spool", 10**9)
    assert spool.count("picky:rejected") == 1 and spool.count("picky") == 0


def test_token_counts_beyond_64_bits_are_recorded_as_unknown() -> None:
    with agentmeter.testing.capture_runs() as cap, track_run("r"), agentmeter.track_call("p", "op") as call:
        call.record_usage(input_tokens=10**30, output_tokens=5)
    (c,) = cap.calls
    assert (c["input_tokens"], c["output_tokens"]) == (None, 5)
