"""Issue 14, attacks 9 and 10: a quiet, quick exit on every supported Python, and a caller's thread that
never does I/O, even with a hung sink and a full memory queue."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import agentmeter
from agentmeter import _guard, track_run, track_step
from agentmeter.export import BatchProcessor, _spool
from agentmeter.sinks import MemorySink

from .conftest import FaultSink, run_python

# -- attack 9 ------------------------------------------------------------------------------------------

_DAEMON_AT_EXIT = r"""
import atexit, json, sys, threading, time

def report():  # registered before agentmeter's own exit handler, so it runs after it
    import agentmeter._guard as guard
    print("COUNTERS", json.dumps(dict(guard.counters)), flush=True)

atexit.register(report)
import agentmeter
from agentmeter import track_run, track_step

agentmeter.configure(exit_timeout=60)
started = threading.Event()

def loop():
    while True:
        with track_run("daemon"):
            with track_step("s"):
                started.set()

threading.Thread(target=loop, daemon=True).start()
started.wait(30)
threading.Event().wait(0.5)  # the daemon thread tracks flat out for a while
with track_run("main"):
    pass
left_open = track_run("left-open").__enter__()  # recorded as cancelled at exit
"""

_OPEN_ONLY = r"""
from agentmeter import track_run
track_run("only-open").__enter__()  # no run ended before exit: the exporter starts during exit
"""


def _store_names(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM agent_runs WHERE name != 'daemon'")]


def _counters(stdout: str) -> dict[str, int]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("COUNTERS "))
    return dict(json.loads(line[len("COUNTERS "):]))


def _exit_with_a_daemon_tracking(tmp_path: Path, **env: str) -> tuple[Any, Any, dict[str, int], list[str]]:
    db, spool = tmp_path / "store.db", tmp_path / "spool"
    env = {"AGENTMETER_DB": str(db), "AGENTMETER_SPOOL_DIR": str(spool), **env}
    out = run_python(_DAEMON_AT_EXIT, env=env, timeout=120)
    only_open = run_python(_OPEN_ONLY, env=env, timeout=120)
    return out, only_open, _counters(out.stdout), sorted(_store_names(db))


def test_exit_is_quiet_and_quick_with_a_daemon_thread_still_tracking(tmp_path: Path, record_attack: Any) -> None:
    # "quick": the exit does not wait for its deadline (exit_timeout 60 s): the flush at exit finished and
    # no write was left behind, as counted by the child. How long it takes is bench_exit.py's business.
    out, only_open, counters, names = _exit_with_a_daemon_tracking(tmp_path)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    quiet = not lines and not [ln for ln in only_open.stderr.splitlines() if ln.strip()]
    deadline = counters.get("shutdown.deadline", 0) + counters.get("shutdown.writes_abandoned", 0)
    record_attack(attack=9, attack_text="exit with a daemon thread tracking flat out (exit_timeout 60 s); exit "
                  "with a run open and nothing exported yet", expected="no log line; exit without waiting "
                  "for exit_timeout; every run in the local store", outcome=f"{len(lines)} log lines; deadline "
                  f"reached: {bool(deadline)}; dropped {counters.get('queue.dropped', 0)}; stored {names}",
                  passed=quiet and not deadline and names == ["left-open", "main", "only-open"])
    assert out.returncode == 0 and only_open.returncode == 0, out.stderr + only_open.stderr
    assert lines == [], lines  # no error line, no false "sink hung" warning, no late-span noise
    assert only_open.stderr.strip() == ""
    assert deadline == 0, counters  # the exit did not wait for exit_timeout
    assert counters.get("queue.dropped", 0) == 0, counters
    assert names == ["left-open", "main", "only-open"]  # delivered at exit, not only spooled


def test_a_daemon_thread_tracking_flat_out_into_a_small_queue_loses_nothing_at_exit(tmp_path: Path) -> None:
    # the flat-out daemon filled the queue's hard cap (then: "queue over its memory budget; run dropped by
    # policy") before the manager could spill; a small budget made that happen nearly every time
    out, _, counters, names = _exit_with_a_daemon_tracking(tmp_path, AGENTMETER_MAX_QUEUE_RUNS="300")
    assert out.returncode == 0, out.stderr
    assert [ln for ln in out.stderr.splitlines() if ln.strip()] == []
    assert counters.get("queue.dropped", 0) == 0 and counters.get("queue.caller_yields", 0) == 0, counters
    assert counters.get("queue.caller_handoffs", 0) > 0, counters  # the memory pressure was real
    assert names == ["left-open", "main", "only-open"]


# -- attack 10 -----------------------------------------------------------------------------------------


def test_the_callers_thread_never_writes_the_spool_even_at_the_memory_cap(tmp_path: Path, monkeypatch: Any,
                                                                         record_attack: Any) -> None:
    writers: set[int] = set()
    real_put = _spool.Spool.put

    def put(self: _spool.Spool, lane: str, documents: Any, *args: Any, **kwargs: Any) -> int:
        writers.add(threading.get_ident())
        return real_put(self, lane, documents, *args, **kwargs)

    monkeypatch.setattr(_spool.Spool, "put", put)
    hung = FaultSink(MemorySink("hung"), "hang")
    agentmeter.configure(sinks=[hung], spool_dir=str(tmp_path / "spool"), max_queue_runs=40, batch_size=10,
                         write_timeout=0.2, flush_interval=0.02)
    produced = 3000
    try:
        for i in range(produced):  # a tight loop, far faster than anything can be written
            with track_run("tight", metadata={"i": i}), track_step("s"):
                pass
        stats = agentmeter.stats().sinks["hung"]
        caller_wrote = threading.get_ident() in writers
        during = agentmeter.flush(timeout=1)  # the hung write holds it up to its timeout
    finally:
        hung.release.set()
    hung.active.clear()
    flushed = agentmeter.flush(timeout=30)
    for _ in range(20):  # each flush tries the spool once; a replay cut short (write_timeout 0.2 s) resumes
        if not flushed.sinks["hung"].pending:
            break
        flushed = agentmeter.flush(timeout=30)
    final = agentmeter.stats().sinks["hung"]
    accounted = final.spooled + final.dropped + final.delivered
    record_attack(attack=10, attack_text=f"{produced} runs in a tight loop, hung sink, memory cap 40 runs",
                  expected="the caller never writes the spool; every run spooled, or dropped and counted",
                  outcome=f"caller wrote the spool: {caller_wrote}; spooled {final.spooled}, dropped "
                  f"{final.dropped} (counted {_guard.counters['queue.dropped']})",
                  passed=not caller_wrote and accounted >= produced)
    assert not caller_wrote, "the caller's thread wrote to the spool"
    assert _guard.counters["queue.caller_spills"] == 0
    assert stats.queued <= 40  # the memory bound held
    assert final.dropped == _guard.counters["queue.dropped"]  # every drop at the cap is counted
    assert during.timed_out
    assert accounted >= produced, (flushed, final)
    assert flushed.sinks["hung"].pending == 0  # and once the sink answers, the spool drains


def test_a_flat_out_producer_never_reaches_the_hard_cap_while_the_spool_takes_runs(tmp_path: Path) -> None:
    # A tight loop holds the GIL; the manager, which spills, got it back only once per switch interval
    # after each spool write and fell behind until the queue hit its cap (runs dropped by policy). Past
    # half the budget the caller now hands the GIL to the manager for one batch per run.
    hung = FaultSink(MemorySink("hung"), "hang")
    agentmeter.configure(sinks=[hung], spool_dir=str(tmp_path / "spool"), max_queue_runs=2000,
                         write_timeout=0.2, flush_interval=0.02)
    produced = 30_000
    try:
        for _ in range(produced):
            with track_run("flat-out"), track_step("s"):
                pass
        stats = agentmeter.stats().sinks["hung"]
    finally:
        hung.release.set()
    hung.active.clear()
    assert _guard.counters["queue.caller_yields"] == 0, "the queue reached its hard cap"
    assert stats.dropped == 0 and _guard.counters["queue.dropped"] == 0
    assert _guard.counters["queue.caller_spills"] == 0
    assert stats.queued <= 2000
    flushed = agentmeter.flush(timeout=60)
    for _ in range(20):  # a replay cut short by write_timeout resumes at the next flush
        if not flushed.sinks["hung"].pending:
            break
        flushed = agentmeter.flush(timeout=60)
    assert flushed.sinks["hung"].pending == 0
    assert len(hung.deliveries) == produced  # every run reached the sink, through the spool or not


def test_while_a_hung_sink_spills_everything_the_queue_stays_a_few_batches_long(tmp_path: Path) -> None:
    # The caller handed the GIL to the manager only past half the memory budget, so with the sink hung (the
    # lane spilling everything) the queue sat at half the budget: 5,000 runs of the default 10,000, some
    # 60,000 objects the garbage collector walks on the caller's thread (a full collection took ~40 ms),
    # and a kill -9 would lose them all. While the lane spills everything it now hands off past 4 batches.
    hung = FaultSink(MemorySink("hung"), "hang")
    agentmeter.configure(sinks=[hung], spool_dir=str(tmp_path / "spool"), write_timeout=0.2, flush_interval=0.05)
    processor = agentmeter._state.current_processor()
    assert isinstance(processor, BatchProcessor)
    lane = processor.lanes[0]
    try:
        with track_run("first"), track_step("s"):
            pass
        assert hung.entered.wait(10)  # the writer is stuck inside write()
        assert agentmeter.flush(timeout=1).timed_out  # waits for the hung write within its timeout only
        assert lane.hung  # the lane gave up on the write (write_timeout 0.2 s): it spools everything
        peak, produced = 0, 8000
        for i in range(produced):
            with track_run("tight"), track_step("s"):
                pass
            if i % 20 == 0:
                peak = max(peak, len(lane.queue))
        stats = agentmeter.stats().sinks["hung"]
    finally:
        hung.release.set()
    hung.active.clear()
    assert _guard.counters["queue.caller_handoffs"] > 0, "no memory pressure: the test proves nothing"
    assert stats.dropped == 0 and _guard.counters["queue.caller_yields"] == 0
    assert peak < 1000, peak  # was ~5,000 (half of max_queue_runs)
    flushed = agentmeter.flush(timeout=60)
    for _ in range(20):  # a replay cut short by write_timeout resumes at the next flush
        if not flushed.sinks["hung"].pending:
            break
        flushed = agentmeter.flush(timeout=60)
    assert flushed.sinks["hung"].pending == 0
    assert len(hung.deliveries) == produced + 1  # every run reached the sink, through the spool
