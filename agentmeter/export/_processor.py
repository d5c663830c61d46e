"""Processors: what the caller's side hands finished runs to (after OpenTelemetry's ``SpanProcessor``).

:class:`BatchProcessor` is the default: ``submit`` appends the frozen run to each sink's :class:`Lane` and
returns; it never blocks on I/O and never raises. :class:`SyncProcessor` exports on the caller's thread,
for tests (``configure(sync_export=True)``, :func:`agentmeter.testing.capture_runs`).

Delivery is at least once (a write that hangs past its deadline is spooled and may still land later);
sinks store by id, so the stores hold each run once.
"""

from __future__ import annotations

import collections
import functools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from .. import _guard
from .._config import Settings
from .._paths import default_spool_dir
from .._record import FinishedRun, FinishedScore
from .._threads import start_thread
from ..sinks._base import Sink
from ._delivery import Delivery, Job
from ._documents import Documents, Entry, build_documents, report
from ._lane import Lane, Marker
from ._results import FlushResult, SinkFlushResult, SinkStats, Stats
from ._spool import Spool

__all__ = ["BatchProcessor", "Processor", "SyncProcessor"]

#: at a full queue, a caller's thread yields up to this long (wall time) for the lane's manager to make
#: room (on a busy machine the manager may not even be scheduled sooner), then the policy drops a run
_ROOM_WAIT_S = 0.010
#: past half the memory budget a caller's thread hands the GIL to the lane's manager for at most this long
#: per run, returning as soon as the manager took a batch out of the queue
_HANDOFF_S = 0.0005
#: the same while the lane spills everything and only a few batches are queued: the manager is often in
#: its spool write then (no GIL needed), and waiting longer would only idle the caller
_HANDOFF_SHORT_S = 0.00005


@runtime_checkable
class Processor(Protocol):
    """The seam between tracking and export."""

    settings: Settings

    def submit(self, finished: FinishedRun | FinishedScore) -> None:
        """Take a finished run (or a score). Never blocks on I/O, never raises."""

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Deliver (or spool) everything submitted so far, waiting at most ``timeout`` seconds."""

    def shutdown(self, timeout: float | None = None) -> FlushResult:
        """Flush, spool what is left, stop. Later submissions are spooled."""

    def stats(self) -> Stats:
        """Counters since this processor started."""

    def abandon_after_fork(self) -> None:
        """In a forked child: forget the parent's queued runs without sending them."""

    def spool_now(self) -> None:
        """From a signal handler, as the process is about to die: stop, and put every queued and in-flight
        run in the spool at once, on this thread, without waiting for any other thread (the interrupted
        code may hold a lock they need). Later submissions are spooled too."""


class _Base:
    """What both processors share: settings, sinks with their deliveries, the spool, documents."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.pid = os.getpid()
        self.submitted = 0
        self.documents = Documents(settings)
        sinks: Sequence[Sink] = settings.sinks if settings.sinks is not None else _default_sinks()
        self.spool = _open_spool(settings)
        self.deliveries = [Delivery(sink, self.spool, settings, self.stop_event, self.documents) for sink in sinks]
        self._closed = False

    def _sink_stats(self, name: str, snap: Mapping[str, int], pending: int) -> SinkStats:
        return SinkStats(delivered=snap["delivered"], spooled=snap["spooled"], dropped=snap["dropped"],
                         failed=snap["failed"], retries=snap["retries"], replayed=snap["replayed"],
                         queued=snap["queued"], pending=pending, degraded=bool(snap["degraded"]))

    def _stats(self, sinks: dict[str, SinkStats]) -> Stats:
        spool = self.spool
        return Stats(
            runs_finished=self.submitted,
            runs_exported=sum(s.delivered for s in sinks.values()),
            runs_dropped=sum(s.dropped for s in sinks.values()),
            runs_failed=sum(s.failed for s in sinks.values()),
            runs_spooled=sum(s.spooled for s in sinks.values()),
            spool_bytes=spool.size_bytes() if spool is not None else 0,
            spool_dropped=spool.dropped if spool is not None else 0,
            spool_broken=bool(spool is None or spool.broken),
            sinks=sinks,
        )


class BatchProcessor(_Base):
    """One lane per sink, each with its own threads, so a hung or slow sink never delays another one."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # re-entrant: the opt-in SIGTERM handler submits runs on the main thread, maybe inside submit()
        self.lock = threading.RLock()
        self.lanes = [Lane(d, self.documents, settings, self.lock) for d in self.deliveries]
        #: the lanes of sinks that store scores (``Sink.accepts_scores``); the others never see one
        self.score_lanes = [lane for lane in self.lanes if _accepts_scores(lane.sink)]

    # -- caller's side: never blocks, never raises ------------------------------------------------------
    def submit(self, finished: FinishedRun | FinishedScore) -> None:
        """Hand a finished run (or a score) to every lane. Never blocks on I/O, never raises."""
        try:
            if self._closed:  # after shutdown (a run ending during interpreter exit): keep it on disk
                self._spool_late(Entry(finished))
                return
            entry = Entry(finished)
            size = entry.size
            s = self.settings
            full: list[Lane] | None = None
            pressed: Lane | None = None
            score = entry.is_score
            with self.lock:
                if not score:
                    self.submitted += 1
                for lane in self.score_lanes if score else self.lanes:
                    queue = lane.queue
                    if len(queue) >= s.max_queue_runs or lane.queued_bytes + size > s.max_queue_bytes:
                        full = [lane] if full is None else [*full, lane]
                        continue
                    queue.append(entry)
                    lane.queued_bytes += size
                    if len(queue) > lane.handoff_runs or lane.queued_bytes > lane.handoff_bytes:
                        pressed = lane
                    elif len(queue) >= lane.batch_size and not lane.wake.is_set():
                        lane.wake.set()
            if full is not None:
                for lane in full:
                    self._at_cap(lane, entry)
            elif pressed is not None:
                self._hand_off(pressed)
        except Exception as exc:
            _guard.internal_error("submit", exc)

    def _hand_off(self, lane: Lane) -> None:
        """The lane's queue is past half its memory budget, where its manager spills to the spool. Under a
        caller in a tight loop the manager gets the GIL back only once per switch interval (5 ms) after each
        spool write (SQLite releases the GIL; taking it back waits for the caller to be made to drop it),
        too seldom to keep up: the queue would reach its hard cap. So the caller's thread hands the GIL
        over: it waits, at most 0.5 ms, until the manager took the next batch out of the queue (counted,
        ``queue.caller_handoffs``). It never writes the spool itself."""
        if not lane.alive() or not lane.delivery.spool_usable():
            return  # nobody can spill: the hard cap (below) decides
        _guard.counters["queue.caller_handoffs"] += 1
        lane.room.clear()
        lane.wake.set()
        lane.room.wait(_HANDOFF_S if lane.over_watermark() else _HANDOFF_SHORT_S)

    def _at_cap(self, lane: Lane, entry: Entry) -> None:
        """The lane's queue is at its hard memory cap: its manager, which spills to the spool from half the
        budget on, could not keep up (a tight loop on the caller's side holds the GIL). The caller's thread
        never writes the spool: it yields, at most 10 ms, so the manager gets the GIL (and the CPU) to make
        room; if there is still none, the policy drops a run, counted."""
        s = self.settings
        wait = lane.alive() and lane.delivery.spool_usable()
        deadline = time.monotonic() + _ROOM_WAIT_S
        if wait:
            _guard.counters["queue.caller_yields"] += 1
        while True:
            with self.lock:
                if len(lane.queue) < s.max_queue_runs and lane.queued_bytes + entry.size <= s.max_queue_bytes:
                    lane.queue.append(entry)
                    lane.queued_bytes += entry.size
                    return
                left = deadline - time.monotonic()
                if not wait or left <= 0:
                    self._overflow(lane, entry)
                    return
                lane.room.clear()
            lane.wake.set()
            lane.room.wait(min(left, 0.0005))

    def _overflow(self, lane: Lane, entry: Entry) -> None:
        # The hard memory cap: the lane's manager (the thread that spills to the spool from half the
        # budget on) could not keep up, or the spool is unusable. The caller's thread never writes the
        # spool: the configured policy drops one run from memory (the oldest queued, or this one), counted.
        lane.delivery.dropped += 1
        _guard.counters["queue.dropped"] += 1
        _guard.warn(f"sink.{lane.name}.queue_full", "queue over its memory budget; run dropped by policy",
                    sink=lane.name, policy=self.settings.spool_full_policy)
        if self.settings.spool_full_policy == "drop_oldest":
            victim = _pop_oldest(lane.queue)
            if victim is not None:
                lane.queued_bytes -= victim.size
                lane.queue.append(entry)
                lane.queued_bytes += entry.size
        lane.wake.set()

    def _spool_late(self, entry: Entry) -> None:
        # after shutdown (a run ending during interpreter exit): there is no thread left to hand it to
        if not entry.is_score:
            self.submitted += 1
        for lane in self.score_lanes if entry.is_score else self.lanes:
            lane.delivery.spool_entries([entry])

    # -- flush, shutdown, stats -----------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> FlushResult:
        """Wait until every lane has delivered or spooled what was queued, and tried its spool once."""
        before = {lane.name: lane.snapshot() for lane in self.lanes}
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.spool is not None:
            self.spool.retry_now()  # a flush tries the spool's disk again, even during its back-off
        markers = []
        for lane in self.lanes:
            if not lane.alive():
                continue
            marker = Marker()
            with self.lock:
                lane.queue.append(marker)
            lane.wake.set()
            markers.append(marker)
        timed_out = False
        for marker in markers:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not marker.done.wait(remaining):
                timed_out = True
        return self._result(before, timed_out)

    def _result(self, before: Mapping[str, Mapping[str, int]], timed_out: bool) -> FlushResult:
        out = {}
        for lane in self.lanes:
            now, was = lane.snapshot(), before[lane.name]
            out[lane.name] = SinkFlushResult(
                delivered=now["delivered"] - was["delivered"],
                spooled=now["spooled"] - was["spooled"],
                dropped=now["dropped"] - was["dropped"],
                failed=now["failed"] - was["failed"],
                pending=lane.pending(),
            )
        return FlushResult(out, timed_out)

    def shutdown(self, timeout: float | None = None) -> FlushResult:
        """Deliver what is queued within ``timeout``, spool the rest (including batches a hung sink still
        holds), and stop the workers. Returns within ``timeout`` plus the time to write the spool."""
        if self._closed:
            return FlushResult({lane.name: SinkFlushResult(pending=lane.pending()) for lane in self.lanes})
        before = {lane.name: lane.snapshot() for lane in self.lanes}
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        reserve = 0.0 if timeout is None else min(1.0, 0.2 * timeout)  # time kept for spooling leftovers
        for lane in self.lanes:
            lane.draining = True
        result = self.flush(None if timeout is None else max(0.0, timeout - reserve))
        if result.timed_out:  # what is still queued or being written is spooled from here on
            _guard.counters["shutdown.deadline"] += 1

        # Joining the workers may use the time up to the reserve; spooling leftovers and closing the sinks
        # use the reserve, so a hung sink cannot push the exit past the deadline.
        join_until = None if deadline is None else deadline - reserve

        def until(limit: float | None) -> float | None:
            return None if limit is None else max(0.0, limit - time.monotonic())

        def remaining() -> float | None:
            return until(deadline)

        self._closed = True
        self.stop_event.set()  # cuts retry waits short
        for lane in self.lanes:
            lane.close_timeout = remaining()
            lane.stopping = True
            lane.wake.set()
            lane.writer_wake.set()
        for lane in self.lanes:
            if lane.manager is not None:
                lane.manager.join(until(join_until))
        for lane in self.lanes:
            # Spool what is still queued from here too (batches are popped under the lock: each run is
            # spooled once, by whichever thread pops it), then let a batch the manager is spooling finish.
            lane.stop_drain()
            if lane.manager is not None:
                lane.manager.join(remaining())
            if lane.writer is not None:
                lane.writer.join(until(join_until))
            job = lane.job
            if job is not None:
                # still writing at the deadline: spooled (a hang only if it outlived write_timeout)
                _guard.counters["shutdown.writes_abandoned"] += 1
                hung = time.monotonic() - job.started > self.settings.write_timeout
                lane.abandon(job, "sink.write still running at shutdown; batch spooled" if hung else "")
                lane.resolved_gen = max(lane.resolved_gen, job.gen)
        for lane in self.lanes:
            if not lane.closed:  # no writer thread, or it is stuck in the sink: close from a helper
                _call_with_deadline(f"close.{lane.name}", functools.partial(lane.sink.close, remaining()),
                                    remaining())
        return self._result(before, result.timed_out)

    def spool_now(self) -> None:
        self._closed = True
        self.stop_event.set()
        if self.spool is not None:
            self.spool.retry_now()  # as flush() does: a failure moments ago (a busy disk) must not drop them all
        for lane in self.lanes:
            lane.stopping = True  # nobody is woken: the manager and the writer stop when they next look
            job = lane.job
            if job is not None and not job.replay:
                lane.abandon(job, "")
            # what this thread's interrupted drain popped and had not spooled yet (spooled twice at worst:
            # the ids dedupe), then the rest of the queue
            interrupted, lane.drain_hand = lane.drain_hand, []
            lane.delivery.spool_entries(interrupted)
            lane.stop_drain()
            in_hand = list(lane.in_hand)  # what the manager took from the queue and may not write now
            if in_hand:
                lane.delivery.spool_entries(in_hand)

    def abandon_after_fork(self) -> None:
        """In a forked child: the parent owns these queued runs; forget them without sending. The spool's
        connections are left untouched (closing inherited SQLite handles in a child is unsafe)."""
        for lane in self.lanes:
            lane.queue.clear()
            lane.markers.clear()
            lane.stopping = True
            lane.job = None
        self._closed = True

    def stats(self) -> Stats:
        return self._stats({lane.name: self._sink_stats(lane.name, lane.snapshot(), lane.pending())
                            for lane in self.lanes})


class SyncProcessor(_Base):
    """Exports each run on the caller's thread the moment it finishes (for tests; it does I/O there)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._gen = 0

    def submit(self, finished: FinishedRun | FinishedScore) -> None:
        try:
            entry = Entry(finished)
            if not entry.is_score:
                self.submitted += 1
            for delivery in self.deliveries:
                if entry.is_score and not _accepts_scores(delivery.sink):
                    continue
                docs = build_documents(self.documents, [entry], delivery.sink.writes_runs, delivery)
                if not docs:
                    continue
                if self._closed or (delivery.degraded(time.monotonic()) and delivery.spool_usable()):
                    delivery.spool(docs)
                    continue
                self._gen += 1
                delivery.deliver(Job(self._gen, docs, replay=False))
        except Exception as exc:
            _guard.internal_error("submit", exc)

    def _snap(self, d: Delivery) -> dict[str, int]:
        spool_dropped = self.spool.dropped_by_lane[d.name] if self.spool is not None else 0
        return {"delivered": d.delivered + d.replayed, "spooled": d.spooled, "dropped": d.dropped + spool_dropped,
                "failed": d.failed, "retries": d.retries, "replayed": d.replayed, "queued": 0,
                "degraded": int(d.degraded(time.monotonic()))}

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Everything was exported at submit; tries each sink's spool once."""
        before = {d.name: self._snap(d) for d in self.deliveries}
        if self.spool is not None:
            self.spool.retry_now()
        if not self._closed:
            for d in self.deliveries:
                if d.spool_usable() and d.spool_count():
                    self._gen += 1
                    d.replay(Job(self._gen, [], replay=True))
        out = {}
        for d in self.deliveries:
            now, was = self._snap(d), before[d.name]
            out[d.name] = SinkFlushResult(
                delivered=now["delivered"] - was["delivered"], spooled=now["spooled"] - was["spooled"],
                dropped=now["dropped"] - was["dropped"], failed=now["failed"] - was["failed"],
                pending=d.spool_count(),
            )
        return FlushResult(out)

    def shutdown(self, timeout: float | None = None) -> FlushResult:
        result = self.flush(timeout)
        self._closed = True
        self.stop_event.set()
        for d in self.deliveries:
            _call_with_deadline(f"close.{d.name}", functools.partial(d.sink.close, timeout), timeout)
        return result

    def abandon_after_fork(self) -> None:
        self._closed = True

    def spool_now(self) -> None:
        self._closed = True  # every run was exported when it finished: nothing is queued

    def stats(self) -> Stats:
        return self._stats({d.name: self._sink_stats(d.name, self._snap(d), d.spool_count())
                            for d in self.deliveries})


def make_processor(settings: Settings) -> BatchProcessor | SyncProcessor:
    """The processor the settings ask for."""
    return SyncProcessor(settings) if settings.sync_export else BatchProcessor(settings)


# -- helpers ------------------------------------------------------------------------------------------


def _call_with_deadline(where: str, fn: Callable[[], object], timeout: float | None) -> None:
    """Run ``fn`` on a helper thread and wait at most ``timeout``: a sink's close() may hang too."""

    def target() -> None:
        try:
            fn()
        except Exception as exc:
            report(where, exc)

    try:
        thread = start_thread(target, f"agentmeter-{where}")
    except RuntimeError:
        # no new threads at interpreter shutdown (3.12+): calling fn here could hang the exit for good,
        # and the process is ending (its files and sockets close with it)
        _guard.counters["exporter.close_skipped"] += 1
        return
    thread.join(timeout)
    if thread.is_alive():  # left behind (a daemon thread): the deadline won
        _guard.counters["exporter.close_abandoned"] += 1


def _pop_oldest(queue: collections.deque[Entry | Marker]) -> Entry | None:
    for i, item in enumerate(queue):
        if isinstance(item, Entry):
            del queue[i]
            return item
    return None


def _default_sinks() -> list[Sink]:
    from ..sinks.sqlite import SQLiteSink  # sqlite3: loaded with the first processor, not at import

    return [SQLiteSink()]


def _open_spool(settings: Settings) -> Spool | None:
    try:
        folder = settings.spool_dir or default_spool_dir()
        return Spool(folder, settings.spool_max_bytes, settings.spool_full_policy)
    except Exception as exc:
        _guard.internal_error("open_spool", exc)
        return None


def _accepts_scores(sink: object) -> bool:
    return bool(getattr(sink, "accepts_scores", False))
