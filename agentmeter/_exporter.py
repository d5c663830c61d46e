"""The exporter: finished runs in, documents out to every sink, in the background.

The caller's side is :meth:`Exporter.submit`: it appends the sealed run to each sink's lane and returns; it
never blocks on I/O and never raises.

Each sink has its own lane, so a hung or slow sink never delays another one, nor the agent:

* a **manager** thread turns queued runs into documents and hands one batch at a time to the writer; it
  never calls the sink, so it never hangs. It spills batches to the durable spool when the sink is known
  to be down, when the writer is stuck past ``write_timeout``, or when the queue passes half its memory
  budget, so memory stays bounded whatever the sink does;
* a **writer** thread calls ``sink.write`` with tenacity retries (waits that shutdown cuts short). When
  retries are exhausted the batch is spooled and the lane is degraded for a backoff period (batches go
  straight to the spool), after which the next batch, or a replay from the spool, probes the sink again;
* the spool is replayed through the writer whenever the sink answers, including documents another process
  left there (at the next start of any process that uses the same spool).

Delivery is at least once (a write that hangs past its deadline is spooled and may still land later);
sinks store by id, so the stores hold each run once.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import os
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import tenacity

from . import _guard
from ._config import Settings
from ._model import ERROR, SUCCESS, Run
from ._spool import Spool, default_spool_dir
from .contract import Pricer, run_document
from .sinks._base import Sink, WriteResult

__all__ = ["Exporter", "FlushResult", "SinkFlushResult", "keep_payloads"]


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

    @property
    def spooled(self) -> int:
        return sum(r.spooled for r in self.sinks.values())

    @property
    def dropped(self) -> int:
        return sum(r.dropped for r in self.sinks.values())


class _Marker:
    """Put in a lane's queue by flush(): set once everything before it was delivered or spooled, and one
    replay of the spool was tried."""

    __slots__ = ("done", "need_gen", "replay_tried")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.need_gen = 0
        self.replay_tried = False


class _Job:
    """One batch handed to the writer thread (fresh documents, or a replay of the spool)."""

    __slots__ = ("abandoned", "docs", "finished", "gen", "lock", "replay", "started")

    def __init__(self, gen: int, docs: list[dict[str, Any]], replay: bool) -> None:
        self.gen = gen
        self.docs = docs
        self.replay = replay
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.finished = False
        self.abandoned = False  # the manager gave up waiting (hung past write_timeout, or shutdown)


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
    """One sink's queue, manager and writer threads, retry policy and spool lane."""

    def __init__(self, exporter: Exporter, sink: Sink) -> None:
        self.exporter = exporter
        self.sink = sink
        self.name = sink.name
        s = exporter.settings
        self.settings = s
        self.queue: collections.deque[Run | _Marker] = collections.deque()
        self.queued_bytes = 0
        # a sink may ask for bigger batches than the default (Firehose packs 500 records per call)
        self.batch_size = max(s.batch_size, getattr(sink, "preferred_batch_size", None) or 0)
        self.spill_runs = max(1, s.max_queue_runs // 2)
        self.spill_bytes = max(1, s.max_queue_bytes // 2)
        self.wake = threading.Event()
        self.writer_wake = threading.Event()
        self.stopping = False
        # counters: written by this lane's threads (drops at submit under the exporter's lock)
        self.delivered = self.spooled = self.dropped = self.failed = self.retries = self.replayed = 0
        self.degraded_until = 0.0  # while the sink is failing, new batches go to the spool directly
        self.backoff_base = max(s.retry_initial, 0.05)
        self.backoff = self.backoff_base
        self.job: _Job | None = None  # set by the manager when the writer is idle, cleared by the writer
        self.gen = 0  # jobs started
        self.resolved_gen = 0  # highest job finished or abandoned
        self.markers: list[_Marker] = []
        self.next_spool_check = 0.0
        self.manager: threading.Thread | None = None
        self.writer: threading.Thread | None = None
        if not s.sync_export:
            self.manager = threading.Thread(target=self._manager_loop, name=f"agentmeter-{self.name}",
                                            daemon=True)
            self.writer = threading.Thread(target=self._writer_loop, name=f"agentmeter-{self.name}-write",
                                           daemon=True)
            try:
                self.manager.start()
                self.writer.start()
            except RuntimeError as exc:  # no new threads at interpreter shutdown (3.12+): spool at exit
                _guard.warn("exporter.threads", "cannot start worker threads; runs will be spooled",
                            error=repr(exc)[:200])
                self.manager = self.writer = None

    # -- state ------------------------------------------------------------------------------------------
    @property
    def hung(self) -> bool:
        job = self.job
        return job is not None and job.abandoned

    def degraded(self, now: float) -> bool:
        return self.degraded_until > now

    def _spool_usable(self) -> bool:
        spool = self.exporter.spool
        return spool is not None and not spool.broken

    def _mark_down(self) -> None:
        self.degraded_until = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, max(self.settings.retry_max, self.backoff_base))

    def _mark_up(self) -> None:
        self.backoff = self.backoff_base
        self.degraded_until = 0.0

    # -- manager thread --------------------------------------------------------------------------------
    def _manager_loop(self) -> None:
        while True:
            self.wake.wait(self._wait_time())
            self.wake.clear()
            try:
                if self.stopping:
                    self._stop_drain()
                    return
                self._tick()
            except Exception as exc:
                _report("lane.manager", exc)

    def _wait_time(self) -> float:
        wait = self.settings.flush_interval
        job = self.job
        if job is not None and not job.abandoned:
            wait = min(wait, max(0.005, job.started + self.settings.write_timeout - time.monotonic()))
        return wait

    def _tick(self) -> None:
        now = time.monotonic()
        job = self.job
        if job is not None and not job.abandoned and now - job.started > self.settings.write_timeout:
            self._abandon(job, "sink.write did not return within write_timeout; batch spooled")
        while self.queue:
            head = self.queue[0]
            if isinstance(head, _Marker):
                self._pop_batch()
                self._park(head)
                continue
            if self.job is None and not self.degraded(now):
                runs, marker = self._pop_batch()
                docs = self._documents(runs)
                if docs:
                    self._start(docs, replay=False)
                if marker is not None:
                    self._park(marker)
                continue
            if self._spool_usable() and (self.hung or self.degraded(now) or self._over_watermark()):
                runs, marker = self._pop_batch()
                self._spool(self._documents(runs))
                if marker is not None:
                    self._park(marker)
                continue
            break  # the writer is busy with a healthy sink: keep the rest in memory for now
        self._resolve_markers()
        if (self.job is None and not self.queue and not self.degraded(now) and now >= self.next_spool_check
                and self._spool_usable()):
            self.next_spool_check = now + self.settings.flush_interval
            if self.exporter.spool is not None and self.exporter.spool.count(self.name):
                self._start([], replay=True)

    def _over_watermark(self) -> bool:
        return len(self.queue) > self.spill_runs or self.queued_bytes > self.spill_bytes

    def _pop_batch(self) -> tuple[list[Run], _Marker | None]:
        size = self.batch_size
        runs: list[Run] = []
        with self.exporter.lock:
            queue = self.queue
            while queue and len(runs) < size:
                item = queue.popleft()
                if isinstance(item, _Marker):
                    return runs, item
                runs.append(item)
                self.queued_bytes -= _estimate_bytes(item)
        return runs, None

    def _documents(self, runs: list[Run]) -> list[dict[str, Any]]:
        docs = []
        for run in runs:
            try:
                docs.append(self.exporter.document(run))
            except Exception as exc:
                self.failed += 1
                _report("build_document", exc)
        return docs

    def _start(self, docs: list[dict[str, Any]], replay: bool) -> None:
        self.gen += 1
        self.job = _Job(self.gen, docs, replay)
        self.writer_wake.set()

    def _abandon(self, job: _Job, why: str) -> None:
        """Stop waiting for a job: its fresh documents go to the spool (at least once; ids dedupe), and the
        lane spools directly until the write returns. flush() still waits for it (within its timeout)."""
        with job.lock:
            if job.finished or job.abandoned:
                return
            job.abandoned = True
            if not job.replay:
                self._spool(job.docs)
        _guard.warn(f"sink.{self.name}.hung", why, sink=self.name, docs=len(job.docs),
                    write_timeout=self.settings.write_timeout)

    def _park(self, marker: _Marker) -> None:
        marker.need_gen = self.gen
        self.markers.append(marker)

    def _resolve_markers(self) -> None:
        for marker in list(self.markers):
            if self.resolved_gen < marker.need_gen:
                continue
            if not marker.replay_tried and not self.hung and not self.stopping and self._spool_usable():
                # flush() also tries to drain the spool once, even inside a backoff period
                spool = self.exporter.spool
                if spool is not None and spool.count(self.name):
                    if self.job is not None:
                        continue
                    marker.replay_tried = True
                    self._start([], replay=True)
                    marker.need_gen = self.gen
                    continue
            self.markers.remove(marker)
            marker.done.set()

    def _stop_drain(self) -> None:
        """At shutdown, on the manager thread: everything still queued goes to the spool."""
        while True:
            runs, marker = self._pop_batch()
            if runs:
                self._spool(self._documents(runs))
            if marker is not None:
                marker.done.set()
            if not runs and marker is None:
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
                    self.run_job(job)
                except Exception as exc:
                    _report("lane.writer", exc)
                finally:
                    self.resolved_gen = max(self.resolved_gen, job.gen)
                    self.job = None
                    self.wake.set()
            if self.stopping:
                return

    def run_job(self, job: _Job) -> None:
        if job.replay:
            self._replay(job)
        else:
            self._deliver(job)

    def _deliver(self, job: _Job) -> None:
        docs = job.docs
        rejected: list[dict[str, Any]] = []
        try:
            self._write_with_retries(job, rejected)
        except _RetryBatch as err:
            pending = err.pending
            with job.lock:
                job.finished = True
                if not job.abandoned:
                    self._spool(pending)
                else:  # the manager spooled everything already: forget what did land
                    self._forget(docs, pending)
            self.delivered += len(docs) - len(pending) - len(rejected)
            self._dead_letter(rejected)
            self._mark_down()
            return
        with job.lock:
            job.finished = True
            if job.abandoned:
                self._forget(docs, [])
        self.delivered += len(docs) - len(rejected)
        self._dead_letter(rejected)
        self._mark_up()

    def _forget(self, docs: Sequence[Mapping[str, Any]], still_pending: Sequence[Mapping[str, Any]]) -> None:
        spool = self.exporter.spool
        if spool is None:
            return
        keep = {d["run_id"] for d in still_pending}
        spool.remove(self.name, [d["run_id"] for d in docs if d["run_id"] not in keep])

    def _write_with_retries(self, job: _Job, rejected: list[dict[str, Any]]) -> None:
        """Write, retrying only what failed; raises _RetryBatch when attempts run out or stop is asked."""
        pending = job.docs
        s = self.settings
        stop_event = self.exporter.stop_event

        retrying = tenacity.Retrying(
            stop=(tenacity.stop_after_attempt(s.max_attempts) | tenacity.stop_when_event_set(stop_event)
                  | _StopWhenAbandoned(job)),
            wait=tenacity.wait_random_exponential(multiplier=s.retry_initial, max=s.retry_max),
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
                failed, bad = _result_sets(result, len(pending))
                rejected.extend(pending[i] for i in sorted(bad))
                if failed:
                    pending = [pending[i] for i in sorted(failed)]
                    raise _RetryBatch(pending, f"{len(pending)} failed")

    def _replay(self, job: _Job) -> None:
        """Deliver what this lane has in the spool, batch by batch, until it is empty or the sink fails."""
        spool = self.exporter.spool
        if spool is None:
            return
        stop_event = self.exporter.stop_event
        while not stop_event.is_set() and not job.abandoned:
            docs = spool.take(self.name, self.batch_size)
            if not docs:
                break
            job.docs = docs
            job.started = time.monotonic()
            try:
                result = self.sink.write(docs)
            except Exception as exc:
                if len(docs) > 1 and self._isolate_poison(docs):
                    continue  # the sink is up and took the rest: go on with the next batch
                _guard.warn(f"sink.{self.name}.replay", "spool replay failed; will try again later",
                            sink=self.name, error=repr(exc)[:300])
                self._mark_down()
                break
            failed, bad = _result_sets(result, len(docs))
            done = [d["run_id"] for i, d in enumerate(docs) if i not in failed and i not in bad]
            spool.remove(self.name, done)
            self.replayed += len(done)
            if bad:
                self.failed += len(bad)
                spool.move(self.name, f"{self.name}:rejected", [docs[i]["run_id"] for i in bad])
                _guard.warn(f"sink.{self.name}.rejected", "sink rejected documents permanently",
                            sink=self.name, count=len(bad))
            if failed:
                self._mark_down()
                break
            self._mark_up()
        job.finished = True

    def _isolate_poison(self, docs: list[dict[str, Any]]) -> bool:
        """A replayed batch raised: write its documents one by one. If the sink takes some and raises on
        others, those others are poison (the sink can never store them: a value it cannot encode, say) and
        would block the spool behind them forever: they go to the dead-letter lane ``<sink>:rejected``.
        Returns False (nothing changed) when the sink takes none, i.e. it is simply down."""
        spool = self.exporter.spool
        if spool is None:
            return False
        took: list[str] = []
        poison: list[str] = []
        for doc in docs:
            if not took and len(poison) >= 3:
                return False  # three failures and no success: the sink is down, not the documents
            try:
                result = self.sink.write([doc])
            except Exception:
                poison.append(doc["run_id"])
                continue
            failed, bad = _result_sets(result, 1)
            if failed or bad:
                poison.append(doc["run_id"])
            else:
                took.append(doc["run_id"])
        if not took:
            return False
        spool.remove(self.name, took)
        self.replayed += len(took)
        if poison:
            spool.move(self.name, f"{self.name}:rejected", poison)
            self.failed += len(poison)
            _guard.warn(f"sink.{self.name}.poison", "sink raised on these documents alone; moved to the "
                        "dead-letter lane", sink=self.name, count=len(poison), run_ids=poison[:10])
        return True

    def _dead_letter(self, rejected: list[dict[str, Any]]) -> None:
        if not rejected:
            return
        self.failed += len(rejected)
        _guard.warn(f"sink.{self.name}.rejected", "sink rejected documents permanently",
                    sink=self.name, count=len(rejected))
        spool = self.exporter.spool
        if spool is not None:
            spool.put(f"{self.name}:rejected", rejected)

    def _spool(self, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        spool = self.exporter.spool
        kept = spool.put(self.name, docs) if spool is not None else 0
        self.spooled += kept
        if kept < len(docs) and (spool is None or spool.broken):
            self.dropped += len(docs) - kept
            _guard.counters["exporter.dropped"] += len(docs) - kept
            _guard.warn(f"sink.{self.name}.dropped", "runs could not be delivered nor spooled; dropped",
                        sink=self.name, count=len(docs) - kept)

    # -- synchronous mode (tests): the caller's thread does the writer's work ---------------------------
    def deliver_now(self, docs: list[dict[str, Any]]) -> None:
        if self.degraded(time.monotonic()) and self._spool_usable():
            self._spool(docs)
            return
        self.gen += 1
        job = _Job(self.gen, docs, replay=False)
        self.run_job(job)
        self.resolved_gen = job.gen

    # -- caller side -----------------------------------------------------------------------------------
    def pending(self) -> int:
        n = sum(1 for item in list(self.queue) if not isinstance(item, _Marker))
        job = self.job
        if job is not None and not job.replay and not job.abandoned and not job.finished:
            n += len(job.docs)
        spool = self.exporter.spool
        return n + (spool.count(self.name) if spool is not None else 0)

    def snapshot(self) -> dict[str, int]:
        spool = self.exporter.spool
        spool_dropped = spool.dropped_by_lane[self.name] if spool is not None else 0
        return {
            "delivered": self.delivered + self.replayed,
            "spooled": self.spooled,
            "dropped": self.dropped + spool_dropped,
            "failed": self.failed,
            "retries": self.retries,
            "replayed": self.replayed,
            "queued": sum(1 for item in list(self.queue) if not isinstance(item, _Marker)),
            "degraded": int(self.degraded(time.monotonic()) or self.hung),
        }


class _StopWhenAbandoned(tenacity.stop.stop_base):
    """Stop retrying a batch the manager already spooled (hung past write_timeout): replay takes over."""

    def __init__(self, job: _Job) -> None:
        self.job = job

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.job.abandoned


def _result_sets(result: Any, n: int) -> tuple[set[int], set[int]]:
    """(failed, rejected) positions of a WriteResult, ignoring out-of-range positions."""
    if not isinstance(result, WriteResult):
        return set(), set()
    failed = {i for i in result.failed if isinstance(i, int) and 0 <= i < n}
    rejected = {i for i in result.rejected if isinstance(i, int) and 0 <= i < n} - failed
    return failed, rejected


def _report(where: str, exc: BaseException) -> None:
    """internal_error from a worker thread: under the test suite it re-raises; a worker must survive."""
    try:
        _guard.internal_error(where, exc)
    except Exception:
        pass


class Exporter:
    """Owns the sinks' lanes. Created lazily by :mod:`agentmeter._state`; one per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # re-entrant: the opt-in SIGTERM handler submits runs on the main thread, maybe inside submit()
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.pid = os.getpid()
        self.submitted = 0
        self.dropped_at_submit = 0
        self._pricer: Pricer | None = None
        sinks: Sequence[Sink] = settings.sinks if settings.sinks is not None else _default_sinks()
        self.spool = _open_spool(settings)
        self._closed = False
        self.lanes = [_Lane(self, sink) for sink in sinks]

    # -- caller's side: never blocks, never raises ------------------------------------------------------
    def submit(self, run: Run) -> None:
        """Hand a sealed run to every lane. Never blocks on I/O, never raises."""
        try:
            s = self.settings
            if s.sync_export:
                self._export_now(run)
                return
            if self._closed:  # after shutdown (a run ending during interpreter exit): keep it on disk
                self._spool_late(run)
                return
            size = _estimate_bytes(run)
            full: list[_Lane] | None = None
            with self.lock:
                self.submitted += 1
                for lane in self.lanes:
                    queue = lane.queue
                    if len(queue) >= s.max_queue_runs or lane.queued_bytes + size > s.max_queue_bytes:
                        full = [lane] if full is None else [*full, lane]
                        continue
                    queue.append(run)
                    lane.queued_bytes += size
                    if len(queue) >= lane.batch_size and not lane.wake.is_set():
                        lane.wake.set()
            if full is not None:
                for lane in full:
                    self._relieve(lane, run, size)
        except Exception as exc:
            _guard.internal_error("submit", exc)

    def _relieve(self, lane: _Lane, run: Run, size: int) -> None:
        """The queue is at its memory budget: the background spilling could not keep up with the caller
        (a tight loop holds the GIL). Rather than drop, the caller spills the oldest batch to the spool
        itself; this is the only case where the caller's thread does I/O, and it is counted."""
        if lane._spool_usable():
            runs, marker = lane._pop_batch()
            if marker is not None:  # flush markers belong to the manager: put it back in order
                with self.lock:
                    lane.queue.appendleft(marker)
            lane._spool(lane._documents(runs))
            _guard.counters["queue.caller_spills"] += 1
            with self.lock:
                lane.queue.append(run)
                lane.queued_bytes += size
            lane.wake.set()
            return
        with self.lock:
            self._overflow(lane, run, size)

    def _overflow(self, lane: _Lane, run: Run, size: int) -> None:
        # Only reached when the spool is unusable: the memory budget wins and the configured policy
        # decides which run goes; every drop is counted.
        lane.dropped += 1
        self.dropped_at_submit += 1
        _guard.counters["queue.dropped"] += 1
        _guard.warn(f"sink.{lane.name}.queue_full", "queue over its memory budget; run dropped by policy",
                    sink=lane.name, policy=self.settings.spool_full_policy)
        if self.settings.spool_full_policy == "drop_oldest":
            victim = _pop_oldest_run(lane.queue)
            if victim is not None:
                lane.queued_bytes -= _estimate_bytes(victim)
                lane.queue.append(run)
                lane.queued_bytes += size
        lane.wake.set()

    def _export_now(self, run: Run) -> None:
        self.submitted += 1
        doc = self.document(run)
        for lane in self.lanes:
            lane.deliver_now([doc])

    def _spool_late(self, run: Run) -> None:
        self.submitted += 1
        doc = self.document(run)
        for lane in self.lanes:
            lane._spool([doc])

    # -- worker's side -----------------------------------------------------------------------------------
    def pricer(self) -> Pricer:
        if self._pricer is None:
            from .pricing import make_pricer

            self._pricer = make_pricer(self.settings.prices)
        return self._pricer

    def document(self, run: Run) -> dict[str, Any]:
        """The run's document, built once and shared by every lane (sampling applied, JSON-safe)."""
        doc = run.document
        if doc is None:
            keep = keep_payloads(run, self.settings)
            if not keep:
                _guard.counters["sampling.payloads_dropped"] += 1
            max_chars = self.settings.capture_max_chars
            try:
                doc = run_document(run, self.pricer(), max_chars, sampled=keep)
            except Exception as exc:  # a pricing failure must not cost the run: export it unpriced
                _report("pricing", exc)
                doc = run_document(run, None, max_chars, sampled=keep)
            doc = _json_safe(doc)
            run.document = doc
        return doc

    def interruptible_sleep(self, seconds: float) -> None:
        self.stop_event.wait(seconds)

    # -- flush, shutdown, stats -----------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> FlushResult:
        """Wait until every lane has delivered or spooled what was queued, and tried its spool once."""
        before = {lane.name: lane.snapshot() for lane in self.lanes}
        deadline = None if timeout is None else time.monotonic() + timeout
        markers = []
        for lane in self.lanes:
            if lane.manager is None or not lane.manager.is_alive() or lane.stopping:
                continue
            marker = _Marker()
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
        result = self.flush(None if timeout is None else max(0.0, timeout - reserve))

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
            lane.stopping = True
            lane.wake.set()
            lane.writer_wake.set()
        for lane in self.lanes:
            if lane.manager is not None:
                lane.manager.join(until(join_until))
        for lane in self.lanes:
            # Spool what is still queued from here too (batches are popped under the lock: each run is
            # spooled once, by whichever thread pops it), then let a batch the manager is spooling finish.
            lane._stop_drain()
            if lane.manager is not None:
                lane.manager.join(remaining())
            if lane.writer is not None:
                lane.writer.join(until(join_until))
            job = lane.job
            if job is not None:
                lane._abandon(job, "sink.write still running at shutdown; batch spooled")
                lane.resolved_gen = max(lane.resolved_gen, job.gen)
        for lane in self.lanes:
            _call_with_deadline(f"close.{lane.name}", functools.partial(lane.sink.close, remaining()),
                                remaining())
        return self._result(before, result.timed_out)

    def abandon_after_fork(self) -> None:
        """In a forked child: the parent owns these queued runs; forget them without sending. The spool's
        connections are left untouched (closing inherited SQLite handles in a child is unsafe)."""
        for lane in self.lanes:
            lane.queue.clear()
            lane.markers.clear()
            lane.stopping = True
            lane.job = None
        self._closed = True

    def stats(self) -> dict[str, Any]:
        sinks = {lane.name: {**lane.snapshot(), "pending": lane.pending()} for lane in self.lanes}
        spool = self.spool
        return {
            "runs_finished": self.submitted,
            "runs_exported": sum(s["delivered"] for s in sinks.values()),
            "runs_dropped": sum(s["dropped"] for s in sinks.values()),
            "runs_failed": sum(s["failed"] for s in sinks.values()),
            "runs_spooled": sum(s["spooled"] for s in sinks.values()),
            "spool_bytes": spool.size_bytes() if spool is not None else 0,
            "spool_dropped": spool.dropped if spool is not None else 0,
            "spool_broken": bool(spool is None or spool.broken),
            "sinks": sinks,
        }


# -- sampling -----------------------------------------------------------------------------------------


def keep_payloads(run: Run, settings: Settings) -> bool:
    """Whether the sampler keeps this run's captured payloads (inputs and outputs).

    Counts, latencies, tokens and cost are exported for every run whatever this says. Failed runs (and runs
    with a failed step or call) are always kept when ``always_keep_errors``; runs at least ``slow_run_ms``
    long are always kept. Otherwise the decision is a hash of the run id, so every sink and every replay
    agrees. Never raises.
    """
    rate = settings.sample_rate
    if rate >= 1.0:
        return True
    if settings.always_keep_errors and (
        run.status != SUCCESS
        or any(s.status == ERROR for s in run.steps)
        or any(c.status == ERROR for c in run.calls)
    ):
        return True
    if settings.slow_run_ms is not None:
        duration = run.duration_ms
        if duration is not None and duration >= settings.slow_run_ms:
            return True
    return zlib.crc32(run.run_id.encode("utf-8", "replace")) / 4294967296.0 < rate


# -- helpers ------------------------------------------------------------------------------------------


def _json_safe(doc: dict[str, Any]) -> dict[str, Any]:
    """The document itself when it is strict JSON in valid UTF-8 (the usual case, one C-speed check),
    else a repaired copy: lone surrogates replaced, NaN/infinity as strings, unknown types as repr()."""
    try:
        json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8")
        return doc
    except (TypeError, ValueError):
        pass
    _guard.warn("document.repaired", "run document had invalid Unicode or non-JSON values; repaired")
    repaired = _repair(doc)
    return repaired if isinstance(repaired, dict) else doc


def _repair(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {_repair(str(k)): _repair(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_repair(v) for v in value]
    return _repair(repr(value))


def _call_with_deadline(where: str, fn: Callable[[], Any], timeout: float | None) -> None:
    """Run ``fn`` on a helper thread and wait at most ``timeout``: a sink's close() may hang too."""

    def target() -> None:
        try:
            fn()
        except Exception as exc:
            _report(where, exc)

    thread = threading.Thread(target=target, name=f"agentmeter-{where}", daemon=True)
    thread.start()
    thread.join(timeout)


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
