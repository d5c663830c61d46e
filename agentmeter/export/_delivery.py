"""Delivery to one sink: the one owner of retries, the spool lane, replay, poison isolation, dead letters.

A :class:`Delivery` knows its sink's health. :meth:`Delivery.deliver` writes a batch with tenacity retries
(full-jitter exponential backoff whose waits the shutdown event cuts short), resending only what failed;
sinks make one attempt per ``write``. The first failed attempt puts the batch in the spool at once (claimed
by this process, so a ``kill -9`` during the retries loses nothing) and marks the sink *failing*, so the
lane spools new runs instead of holding them in memory; a later success removes them from the spool again.
What still fails after the retries stays in the spool and the sink is marked down for a backoff period,
during which new batches go straight to the spool; :meth:`Delivery.replay` probes the sink
with what the spool holds and, when it answers, drains it batch by batch. Documents the sink refuses for
good, or raises on alone, go to the dead-letter lane ``<sink>:rejected`` and are never retried in a loop.

A batch therefore gets at most ``max_attempts`` writes before it is spooled, plus one per replay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import tenacity

from .. import _guard
from .._config import Settings
from ..sinks._base import Document, Sink, WriteResult
from ._documents import Documents, Entry, record_text
from ._spool import Spool

__all__ = ["Delivery", "Job"]


class Job:
    """One batch handed to a writer (fresh documents, or a replay of the spool)."""

    __slots__ = ("abandoned", "docs", "finished", "gen", "kept", "kept_n", "lock", "replay", "started")

    def __init__(self, gen: int, docs: list[Document], replay: bool) -> None:
        self.gen = gen
        self.docs = docs
        self.replay = replay
        self.started = time.monotonic()
        self.lock = threading.RLock()
        self.finished = False
        self.abandoned = False  # the lane gave up waiting (hung past write_timeout, or shutdown)
        self.kept = False  # its documents are in the spool already (put there at the first failed attempt)
        self.kept_n = 0  # how many the spool took then (its size limit may have dropped some, counted)


class _RetryBatch(Exception):
    def __init__(self, pending: list[Document], why: str) -> None:
        super().__init__(why)
        self.pending = pending


class _StopWhenAbandoned(tenacity.stop.stop_base):
    """Stop retrying a batch the lane already spooled (hung past write_timeout): replay takes over."""

    def __init__(self, job: Job) -> None:
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


class Delivery:
    """Writes to one sink and keeps what it cannot take in the spool. Its counters are the sink's."""

    def __init__(self, sink: Sink, spool: Spool | None, settings: Settings, stop_event: threading.Event,
                 documents: Documents | None = None) -> None:
        self.sink = sink
        self.name = sink.name
        self.spool_store = spool
        self.settings = settings
        self.stop_event = stop_event
        self.documents = documents or Documents(settings)
        self.failing = False  # the last write attempt failed: new runs go to the spool, not memory
        self.delivered = self.spooled = self.dropped = self.failed = self.retries = self.replayed = 0
        self.degraded_until = 0.0  # while the sink is failing, new batches go to the spool directly
        self.backoff_base = max(settings.retry_initial, 0.05)
        self.backoff = self.backoff_base

    def _sleep(self, seconds: float) -> None:
        self.stop_event.wait(seconds)  # shutdown cuts a backoff short

    # -- health ------------------------------------------------------------------------------------------
    def degraded(self, now: float) -> bool:
        return self.degraded_until > now

    def spool_usable(self) -> bool:
        spool = self.spool_store
        return spool is not None and not spool.broken

    def spool_count(self) -> int:
        spool = self.spool_store
        return spool.count(self.name) if spool is not None else 0

    def _mark_down(self) -> None:
        self.degraded_until = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, max(self.settings.retry_max, self.backoff_base))

    def _mark_up(self) -> None:
        self.backoff = self.backoff_base
        self.degraded_until = 0.0
        self.failing = False

    # -- fresh batches -----------------------------------------------------------------------------------
    def run(self, job: Job) -> None:
        if job.replay:
            self.replay(job)
        else:
            self.deliver(job)

    def deliver(self, job: Job) -> None:
        docs = job.docs
        rejected: list[Document] = []
        try:
            self._write_with_retries(job, rejected)
        except _RetryBatch as err:
            pending = err.pending
            with job.lock:
                job.finished = True
                if job.abandoned:  # the lane counted them spooled already: forget what did land
                    self._forget(docs, pending)
                elif job.kept:  # in the spool since the first failure: forget what landed, free the rest
                    self._forget(docs, pending)
                    self._release(pending)
                    self.spooled += min(len(pending), job.kept_n)
                else:
                    self.spool(pending)
            self.delivered += len(docs) - len(pending) - len(rejected)
            self._dead_letter(rejected)
            self._mark_down()
            return
        with job.lock:
            job.finished = True
            if job.abandoned or job.kept:
                self._forget(docs, [])
        self.delivered += len(docs) - len(rejected)
        self._dead_letter(rejected)
        self._mark_up()

    def _keep(self, job: Job, pending: list[Document]) -> None:
        """The first attempt failed: put the batch in the spool now (claimed by this process, so no other
        process replays it while we retry), so that neither a ``kill -9`` during the retries nor a long
        backoff can lose it."""
        self.failing = True
        spool = self.spool_store
        if job.kept or job.replay or spool is None or spool.broken:
            return
        with job.lock:
            if job.abandoned or job.finished:
                return
            job.kept_n = spool.put(self.name, pending, claim=True)
            job.kept = job.kept_n > 0

    def _write_with_retries(self, job: Job, rejected: list[Document]) -> None:
        """Write, retrying only what failed; raises _RetryBatch when attempts run out or stop is asked."""
        pending = job.docs
        s = self.settings
        retrying = tenacity.Retrying(
            stop=(tenacity.stop_after_attempt(s.max_attempts) | tenacity.stop_when_event_set(self.stop_event)
                  | _StopWhenAbandoned(job)),
            wait=tenacity.wait_random_exponential(multiplier=s.retry_initial, max=s.retry_max),
            sleep=self._sleep,
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
                    self._keep(job, pending)
                    raise _RetryBatch(pending, repr(exc)) from exc
                failed, bad = _result_sets(result, len(pending))
                rejected.extend(pending[i] for i in sorted(bad))
                if failed:
                    pending = [pending[i] for i in sorted(failed)]
                    self._keep(job, pending)
                    raise _RetryBatch(pending, f"{len(pending)} failed")

    def abandon(self, job: Job, why: str) -> None:
        """Stop waiting for a job: its fresh documents go to the spool (at least once; ids dedupe), and the
        lane spools directly until the write returns."""
        with job.lock:  # reentrant: a SIGTERM handler may interrupt this thread here and abandon it again
            if job.finished or job.abandoned:
                return
            if not job.replay:
                if job.kept:
                    self.spooled += min(len(job.docs), job.kept_n)
                else:
                    self.spool(job.docs)  # before it counts as abandoned: an interrupting handler spools too
            job.abandoned = True
        if why:
            _guard.warn(f"sink.{self.name}.hung", why, sink=self.name, docs=len(job.docs),
                        write_timeout=self.settings.write_timeout)

    # -- the spool -----------------------------------------------------------------------------------------
    def replay(self, job: Job) -> None:
        """Deliver what this sink has in the spool, batch by batch, until it is empty or the sink fails; at
        most what it held when the replay began (runs spilled meanwhile wait for the next one), so a flush
        waiting for this replay is not held up by a lane that keeps spilling."""
        spool = self.spool_store
        if spool is None:
            return
        batch_size = max(self.settings.batch_size, getattr(self.sink, "preferred_batch_size", None) or 0)
        budget = spool.count(self.name)
        while not self.stop_event.is_set() and not job.abandoned and budget > 0:
            docs = spool.take(self.name, min(batch_size, budget), self.documents.from_record)
            if not docs:
                break
            budget -= len(docs)
            job.docs = list(docs)
            job.started = time.monotonic()
            try:
                result = self.sink.write(docs)
            except Exception as exc:
                if len(docs) > 1 and self._isolate_poison(docs):
                    continue  # the sink is up and took the rest: go on with the next batch
                _guard.warn(f"sink.{self.name}.replay", "spool replay failed; will try again later",
                            sink=self.name, error=repr(exc)[:300])
                self._release(docs)
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
                self._release([docs[i] for i in sorted(failed)])
                self._mark_down()
                break
            self._mark_up()
        job.finished = True

    def _isolate_poison(self, docs: Sequence[Document]) -> bool:
        """A replayed batch raised: write its documents one by one. If the sink takes some and raises on
        others, those others are poison (the sink can never store them: a value it cannot encode, say) and
        would block the spool behind them forever: they go to the dead-letter lane ``<sink>:rejected``.
        Returns False (nothing changed) when the sink takes none, i.e. it is simply down."""
        spool = self.spool_store
        if spool is None:
            return False
        took: list[str] = []
        poison: list[str] = []
        for doc in docs:
            if not took and len(poison) >= 3:
                self._release(docs)
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
            self._release(docs)
            return False
        spool.remove(self.name, took)
        self.replayed += len(took)
        if poison:
            spool.move(self.name, f"{self.name}:rejected", poison)
            self.failed += len(poison)
            _guard.warn(f"sink.{self.name}.poison", "sink raised on these documents alone; moved to the "
                        "dead-letter lane", sink=self.name, count=len(poison), run_ids=poison[:10])
        return True

    def _dead_letter(self, rejected: list[Document]) -> None:
        if not rejected:
            return
        self.failed += len(rejected)
        _guard.warn(f"sink.{self.name}.rejected", "sink rejected documents permanently",
                    sink=self.name, count=len(rejected))
        if self.spool_store is not None:
            self.spool_store.put(f"{self.name}:rejected", rejected)

    def _release(self, docs: Sequence[Mapping[str, Any]]) -> None:
        if self.spool_store is not None and docs:
            self.spool_store.release(self.name, [d["run_id"] for d in docs])

    def _forget(self, docs: Sequence[Mapping[str, Any]], still_pending: Sequence[Mapping[str, Any]]) -> None:
        spool = self.spool_store
        if spool is None:
            return
        keep = {d["run_id"] for d in still_pending}
        spool.remove(self.name, [d["run_id"] for d in docs if d["run_id"] not in keep])

    def spool_entries(self, entries: Sequence[Entry]) -> None:
        """Keep runs whose documents are not built yet: their frozen records go to the spool (about a fifth
        of the cost of building and encoding the documents); replay builds the documents."""
        if not entries:
            return
        spool = self.spool_store
        items = [(e.key, record_text(e, self.documents)) for e in entries] if spool else []
        kept, ok = spool.store(self.name, items) if spool else (0, False)
        self._count_spooled(len(entries), kept, ok)

    def spool(self, docs: list[Document]) -> None:
        """Keep ``docs`` in the spool for later; what neither the sink nor the spool can take is dropped,
        counted and logged."""
        if not docs:
            return
        spool = self.spool_store
        kept, ok = spool.store(self.name, spool.encode_all(docs)) if spool is not None else (0, False)
        self._count_spooled(len(docs), kept, ok)

    def _count_spooled(self, n: int, kept: int, ok: bool) -> None:
        # not ok: the spool could not be written (what its size limit drops, it counts itself)
        self.spooled += kept
        if kept < n and not ok:
            self.dropped += n - kept
            _guard.counters["exporter.dropped"] += n - kept
            _guard.warn(f"sink.{self.name}.dropped", "runs could not be delivered nor spooled; dropped",
                        sink=self.name, count=n - kept)
