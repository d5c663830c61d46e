"""Kinesis Data Firehose: every run as newline-delimited JSON records, for Firehose -> S3 -> Snowpipe.

One delivery stream carries the four record kinds; each record is one JSON object ending in ``\\n`` with
``record_type`` (``agent_run``, ``run_step``, ``api_call`` or ``run_score``), ``record_id`` and
``schema_version``, so
Snowflake lands them in one raw table and splits them by ``record_type`` (see ``docs/sinks.md``).

``PutRecordBatch`` calls are packed to the service's real limits (:data:`MAX_RECORDS_PER_CALL`,
:data:`MAX_BYTES_PER_CALL`, :data:`MAX_RECORD_BYTES`). A record over the per-record limit is shrunk
(captured ``inputs``/``output``/``metadata`` truncated and flagged), never dropped.

Each packed call is made once per :meth:`FirehoseSink.write` (botocore's own retries are off): the records
it did not take (throttling, a 5xx, a connection error, or an ``ErrorCode`` in a partial failure) come back
as ``WriteResult.failed``. The exporter owns the retries (``agentmeter.configure(max_attempts=...)``); when
it writes those runs again, the records already delivered are not sent again. boto3 is imported only here.
"""

from __future__ import annotations

import collections
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .. import contract
from .._capture import jsonable
from .._extras import require
from ._base import Document, Sink, WriteResult

__all__ = [
    "MAX_BYTES_PER_CALL",
    "MAX_RECORDS_PER_CALL",
    "MAX_RECORD_BYTES",
    "FirehoseSink",
    "document_payloads",
    "encode_record",
    "pack",
]

#: PutRecordBatch accepts at most 500 records per call ...
MAX_RECORDS_PER_CALL = 500
#: ... and at most 4 MiB of record data per call (counted before base64, as the service counts it) ...
MAX_BYTES_PER_CALL = 4 * 1024 * 1024
#: ... and at most 1,000 KiB per record (the API's ``Data`` length constraint: 1,024,000 bytes).
MAX_RECORD_BYTES = 1_024_000

#: Whole-call error codes that mean "throttled or the service is failing" (counted as ``throttled``;
#: Firehose answers throttling with ServiceUnavailableException).
THROTTLING_CODES = frozenset({
    "ServiceUnavailableException", "ServiceUnavailable", "ThrottlingException", "Throttling",
    "LimitExceededException", "InternalFailure", "InternalServerError", "InternalFailureException",
    "ServiceFailure", "RequestTimeout", "RequestTimeoutException", "SlowDown",
})
_PAYLOAD_FIELDS = ("inputs", "output", "metadata")
_HAS_TRUNCATED = {rtype: any(c.name == "truncated" for c in contract.TABLES[table])
                  for rtype, table in contract.RECORD_TYPES.items()}
_REMEMBER_PARTIAL = 10_000  # documents whose records were partly delivered, remembered to avoid resending


def _dumps(row: Mapping[str, Any]) -> bytes:
    text = json.dumps(row, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def _mark_truncated(row: dict[str, Any]) -> None:
    if _HAS_TRUNCATED.get(row.get("record_type", ""), False):
        row["truncated"] = True
    else:  # api_call rows have no truncated column: the contract flags truncation inside metadata
        meta = row.get("metadata")
        row["metadata"] = {**meta, "_truncated": True} if isinstance(meta, dict) else {"_truncated": True}


def encode_record(row: Mapping[str, Any], limit: int = MAX_RECORD_BYTES) -> bytes:
    """One row as a newline-terminated JSON record of at most ``limit`` bytes. Never drops the row.

    A row over ``limit`` has its captured ``inputs``, ``output`` and ``metadata`` cut down (and is flagged
    ``truncated``, or ``metadata._truncated`` for an api_call); only if that is not enough is every other
    long value cut too. Identifiers, timestamps and numbers always survive.
    """
    data = _dumps(row)
    if len(data) <= limit:
        return data
    budget = max(limit // 2, 64)
    while budget >= 16:
        small = dict(row)
        for field in _PAYLOAD_FIELDS:
            if small.get(field) is not None:
                value = jsonable(row[field], budget).value
                small[field] = value if field != "metadata" or isinstance(value, dict) else {}
        _mark_truncated(small)
        data = _dumps(small)
        if len(data) <= limit:
            return data
        budget //= 4
    # Captured payloads were not the problem (a huge name or tag list): cut every long value.
    budget = max(limit // 2, 64)
    while True:
        small = {k: (v if k in ("record_type", "record_id") else jsonable(v, budget).value)
                 for k, v in row.items()}
        for field in _PAYLOAD_FIELDS:
            if field in small:
                small[field] = None if field != "metadata" else {}
        _mark_truncated(small)
        data = _dumps(small)
        if len(data) <= limit or budget < 16:
            return data
        budget //= 4


def document_payloads(document: Document, limit: int = MAX_RECORD_BYTES) -> list[tuple[str, bytes]]:
    """``(record_id, record bytes)`` for every row of a document: the run, its steps, then its calls (or
    the one row of a score document)."""
    records = contract.document_records(document)
    rows = [*records.agent_runs, *records.run_steps, *records.api_calls, *records.run_scores]
    return [(row["record_id"], encode_record(row, limit)) for row in rows]


def pack(
    sizes: Sequence[int], max_records: int = MAX_RECORDS_PER_CALL, max_bytes: int = MAX_BYTES_PER_CALL
) -> list[range]:
    """Split records (given their sizes, in order) into consecutive calls within both limits.

    Greedy in order, which is optimal for consecutive groups: no other split in order uses fewer calls.
    Each size must be at most ``max_bytes`` (records are first made to fit with :func:`encode_record`).
    """
    calls: list[range] = []
    start = count = total = 0
    for i, size in enumerate(sizes):
        if count and (count >= max_records or total + size > max_bytes):
            calls.append(range(start, i))
            start, count, total = i, 0, 0
        count += 1
        total += size
    if count:
        calls.append(range(start, len(sizes)))
    return calls


class FirehoseSink(Sink):
    """Ships each run's records to one Firehose delivery stream (credentials: the standard AWS chain).

    One attempt per :meth:`write`: each packed ``PutRecordBatch`` call is made once, and botocore's own
    retries are off. The exporter owns the retries: a batch gets at most ``max_attempts`` writes (see
    :func:`agentmeter.configure`), so a record is sent at most ``max_attempts`` times before its run is
    spooled. :meth:`write` never raises: runs some record of which was not accepted come back as
    ``WriteResult.failed``, and when the exporter writes such a run again (a retry, or a replay from the
    spool in the same process) only its records not delivered yet are sent. :meth:`close` called during a
    write stops it before its next call (the runs of the calls not made are reported failed).
    """

    #: a typical run is a dozen records: 1,000 runs per write fill PutRecordBatch calls to ~98% of the
    #: limits (the last call of each write is partly filled), against ~74% with the default 100
    preferred_batch_size = 1000
    #: a score is one run_score record; the Snowflake view RUN_SCORES keeps the latest per score_id
    accepts_scores = True

    def __init__(
        self,
        stream_name: str,
        region: str | None = None,
        endpoint_url: str | None = None,
        *,
        name: str = "firehose",
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        client: Any = None,
    ) -> None:
        if not isinstance(stream_name, str) or not stream_name.strip():
            raise ValueError("FirehoseSink: stream_name (AGENTMETER_FIREHOSE_STREAM) must not be empty")
        require("FirehoseSink", "firehose", "boto3", "botocore")  # fail here, not on every export
        self.name = name
        self.stream_name = stream_name
        self.region = region
        self.endpoint_url = endpoint_url
        self._timeouts = (connect_timeout, read_timeout)
        self._client = client
        self._lock = threading.Lock()
        self._closes = 0  # close() calls so far: a write that sees it change stops before its next call
        # run_id -> record ids already delivered, for runs reported failed (so a retry sends only the rest)
        self._partial: collections.OrderedDict[str, set[str]] = collections.OrderedDict()
        #: counters: PutRecordBatch ``calls`` made, ``records`` and ``bytes`` accepted, ``failed_records``
        #: (records a write reported failed), ``partial_failures`` (calls with ``FailedPutCount > 0``),
        #: ``throttled`` (whole-call errors: throttling, 5xx)
        self.stats: collections.Counter[str] = collections.Counter()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FirehoseSink:
        """Configured from ``AGENTMETER_FIREHOSE_STREAM`` (required), ``AWS_REGION`` (or
        ``AWS_DEFAULT_REGION``) and ``AGENTMETER_FIREHOSE_ENDPOINT_URL``. Raises ValueError when unset."""
        env = os.environ if environ is None else environ
        stream = env.get("AGENTMETER_FIREHOSE_STREAM", "").strip()
        if not stream:
            raise ValueError("FirehoseSink: AGENTMETER_FIREHOSE_STREAM is not set (the delivery stream name)")
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
        endpoint = env.get("AGENTMETER_FIREHOSE_ENDPOINT_URL") or None
        return cls(stream_name=stream, region=region, endpoint_url=endpoint)

    @property
    def client(self) -> Any:
        """The boto3 Firehose client, created on first use (botocore's own retries off: the exporter owns
        them)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3  # optional extra [firehose]: ~300 ms, only when the sink is built
                    from botocore.config import Config  # optional extra [firehose]

                    config = Config(
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        connect_timeout=self._timeouts[0],
                        read_timeout=self._timeouts[1],
                    )
                    self._client = boto3.session.Session().client(
                        "firehose", region_name=self.region, endpoint_url=self.endpoint_url, config=config
                    )
        return self._client

    # -- sending ------------------------------------------------------------------------------------------
    def put_records(self, payloads: Sequence[bytes]) -> dict[int, str]:
        """Send records (each at most :data:`MAX_RECORD_BYTES`) in packed calls, in order, each call once.

        Returns ``{index: reason}`` for the records not accepted: every record of a call that failed as a
        whole (throttled, 5xx, connection error, unknown stream, access denied), the records with an
        ``ErrorCode`` in a partial failure, and the records of calls not made because :meth:`close` was
        called meanwhile. Never raises, never retries: retrying is the caller's decision.
        """
        failed: dict[int, str] = {}
        closes = self._closes
        for call in pack([len(p) for p in payloads]):
            if self._closes != closes:
                failed.update(dict.fromkeys(call, "sink closed during the write"))
                continue
            self._put_once(payloads, list(call), failed)
        self.stats["failed_records"] += len(failed)
        return failed

    def _put_once(self, payloads: Sequence[bytes], indices: list[int], failed: dict[int, str]) -> None:
        """One PutRecordBatch of ``indices``; the records it did not accept go to ``failed``."""
        from botocore.exceptions import BotoCoreError, ClientError  # optional extra [firehose]

        self.stats["calls"] += 1
        try:
            response = self.client.put_record_batch(
                DeliveryStreamName=self.stream_name, Records=[{"Data": payloads[i]} for i in indices]
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in THROTTLING_CODES or status >= 500 or status == 429:
                self.stats["throttled"] += 1
            # a bad stream name or access denied fails the same way: the exporter retries and spools, and a
            # fixed configuration then delivers the spooled runs
            failed.update(dict.fromkeys(indices, f"{code or status}: {error.get('Message', '')}"[:300]))
            return
        except (BotoCoreError, OSError) as exc:  # connection refused/reset, timeouts, no credentials
            failed.update(dict.fromkeys(indices, f"{type(exc).__name__}: {exc}"[:300]))
            return
        answers = response.get("RequestResponses") or []
        if len(answers) != len(indices):
            failed.update(dict.fromkeys(
                indices, f"PutRecordBatch gave {len(answers)} answers for {len(indices)} records"))
            return
        refused = 0
        for i, answer in zip(indices, answers, strict=True):
            if answer.get("ErrorCode"):
                failed[i] = f"{answer['ErrorCode']}: {answer.get('ErrorMessage', '')}"[:300]
                refused += 1
            else:
                self.stats["bytes"] += len(payloads[i])
        self.stats["records"] += len(indices) - refused
        if refused:
            self.stats["partial_failures"] += 1

    # -- the Sink interface -------------------------------------------------------------------------------
    def encode(self, documents: Sequence[Document]) -> Iterator[tuple[int, str, bytes]]:
        """``(document index, record id, record bytes)`` for every record still to deliver."""
        for index, doc in enumerate(documents):
            done = self._partial.get(str(doc.get("run_id")), set())
            for record_id, data in document_payloads(doc):
                if record_id not in done:
                    yield index, record_id, data

    def write(self, documents: Sequence[Document]) -> WriteResult:
        """Send every record of ``documents`` not delivered yet, each packed call once; return the
        documents some record of which was not accepted as ``failed``.

        Never raises: a document that cannot be encoded at all is returned as ``rejected``.
        """
        owners: list[tuple[int, str]] = []
        payloads: list[bytes] = []
        rejected: dict[int, str] = {}
        for index, doc in enumerate(documents):
            try:
                items = [(i, rid, data) for i, rid, data in self.encode([doc])]
            except Exception as exc:  # not a valid run document: retrying will never help
                rejected[index] = f"cannot encode: {type(exc).__name__}: {exc}"[:300]
                continue
            for _i, record_id, data in items:
                owners.append((index, record_id))
                payloads.append(data)
        failed_records = self.put_records(payloads)
        failed_docs: dict[int, str] = {}
        for i, reason in failed_records.items():
            failed_docs.setdefault(owners[i][0], reason)
        for pos, (index, record_id) in enumerate(owners):
            if index in failed_docs and pos not in failed_records:
                self._remember(str(documents[index].get("run_id")), record_id)
        for index in range(len(documents)):
            if index not in failed_docs:
                self._partial.pop(str(documents[index].get("run_id")), None)
        return WriteResult(failed=failed_docs, rejected=rejected)

    def _remember(self, run_id: str, record_id: str) -> None:
        self._partial.setdefault(run_id, set()).add(record_id)
        self._partial.move_to_end(run_id)
        while len(self._partial) > _REMEMBER_PARTIAL:
            self._partial.popitem(last=False)

    def close(self, timeout: float | None = None) -> bool:
        """Close the client; a write in progress stops before its next call. A later write reconnects."""
        with self._lock:
            self._closes += 1
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass  # closing a pool that is already gone
        return True
