"""One sink's lane: a bounded in-memory queue and two daemon threads.

* the **manager** thread turns queued runs into documents and hands one batch at a time to the writer; it
  never calls the sink, so it never hangs. It is also the thread that relieves memory pressure: it spills
  queued runs to the spool (as frozen records, cheap to write) when the sink is known to be down or
  failing, when the writer is stuck past ``write_timeout``, or when the queue passes half its memory
  budget, so memory stays bounded whatever the sink does and the caller's thread never writes the spool
  (past half the budget, a submitting caller hands it the GIL for one batch: ``BatchProcessor._hand_off``);
* the **writer** thread runs the :class:`~agentmeter.export._delivery.Delivery` of each batch (retries,
  spooling, replay).

``flush()`` puts a :class:`Marker` in the queue; it is set once everything before it was delivered or
spooled and one replay of the spool was tried.
"""

from __future__ import annotations

import collections
import threading
import time

from .. import _guard
from .._config import Settings
from .._threads import start_thread
from ..sinks._base import Document
from ._delivery import Delivery, Job
from ._documents import Documents, Entry, build_documents, report

__all__ = ["Lane", "Marker"]

_SPILL_BATCH = 16
_NEAR_CAP_BATCH = 128
_DRAIN_BATCH = 250
#: while a lane spills everything, a caller hands off past this many spill batches queued
_SPILL_BACKLOG = 4


class Marker:
    """Put in a lane's queue by flush(): set once everything before it was delivered or spooled, and one
    replay of the spool was tried."""

    __slots__ = ("done", "need_gen", "replay_tried")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.need_gen = 0
        self.replay_tried = False


class Lane:
    """One sink's queue, manager and writer threads, in front of its :class:`Delivery`."""

    def __init__(self, delivery: Delivery, documents: Documents, settings: Settings,
                 lock: threading.RLock, threaded: bool = True) -> None:
        self.delivery = delivery
        self.documents = documents
        self.sink = delivery.sink
        self.name = delivery.name
        self.settings = s = settings
        self.lock = lock  # the processor's: submit() appends under it
        self.queue: collections.deque[Entry | Marker] = collections.deque()
        self.queued_bytes = 0
        # a sink may ask for bigger batches than the default (Firehose packs 500 records per call)
        self.batch_size = max(s.batch_size, getattr(self.sink, "preferred_batch_size", None) or 0)
        self.spill_runs = max(1, s.max_queue_runs // 2)
        self.spill_bytes = max(1, s.max_queue_bytes // 2)
        # spill in small batches: the caller's thread gets the GIL back between two spool transactions
        self.spill_batch = max(1, min(self.batch_size, _SPILL_BATCH))
        # past these a submitting caller hands the GIL to the manager (BatchProcessor._hand_off): half the
        # budget while the sink takes what is queued; a few spill batches while the lane spills everything
        # (the sink hung, failing or down), so the queue stays short: memory, and the time the garbage
        # collector spends on queued runs, which stays on the caller's thread
        self.handoff_runs, self.handoff_bytes = self.spill_runs, self.spill_bytes
        self.near_cap_runs = max(1, s.max_queue_runs * 3 // 4)
        self.near_cap_bytes = max(1, s.max_queue_bytes * 3 // 4)
        self.wake = threading.Event()
        self.writer_wake = threading.Event()
        self.room = threading.Event()  # set by the manager when it took runs out of a full queue
        self.stopping = False
        self.draining = False  # shutdown began: deliver what is queued rather than spool it
        self.in_hand: list[Entry] = []  # popped by the manager, not yet spooled nor handed to the writer
        self.drain_hand: list[Entry] = []  # popped by shutdown's drain, not yet spooled
        self.job: Job | None = None  # set by the manager when the writer is idle, cleared by the writer
        self.gen = 0  # jobs started
        self.resolved_gen = 0  # highest job finished or abandoned
        self.markers: list[Marker] = []
        self.next_spool_check = 0.0
        self.close_timeout: float | None = None  # set by shutdown before it stops the writer
        self.closed = False  # the writer closed the sink
        self.manager: threading.Thread | None = None
        self.writer: threading.Thread | None = None
        if threaded:
            try:
                self.manager = start_thread(self._manager_loop, f"agentmeter-{self.name}")
                self.writer = start_thread(self._writer_loop, f"agentmeter-{self.name}-write")
            except RuntimeError as exc:  # no new threads at interpreter shutdown (3.12+): spool at exit
                if "shutdown" in str(exc):  # expected then, not a fault: counted, not logged
                    _guard.counters["exporter.no_threads_at_exit"] += 1
                else:
                    _guard.warn("exporter.threads", "cannot start worker threads; runs will be spooled",
                                error=repr(exc)[:200])
                self.manager = self.writer = None

    # -- state ------------------------------------------------------------------------------------------
    @property
    def hung(self) -> bool:
        job = self.job
        return job is not None and job.abandoned

    def alive(self) -> bool:
        return self.manager is not None and self.manager.is_alive() and not self.stopping

    # -- manager thread --------------------------------------------------------------------------------
    def _manager_loop(self) -> None:
        # open this thread's spool connection now: a burst must not wait for it (SQLite's WAL setup and
        # the schema take tens of milliseconds) while the queue fills up
        spool = self.delivery.spool_store
        if spool is not None:
            spool.warm()
        while True:
            self.wake.wait(self._wait_time())
            self.wake.clear()
            try:
                if self.stopping:
                    self.stop_drain()
                    return
                self._tick()
            except Exception as exc:
                report("lane.manager", exc)

    def _wait_time(self) -> float:
        wait = self.settings.flush_interval
        job = self.job
        if job is not None and not job.abandoned:
            wait = min(wait, max(0.005, job.started + self.settings.write_timeout - time.monotonic()))
        return wait

    def _tick(self) -> None:
        try:
            self._step()
        finally:
            self.in_hand = []

    def _step(self) -> None:
        now = time.monotonic()
        delivery = self.delivery
        job = self.job
        if job is not None and not job.abandoned and now - job.started > self.settings.write_timeout:
            self.abandon(job, "sink.write did not return within write_timeout; batch spooled")
        self._set_handoff(now)
        while self.queue:
            head = self.queue[0]
            if isinstance(head, Marker):
                self.pop_batch()
                self._park(head)
                continue
            # relieve memory before all; not when shutting down: delivering beats spooling then replaying
            spill_first = not self.draining and self.over_watermark() and delivery.spool_usable()
            if self.job is None and not delivery.degraded(now) and not spill_first:
                if self._replay_for_marker():
                    break  # a flush waits for one replay of the spool: it goes before the next batch
                entries, marker = self.pop_batch()
                self.room.set()
                docs = self.build(entries)
                if docs:
                    self._start(docs, replay=False)
                if marker is not None:
                    self._park(marker)
                continue
            if delivery.spool_usable() and (self.hung or delivery.failing or delivery.degraded(now)
                                            or self.over_watermark()):
                entries, marker = self.pop_batch(self._spill_size())
                self.room.set()  # a caller at the hard cap may go on
                delivery.spool_entries(entries)
                if marker is not None:
                    self._park(marker)
                continue
            break  # the writer is busy with a healthy sink: keep the rest in memory for now
        self._resolve_markers()
        if (self.job is None and not self.queue and not delivery.degraded(now) and now >= self.next_spool_check
                and delivery.spool_usable()):
            self.next_spool_check = now + self.settings.flush_interval
            if delivery.spool_count():
                self._start([], replay=True)

    def _set_handoff(self, now: float) -> None:
        delivery = self.delivery
        if delivery.spool_usable() and (self.hung or delivery.failing or delivery.degraded(now)):
            self.handoff_runs = min(self.spill_runs, _SPILL_BACKLOG * self.spill_batch)
            self.handoff_bytes = min(self.spill_bytes, _SPILL_BACKLOG * self.spill_batch * 4096)
        else:
            self.handoff_runs, self.handoff_bytes = self.spill_runs, self.spill_bytes

    def _replay_for_marker(self) -> bool:
        """Start the replay a waiting flush asked for, if any (a busy writer would otherwise never be idle
        for it while runs keep coming)."""
        for marker in self.markers:
            if (self.resolved_gen >= marker.need_gen and not marker.replay_tried and self.delivery.spool_usable()
                    and self.delivery.spool_count()):
                marker.replay_tried = True
                self._start([], replay=True)
                marker.need_gen = self.gen
                return True
        return False

    def _spill_size(self) -> int:
        # small batches keep each hold of the GIL short (the caller's latency: encoding a batch holds it,
        # the spool's SQLite calls release it; past half the budget a submitting caller hands the GIL over
        # for one batch per run, see BatchProcessor._hand_off, which keeps up with a tight loop); near the
        # hard cap (the hand-offs did not keep up: a tiny budget, a starved manager), or at shutdown,
        # bigger ones cost fewer transactions: throughput matters more then
        if self.draining:
            return max(self.spill_batch, _DRAIN_BATCH)
        if len(self.queue) > self.near_cap_runs or self.queued_bytes > self.near_cap_bytes:
            return max(self.spill_batch, _NEAR_CAP_BATCH)
        return self.spill_batch

    def over_watermark(self) -> bool:
        return len(self.queue) > self.spill_runs or self.queued_bytes > self.spill_bytes

    def pop_batch(self, limit: int = 0) -> tuple[list[Entry], Marker | None]:
        """Up to ``limit`` (default ``batch_size``) entries from the head of the queue, stopping at a flush
        marker."""
        size = limit or self.batch_size
        entries: list[Entry] = []
        with self.lock:
            if threading.current_thread() is self.manager:
                self.in_hand = entries  # a signal handler spooling in a hurry spools these too
            else:
                self.drain_hand = entries  # shutdown's drain, which a signal handler may interrupt
            queue = self.queue
            while queue and len(entries) < size:
                item = queue.popleft()
                if isinstance(item, Marker):
                    return entries, item
                entries.append(item)
                self.queued_bytes -= item.size
        return entries, None

    def build(self, entries: list[Entry]) -> list[Document]:
        """Documents of ``entries``; a run whose document cannot be built is counted failed, alone. A sink
        that writes rows straight from the frozen run gets documents built only if it reads them."""
        return build_documents(self.documents, entries, self.sink.writes_runs, self.delivery)

    def _start(self, docs: list[Document], replay: bool) -> None:
        self.gen += 1
        self.job = Job(self.gen, docs, replay)
        self.writer_wake.set()

    def abandon(self, job: Job, why: str) -> None:
        self.delivery.abandon(job, why)

    def _park(self, marker: Marker) -> None:
        marker.need_gen = self.gen
        self.markers.append(marker)

    def _resolve_markers(self) -> None:
        delivery = self.delivery
        for marker in list(self.markers):
            if self.resolved_gen < marker.need_gen:
                continue
            if (not marker.replay_tried and not self.hung and not self.stopping and delivery.spool_usable()
                    and delivery.spool_count()):
                # flush() also tries to drain the spool once, even inside a backoff period
                if self.job is not None:
                    continue
                marker.replay_tried = True
                self._start([], replay=True)
                marker.need_gen = self.gen
                continue
            self.markers.remove(marker)
            marker.done.set()

    def stop_drain(self) -> None:
        """At shutdown: everything still queued goes to the spool; every waiting flush is released."""
        while True:
            entries, marker = self.pop_batch(_DRAIN_BATCH)
            if entries:
                self.delivery.spool_entries(entries)
                self.drain_hand = []
            if marker is not None:
                marker.done.set()
            if not entries and marker is None:
                break
        for marker in self.markers:
            marker.done.set()
        self.markers.clear()

    # -- writer thread ---------------------------------------------------------------------------------
    def _writer_loop(self) -> None:
        while True:
            self.writer_wake.wait()
            self.writer_wake.clear()
            job = self.job
            if job is not None:
                try:
                    self.delivery.run(job)
                except Exception as exc:
                    report("lane.writer", exc)
                finally:
                    self.resolved_gen = max(self.resolved_gen, job.gen)
                    self.job = None
                    self.wake.set()
            if self.stopping:
                # the writer closes its own sink: no thread needs to be started at interpreter exit
                # (Python 3.12+ refuses), and a hung sink's close() cannot hold up the exit (shutdown only
                # waits for this thread within its deadline)
                try:
                    self.sink.close(self.close_timeout)
                except Exception as exc:
                    report(f"close.{self.name}", exc)
                self.closed = True
                return

    # -- reading ----------------------------------------------------------------------------------------
    def queued(self) -> int:
        return sum(1 for item in list(self.queue) if not isinstance(item, Marker))

    def pending(self) -> int:
        n = self.queued()
        job = self.job
        if job is not None and not job.replay and not job.abandoned and not job.finished and not job.kept:
            n += len(job.docs)
        return n + self.delivery.spool_count()

    def snapshot(self) -> dict[str, int]:
        d = self.delivery
        spool = d.spool_store
        spool_dropped = spool.dropped_by_lane[self.name] if spool is not None else 0
        return {
            "delivered": d.delivered + d.replayed,
            "spooled": d.spooled,
            "dropped": d.dropped + spool_dropped,
            "failed": d.failed,
            "retries": d.retries,
            "replayed": d.replayed,
            "queued": self.queued(),
            "degraded": int(d.degraded(time.monotonic()) or self.hung),
        }
