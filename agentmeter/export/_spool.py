"""The durable spool: what a sink cannot take now is kept on disk and delivered later.

One SQLite file (WAL mode) per spool folder, with one lane per sink name. A document is written once per
lane and deleted when that sink has taken it. Every write is one transaction, so a ``kill -9`` at any
moment loses nothing that reached the spool, and a replay after a restart delivers again at most what was
in flight (ids make that idempotent). Several processes may share one spool.

The total size is bounded (``spool_max_bytes``); when full, the configured policy drops the oldest or the
newest documents, and every drop is counted (per lane) and logged. The running size is kept by triggers
in the same file, so checking it costs one indexed read whatever the spool holds.

A row is **claimed** by one process at a time: :meth:`Spool.take` marks the rows it returns with its pid and
a lease in the same transaction, and other processes skip claimed rows until the claim is released (a
failed write), the row is removed (delivered), the lease runs out, or the owner is found dead (a process
killed mid-replay). Two processes replaying one spool therefore never deliver the same run twice.

A row holds either a run document (a JSON object) or, for runs spilled from memory before their document
was built, the frozen record (a JSON array, see :mod:`agentmeter.export._documents`); :meth:`Spool.take`
turns records into documents with the ``convert`` function it is given.

A spool file that is not a database (corrupt) is moved aside once and a fresh one is started. A spool that
cannot be opened or written (an unwritable folder, a full disk) is *unavailable* for a back-off period
(1 s, doubling up to 60 s) with a logged warning: the exporter keeps running without it and counts what it
could not keep, what the spool already holds stays counted and readable, and the next write after the
back-off (or any ``flush()``, see :meth:`Spool.retry_now`) tries again: the spool recovers when its disk
does. Nothing here ever raises.
"""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import _guard
from .._json import dumps_bytes
from ._documents import EntryDocument, record_text

__all__ = ["LEASE_S", "Spool", "encode"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spool (lane TEXT NOT NULL, run_id TEXT NOT NULL, doc TEXT NOT NULL, "
    "bytes INTEGER NOT NULL, created REAL NOT NULL, owner INTEGER, lease REAL, PRIMARY KEY (lane, run_id))",
    "CREATE INDEX IF NOT EXISTS ix_spool_lane_created ON spool (lane, created)",
    "CREATE INDEX IF NOT EXISTS ix_spool_created ON spool (created)",
    "CREATE TABLE IF NOT EXISTS spool_lanes (lane TEXT PRIMARY KEY, docs INTEGER NOT NULL, "
    "bytes INTEGER NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS spool_ins AFTER INSERT ON spool BEGIN "
    "INSERT INTO spool_lanes (lane, docs, bytes) VALUES (NEW.lane, 1, NEW.bytes) "
    "ON CONFLICT(lane) DO UPDATE SET docs = docs + 1, bytes = bytes + excluded.bytes; END",
    "CREATE TRIGGER IF NOT EXISTS spool_del AFTER DELETE ON spool BEGIN "
    "UPDATE spool_lanes SET docs = docs - 1, bytes = bytes - OLD.bytes WHERE lane = OLD.lane; END",
)
#: spools made before claims existed get the two columns (null: unclaimed)
_CLAIM_COLUMNS = (("owner", "INTEGER"), ("lease", "REAL"))
_CLAIM_INDEX = "CREATE INDEX IF NOT EXISTS ix_spool_owner ON spool (lane, owner) WHERE owner IS NOT NULL"
_COLUMNS = "lane, run_id, doc, bytes, created, owner, lease"
#: seconds a claim holds when its owner is alive but silent (a write hung for that long is replayed again)
LEASE_S = 300.0
_BACKOFF_MIN_S, _BACKOFF_MAX_S = 1.0, 60.0

Row = tuple[str, str, str, int, float, "int | None", "float | None"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (EPERM): it exists
        return True
    return True


def encode(doc: Mapping[str, Any]) -> str:
    """A document as the spool stores it."""
    return _encode(doc)


def _encode(doc: Mapping[str, Any]) -> str:
    try:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        # documents are JSON-safe by contract; a broken one is still kept, readably, rather than lost
        _guard.warn("spool.encode", "document not strictly JSON-safe; spooled with repr() fallbacks")
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, default=repr)


def _spool_text(doc: Mapping[str, Any]) -> str:
    if isinstance(doc, EntryDocument):  # a run whose document was not needed: its record is cheaper to keep
        built = doc.entry.doc
        return record_text(doc.entry, doc.documents) if built is None else _encode(built)
    return _encode(doc)


class Spool:
    """A size-bounded, crash-safe store of undelivered documents, keyed by (lane, run_id). Never raises."""

    def __init__(self, folder: str | Path, max_bytes: int, policy: str = "drop_oldest",
                 lease_s: float = LEASE_S) -> None:
        self.path = Path(folder).expanduser() / "spool.db"
        self.max_bytes = max_bytes
        self.policy = policy
        self.lease_s = lease_s
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        # re-entrant: a SIGTERM handler may spool on the main thread while it was inside put()
        self._lock = threading.RLock()
        self._quarantined = False
        self._used_seen = (0, -1e9)  # (bytes used, monotonic time read): the fast path's view of the size
        self._json_each = True
        self._retry_at = 0.0  # unavailable (after a failure) until this monotonic time
        self._backoff = _BACKOFF_MIN_S
        self.failures = 0
        self.dropped = 0
        self.dropped_by_lane: collections.Counter[str] = collections.Counter()

    @property
    def broken(self) -> bool:
        """True while the spool is unavailable: its last write or open failed, and the back-off runs."""
        return self._retry_at > 0.0 and time.monotonic() < self._retry_at

    def warm(self) -> None:
        """Open the calling thread's connection now (the spool file is created if needed), so that a first
        spill does not wait for it. Quiet: a spool that cannot be opened is reported (and moved aside, if
        corrupt) by its first real use. Never raises."""
        if getattr(self._local, "conn", None) is not None or self.broken:
            return
        try:
            with self._lock:
                conn = self._open()
                self._local.conn = conn
                self._conns.append(conn)
        except Exception:
            pass

    def retry_now(self) -> None:
        """End the back-off: the next write tries the disk again (``flush()`` calls this)."""
        if self._retry_at:
            self._retry_at = time.monotonic()

    # -- connections: one per thread (each lane's workers have their own) -------------------------------
    def _conn(self, create: bool = True) -> sqlite3.Connection | None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn  # also while unavailable: what the spool holds stays readable and counted
        if self.broken:
            return None
        if not create and not self.path.exists():
            return None  # nothing was ever spooled: don't create files just to count
        with self._lock:
            for attempt in (1, 2):
                try:
                    conn = self._open()
                    break
                except sqlite3.DatabaseError as exc:
                    # "file is not a database" / "malformed": keep the evidence, start a fresh spool
                    text = str(exc).lower()
                    corrupt = "not a database" in text or "malformed" in text
                    if attempt == 1 and corrupt and self._quarantine(exc):
                        continue
                    self._degrade(exc)
                    return None
                except (sqlite3.Error, OSError) as exc:
                    self._degrade(exc)
                    return None
            else:  # pragma: no cover - the loop always breaks or returns
                return None
            self._local.conn = conn
            self._conns.append(conn)
            return conn

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives kill -9 (not power loss)
            for stmt in _SCHEMA:
                conn.execute(stmt)
            have = {row[1] for row in conn.execute("PRAGMA table_info(spool)")}
            for name, kind in _CLAIM_COLUMNS:
                if name not in have:
                    try:
                        conn.execute(f"ALTER TABLE spool ADD COLUMN {name} {kind}")
                    except sqlite3.OperationalError as exc:  # another process added it first
                        if "duplicate column" not in str(exc).lower():
                            raise
            conn.execute(_CLAIM_INDEX)
            conn.execute("SELECT count(*) FROM spool_lanes").fetchone()  # detects a corrupt file now
        except BaseException:
            conn.close()
            raise
        return conn

    def _quarantine(self, exc: BaseException) -> bool:
        if self._quarantined or not self.path.exists():
            return False
        self._quarantined = True
        aside = self.path.with_name(f"spool.db.corrupt-{int(time.time())}-{os.getpid()}")
        try:
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    os.replace(side, aside.with_name(aside.name + suffix))
        except OSError:
            return False
        _guard.warn("spool.corrupt", "spool file was unreadable; moved aside and a fresh spool started",
                    path=str(self.path), moved_to=str(aside), error=repr(exc)[:300])
        return True

    def _degrade(self, exc: BaseException) -> None:
        if isinstance(exc, sqlite3.ProgrammingError):  # a connection closed under us by close(): reopen later
            self._local = threading.local()
            return
        self.failures += 1
        self._retry_at = time.monotonic() + self._backoff
        _guard.warn("spool.unavailable", "spool cannot be written now; undeliverable runs are counted as "
                    "dropped until it recovers", path=str(self.path), error=repr(exc)[:300],
                    retry_in_s=self._backoff)
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)

    def _recovered(self) -> None:
        if self._retry_at:
            self._retry_at = 0.0
            self._backoff = _BACKOFF_MIN_S
            _guard.counters["spool.recovered"] += 1

    # -- writing ---------------------------------------------------------------------------------------
    def put(self, lane: str, documents: Sequence[Mapping[str, Any]], claim: bool = False) -> int:
        """Keep ``documents`` for ``lane``. Returns how many are kept (the rest were dropped by policy, or
        the spool is unavailable). A document already spooled for the lane counts as kept. ``claim``: this
        process keeps them claimed (it is still trying to deliver them). Never raises."""
        return self.store(lane, self.encode_all(documents), claim)[0]

    @staticmethod
    def encode_all(documents: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
        return [(str(doc["run_id"]), _spool_text(doc)) for doc in documents]

    def put_encoded(self, lane: str, items: Sequence[tuple[str, str]], claim: bool = False) -> int:
        """:meth:`put` for rows already encoded: ``(run_id, text)`` pairs. Never raises."""
        return self.store(lane, items, claim)[0]

    def store(self, lane: str, items: Sequence[tuple[str, str]], claim: bool = False) -> tuple[int, bool]:
        """:meth:`put_encoded`, also saying whether the spool could be written at all (False: unavailable,
        nothing kept) as opposed to its size limit dropping some. Never raises."""
        if not items:
            return 0, True
        if self.broken:
            return 0, False
        conn = self._conn()
        if conn is None:
            return 0, False
        now = time.time()
        owner, lease = (os.getpid(), now + self.lease_s) if claim else (None, None)
        rows: list[Row] = [  # the size in UTF-8 (what the limit counts), without a copy for ASCII
            (lane, run_id, text, len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass")), now,
             owner, lease) for run_id, text in items]
        try:
            if self._fast_insert(conn, rows):
                self._recovered()
                return len(rows), True
            with self._lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    rows = self._make_room(conn, rows)
                    if rows:
                        conn.executemany(f"INSERT OR IGNORE INTO spool ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                         rows)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            self._recovered()
            return len(rows), True
        except sqlite3.Error as exc:
            self._degrade(exc)
            return 0, False

    def _used(self, conn: sqlite3.Connection) -> int:
        used = int(conn.execute("SELECT coalesce(sum(bytes), 0) FROM spool_lanes").fetchone()[0])
        self._used_seen = (used, time.monotonic())
        return used

    def _fast_insert(self, conn: sqlite3.Connection, rows: list[Row]) -> bool:
        """Insert ``rows`` with one statement (one implicit transaction) when the spool is far from its
        limit (by the size last read, at most a second old, counting what this process added since). One
        statement releases and takes back the GIL twice, where BEGIN, the size query, one step per row and
        COMMIT do it many times: under a caller in a tight loop, each take-back waits for its switch
        interval. False: not done, use the transaction that applies the size policy."""
        if not self._json_each:
            return False
        used, seen = self._used_seen
        incoming = sum(r[3] for r in rows)
        if time.monotonic() - seen > 1.0 or used + incoming > self.max_bytes * 0.9:
            return False
        try:  # orjson escapes the texts in a fraction of json's time (the GIL is held); bound as text
            payload = dumps_bytes([[r[1], r[2], r[3]] for r in rows]).decode()  # (3.45+ reads blobs as JSONB)
        except TypeError:  # an unpaired surrogate: the standard library's encoder, as before
            payload = json.dumps([[r[1], r[2], r[3]] for r in rows], separators=(",", ":"))
        lane, created, owner, lease = rows[0][0], rows[0][4], rows[0][5], rows[0][6]
        try:
            with self._lock:
                conn.execute(
                    f"INSERT OR IGNORE INTO spool ({_COLUMNS}) SELECT ?, json_extract(value, '$[0]'), "
                    "json_extract(value, '$[1]'), json_extract(value, '$[2]'), ?, ?, ? FROM json_each(?)",
                    (lane, created, owner, lease, payload))
        except sqlite3.OperationalError as exc:
            if "no such" not in str(exc).lower():  # json_each missing (an SQLite without JSON): never again
                raise
            self._json_each = False
            return False
        self._used_seen = (used + incoming, seen)
        return True

    def _make_room(self, conn: sqlite3.Connection, rows: list[Row]) -> list[Row]:
        """Apply the policy inside the caller's transaction; returns the rows that may be inserted."""
        used = self._used(conn)
        incoming = sum(r[3] for r in rows)
        if used + incoming <= self.max_bytes:
            return rows
        if self.policy == "drop_newest":
            kept = []
            for row in rows:
                if used + row[3] <= self.max_bytes:
                    kept.append(row)
                    used += row[3]
                else:
                    self._count_drop(row[0], 1)
            return kept
        # drop_oldest: the incoming batch is the newest; if it alone is over the limit, its oldest go
        while rows and incoming > self.max_bytes:
            self._count_drop(rows[0][0], 1)
            incoming -= rows[0][3]
            rows = rows[1:]
        need = used + incoming - self.max_bytes
        if need > 0:
            victims: list[tuple[str, str]] = []
            freed = 0
            for lane, run_id, size in conn.execute("SELECT lane, run_id, bytes FROM spool ORDER BY created"):
                if freed >= need:
                    break
                victims.append((lane, run_id))
                freed += size
            conn.executemany("DELETE FROM spool WHERE lane = ? AND run_id = ?", victims)
            for lane, _ in victims:
                self._count_drop(lane, 1)
        return rows

    def _count_drop(self, lane: str, n: int) -> None:
        self.dropped += n
        self.dropped_by_lane[lane] += n
        _guard.counters["spool.dropped"] += n
        _guard.warn("spool.full", "spool is full; documents dropped by policy", policy=self.policy,
                    total_dropped=self.dropped, max_bytes=self.max_bytes)

    # -- reading ---------------------------------------------------------------------------------------
    def take(self, lane: str, limit: int,
             convert: Callable[[list[Any]], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Claim and return the oldest ``limit`` documents of ``lane`` that no other live process claims.
        They stay in the spool until :meth:`remove` (delivered) or :meth:`release` (not delivered).
        Records (JSON arrays) are turned into documents by ``convert``; a row that cannot be read is moved
        to the dead-letter lane ``<lane>:unreadable``. Never raises."""
        conn = self._conn(create=False)
        if conn is None:
            return []
        me, now = os.getpid(), time.time()
        try:
            with self._lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    dead = [owner for (owner,) in conn.execute(
                        "SELECT DISTINCT owner FROM spool WHERE lane = ? AND owner IS NOT NULL AND owner != ? "
                        "AND lease > ?", (lane, me, now)) if not _alive(int(owner))]
                    for owner in dead:  # a process killed while it held rows: they are free again
                        conn.execute("UPDATE spool SET owner = NULL, lease = NULL WHERE lane = ? AND owner = ?",
                                     (lane, owner))
                    rows = conn.execute(
                        "SELECT run_id, doc FROM spool WHERE lane = ? AND (owner IS NULL OR owner = ? OR lease <= ?)"
                        " ORDER BY created LIMIT ?", (lane, me, now, limit)).fetchall()
                    if rows:
                        conn.executemany("UPDATE spool SET owner = ?, lease = ? WHERE lane = ? AND run_id = ?",
                                         [(me, now + self.lease_s, lane, r[0]) for r in rows])
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            self._degrade(exc)
            return []
        out = []
        unreadable = []
        for run_id, text in rows:
            try:
                value = json.loads(text)
                if isinstance(value, list) and convert is not None:
                    value = convert(value)
                if not isinstance(value, dict) or value.get("run_id") != run_id:
                    raise ValueError("not a run document")
                out.append(value)
            except Exception:  # ValueError, or a record this version cannot read
                unreadable.append(run_id)
        if unreadable:  # never let one bad row block the lane forever: move it to a dead-letter lane
            _guard.warn("spool.corrupt_row", "unreadable spooled document moved to the dead-letter lane",
                        lane=lane, count=len(unreadable))
            self.move(lane, f"{lane}:unreadable", unreadable)
        return out

    def release(self, lane: str, run_ids: Sequence[str]) -> None:
        """Give up this process's claim on ``run_ids`` (their write failed): anyone may take them again."""
        self._write(lane, run_ids, "UPDATE spool SET owner = NULL, lease = NULL WHERE lane = ? AND run_id = ?")

    def remove(self, lane: str, run_ids: Sequence[str]) -> None:
        """Forget ``run_ids`` of ``lane`` (delivered). Never raises."""
        self._write(lane, run_ids, "DELETE FROM spool WHERE lane = ? AND run_id = ?")

    def _write(self, lane: str, run_ids: Sequence[str], sql: str) -> None:
        if not run_ids:
            return
        conn = self._conn(create=False)
        if conn is None:
            return
        try:
            with self._lock:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, [(lane, r) for r in run_ids])
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:  # release the write lock other processes sharing the spool wait on
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._degrade(exc)

    def move(self, lane: str, to_lane: str, run_ids: Sequence[str]) -> None:
        """Move documents to another lane (a dead-letter lane that is never replayed). Never raises."""
        conn = self._conn(create=False)
        if conn is None or not run_ids:
            return
        try:
            with self._lock:
                conn.execute("BEGIN IMMEDIATE")
                for run_id in run_ids:
                    conn.execute(f"INSERT OR IGNORE INTO spool ({_COLUMNS}) SELECT ?, run_id, doc, bytes, created, "
                                 "NULL, NULL FROM spool WHERE lane = ? AND run_id = ?", (to_lane, lane, run_id))
                    conn.execute("DELETE FROM spool WHERE lane = ? AND run_id = ?", (lane, run_id))
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:  # release the write lock other processes sharing the spool wait on
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._degrade(exc)

    def count(self, lane: str | None = None) -> int:
        """Documents waiting in ``lane`` (or in every lane). Never raises."""
        conn = self._conn(create=False)
        if conn is None:
            return 0
        try:
            if lane is None:
                return int(conn.execute("SELECT coalesce(sum(docs), 0) FROM spool_lanes").fetchone()[0])
            row = conn.execute("SELECT docs FROM spool_lanes WHERE lane = ?", (lane,)).fetchone()
            return int(row[0]) if row else 0
        except sqlite3.Error:
            return 0

    def size_bytes(self) -> int:
        conn = self._conn(create=False)
        if conn is None:
            return 0
        try:
            return self._used(conn)
        except sqlite3.Error:
            return 0

    def close(self) -> None:
        """Close every connection this spool opened. Never raises."""
        with self._lock:
            conns, self._conns = self._conns, []
            self._local = threading.local()
        for conn in conns:
            try:
                conn.close()
            except Exception:
                pass
