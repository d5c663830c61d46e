"""MongoDB: one document per run in ``agent_metadata`` (``_id`` = run id), the pipeline's source of truth.

Stored form (see ``docs/sinks.md``): the run document of :mod:`agentmeter.contract`, with

* ``_id`` = ``run_id``;
* ``started_at`` / ``ended_at`` of the run as BSON dates (UTC), so range queries, ``$dateTrunc`` and the
  indexes work on real dates. BSON dates hold milliseconds, so the exact microsecond strings of the
  contract are kept beside them in ``_iso`` and :func:`from_bson` gives back the document byte for byte;
* steps and calls as in the contract (ISO-8601 strings, fixed width, so text order is time order).

Scores (``agentmeter.score``) go to their own collection, ``run_scores`` by default, one document per
score (``_id`` = ``score_id``, the ``run_scores`` row, ``scored_at`` as its ISO string, and ``_order``,
``scored_at|event_id``): each is one conditional replace (``_id`` and an older ``_order``) with upsert, so
a later score replaces the stored one and an earlier one (a replay, a slow process) changes nothing.

Writes are batched (``insert_many``, unordered); a duplicate key means the run was already delivered.
One bulk write per :meth:`MongoDBSink.write`, which pymongo's retryable writes may retry once; what fails
is reported to the exporter, which owns the retries (``agentmeter.configure(max_attempts=...)``) and spools
what is left. pymongo is imported only here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from .. import _guard, contract
from .._clock import parse_iso_utc
from .._extras import require
from .._scrub import scrub
from ._base import Document, Sink, WriteResult

__all__ = ["INDEXES", "SCORE_INDEXES", "MongoDBSink", "from_bson", "score_from_bson", "score_to_bson", "to_bson"]

#: Indexes created on first use: what the dashboard filters on and what the streamer scans by.
#: IndexOptionsConflict, IndexKeySpecsConflict: an equivalent index exists under another name or options
_INDEX_EXISTS_CODES = (85, 86)
INDEXES: tuple[tuple[str, list[tuple[str, int]]], ...] = (
    ("started_at_-1", [("started_at", -1)]),
    ("agent_1_started_at_-1", [("agent", 1), ("started_at", -1)]),
    ("status_1_started_at_-1", [("status", 1), ("started_at", -1)]),
    ("session_id_1_started_at_-1", [("session_id", 1), ("started_at", -1)]),
    ("user_id_1_started_at_-1", [("user_id", 1), ("started_at", -1)]),
)
#: On the scores collection, created with the first score: a run's scores, and a window of scores
#: (``agentmeter stream`` backfills by ``scored_at``).
SCORE_INDEXES: tuple[tuple[str, list[tuple[str, int]]], ...] = (
    ("run_id_1", [("run_id", 1)]),
    ("scored_at_1", [("scored_at", 1)]),
)
_DATE_FIELDS = ("started_at", "ended_at")
DUPLICATE_KEY = 11000
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


def score_to_bson(document: Document) -> dict[str, Any]:
    """The stored form of a score document (see the module docstring). Pure."""
    row = document["score"]
    return {"_id": row["score_id"], **row, "_order": f"{row['scored_at']}|{row['event_id']}"}


def score_from_bson(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The score document back from its stored form (the inverse of :func:`score_to_bson`). Pure."""
    row = {k: v for k, v in stored.items() if k not in ("_id", "_order")}
    return {"schema_version": contract.SCHEMA_VERSION, "record_type": contract.RUN_SCORE,
            "run_id": contract.SCORE_KEY_PREFIX + str(row["event_id"]), "score": row}


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
    socket timeouts keep a dead server from stalling the exporter.

    One attempt per :meth:`write`: one ``insert_many``, which pymongo's retryable writes retry at most once
    (on a network error or a step-down; its overload retries are turned off). The exporter owns the
    retries, so a batch gets at most ``max_attempts`` bulk writes (see :func:`agentmeter.configure`), that
    is at most ``2 x max_attempts`` insert commands, before it is spooled. :meth:`write` never raises: runs
    not stored come back as ``WriteResult.failed`` (retried, then spooled and replayed), documents the
    server refuses for good (validation, over 16 MiB) as ``rejected``. :meth:`close` called during a write
    cuts it short (pymongo's retry included) and opens no new client for it.
    """

    def __init__(
        self,
        uri: str,
        database: str | None = None,
        collection: str = "agent_metadata",
        name: str = "mongodb",
        *,
        scores_collection: str = "run_scores",
        server_selection_timeout_ms: int = 2000,
        connect_timeout_ms: int = 2000,
        socket_timeout_ms: int = 10000,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(uri, str) or not uri.startswith(("mongodb://", "mongodb+srv://")):
            shown = scrub(repr(uri)[:1000])[:200]  # a mistyped URI still holds its password: never shown
            raise ValueError(f"MongoDBSink: uri (AGENTMETER_MONGODB_URI) must start with mongodb:// or "
                             f"mongodb+srv://, got {shown}")
        if not collection:
            raise ValueError("MongoDBSink: collection must be a non-empty string")
        if not isinstance(scores_collection, str) or not scores_collection:
            raise ValueError("MongoDBSink: scores_collection must be a non-empty string")
        require("MongoDBSink", "mongodb", "pymongo")  # fail here, not on every export
        self.name = name
        self.uri = uri
        self.database_name = database
        self.collection_name = collection
        self.scores_collection_name = scores_collection
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
        self._indexes_ready = self._score_indexes_ready = False
        self._lock = threading.Lock()

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
                    import pymongo  # optional extra [mongodb]: only when the sink is built
                    from pymongo import MongoClient  # optional extra [mongodb]

                    options = dict(self._options)
                    if pymongo.version_tuple[:2] >= (4, 17):
                        # pymongo 4.17+ also retries "overloaded" errors (MongoDB 9+), twice, with its
                        # own sleeps: off, so the exporter's backoff is the only one (client_options wins)
                        options.setdefault("max_adaptive_retries", 0)
                    client: Any = MongoClient(self.uri, tz_aware=True, **options)
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
        self._ensure_indexes(self.collection)

    def _ensure_indexes(self, collection: Any) -> None:
        if not self._indexes_ready:
            self._create_indexes(collection, INDEXES)
            self._indexes_ready = True

    def _create_indexes(self, collection: Any, indexes: Sequence[tuple[str, list[tuple[str, int]]]]) -> None:
        from pymongo import IndexModel  # optional extra [mongodb]
        from pymongo.errors import OperationFailure  # optional extra [mongodb]

        try:
            collection.create_indexes([IndexModel(keys, name=name) for name, keys in indexes])
        except OperationFailure as exc:
            if exc.code not in _INDEX_EXISTS_CODES:
                raise
            # The collection already has an index on these keys under another name (or other options):
            # the queries are served either way, and refusing every write for it would fill the spool.
            _guard.warn("mongodb.index_conflict", "an index on the same keys already exists; kept as it is",
                        error=str(exc)[:300])

    accepts_scores = True

    # -- writing ------------------------------------------------------------------------------------------
    def write(self, documents: Sequence[Document]) -> WriteResult:
        """Insert ``documents`` with one bulk write (a duplicate ``_id`` counts as delivered), and scores with
        another (conditional replaces, see the module docstring). Never raises."""
        stored: list[dict[str, Any] | None] = []
        scores: list[dict[str, Any] | None] = []
        rejected: dict[int, str] = {}
        for i, doc in enumerate(documents):
            score = doc.get("record_type") == "run_score"
            try:
                (scores if score else stored).append(score_to_bson(doc) if score else to_bson(doc))
                (stored if score else scores).append(None)
            except Exception as exc:
                stored.append(None)
                scores.append(None)
                rejected[i] = f"not a run or score document: {type(exc).__name__}: {exc}"[:300]
        pending = [i for i, d in enumerate(stored) if d is not None]
        failed = self._insert(stored, pending, rejected) if pending else {}
        pending = [i for i, d in enumerate(scores) if d is not None]
        if pending:
            failed.update(self._replace_scores(scores, pending, rejected))
        return WriteResult(failed=failed, rejected=rejected)

    def _replace_scores(self, scores: list[dict[str, Any] | None], pending: list[int],
                        rejected: dict[int, str]) -> dict[int, str]:
        """One conditional replace per score (scores are few: a feedback click, an evaluation)."""
        from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError  # optional extra [mongodb]

        failed: dict[int, str] = {}
        try:
            target = self.collection.database[self.scores_collection_name]
            if not self._score_indexes_ready:
                self._create_indexes(target, SCORE_INDEXES)
                self._score_indexes_ready = True
        except PyMongoError as exc:
            return dict.fromkeys(pending, f"{type(exc).__name__}: {exc}"[:300])
        for i in pending:
            score = scores[i]
            if score is None:
                continue
            try:
                target.replace_one({"_id": score["_id"], "_order": {"$lt": score["_order"]}}, score, upsert=True)
            except DuplicateKeyError:
                pass  # a later score of this key is stored already: this one changes nothing
            except OperationFailure as exc:
                if exc.code in REJECT_CODES:
                    rejected[i] = f"{exc.code}: {exc}"[:300]
                else:
                    failed[i] = f"{exc.code}: {exc}"[:300]
            except PyMongoError as exc:
                failed[i] = f"{type(exc).__name__}: {exc}"[:300]
        return failed

    def _insert(
        self, stored: list[dict[str, Any] | None], pending: list[int], rejected: dict[int, str]
    ) -> dict[int, str]:
        """One insert of the pending documents; returns the positions not stored, with why."""
        from pymongo.errors import BulkWriteError, DocumentTooLarge, OperationFailure, PyMongoError  # optional extra

        try:
            # One collection for the whole write: once close() has closed its client, the rest of this
            # write (pymongo's retry, the one-by-one inserts) fails at once instead of opening a new client.
            collection = self.collection
            self._ensure_indexes(collection)
            collection.insert_many([stored[i] for i in pending], ordered=False)
            return {}
        except BulkWriteError as exc:
            return _bulk_failures(exc.details or {}, pending, rejected)
        except DocumentTooLarge:
            return self._one_by_one(collection, stored, pending, rejected)
        except OperationFailure as exc:  # unauthorized, not primary, interrupted...: the exporter decides
            reason = f"{exc.code}: {exc}"
        except PyMongoError as exc:  # network errors, server selection and other timeouts, closed client
            reason = f"{type(exc).__name__}: {exc}"
        return dict.fromkeys(pending, reason[:300])

    def _one_by_one(self, collection: Any, stored: list[dict[str, Any] | None], pending: list[int],
                    rejected: dict[int, str]) -> dict[int, str]:
        """A document over MongoDB's 16 MiB limit: store the others, reject that one (dead-letter lane)."""
        from pymongo.errors import DocumentTooLarge, DuplicateKeyError, PyMongoError  # optional extra [mongodb]

        failed: dict[int, str] = {}
        for i in pending:
            try:
                collection.insert_one(stored[i])
            except DuplicateKeyError:
                pass
            except DocumentTooLarge as exc:
                rejected[i] = f"DocumentTooLarge: {exc}"[:300]
            except PyMongoError as exc:
                failed[i] = f"{type(exc).__name__}: {exc}"[:300]
        return failed

    def close(self, timeout: float | None = None) -> bool:
        """Close the client; a write in progress fails fast. A later write opens a new client."""
        with self._lock:
            client, self._client, self._collection = self._client, None, None
            self._indexes_ready = self._score_indexes_ready = False
        if client is not None:
            try:
                client.close()
            except Exception:
                pass  # already closed
        return True


def _bulk_failures(details: Mapping[str, Any], pending: list[int], rejected: dict[int, str]) -> dict[int, str]:
    """The positions a BulkWriteError left unstored (to retry); those never storable go to ``rejected``."""
    failed: dict[int, str] = {}
    for error in details.get("writeErrors", []):
        index = pending[error["index"]]
        code = error.get("code")
        if code == DUPLICATE_KEY:
            continue  # already delivered: replays are idempotent
        message = f"{code}: {error.get('errmsg', '')}"[:300]
        if code in REJECT_CODES:
            rejected[index] = message
        else:
            failed[index] = message
    if details.get("writeConcernErrors"):
        # written, but not to enough members: writing them again is harmless (duplicate keys)
        wc = details["writeConcernErrors"][0]
        reason = f"write concern: {wc.get('code')}: {wc.get('errmsg', '')}"[:300]
        for index in pending:
            if index not in rejected:
                failed.setdefault(index, reason)
    return failed
