"""MongoDB: one document per run in ``agent_metadata`` (``_id`` = run id), the pipeline's source of truth.

Stored form (see ``docs/sinks.md``): the run document of :mod:`agentmeter.contract`, with

* ``_id`` = ``run_id``;
* ``started_at`` / ``ended_at`` of the run as BSON dates (UTC), so range queries, ``$dateTrunc`` and the
  indexes work on real dates. BSON dates hold milliseconds, so the exact microsecond strings of the
  contract are kept beside them in ``_iso`` and :func:`from_bson` gives back the document byte for byte;
* steps and calls as in the contract (ISO-8601 strings, fixed width, so text order is time order).

Writes are batched (``insert_many``, unordered); a duplicate key means the run was already delivered.
Transient errors (network, not-primary, timeouts) are retried briefly with jittered backoff; what still
fails is reported to the exporter, which spools it. pymongo is imported only here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from .. import _guard
from .._clock import parse_iso_utc
from .._extras import require
from .._scrub import scrub
from ._base import Document, Sink, WriteResult
from ._retry import Retry, retrying

__all__ = ["INDEXES", "MongoDBSink", "from_bson", "to_bson"]

#: Indexes created on first use: what the dashboard filters on and what the streamer scans by.
#: IndexOptionsConflict, IndexKeySpecsConflict: an equivalent index exists under another name or options
_INDEX_EXISTS_CODES = (85, 86)
INDEXES: tuple[tuple[str, list[tuple[str, int]]], ...] = (
    ("started_at_-1", [("started_at", -1)]),
    ("agent_1_started_at_-1", [("agent", 1), ("started_at", -1)]),
    ("status_1_started_at_-1", [("status", 1), ("started_at", -1)]),
)
_DATE_FIELDS = ("started_at", "ended_at")
DUPLICATE_KEY = 11000
#: server error codes that mean "try again" (not primary, shutting down, interrupted, timeouts)
TRANSIENT_CODES = frozenset({
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 50, 64, 112, 117, 133, 134, 150, 251,
})
#: server error codes that mean "never storable as it is" (validation, too large)
REJECT_CODES = frozenset({2, 121, 10334, 17419, 17280})


def to_bson(document: Document) -> dict[str, Any]:
    """The stored form of a run document (see the module docstring). Pure."""
    doc = {"_id": document["run_id"], **document}
    iso = {}
    for field in _DATE_FIELDS:
        value = doc.get(field)
        if isinstance(value, str):
            iso[field] = value
            doc[field] = parse_iso_utc(value)
    doc["_iso"] = iso
    return doc


def from_bson(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The run document back from its stored form: exact timestamps, no ``_id``. Pure."""
    iso = stored.get("_iso") or {}
    doc = {k: v for k, v in stored.items() if k not in ("_id", "_iso")}
    for field in _DATE_FIELDS:
        value = doc.get(field)
        if field in iso:
            doc[field] = iso[field]
        elif isinstance(value, datetime):  # written by something else: milliseconds are all we have
            if value.tzinfo is not None:
                value = value.astimezone(timezone.utc)
            doc[field] = value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return doc


class MongoDBSink(Sink):
    """Stores each run as one document in ``database.collection`` (default ``agent_metadata``).

    ``database`` defaults to the URI's database, else ``agentmeter``. Short server-selection, connect and
    socket timeouts keep a dead server from stalling the exporter. :meth:`write` never raises: runs it
    could not store after ``max_attempts`` come back as ``WriteResult.failed`` (to be spooled and
    replayed), documents the server refuses for good (validation, over 16 MiB) as ``rejected``.
    """

    def __init__(
        self,
        uri: str,
        database: str | None = None,
        collection: str = "agent_metadata",
        name: str = "mongodb",
        *,
        max_attempts: int = 3,
        server_selection_timeout_ms: int = 2000,
        connect_timeout_ms: int = 2000,
        socket_timeout_ms: int = 10000,
        backoff_initial: float = 0.1,
        backoff_max: float = 1.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(uri, str) or not uri.startswith(("mongodb://", "mongodb+srv://")):
            shown = scrub(repr(uri)[:1000])[:200]  # a mistyped URI still holds its password: never shown
            raise ValueError(f"MongoDBSink: uri (AGENTMETER_MONGODB_URI) must start with mongodb:// or "
                             f"mongodb+srv://, got {shown}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"MongoDBSink: max_attempts must be a positive integer, got {max_attempts!r}")
        if not collection:
            raise ValueError("MongoDBSink: collection must be a non-empty string")
        require("MongoDBSink", "mongodb", "pymongo")  # fail here, not on every export
        self.name = name
        self.uri = uri
        self.database_name = database
        self.collection_name = collection
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._options: dict[str, Any] = {
            "serverSelectionTimeoutMS": server_selection_timeout_ms,
            "connectTimeoutMS": connect_timeout_ms,
            "socketTimeoutMS": socket_timeout_ms,
            "retryWrites": True,
            "appname": "agentmeter",
            **(client_options or {}),
        }
        self._client: Any = None
        self._collection: Any = None
        self._indexes_ready = False
        self._lock = threading.Lock()
        self._closed = threading.Event()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MongoDBSink:
        """Configured from ``AGENTMETER_MONGODB_URI`` (required), ``AGENTMETER_MONGODB_DATABASE`` and
        ``AGENTMETER_MONGODB_COLLECTION``. Raises ValueError when the URI is unset or invalid."""
        env = os.environ if environ is None else environ
        uri = env.get("AGENTMETER_MONGODB_URI", "").strip()
        if not uri:
            raise ValueError("MongoDBSink: AGENTMETER_MONGODB_URI is not set (e.g. mongodb://host:27017)")
        return cls(
            uri=uri,
            database=env.get("AGENTMETER_MONGODB_DATABASE") or None,
            collection=env.get("AGENTMETER_MONGODB_COLLECTION") or "agent_metadata",
        )

    # -- connection ---------------------------------------------------------------------------------------
    @property
    def collection(self) -> Any:
        """The pymongo collection (client created on first use; no I/O until an operation runs)."""
        if self._collection is None:
            with self._lock:
                if self._collection is None:
                    from pymongo import MongoClient

                    client: Any = MongoClient(self.uri, tz_aware=True, **self._options)
                    try:
                        db = client.get_default_database()
                    except Exception:  # no database in the URI
                        db = None
                    if self.database_name is not None or db is None:
                        db = client[self.database_name or "agentmeter"]
                    self._client = client
                    self._collection = db[self.collection_name]
        return self._collection

    def ensure_indexes(self) -> None:
        """Create the indexes the dashboard and streamer need (idempotent). Raises pymongo errors."""
        if self._indexes_ready:
            return
        from pymongo import IndexModel
        from pymongo.errors import OperationFailure

        try:
            self.collection.create_indexes([IndexModel(keys, name=name) for name, keys in INDEXES])
        except OperationFailure as exc:
            if exc.code not in _INDEX_EXISTS_CODES:
                raise
            # The collection already has an index on these keys under another name (or other options):
            # the queries are served either way, and refusing every write for it would fill the spool.
            _guard.warn("mongodb.index_conflict", "an index on the same keys already exists; kept as it is",
                        error=str(exc)[:300])
        self._indexes_ready = True

    # -- writing ------------------------------------------------------------------------------------------
    def write(self, documents: Sequence[Document]) -> WriteResult:
        """Insert ``documents`` (a duplicate ``_id`` counts as delivered). Never raises."""
        stored: list[dict[str, Any] | None] = []
        rejected: dict[int, str] = {}
        for i, doc in enumerate(documents):
            try:
                stored.append(to_bson(doc))
            except Exception as exc:
                stored.append(None)
                rejected[i] = f"not a run document: {type(exc).__name__}: {exc}"[:300]
        pending = [i for i, d in enumerate(stored) if d is not None]
        failed: dict[int, str] = {}
        try:
            for attempt in retrying(self.max_attempts, self.backoff_initial, self.backoff_max, self._sleep):
                with attempt:
                    if pending and self._closed.is_set() and attempt.retry_state.attempt_number > 1:
                        # close() came while this write was running: no retry on a fresh client
                        raise Retry(pending, "sink closed before the retry", final=True)
                    if pending:
                        try:
                            pending = self._insert(stored, pending, rejected)
                        except Retry as again:
                            pending = again.pending  # the next try inserts only these
                            raise
        except Retry as exhausted:
            failed = dict.fromkeys(exhausted.pending, exhausted.reason)
        return WriteResult(failed=failed, rejected=rejected)

    def _insert(
        self, stored: list[dict[str, Any] | None], pending: list[int], rejected: dict[int, str]
    ) -> list[int]:
        """One insert of the pending documents. Raises Retry with those to try again."""
        from pymongo.errors import (
            BulkWriteError,
            ConnectionFailure,
            DocumentTooLarge,
            OperationFailure,
            PyMongoError,
        )

        try:
            self.ensure_indexes()
            self.collection.insert_many([stored[i] for i in pending], ordered=False)
            return []
        except BulkWriteError as exc:
            details = exc.details or {}
            again: list[int] = []
            reason = ""
            for error in details.get("writeErrors", []):
                index = pending[error["index"]]
                code = error.get("code")
                if code == DUPLICATE_KEY:
                    continue  # already delivered: replays are idempotent
                message = f"{code}: {error.get('errmsg', '')}"[:300]
                if code in REJECT_CODES:
                    rejected[index] = message
                else:
                    again.append(index)
                    reason = reason or message
            if details.get("writeConcernErrors"):
                # written, but not to enough members: inserting again is harmless (duplicate keys)
                wc = details["writeConcernErrors"][0]
                return self._retry(pending, f"write concern: {wc.get('code')}: {wc.get('errmsg', '')}")
            if again:
                raise Retry(again, reason) from exc
            return []
        except DocumentTooLarge as exc:
            return self._one_by_one(stored, pending, rejected, exc)
        except ConnectionFailure as exc:  # AutoReconnect, NotPrimaryError, NetworkTimeout, server selection
            raise Retry(pending, f"{type(exc).__name__}: {exc}"[:300]) from exc
        except OperationFailure as exc:
            transient = exc.code in TRANSIENT_CODES or exc.has_error_label("RetryableWriteError")
            # not transient (unauthorized, bad database name): fail now; the exporter spools and replays
            raise Retry(pending, f"{exc.code}: {exc}"[:300], final=not transient) from exc
        except PyMongoError as exc:  # ExecutionTimeout, WTimeoutError and the rest
            raise Retry(pending, f"{type(exc).__name__}: {exc}"[:300]) from exc

    def _sleep(self, seconds: float) -> None:
        self._closed.wait(seconds)  # close() cuts a backoff short

    def _retry(self, pending: list[int], reason: str) -> list[int]:
        raise Retry(pending, reason[:300])

    def _one_by_one(self, stored: list[dict[str, Any] | None], pending: list[int], rejected: dict[int, str],
                    cause: Exception) -> list[int]:
        """A document over MongoDB's 16 MiB limit: store the others, reject that one (dead-letter lane)."""
        from pymongo.errors import DocumentTooLarge, DuplicateKeyError, PyMongoError

        again: list[int] = []
        reason = ""
        for i in pending:
            try:
                self.collection.insert_one(stored[i])
            except DuplicateKeyError:
                pass
            except DocumentTooLarge as exc:
                rejected[i] = f"DocumentTooLarge: {exc}"[:300]
            except PyMongoError as exc:
                again.append(i)
                reason = reason or f"{type(exc).__name__}: {exc}"[:300]
        if again:
            raise Retry(again, reason) from cause
        return []

    def close(self, timeout: float | None = None) -> bool:
        self._closed.set()
        with self._lock:
            client, self._client, self._collection = self._client, None, None
            self._indexes_ready = False
        if client is not None:
            try:
                client.close()
            except Exception:
                pass  # already closed
        return True
