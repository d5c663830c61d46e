"""The metadata streamer: run documents from MongoDB (``agent_metadata``) to Kinesis Firehose.

The pipeline's second leg: the MongoDB sink keeps the source of truth, the streamer sends one run
(:meth:`MetadataStreamer.send_run`) or backfills recent runs (:meth:`MetadataStreamer.backfill`) to
Firehose as the same record kinds the Firehose sink writes, scores (``run_score``, from the MongoDB sink's
``run_scores`` collection) included. Records of consecutive documents share
``PutRecordBatch`` calls, packed to the service limits, so a backfill uses close to the fewest calls possible.

The streamer does not go through the exporter, so it owns its retries, with the exporter's policy: a call
is made at most ``max_attempts`` times (the first included), each retry sending only the records still
not accepted, after a random wait of up to ``retry_initial * 2 ** (retry - 1)`` seconds, at most
``retry_max`` (exponential backoff with full jitter). The sink itself makes one attempt per call.

Resumable and idempotent: with a checkpoint file, every run whose records were all accepted is appended to
it as soon as its call returns, and a later backfill skips those runs. A score is checkpointed by its
event (``score:<event_id>``), so a score replaced later (a new value for the same run, name and source) is
sent again and the Snowflake view ``RUN_SCORES`` keeps the latest. Snowflake de-duplicates by
``record_id`` besides, so a run sent twice (no checkpoint, or an interruption between two calls that
carry one run's records) is still counted once.

``MetadataStreamer.from_env()`` raises :class:`StreamerNotConfigured` (naming every missing variable)
before any I/O when MongoDB or Firehose is not configured.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import tenacity

from ._config import Settings
from .sinks.firehose import MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL, FirehoseSink, document_payloads, pack

__all__ = ["Checkpoint", "MetadataStreamer", "StreamSummary", "StreamerNotConfigured"]

#: Documents fetched from MongoDB per round trip.
FETCH_CHUNK = 500

#: Records (or bytes) queued before full calls are sent; the last, partly filled call waits for more runs.
QUEUE_RECORDS = 4 * MAX_RECORDS_PER_CALL
QUEUE_BYTES = 4 * MAX_BYTES_PER_CALL

_DEFAULTS = Settings()  # the streamer retries with the exporter's default policy

Progress = Callable[[int, int], None]
_Item = tuple[str, str, bytes]  # run id, record id, record


class StreamerNotConfigured(ValueError):
    """MongoDB or Firehose is not configured; the message names the missing environment variables."""


@attrs.frozen
class StreamSummary:
    """What a stream did. ``ok`` when nothing failed."""

    selected: int = 0  # runs the query matched
    sent: int = 0  # runs whose every record Firehose accepted
    skipped: int = 0  # runs already in the checkpoint
    failed: int = 0  # runs with a record still failing after the streamer's retries
    records: int = 0  # records accepted
    calls: int = 0  # PutRecordBatch calls made (retries included)
    seconds: float = 0.0
    failed_ids: tuple[str, ...] = ()
    #: scores (``run_score`` records) in the same stream, counted apart from the runs
    scores_sent: int = 0
    scores_skipped: int = 0
    scores_failed: int = 0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.scores_failed == 0

    @property
    def runs_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class Checkpoint:
    """What was already delivered to one delivery stream: an append-only file, one JSON line per call.

    A line lists the runs whose every record was accepted (``sent``) and, for a run whose records span two
    calls, the records accepted so far (``partial``), so a resumed stream sends each record once.
    Crash-safe: each line is flushed and fsynced before the streamer moves on; a torn last line (the
    process died while writing it) is ignored. Lines for another stream name are ignored too.
    """

    def __init__(self, path: str | Path, stream: str) -> None:
        self.path = Path(path).expanduser()
        self.stream = stream
        self._ids: set[str] | None = None
        self._partial: dict[str, set[str]] = {}

    def ids(self) -> set[str]:
        """Runs delivered completely."""
        if self._ids is None:
            self._load()
        assert self._ids is not None
        return self._ids

    def partial(self, run_id: str) -> set[str]:
        """Record ids of a run delivered so far (empty unless the run is part-way)."""
        self.ids()
        return self._partial.get(run_id, set())

    def _load(self) -> None:
        ids: set[str] = set()
        try:
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # torn write at a crash
                    if not isinstance(entry, dict) or entry.get("stream") != self.stream:
                        continue
                    ids.update(str(i) for i in entry.get("sent", ()))
                    for run_id, records in (entry.get("partial") or {}).items():
                        self._partial.setdefault(run_id, set()).update(records)
        except FileNotFoundError:
            pass
        for run_id in ids:
            self._partial.pop(run_id, None)
        self._ids = ids

    def add(self, run_ids: Sequence[str], partial: Mapping[str, Sequence[str]] | None = None) -> None:
        if not run_ids and not partial:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {"stream": self.stream, "at": round(time.time(), 3), "sent": list(run_ids)}
        if partial:
            entry["partial"] = {k: list(v) for k, v in partial.items()}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.ids().update(run_ids)
        for run_id, records in (partial or {}).items():
            self._partial.setdefault(run_id, set()).update(records)
        for run_id in run_ids:
            self._partial.pop(run_id, None)


class MetadataStreamer:
    """Streams run documents from a MongoDB collection to a :class:`FirehoseSink`.

    ``collection`` is a pymongo collection (or anything with the same ``find``); documents are in the
    stored form of :mod:`agentmeter.sinks.mongodb`. ``scores``, the MongoDB sink's scores collection
    (``run_scores``; :meth:`from_env` passes it), makes a backfill send the scores given in its window and
    :meth:`send_run` the run's scores; None sends runs only. Never raises for delivery failures: they are counted
    in the :class:`StreamSummary`; MongoDB errors (unreachable server) do raise.

    Each ``PutRecordBatch`` call is tried at most ``max_attempts`` times (default 4, as the exporter),
    waiting between tries up to ``retry_initial * 2 ** (retry - 1)`` seconds (default 0.5), at most
    ``retry_max`` (default 10); a retry sends only the records not accepted yet. Raises ValueError
    naming the setting when one is invalid.
    """

    def __init__(self, collection: Any, sink: FirehoseSink, checkpoint: str | Path | Checkpoint | None = None,
                 fetch_chunk: int = FETCH_CHUNK, *, max_attempts: int = _DEFAULTS.max_attempts,
                 retry_initial: float = _DEFAULTS.retry_initial,
                 retry_max: float = _DEFAULTS.retry_max, scores: Any = None) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"MetadataStreamer: max_attempts must be a positive integer, got {max_attempts!r}")
        for setting, value in (("retry_initial", retry_initial), ("retry_max", retry_max)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"MetadataStreamer: {setting} must be a number >= 0 (seconds), got {value!r}")
        self.collection = collection
        self.scores = scores
        self.sink = sink
        self.max_attempts = max_attempts
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
            checkpoint = Checkpoint(checkpoint, sink.stream_name)
        self.checkpoint = checkpoint
        self.fetch_chunk = fetch_chunk

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 checkpoint: str | Path | None = None) -> MetadataStreamer:
        """Both ends from the environment (see ``docs/sinks.md``). Raises StreamerNotConfigured, before any
        I/O, naming every missing variable."""
        from .sinks.mongodb import MongoDBSink  # pymongo: only when the streamer is built

        env = os.environ if environ is None else environ
        missing = []
        if not env.get("AGENTMETER_MONGODB_URI", "").strip():
            missing.append("MongoDB is not configured: set AGENTMETER_MONGODB_URI (and optionally "
                           "AGENTMETER_MONGODB_DATABASE, AGENTMETER_MONGODB_COLLECTION)")
        if not env.get("AGENTMETER_FIREHOSE_STREAM", "").strip():
            missing.append("Firehose is not configured: set AGENTMETER_FIREHOSE_STREAM (and AWS_REGION, or "
                           "AGENTMETER_FIREHOSE_ENDPOINT_URL for LocalStack)")
        if missing:
            raise StreamerNotConfigured("\n".join(missing))
        try:
            mongo = MongoDBSink.from_env(env)
            sink = FirehoseSink.from_env(env)
        except ValueError as exc:
            raise StreamerNotConfigured(str(exc)) from exc
        return cls(mongo.collection, sink, checkpoint, scores=mongo.collection.database[mongo.scores_collection_name])

    # -- selecting ----------------------------------------------------------------------------------------
    def _select(self, since: timedelta | None, limit: int | None, now: datetime | None) -> list[str]:
        """Run ids to consider, oldest first: the ``limit`` most recent started within ``since``."""
        query: dict[str, Any] = {}
        if since is not None:
            query["started_at"] = {"$gte": (now or datetime.now(timezone.utc)) - since}
        cursor = self.collection.find(query, {"_id": 1}).sort([("started_at", -1), ("_id", -1)])
        if limit is not None:
            cursor = cursor.limit(limit)
        ids = [str(d["_id"]) for d in cursor]
        ids.reverse()
        return ids

    def _select_scores(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Score documents matching ``query``, oldest first."""
        from .sinks.mongodb import score_from_bson  # pymongo's bson: only when scores are fetched

        if self.scores is None:
            return []
        cursor = self.scores.find(query).sort([("scored_at", 1), ("_id", 1)])
        return [score_from_bson(d) for d in cursor]

    def _fetch(self, run_ids: Sequence[str]) -> Iterator[dict[str, Any]]:
        from .sinks.mongodb import from_bson  # pymongo's bson: only when documents are fetched

        for start in range(0, len(run_ids), self.fetch_chunk):
            chunk = list(run_ids[start:start + self.fetch_chunk])
            found = {str(d["_id"]): d for d in self.collection.find({"_id": {"$in": chunk}})}
            for run_id in chunk:
                if run_id in found:  # deleted since it was selected: nothing to send
                    yield from_bson(found[run_id])

    # -- sending ------------------------------------------------------------------------------------------
    def send_run(self, run_id: str, progress: Progress | None = None) -> StreamSummary:
        """Send one run (even if the checkpoint has it: an explicit request). Raises LookupError if no run
        has that id."""
        docs = list(self._fetch([run_id]))
        if not docs:
            raise LookupError(f"no run with id {run_id!r} in MongoDB")
        runs = self._send(docs, selected=1, skipped=0, progress=progress, resume=False)
        return self._with_scores(runs, self._select_scores({"run_id": run_id}), resume=False)

    def backfill(self, since: timedelta | None = None, limit: int | None = None,
                 progress: Progress | None = None, now: datetime | None = None) -> StreamSummary:
        """Send the ``limit`` most recent runs started within ``since`` (None: no bound), skipping runs the
        checkpoint already has, oldest first."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        now = now or datetime.now(timezone.utc)
        ids = self._select(since, limit, now)
        done = self.checkpoint.ids() if self.checkpoint is not None else set()
        todo = [i for i in ids if i not in done]
        runs = self._send(self._fetch(todo), selected=len(ids), skipped=len(ids) - len(todo), progress=progress,
                          total=len(todo), resume=True)
        # scores by when they were given (a score may come long after its run), stored as ISO strings
        query = {} if since is None else {"scored_at": {"$gte": _iso(now - since)}}
        return self._with_scores(runs, self._select_scores(query), resume=True)

    def _with_scores(self, runs: StreamSummary, scores: list[dict[str, Any]], resume: bool) -> StreamSummary:
        """``runs`` plus the scores sent after them (the checkpoint's ``score:<event_id>`` keys skipped)."""
        if not scores:
            return runs
        done = self.checkpoint.ids() if resume and self.checkpoint is not None else set()
        todo = [d for d in scores if d["run_id"] not in done]
        sent = self._send(todo, selected=len(scores), skipped=len(scores) - len(todo), progress=None,
                          resume=resume)
        return attrs.evolve(
            runs, records=runs.records + sent.records, calls=runs.calls + sent.calls,
            seconds=runs.seconds + sent.seconds, failed_ids=runs.failed_ids + sent.failed_ids,
            scores_sent=sent.sent, scores_skipped=sent.skipped, scores_failed=sent.failed,
        )

    def _send(self, docs: Iterable[dict[str, Any]], selected: int, skipped: int,
              progress: Progress | None, total: int | None = None, resume: bool = True) -> StreamSummary:
        started = time.perf_counter()
        calls_before = self.sink.stats["calls"]
        records_before = self.sink.stats["records"]
        total = selected if total is None else total
        state = _SendState(self, progress, total)
        queue: list[_Item] = []  # records not sent yet
        queued_bytes = 0
        count: dict[str, int] = {}
        checkpoint = self.checkpoint if resume else None
        for doc in docs:
            run_id = str(doc["run_id"])
            already = checkpoint.partial(run_id) if checkpoint is not None else set()
            payloads = [(rid, data) for rid, data in document_payloads(doc) if rid not in already]
            if not payloads:  # every record went out before an interruption; only the checkpoint lacked it
                state.complete([run_id])
                continue
            count[run_id] = len(payloads)
            queue.extend((run_id, rid, data) for rid, data in payloads)
            queued_bytes += sum(len(data) for _rid, data in payloads)
            if len(queue) >= QUEUE_RECORDS or queued_bytes >= QUEUE_BYTES:
                queue = state.send(queue, count, final=False)
                queued_bytes = sum(len(item[2]) for item in queue)
        state.send(queue, count, final=True)
        return StreamSummary(
            selected=selected, sent=state.sent, skipped=skipped, failed=len(state.failed),
            records=self.sink.stats["records"] - records_before, calls=self.sink.stats["calls"] - calls_before,
            seconds=time.perf_counter() - started, failed_ids=tuple(state.failed),
        )


def _iso(moment: datetime) -> str:
    """The form the MongoDB sink stores ``scored_at`` in (``2026-11-26T12:00:00.000000Z``)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _SendState:
    """Counts and checkpointing while one stream sends."""

    def __init__(self, streamer: MetadataStreamer, progress: Progress | None, total: int) -> None:
        self.streamer = streamer
        self.progress = progress
        self.total = total
        self.sent = 0
        self.failed: list[str] = []
        self._failed_set: set[str] = set()

    def send(self, queue: list[_Item], count: dict[str, int], final: bool) -> list[_Item]:
        """Send the queue in full calls (all of it when ``final``); return the last, partly filled call's
        records, carried to the next round so that every call but the very last is full."""
        if not queue:
            return []
        calls = pack([len(item[2]) for item in queue])
        if not final:
            calls = calls[:-1]
        for call in calls:
            self._one_call(queue, call, count)
        return queue[calls[-1].stop:] if calls else queue

    def complete(self, run_ids: list[str]) -> None:
        if self.streamer.checkpoint is not None:
            self.streamer.checkpoint.add(run_ids)
        self.sent += len(run_ids)

    def _one_call(self, queue: list[_Item], call: range, count: dict[str, int]) -> None:
        failed = self._put_with_retries([queue[i][2] for i in call])
        done: list[str] = []
        partial: dict[str, list[str]] = {}
        for offset, i in enumerate(call):
            run_id, record_id = queue[i][0], queue[i][1]
            if offset not in failed:
                partial.setdefault(run_id, []).append(record_id)
            if offset in failed and run_id not in self._failed_set:
                self._failed_set.add(run_id)
                self.failed.append(run_id)
            count[run_id] -= 1
            if count[run_id] == 0:
                del count[run_id]
                if run_id not in self._failed_set:
                    done.append(run_id)
        if self.streamer.checkpoint is not None:
            for run_id in done:
                partial.pop(run_id, None)
            self.streamer.checkpoint.add(done, partial)
        self.sent += len(done)
        if self.progress is not None:
            self.progress(self.sent + len(self.failed), self.total)

    def _put_with_retries(self, payloads: list[bytes]) -> dict[int, str]:
        """Send one call's records, retrying only those not accepted; return those still failing."""
        streamer = self.streamer
        left: dict[int, str] = dict.fromkeys(range(len(payloads)), "")

        def attempt() -> bool:
            """One PutRecordBatch of what is left; True while something still failed."""
            positions = list(left)
            failed = streamer.sink.put_records([payloads[i] for i in positions])
            for offset, i in enumerate(positions):
                if offset in failed:
                    left[i] = failed[offset]
                else:
                    del left[i]
            return bool(left)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(streamer.max_attempts),
            wait=tenacity.wait_random_exponential(multiplier=streamer.retry_initial, max=streamer.retry_max),
            retry=tenacity.retry_if_result(bool),
            retry_error_callback=lambda _state: True,  # attempts used up: report what is left
        )
        retrying(attempt)
        return left
