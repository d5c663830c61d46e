"""The durable spool: what a sink cannot take now is kept on disk and delivered later.

One SQLite file (WAL mode) per spool folder, with one lane per sink name. A document is written once per
lane and deleted when that sink has taken it, so a ``kill -9`` at any moment loses nothing that reached
the spool, and a replay after a restart delivers again at most what was in flight (ids make that
idempotent). The total size is bounded; when full, the configured policy drops the oldest or the newest
documents, and every drop is counted and logged. A spool that cannot be opened or written degrades to a
logged warning: the exporter keeps running without it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import _guard

__all__ = ["Spool", "default_spool_dir"]


def default_spool_dir() -> Path:
    from ._config import default_db_path

    return default_db_path().parent / "spool"


class Spool:
    """A size-bounded, crash-safe store of undelivered documents, keyed by (lane, run_id)."""

    def __init__(self, folder: str | Path, max_bytes: int, policy: str = "drop_oldest") -> None:
        self.path = Path(folder).expanduser() / "spool.db"
        self.max_bytes = max_bytes
        self.policy = policy
        self._local = threading.local()
        self._lock = threading.Lock()  # serializes size accounting and eviction across lanes
        self.broken = False
        self.dropped = 0

    # connections are per thread: each lane's worker has its own
    def _conn(self, create: bool = True) -> sqlite3.Connection | None:
        if self.broken:
            return None
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if not create and not self.path.exists():
                return None  # nothing was ever spooled: don't create files just to count
            try:
                with self._lock:  # one connection at a time switches the journal mode
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                           check_same_thread=False)
                    conn.execute("PRAGMA busy_timeout=10000")
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS spool (lane TEXT NOT NULL, run_id TEXT NOT NULL, "
                        "doc TEXT NOT NULL, bytes INTEGER NOT NULL, created REAL NOT NULL, "
                        "PRIMARY KEY (lane, run_id))"
                    )
                    conn.execute("CREATE INDEX IF NOT EXISTS ix_spool_created ON spool (lane, created)")
                    conn.execute("SELECT count(*) FROM spool").fetchone()  # detects a corrupt file now
            except (sqlite3.Error, OSError) as exc:
                self._degrade(exc)
                return None
            self._local.conn = conn
        return conn

    def _degrade(self, exc: BaseException) -> None:
        self.broken = True
        _guard.warn("spool.unavailable", "spool cannot be used; undeliverable runs will be counted as dropped",
                    path=str(self.path), error=repr(exc)[:300])

    def put(self, lane: str, documents: Sequence[Mapping[str, Any]]) -> int:
        """Keep ``documents`` for ``lane``. Returns how many were kept (the rest were dropped by policy)."""
        conn = self._conn()
        if conn is None or not documents:
            return 0
        rows = []
        for doc in documents:
            text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            rows.append((lane, doc["run_id"], text, len(text), time.time()))
        incoming = sum(r[3] for r in rows)
        try:
            with self._lock:
                used = conn.execute("SELECT coalesce(sum(bytes), 0) FROM spool").fetchone()[0]
                if used + incoming > self.max_bytes:
                    if self.policy == "drop_newest":
                        kept = []
                        for row in rows:
                            if used + row[3] <= self.max_bytes:
                                kept.append(row)
                                used += row[3]
                        self._count_drops(len(rows) - len(kept), "drop_newest")
                        rows = kept
                    else:
                        self._evict_oldest(conn, used + incoming - self.max_bytes)
                        if incoming > self.max_bytes:  # a batch bigger than the whole spool
                            keep_from = 0
                            total = incoming
                            while total > self.max_bytes and keep_from < len(rows):
                                total -= rows[keep_from][3]
                                keep_from += 1
                            self._count_drops(keep_from, "drop_oldest")
                            rows = rows[keep_from:]
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT OR REPLACE INTO spool VALUES (?, ?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            return len(rows)
        except sqlite3.Error as exc:
            self._degrade(exc)
            return 0

    def _evict_oldest(self, conn: sqlite3.Connection, need: int) -> None:
        freed = dropped = 0
        victims = []
        for lane, run_id, size in conn.execute("SELECT lane, run_id, bytes FROM spool ORDER BY created"):
            if freed >= need:
                break
            victims.append((lane, run_id))
            freed += size
            dropped += 1
        conn.executemany("DELETE FROM spool WHERE lane = ? AND run_id = ?", victims)
        self._count_drops(dropped, "drop_oldest")

    def _count_drops(self, n: int, policy: str) -> None:
        if n:
            self.dropped += n
            _guard.counters["spool.dropped"] += n
            _guard.warn("spool.full", "spool is full; documents dropped by policy", policy=policy, dropped=n,
                        total_dropped=self.dropped)

    def take(self, lane: str, limit: int) -> list[dict[str, Any]]:
        """The oldest ``limit`` documents of ``lane`` (they stay in the spool until :meth:`remove`)."""
        conn = self._conn(create=False)
        if conn is None:
            return []
        try:
            rows = conn.execute(
                "SELECT doc FROM spool WHERE lane = ? ORDER BY created LIMIT ?", (lane, limit)
            ).fetchall()
        except sqlite3.Error as exc:
            self._degrade(exc)
            return []
        out = []
        for (text,) in rows:
            try:
                out.append(json.loads(text))
            except ValueError:
                _guard.warn("spool.corrupt_row", "unreadable spooled document skipped")
        return out

    def remove(self, lane: str, run_ids: Sequence[str]) -> None:
        conn = self._conn()
        if conn is None or not run_ids:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("DELETE FROM spool WHERE lane = ? AND run_id = ?", [(lane, r) for r in run_ids])
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._degrade(exc)

    def count(self, lane: str | None = None) -> int:
        conn = self._conn(create=False)
        if conn is None:
            return 0
        try:
            if lane is None:
                return int(conn.execute("SELECT count(*) FROM spool").fetchone()[0])
            return int(conn.execute("SELECT count(*) FROM spool WHERE lane = ?", (lane,)).fetchone()[0])
        except sqlite3.Error:
            return 0

    def size_bytes(self) -> int:
        conn = self._conn(create=False)
        if conn is None:
            return 0
        try:
            return int(conn.execute("SELECT coalesce(sum(bytes), 0) FROM spool").fetchone()[0])
        except sqlite3.Error:
            return 0

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
