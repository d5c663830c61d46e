"""The embedded local store: SQLite with the four tables of the contract.

WAL mode lets a dashboard read while agents write; rows are upserted by id, so a replayed document never
duplicates; indexes cover the dashboard's filters (time, agent, status, provider, model).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import contract
from .._paths import default_db_path
from ._base import Document, Sink, WriteResult

__all__ = ["SQLiteSink", "create_schema", "table_columns"]

_SQL_TYPES = {"text": "TEXT", "integer": "INTEGER", "real": "REAL", "boolean": "INTEGER",
              "timestamp": "TEXT", "json": "TEXT"}
_PRIMARY_KEYS = {"agent_runs": "run_id", "run_steps": "step_id", "api_calls": "call_id", "run_scores": "score_id"}
#: a score replaces the stored one of its key only when it is later (scored_at, then event_id): latest wins
_UPSERT_WHERE = {"run_scores": " WHERE (excluded.scored_at, excluded.event_id) > "
                               "(coalesce(run_scores.scored_at, ''), coalesce(run_scores.event_id, ''))"}
# record_type is implied by the table and record_id equals the primary key: not stored twice.
_SKIP = ("record_type", "record_id")
# The dashboard's aggregates read only the "rollup" covering indexes, in group order (no sort, no row
# lookups, payload columns never read): on 1M calls a per-model summary takes 0.2 s instead of 1.5 s. Each
# rollup leads with the grouping columns and then started_at, so new rows land at the end of their group
# (append-like inserts). ix_runs_rollup2 and ix_calls_rollup start with the columns of ix_runs_started and
# ix_calls_provider, which they replace; ix_calls_model served no query. Older stores drop those three on
# their next open. run_id stays out of the rollups: a status filter is a semi-join on run_id, which the
# run_id indexes serve better.
_INDEXES: tuple[str, ...] = (
    # ix_runs_rollup2: ix_runs_rollup plus the step and error counts the KPIs sum (step and call error rates)
    "CREATE INDEX IF NOT EXISTS ix_runs_rollup2 ON agent_runs (started_at, agent, status, duration_ms, "
    "total_tokens, cost_usd, call_count, unpriced_call_count, input_tokens, output_tokens, step_count, "
    "error_step_count, error_call_count)",
    "DROP INDEX IF EXISTS ix_runs_rollup",
    "CREATE INDEX IF NOT EXISTS ix_runs_agent ON agent_runs (agent, started_at)",
    "CREATE INDEX IF NOT EXISTS ix_runs_status ON agent_runs (status, started_at)",
    "CREATE INDEX IF NOT EXISTS ix_steps_run ON run_steps (run_id)",
    "CREATE INDEX IF NOT EXISTS ix_steps_started ON run_steps (started_at)",
    "CREATE INDEX IF NOT EXISTS ix_steps_rollup ON run_steps (name, status, started_at, agent, duration_ms)",
    "CREATE INDEX IF NOT EXISTS ix_calls_run ON api_calls (run_id)",
    "CREATE INDEX IF NOT EXISTS ix_scores_run ON run_scores (run_id, name)",
    "CREATE INDEX IF NOT EXISTS ix_calls_started ON api_calls (started_at)",
    "CREATE INDEX IF NOT EXISTS ix_calls_rollup ON api_calls (provider, model, operation, priced, status, "
    "started_at, agent, duration_ms, input_tokens, output_tokens, total_tokens, cost_usd)",
    "DROP INDEX IF EXISTS ix_runs_started",
    "DROP INDEX IF EXISTS ix_calls_provider",
    "DROP INDEX IF EXISTS ix_calls_model",
)


#: connections inherited across fork, kept referenced so they are never closed in the child
_inherited: list[sqlite3.Connection] = []
_sinks: weakref.WeakSet[SQLiteSink] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A parent thread may have held a sink's lock at fork time; in the child nobody would ever release it.
    for sink in list(_sinks):
        sink._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def table_columns(table: str) -> list[contract.Column]:
    return [c for c in contract.TABLES[table] if c.name not in _SKIP]


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, indexes and schema-version table if they do not exist."""
    for table in contract.TABLES:
        cols = ",\n  ".join(
            f"{c.name} {_SQL_TYPES[c.type]}" + (" PRIMARY KEY" if c.name == _PRIMARY_KEYS[table] else "")
            for c in table_columns(table)
        )
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (\n  {cols}\n)")
        # A store made by an older agentmeter lacks the columns added since: add them (as null).
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for c in table_columns(table):
            if c.name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {c.name} {_SQL_TYPES[c.type]}")
    for stmt in _INDEXES:
        conn.execute(stmt)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS agentmeter_schema (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    conn.execute(
        "INSERT OR IGNORE INTO agentmeter_schema (version, applied_at) VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ'))",
        (contract.SCHEMA_VERSION,),
    )
    conn.commit()


def _upsert_sql(table: str, rows: int = 1) -> tuple[str, list[contract.Column]]:
    """The upsert of ``rows`` rows into ``table``, in one multi-row ``VALUES`` statement."""
    cols = table_columns(table)
    names = [c.name for c in cols]
    pk = _PRIMARY_KEYS[table]
    updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != pk)
    one = f"({', '.join('?' for _ in names)})"
    sql = (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES {', '.join(one for _ in range(rows))} "
        f"ON CONFLICT({pk}) DO UPDATE SET {updates}{_UPSERT_WHERE.get(table, '')}"
    )
    return sql, cols


#: rows per statement: the sqlite3 module releases the GIL once per statement step, and a thread that
#: waits to take it back can wait a whole switch interval (5 ms) behind a busy caller's thread, so one
#: statement per row made the export crawl (about 200 rows a second) beside a CPU-bound thread. 999 bound
#: parameters is the smallest limit any SQLite build has.
_PARAMS_PER_STATEMENT = 999


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _row_encoder(cols: list[contract.Column]) -> Callable[[Mapping[str, Any]], list[Any]]:
    """A function turning one record into the row of ``cols``; JSON and boolean columns are converted."""
    names = [c.name for c in cols]
    json_at = [i for i, c in enumerate(cols) if c.type == "json"]
    bool_at = [i for i, c in enumerate(cols) if c.type == "boolean"]

    def encode(record: Mapping[str, Any]) -> list[Any]:
        row = [record.get(n) for n in names]
        for i in json_at:
            value = row[i]
            if value is not None:
                # most metadata is empty: skip the encoder for it
                row[i] = "{}" if value == {} else "[]" if value == [] else _dumps(value)
        for i in bool_at:
            value = row[i]
            if value is not None:
                row[i] = 1 if value else 0
        return row

    return encode


class SQLiteSink(Sink):
    """Writes runs to a local SQLite file (default ``~/.agentmeter/agentmeter.db`` or ``AGENTMETER_DB``)."""

    def __init__(self, path: str | Path | None = None, name: str = "sqlite") -> None:
        self.name = name
        self.path = Path(path).expanduser() if path is not None else default_db_path()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        _sinks.add(self)
        self._statements = {table: _upsert_sql(table) for table in contract.TABLES}
        self._encoders = {table: _row_encoder(cols) for table, (_sql, cols) in self._statements.items()}
        self._chunk = {table: max(1, _PARAMS_PER_STATEMENT // len(cols))
                       for table, (_sql, cols) in self._statements.items()}
        self._multi: dict[tuple[str, int], str] = {}

    @classmethod
    def from_env(cls) -> SQLiteSink:
        return cls()

    accepts_scores = True  # the run_scores table

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid != os.getpid():
            # a forked child: the parent's connection must be neither used nor closed here
            _inherited.append(self._conn)
            self._conn = None
        if self._conn is None:
            self._pid = os.getpid()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            create_schema(conn)
            self._conn = conn
        return self._conn

    def write(self, documents: Sequence[Document]) -> WriteResult:
        rows: dict[str, list[list[Any]]] = {t: [] for t in contract.TABLES}
        encoders = self._encoders
        for doc in documents:
            records = contract.document_records(doc)
            for table, items in zip(contract.TABLES, records, strict=True):
                encode, out = encoders[table], rows[table]
                for item in items:
                    out.append(encode(item))
        with self._lock:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                for table, table_rows in rows.items():
                    self._upsert(conn, table, table_rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return WriteResult()

    def _upsert(self, conn: sqlite3.Connection, table: str, rows: list[list[Any]]) -> None:
        chunk = self._chunk[table]
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            sql = self._multi.get((table, len(part)))
            if sql is None:
                sql = self._multi[(table, len(part))] = _upsert_sql(table, len(part))[0]
            conn.execute(sql, [value for row in part for value in row])

    def close(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        return True
