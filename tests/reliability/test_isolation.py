"""Isolation and bounded memory: a hung sink's queue spills to the spool instead of filling memory."""

from __future__ import annotations

from pathlib import Path

import agentmeter
from agentmeter import track_run, track_step
from agentmeter.export import BatchProcessor
from agentmeter.sinks import MemorySink

from .conftest import CountingSink, FaultSink


def test_a_hung_sink_spills_to_the_spool_instead_of_growing_memory(tmp_path: Path) -> None:
    hung = FaultSink(MemorySink("hung"), "hang")
    control = CountingSink("control", target=500)
    agentmeter.configure(sinks=[hung, control], spool_dir=str(tmp_path / "spool"), batch_size=10,
                         max_queue_runs=40, flush_interval=0.02, write_timeout=0.2)
    processor = agentmeter._state.current_processor()
    assert isinstance(processor, BatchProcessor)
    lane = processor.lanes[0]
    peak = 0
    for i in range(500):
        with track_run("r", metadata={"i": i}), track_step("s"):
            pass
        peak = max(peak, len(lane.queue))
        if i == 0:
            assert hung.entered.wait(10)  # the writer is now stuck inside write()
    assert control.reached.wait(30)
    during = agentmeter.flush(timeout=1)
    assert during.timed_out  # flush waits for the hung write only within its timeout
    stats = agentmeter.stats().sinks["hung"]
    assert peak <= 40 and stats.dropped == 0
    assert stats.spooled >= 499 - 40  # all but what memory may hold went to disk
    hung.release.set()
    hung.active.clear()
    after = agentmeter.flush(timeout=30)
    assert after.sinks["hung"].pending == 0 and not after.timed_out
    assert len(hung.inner.documents) == 500  # type: ignore[attr-defined]
    assert agentmeter.stats().sinks["hung"].dropped == 0


def test_a_slow_sink_does_not_delay_a_fast_one(tmp_path: Path) -> None:
    slow = FaultSink(MemorySink("slow"), "slow", slow_s=0.2)
    fast = CountingSink("fast", target=50)
    agentmeter.configure(sinks=[slow, fast], spool_dir=str(tmp_path / "spool"), batch_size=1,
                         flush_interval=0.02)
    for _ in range(50):
        with track_run("r"):
            pass
    assert fast.reached.wait(5)  # 50 slow writes would take 10 s; the fast sink is done long before
    assert len(slow.inner.documents) < 50  # type: ignore[attr-defined]
    slow.active.clear()
    assert agentmeter.flush(timeout=60).ok
