"""The embedded local store: SQLite with the four tables of the contract.

WAL mode lets a dashboard read while agents write; rows are upserted by id, so a replayed document never
duplicates; indexes cover the dashboard's filters (time, agent, status, provider, model).
"""

from __future__ import annotations

import functools
import itertools
import operator
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from .. import contract
from .._json import dumps
from .._paths import default_db_path
from .._record import FinishedCall, FinishedStep
from .._status import ERROR
from ..pricing import token_rates
from ._base import Document, RunDocument, Sink, WriteResult
from ._sqlite_rows import NO_RATES, calls_function, rollup_function, steps_function
from ._sqlite_rows import ROLLUP as _ROLLUP

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
#: the calls with prompt-cache tokens: the WHERE of ix_calls_cache, and a term of every query that reads it
CACHED_CALLS = "(cached_input_tokens <> 0 OR cache_write_tokens <> 0)"
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
    # ix_calls_cache: only the calls with prompt-cache tokens (30% of chat calls in the bench store), with the
    # columns the dashboard's cache figures read and filter on; the query repeats its WHERE term verbatim
    # (SQLite uses a partial index only then). Calls without cache tokens cost the writer one comparison.
    f"CREATE INDEX IF NOT EXISTS ix_calls_cache ON api_calls (provider, model, started_at, agent, run_id, "
    f"cached_input_tokens, cache_write_tokens) WHERE {CACHED_CALLS}",
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


#: rows per statement: the sqlite3 module releases the GIL once per statement step, and a thread that
#: waits to take it back can wait a whole switch interval (5 ms) behind a busy caller's thread, so one
#: statement per row made the export crawl (about 200 rows a second) beside a CPU-bound thread. 999 bound
#: parameters is the smallest limit any SQLite build has.
_PARAMS_PER_STATEMENT = 999
#: distinct statements kept compiled (null patterns x rows per statement); past it the cache starts over
_MAX_STATEMENTS = 1024


def _row_function(cols: list[contract.Column]) -> Callable[[Mapping[str, Any], Any], list[Any]]:
    """The row maker of ``cols``, written out as one function (no loop over columns at run time)."""
    rest = [c for c in cols if c.name != "schema_version"]
    values = [f"v{i}" for i in range(len(rest))]
    exprs: dict[str, str] = {}
    for var, c in zip(values, rest, strict=True):
        if c.type == "json":  # most metadata is empty: skip the encoder for it
            exprs[c.name] = (f"(None if {var} is None else '{{}}' if {var} == {{}} else '[]' if {var} == [] "
                             f"else dumps({var}))")
        elif c.type == "boolean":
            exprs[c.name] = f"(None if {var} is None else 1 if {var} else 0)"
        else:
            exprs[c.name] = var
    row = ", ".join("schema_version" if c.name == "schema_version" else exprs[c.name] for c in cols)
    source = (
        "def row(record, schema_version):\n"
        "    try:\n"
        f"        {', '.join(values)}, = getter(record)\n"
        "    except KeyError:  # a record without some column (an older document): null there\n"
        f"        {', '.join(values)}, = [record.get(n) for n in names]\n"
        f"    return [{row}]\n"
    )
    namespace: dict[str, Any] = {"getter": operator.itemgetter(*(c.name for c in rest)),
                                 "names": [c.name for c in rest], "dumps": dumps}
    exec(compile(source, f"<agentmeter row of {len(cols)} columns>", "exec"), namespace)
    return cast(Callable[[Mapping[str, Any], Any], list[Any]], namespace["row"])


class _Table:
    """One table's columns and how a row of it is made from a record (a dict of column values)."""

    __slots__ = ("name", "names", "pk", "real_at", "repeats", "row", "updates")

    def __init__(self, name: str) -> None:
        cols = table_columns(name)
        self.name = name
        self.names = [c.name for c in cols]
        self.pk = _PRIMARY_KEYS[name]
        self.updates = ", ".join(f"{n} = excluded.{n}" for n in self.names if n != self.pk)
        self.real_at = [i for i, c in enumerate(cols) if c.type == "real"]
        #: the columns whose text most rows of a statement share (see ``_upsert``), as (position, getter)
        self.repeats = [(i, operator.itemgetter(i)) for i, n in enumerate(self.names) if n in _REPEATS]
        #: ``row(record, schema_version)``: the row of ``record`` in column order, JSON and boolean columns
        #: converted (schema_version comes from the run: document_records gives steps and calls the run's)
        self.row: Callable[[Mapping[str, Any], Any], list[Any]] = _row_function(cols)

    def upsert_sql(self, present: tuple[bool, ...], rows: int, shared: tuple[int, ...] = ()) -> str:
        """The upsert of ``rows`` rows with a value where ``present`` says so and ``NULL`` elsewhere (a bound
        ``None`` costs several times an int; a literal ``NULL`` costs nothing), in one ``VALUES`` list. The
        columns at ``shared`` hold one value in every row: bound once, as ``?1``, ``?2``... (in ``shared``
        order), and referenced by every row; the other values are bound per row, after them."""
        number = {at: i for i, at in enumerate(shared, 1)}
        per_row = [at for at, p in enumerate(present) if p and at not in number]
        values = []
        n = len(shared)
        for _ in range(rows):
            cells = {at: f"?{i}" for at, i in number.items()}
            for at in per_row:
                n += 1
                cells[at] = f"?{n}"
            values.append(f"({', '.join(cells.get(at, 'NULL') for at in range(len(present)))})")
        return (f"INSERT INTO {self.name} ({', '.join(self.names)}) VALUES {', '.join(values)} "
                f"ON CONFLICT({self.pk}) DO UPDATE SET {self.updates}{_UPSERT_WHERE.get(self.name, '')}")


#: the types a row may hold as the document path would store them; anything else goes the document path
_PLAIN = frozenset({str, int, float, bool, type(None)})


class _Unbindable(Exception):
    """A run the fast path cannot write exactly as the document path would: it takes the document path."""


def _checked(rows: list[list[Any]], width: int, real_at: list[int], careful: bool) -> list[list[Any]]:
    """``rows``, each checked by :func:`_check` (``careful``: without a plain row's key, see ``_upsert``, which
    is not a value to check); not careful, the finite check written out (no call per row)."""
    if careful:
        return [_check(row[:width], real_at, True) for row in rows]
    for row in rows:
        for i in real_at:
            value = row[i]
            if value is not None and value - value != 0:  # NaN or infinity: SQLite would store it as NULL
                raise _Unbindable("non-finite")
    return rows


_INT64 = 2**63


def _check(row: list[Any], real_at: list[int], careful: bool) -> list[Any]:
    """``row`` if SQLite stores it as the document path would; else raises :class:`_Unbindable`.

    Invalid Unicode and integers past 64 bits make SQLite raise when the statement binds them, so they are
    looked for (``careful``) only in a batch where that happened, and so are types other than ``str``,
    ``int``, ``float``, ``bool`` and ``None`` (the upsert raises ``TypeError`` on a row holding one)."""
    for i in real_at:
        value = row[i]
        if value is not None and value - value != 0:  # NaN or infinity: SQLite would store it as NULL
            raise _Unbindable("non-finite")
    if careful:
        if not _PLAIN.issuperset(map(type, row)):
            raise _Unbindable("type")
        for value in row:
            if type(value) is str:
                if not value.isascii():
                    value.encode("utf-8")  # UnicodeEncodeError: an unpaired surrogate
            elif type(value) is int and not -_INT64 <= value < _INT64:
                raise _Unbindable("integer past 64 bits")
    return row


class SQLiteSink(Sink):
    """Writes runs to a local SQLite file (default ``~/.agentmeter/agentmeter.db`` or ``AGENTMETER_DB``).

    Rows are written straight from the frozen run when the exporter hands it over not yet built
    (:class:`~agentmeter.sinks._base.RunDocument`): the run's fields and rows come from
    :func:`agentmeter.contract.run_parts`, so both paths make the same rows, without building, checking and
    copying the document. A run whose values the fast path cannot write exactly as the document path would
    (invalid Unicode, an integer past 64 bits, a non-finite number, a type SQLite cannot take, a pricing
    failure) takes the document path instead, which repairs it: no run is lost.
    """

    writes_runs = True

    def __init__(self, path: str | Path | None = None, name: str = "sqlite") -> None:
        self.name = name
        self.path = Path(path).expanduser() if path is not None else default_db_path()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        _sinks.add(self)
        self._tables = [_Table(table) for table in contract.TABLES]
        self._steps = steps_function(self._tables[1].names if len(self._tables) > 1 else [])
        # the fast path writes the tables run_parts makes rows for; a table it does not know turns it off
        calls = self._tables[2].names if len(self._tables) > 2 else []
        self._calls = calls_function(calls)
        if all(n in calls for n in (*_ROLLUP, "priced", "status", "step_id")):
            self._rollup = rollup_function(calls)
            self._call_step_at, self._call_status_at, self._call_priced_at = (
                calls.index("step_id"), calls.index("status"), calls.index("priced"))
        self._fast = tuple(contract.TABLES) == _FAST_TABLES and hasattr(self, "_rollup")
        #: (table, null pattern, rows, shared columns) -> the statement and the getter of a row's bound values
        self._sql: dict[tuple[str, tuple[bool, ...], int, tuple[int, ...]], tuple[str, Callable[[Any], Any]]] = {}
        #: runs written by the fast path and by the document path (for tests and benchmarks)
        self.fast_runs = self.document_runs = 0

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
            conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None,
                                   cached_statements=256)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            create_schema(conn)
            self._conn = conn
        return self._conn

    # -- rows ---------------------------------------------------------------------------------------------
    def _document_rows(self, doc: Document, out: list[list[list[Any]]]) -> None:
        if isinstance(doc, RunDocument):
            doc = doc.document()
        records = contract.document_records(doc)
        sv = doc.get("schema_version")  # a run's steps and calls carry the run's; a score row its own
        for table, items, rows in zip(self._tables, records, out, strict=True):
            for item in items:
                rows.append(table.row(item, sv))

    def _fast_rows(self, doc: RunDocument, out: list[list[list[Any]]], careful: bool) -> None:
        run, max_chars, sampled, pricer = doc.run, doc.max_chars, doc.sampled, doc.pricer
        runs_t, steps_t, calls_t = self._tables[:3]
        sv = contract.SCHEMA_VERSION
        if run.calls or run.open_calls:
            price = pricer or contract.unpriced

            def general_call(call: FinishedCall) -> list[Any]:
                return _check(calls_t.row(contract.call_row(call, run, price, max_chars), sv), calls_t.real_at,
                              careful)

            rates = token_rates(price)  # (an empty dict until its first call: not "or")
            # sorted by call id, as run_parts sorts them (the sums of floats keep their order); a row written
            # out checks the one number of it that may not be finite (its cost: the other real columns are
            # durations and units checked when the call was frozen), a row made by general_call is checked there
            call_rows = self._calls(run, sorted(run.calls + run.open_calls, key=_first), price, sv, general_call,
                                    NO_RATES if rates is None else rates)
            if careful:
                call_rows = _checked(call_rows, len(calls_t.names), calls_t.real_at, careful)
            by_step: dict[str | None, list[list[Any]]] = {}
            step_at, status_at, priced_at = self._call_step_at, self._call_status_at, self._call_priced_at
            errors = unpriced = 0  # counted in the same pass (a comprehension each is a call in Python 3.11)
            for row in call_rows:
                group = by_step.get(row[step_at])
                if group is None:
                    by_step[row[step_at]] = [row]
                else:
                    group.append(row)
                if row[status_at] == ERROR:
                    errors += 1
                if not row[priced_at]:
                    unpriced += 1
            fields = contract.run_fields(run, max_chars, sampled, len(call_rows), errors,
                                         dict(zip(_ROLLUP, self._rollup(call_rows), strict=True)), unpriced)
        else:
            call_rows, by_step = [], {}
            fields = contract.run_fields(run, max_chars, sampled, 0, 0, contract.NO_CALLS, 0)
        rollup = self._rollup
        names = _ROLLUP

        def general(step: FinishedStep) -> list[Any]:
            row = contract.step_row(step, run, [], max_chars, sampled)
            cs = by_step.get(step.step_id)
            if cs:  # the sums of its call rows, as step_row makes them from the call dicts
                row["call_count"] = len(cs)
                row.update(zip(names, rollup(cs), strict=True))
            return _check(steps_t.row(row, sv), steps_t.real_at, careful)

        step_rows = self._steps(run, run.steps + run.open_steps, by_step, sampled, sv, general, rollup)
        if careful:  # (a step's summed cost past a float's range: the rollup raises)
            step_rows = _checked(step_rows, len(steps_t.names), steps_t.real_at, careful)
        new = [[_check(runs_t.row(fields, sv), runs_t.real_at, careful)], step_rows, call_rows, []]  # no scores
        for rows, more in zip(out, new, strict=True):
            rows.extend(more)

    def _rows(self, documents: Sequence[Document], careful: bool = False) -> tuple[list[list[list[Any]]], int]:
        """The rows of ``documents`` per table, and how many runs took the fast path."""
        out: list[list[list[Any]]] = [[] for _ in self._tables]
        fast = self._fast
        n_fast = 0
        for doc in documents:
            if fast and isinstance(doc, RunDocument):
                try:
                    self._fast_rows(doc, out, careful)
                    n_fast += 1
                    continue
                except Exception:  # _Unbindable, the encoder's TypeError, a pricing failure: see the class
                    pass
            self._document_rows(doc, out)
        return out, n_fast

    # -- writing ------------------------------------------------------------------------------------------
    def write(self, documents: Sequence[Document]) -> WriteResult:
        rows, n_fast = self._rows(documents)
        with self._lock:
            conn = self._connect()
            try:
                self._transaction(conn, rows)
            except (ValueError, OverflowError, TypeError, sqlite3.InterfaceError, sqlite3.ProgrammingError):
                if not n_fast:
                    raise
                # a value SQLite would not bind (invalid Unicode in a name, a sum past 64 bits): the runs
                # that hold one take the document path, which repairs them; the others stay fast
                rows, n_fast = self._rows(documents, careful=True)
                self._transaction(conn, rows)
        self.fast_runs += n_fast
        self.document_runs += len(documents) - n_fast
        return WriteResult()

    def _transaction(self, conn: sqlite3.Connection, rows: list[list[list[Any]]]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for table, table_rows in zip(self._tables, rows, strict=True):
                self._upsert(conn, table, table_rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _upsert(self, conn: sqlite3.Connection, table: _Table, rows: list[list[Any]]) -> None:
        """One statement per null pattern and up to 999 parameters: few statements, no ``None`` bound.
        Raises ``TypeError`` on a value of a type the document path would have stored otherwise."""
        groups: dict[tuple[Any, ...], list[list[Any]]] = {}
        width = len(table.names)
        for row in rows:
            # the null pattern, and the types checked once per group; a plain step row carries its pattern's
            # key after its values (see _sqlite_rows), which itertools.compress below leaves out
            key = row[width] if len(row) > width else tuple(map(type, row))
            group = groups.get(key)
            if group is None:
                groups[key] = [row]
            else:
                group.append(row)
        cache = self._sql
        for key, members in groups.items():
            types = key if len(members[0]) == width else tuple(map(type, members[0][:width]))
            if not _PLAIN.issuperset(types):
                raise TypeError("a value of a type the store does not take as it is")
            present = tuple(t is not _NONE for t in types)
            repeats = [(i, get) for i, get in table.repeats if present[i]]
            per_statement = max(1, _PARAMS_PER_STATEMENT // max(1, sum(present)))
            for start in range(0, len(members), per_statement):
                part = members[start:start + per_statement]
                n = len(part)
                # a text every row of the statement holds (the agent, a status, a model, "{}"...) is bound
                # once: binding a text costs SQLite a copy, a lock and an allocation per value; a value is
                # shared only when every row holds a str equal to it (so exactly that text is stored)
                last = part[-1]  # (a column whose values differ mostly differs there: no list made)
                shared = tuple(i for i, get in repeats
                               if (v := part[0][i]).__class__ is str and n > 1 and last[i] == v
                               and (column := list(map(get, part))).count(v) == n
                               and set(map(type, column)) == _STR)
                shape = (table.name, present, n, shared)
                found = cache.get(shape)
                if found is None:
                    if len(cache) >= _MAX_STATEMENTS:
                        cache.clear()
                    at = [i for i, p in enumerate(present) if p and i not in shared]
                    # the bound values of a row in one C call (itertools.compress steps two iterators per column)
                    getter: Callable[[Any], Any] = (operator.itemgetter(*at) if len(at) > 1
                                                    else functools.partial(_pick, at))
                    found = cache[shape] = (table.upsert_sql(present, n, shared), getter)
                sql, values = found
                first = [part[0][i] for i in shared]
                first.extend(itertools.chain.from_iterable(map(values, part)))
                conn.execute(sql, first)

    def close(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        return True


_NONE = type(None)


def _pick(at: list[int], row: Sequence[Any]) -> list[Any]:
    """The values of ``row`` at ``at`` (no or one position: ``operator.itemgetter`` would not give a list)."""
    return [row[i] for i in at]

_STR = {str}
#: the text columns whose value most rows share (see ``_upsert``): dimensions, statuses, empty metadata
_REPEATS = frozenset({"agent", "name", "kind", "status", "provider", "operation", "model", "price_source",
                      "metadata", "error_type", "sdk_version", "host", "data_type", "source"})
_first = operator.itemgetter(0)  # a frozen call's id

#: the tables whose rows :func:`agentmeter.contract.run_parts` makes: the run's fields, steps and calls
#: the tables of the fast path: a run's three (from run_parts) and run_scores, which no run writes (a score
#: reaches the sink as its document, a few columns: it takes the document path, see ``_rows``)
_FAST_TABLES = ("agent_runs", "run_steps", "api_calls", "run_scores")
