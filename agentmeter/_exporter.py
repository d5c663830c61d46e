"""The exporter: finished runs in, documents out to every sink, in the background.

The caller's side is :meth:`Exporter.submit`: it appends the sealed run to each sink's lane and returns; it
never blocks on I/O and never raises. Each sink has its own lane: a bounded queue, a daemon worker thread,
retries with tenacity (waits that shutdown cuts short), and a lane in the durable spool for what the sink
cannot take now. A hung or slow sink therefore never delays another one, nor the agent.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import tenacity

from . import _guard
from ._config import Settings
from ._model import Run
from ._spool import Spool, default_spool_dir
from .contract import Pricer, run_document
from .sinks._base import Sink, WriteResult

__all__ = ["Exporter", "FlushResult", "SinkFlushResult"]


@attrs.frozen
class SinkFlushResult:
    """What happened to one sink's runs during a flush or shutdown."""

    delivered: int = 0
    spooled: int = 0
    dropped: int = 0
    failed: int = 0
    pending: int = 0  # still queued in memory or waiting in the spool when the call returned


@attrs.frozen
class FlushResult:
    """Per-sink outcome of :func:`agentmeter.flush`; ``ok`` when everything reached every sink."""

    sinks: Mapping[str, SinkFlushResult]
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(
            r.pending == 0 and r.failed == 0 and r.dropped == 0 and r.spooled == 0 for r in self.sinks.values()
        )

    @property
    def delivered(self) -> int:
        return sum(r.delivered for r in self.sinks.values())


class _Marker:
    """Put in a lane's queue by flush(): set once everything before it was handled."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _RetryBatch(Exception):
    def __init__(self, pending: list[dict[str, Any]], why: str) -> None:
        super().__init__(why)
        self.pending = pending


def _estimate_bytes(run: Run) -> int:
    size = 800 + 600 * (len(run.steps) + len(run.calls))
    for item in (run.inputs, run.output):
        size += getattr(item, "size", 0)
    return size


class _Lane:
    """One sink's queue, worker thread and retry policy."""

    def __init__(self, exporter: Exporter, sink: Sink) -> None:
        self.exporter = exporter
        self.sink = sink
        self.name = sink.name
        s = exporter.settings
        self.queue: collections.deque[Run | _Marker] = collections.deque()
        self.queued_bytes = 0
        self.wake = threading.Event()
        self.stopping = False
        self.inflight: list[dict[str, Any]] = []
        # counters, written by this lane's worker (and by submit under the exporter's lock for drops)
        self.delivered = self.spooled = self.dropped = self.failed = self.retries = self.replayed = 0
        self.degraded_until = 0.0  # while the sink is failing, new batches go to the spool directly
        self.backoff = s.retry_initial or 0.5
        self.thread: threading.Thread | None = None
        if not s.sync_export:
            self.thread = threading.Thread(target=self._loop, name=f"agentmeter-{self.name}", daemon=True)
            self.thread.start()

    # -- worker ----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        interval = self.exporter.settings.flush_interval
        while True:
            self.wake.wait(interval)
            self.wake.clear()
            try:
                self.drain()
                self.replay_spool()
            except Exception as exc:
                _guard.internal_error(f"lane.{self.name}", exc)
            if self.stopping and not self.queue:
                return

    def _pop_batch(self) -> tuple[list[Run], _Marker | None]:
        size = self.exporter.settings.batch_size
        runs: list[Run] = []
        with self.exporter.lock:
            while self.queue and len(runs) < size:
                item = self.queue.popleft()
                if isinstance(item, _Marker):
                    return runs, item
                runs.append(item)
                self.queued_bytes -= _estimate_bytes(item)
        return runs, None

    def drain(self) -> None:
        while True:
            runs, marker = self._pop_batch()
            if runs:
                docs = []
                for run in runs:
                    try:
                        docs.append(self.exporter.document(run))
                    except Exception as exc:
                        self.failed += 1
                        _guard.internal_error("build_document", exc)
                self.deliver(docs)
            if marker is not None:
                marker.done.set()
            if not runs and marker is None:
                return

    def deliver(self, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        spool = self.exporter.spool
        if self.degraded_until > time.monotonic() and spool is not None and not spool.broken:
            self._spool(docs)  # the sink is known to be down: don't make the queue wait on retries
            return
        self.inflight = docs
        try:
            rejected = self._write_with_retries(docs)
        except _RetryBatch as err:
            self._spool(err.pending)
            self.degraded_until = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, max(self.exporter.settings.retry_max, 0.5))
            self.delivered += len(docs) - len(err.pending)
        else:
            self.delivered += len(docs) - len(rejected)
            self.backoff = self.exporter.settings.retry_initial or 0.5
            self.degraded_until = 0.0
            if rejected:
                self.failed += len(rejected)
                _guard.warn(f"sink.{self.name}.rejected", "sink rejected documents permanently",
                            sink=self.name, count=len(rejected))
                if spool is not None:
                    spool.put(f"{self.name}:rejected", rejected)
        finally:
            self.inflight = []

    def _write_with_retries(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write, retrying only what failed. Returns rejected documents; raises _RetryBatch when exhausted."""
        pending = docs
        rejected: list[dict[str, Any]] = []
        s = self.exporter.settings
        stop_event = self.exporter.stop_event
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(s.max_attempts) | tenacity.stop_when_event_set(stop_event),
            wait=tenacity.wait_exponential_jitter(initial=s.retry_initial, max=s.retry_max),
            sleep=self.exporter.interruptible_sleep,
            retry=tenacity.retry_if_exception_type(_RetryBatch),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.retries += 1
                try:
                    result = self.sink.write(pending)
                except Exception as exc:
                    _guard.warn(f"sink.{self.name}.write", "sink write failed; will retry or spool",
                                sink=self.name, error=repr(exc)[:300])
                    raise _RetryBatch(pending, repr(exc)) from exc
                if not isinstance(result, WriteResult):
                    result = WriteResult()
                rejected.extend(pending[i] for i in result.rejected)
                if result.failed:
                    pending = [pending[i] for i in sorted(result.failed)]
                    raise _RetryBatch(pending, f"{len(pending)} failed")
        return rejected

    def _spool(self, docs: list[dict[str, Any]]) -> None:
        spool = self.exporter.spool
        kept = spool.put(self.name, docs) if spool is not None else 0
        self.spooled += kept
        if kept < len(docs):
            self.dropped += len(docs) - kept
            _guard.warn(f"sink.{self.name}.dropped", "runs could not be delivered nor spooled; dropped",
                        sink=self.name, count=len(docs) - kept)

    def replay_spool(self) -> None:
        """Deliver what this lane has in the spool, once the sink answers again."""
        spool = self.exporter.spool
        if spool is None or spool.broken or self.degraded_until > time.monotonic() or self.stopping:
            return
        size = self.exporter.settings.batch_size
        while not self.exporter.stop_event.is_set():
            docs = spool.take(self.name, size)
            if not docs:
                return
            try:
                result = self.sink.write(docs)
            except Exception as exc:
                self.degraded_until = time.monotonic() + self.backoff
                self.backoff = min(self.backoff * 2, max(self.exporter.settings.retry_max, 0.5))
                _guard.warn(f"sink.{self.name}.replay", "spool replay failed; will try again later",
                            sink=self.name, error=repr(exc)[:300])
                return
            failed = set(result.failed) if isinstance(result, WriteResult) else set()
            done = [d["run_id"] for i, d in enumerate(docs) if i not in failed]
            spool.remove(self.name, done)
            self.replayed += len(done)
            if failed:
                self.degraded_until = time.monotonic() + self.backoff
                return

    # -- caller side -----------------------------------------------------------------------------------
    def pending(self) -> int:
        n = sum(1 for item in list(self.queue) if not isinstance(item, _Marker)) + len(self.inflight)
        spool = self.exporter.spool
        return n + (spool.count(self.name) if spool is not None else 0)

    def snapshot(self) -> dict[str, int]:
        return {
            "delivered": self.delivered + self.replayed,
            "spooled": self.spooled,
            "dropped": self.dropped,
            "failed": self.failed,
            "retries": self.retries,
            "replayed": self.replayed,
            "queued": sum(1 for item in list(self.queue) if not isinstance(item, _Marker)),
        }


class Exporter:
    """Owns the sinks' lanes. Created lazily by :mod:`agentmeter._state`; one per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.pid = os.getpid()
        self.submitted = 0
        self.dropped_at_submit = 0
        self._pricer: Pricer | None = None
        sinks: Sequence[Sink] = settings.sinks if settings.sinks is not None else _default_sinks()
        self.spool = _open_spool(settings)
        self.lanes = [_Lane(self, sink) for sink in sinks]
        self._closed = False

    # -- caller's side: never blocks, never raises ------------------------------------------------------
    def submit(self, run: Run) -> None:
        try:
            if self.settings.sync_export:
                self._export_now(run)
                return
            size = _estimate_bytes(run)
            s = self.settings
            with self.lock:
                self.submitted += 1
                for lane in self.lanes:
                    queue = lane.queue
                    if len(queue) >= s.max_queue_runs or lane.queued_bytes + size > s.max_queue_bytes:
                        # over the memory budget: the configured policy decides which run goes
                        lane.dropped += 1
                        if s.spool_full_policy == "drop_oldest" and queue:
                            victim = _pop_oldest_run(queue)
                            if victim is not None:
                                lane.queued_bytes -= _estimate_bytes(victim)
                                queue.append(run)
                                lane.queued_bytes += size
                        _guard.counters["queue.dropped"] += 1
                        continue
                    queue.append(run)
                    lane.queued_bytes += size
                    if len(queue) >= s.batch_size:
                        lane.wake.set()
        except Exception as exc:
            _guard.internal_error("submit", exc)

    def _export_now(self, run: Run) -> None:
        doc = self.document(run)
        self.submitted += 1
        for lane in self.lanes:
            lane.deliver([doc])

    # -- worker's side -----------------------------------------------------------------------------------
    def pricer(self) -> Pricer:
        if self._pricer is None:
            from .pricing import make_pricer

            self._pricer = make_pricer(self.settings.prices)
        return self._pricer

    def document(self, run: Run) -> dict[str, Any]:
        doc = run.document
        if doc is None:
            doc = run.document = run_document(run, self.pricer(), self.settings.capture_max_chars)
        return doc

    def interruptible_sleep(self, seconds: float) -> None:
        self.stop_event.wait(seconds)

    # -- flush, shutdown, stats -----------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> FlushResult:
        before = {lane.name: lane.snapshot() for lane in self.lanes}
        deadline = None if timeout is None else time.monotonic() + timeout
        markers = []
        for lane in self.lanes:
            if lane.thread is None or not lane.thread.is_alive():
                continue
            marker = _Marker()
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
        """Deliver what is queued within ``timeout``, then spool the rest and stop the workers."""
        if self._closed:
            return FlushResult({lane.name: SinkFlushResult(pending=lane.pending()) for lane in self.lanes})
        before = {lane.name: lane.snapshot() for lane in self.lanes}
        deadline = None if timeout is None else time.monotonic() + timeout
        result = self.flush(timeout)
        self.stop_event.set()  # cuts retry waits short
        for lane in self.lanes:
            lane.stopping = True
            lane.wake.set()
        for lane in self.lanes:
            if lane.thread is not None:
                remaining = None if deadline is None else max(0.05, deadline - time.monotonic())
                lane.thread.join(remaining)
        for lane in self.lanes:
            self._spool_leftovers(lane)
            try:
                lane.sink.close(0.5)
            except Exception as exc:
                _guard.internal_error(f"close.{lane.name}", exc)
        self._closed = True
        final = self._result(before, result.timed_out)
        if self.spool is not None:
            self.spool.close()
        return final

    def _spool_leftovers(self, lane: _Lane) -> None:
        """At shutdown: whatever is still queued or in flight (a hung sink) goes to the spool."""
        docs = list(lane.inflight)
        with self.lock:
            runs = [item for item in lane.queue if isinstance(item, Run)]
            lane.queue.clear()
        for run in runs:
            try:
                docs.append(self.document(run))
            except Exception as exc:
                _guard.internal_error("build_document", exc)
        if docs:
            lane._spool(docs)

    def abandon_after_fork(self) -> None:
        """In a forked child: the parent owns these queued runs; forget them without sending."""
        for lane in self.lanes:
            lane.queue.clear()
            lane.stopping = True
        self._closed = True

    def stats(self) -> dict[str, Any]:
        sinks = {lane.name: {**lane.snapshot(), "pending": lane.pending()} for lane in self.lanes}
        return {
            "runs_finished": self.submitted,
            "runs_exported": sum(s["delivered"] for s in sinks.values()),
            "runs_dropped": sum(s["dropped"] for s in sinks.values()),
            "runs_failed": sum(s["failed"] for s in sinks.values()),
            "runs_spooled": sum(s["spooled"] for s in sinks.values()),
            "spool_bytes": self.spool.size_bytes() if self.spool is not None else 0,
            "sinks": sinks,
        }


def _pop_oldest_run(queue: collections.deque[Run | _Marker]) -> Run | None:
    for i, item in enumerate(queue):
        if isinstance(item, Run):
            del queue[i]
            return item
    return None


def _default_sinks() -> list[Sink]:
    from .sinks.sqlite import SQLiteSink

    return [SQLiteSink()]


def _open_spool(settings: Settings) -> Spool | None:
    try:
        folder = settings.spool_dir or default_spool_dir()
        return Spool(folder, settings.spool_max_bytes, settings.spool_full_policy)
    except Exception as exc:
        _guard.internal_error("open_spool", exc)
        return None

