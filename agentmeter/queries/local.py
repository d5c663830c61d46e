"""The local SQLite store as a dashboard :class:`~agentmeter.queries.base.Source`.

Opened read-only (``mode=ro``), so the dashboard never writes to or locks the store an agent is writing
(WAL lets both proceed). Counts, sums and groupings run in SQL; a latency percentile fetches one column
per group, as a single ``group_concat`` string per group that numpy parses, and computes PERCENTILE_CONT
in Python (:mod:`agentmeter.queries._stats`). The durations travel as integer microseconds (SQLite writes
an integer as text several times faster than a REAL), checked in the same query to give back exactly the
stored values (see :data:`MICROS`). Every filter value is a bound ``?`` parameter.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._config import default_db_path
from ..sinks.sqlite import CACHED_CALLS
from . import _kpis, _ranges, base
from ._dialect import SQLITE as _SQLITE
from ._sql import SqlSource, and_, names
from ._stats import QUANTILES, percentiles
from .base import Filters, SourceUnavailable, check_bucket, conform, flat
from .rollups import DIMENSION_FIELDS

__all__ = ["LocalSource", "from_env"]

def from_env(db: str | Path | None = None) -> LocalSource:
    """The local store at ``db`` (default ``$AGENTMETER_DB`` or ``~/.agentmeter/agentmeter.db``)."""
    return LocalSource(db if db is not None else default_db_path())


#: the store's covering index per table (see ``agentmeter.sinks.sqlite``): every dashboard aggregate over
#: that table reads only the index, in group order, so GROUP BY needs no sort
ROLLUP_INDEXES = {"api_calls": "ix_calls_rollup", "run_steps": "ix_steps_rollup", "agent_runs": "ix_runs_rollup2"}
#: the partial index of the calls with prompt-cache tokens (``agentmeter.sinks.sqlite``), whose WHERE is
#: ``CACHED_CALLS``: the cache figures read it instead of every call's row
CACHE_INDEX = "ix_calls_cache"
#: the plain started_at index of the tables aggregated per group (in every version of the store)
TIME_INDEXES = {"api_calls": "ix_calls_started", "run_steps": "ix_steps_started"}
#: a time range holding less than this fraction of a table's rows reads it through its started_at index
NARROW_RANGE = 0.05
#: ... or fewer rows than this
NARROW_MIN = 1000
#: a run list sorted by model looks each run's model up when the filters keep less than this share of runs
FEW_RUNS = 0.3
#: ... or fewer than this many runs
FEW_RUNS_MIN = 1000
#: runs read newest first for a filter's most recent values before grouping every run (sessions: ~5 runs each)
VALUES_WALK = 10 * base.FILTER_VALUES_LIMIT


#: a ``duration_ms`` as integer microseconds, rounded half up (the SDK stores milliseconds to the microsecond)
MICRO = "CAST(duration_ms * 1000 + 0.5 AS INTEGER)"
#: the durations of a group as two columns: a ``group_concat`` of :data:`MICRO`, and how many durations that
#: does not give back exactly (``MICRO / 1000.0`` is not the stored REAL: a finer value, a negative one, one
#: past 64 bits). SQLite writes a REAL as text with ``%!.15g``, several times slower than an integer, and a
#: million durations as REALs cost about 0.1 s. When the count is not 0 the query runs again with
#: :data:`FLOAT_DURATIONS`, so every percentile is computed from exactly the stored values.
MICROS = f"group_concat({MICRO}), total({MICRO} / 1000.0 <> duration_ms)"
#: :data:`MICROS` for durations that are not all whole microseconds: the REALs themselves
FLOAT_DURATIONS = "group_concat(duration_ms), 0"
#: False: the durations are read as REALs at once (the path before :data:`MICROS`; the tests compare the two)
READ_MICROS = True


def _durations(joined: str | None, micros: bool) -> np.ndarray:
    """The durations (ms) of a group's ``group_concat``: of :data:`MICRO` when ``micros``, else of REALs.
    ``k / 1000`` in float64 is the double nearest to ``k`` microseconds, which is the stored value when
    the query's check found every duration exact."""
    if not micros:
        return _parse_floats(joined)
    if not joined:
        return np.empty(0)
    return np.fromstring(joined, dtype=np.int64, sep=",") / 1000.0


def _pcts(durations: np.ndarray) -> dict[str, float | None]:
    """p50/p95/p99 of a group's durations."""
    return dict(zip(QUANTILES, percentiles(durations), strict=True))


def _narrowed(f: Filters) -> bool:
    """True when ``f`` bounds the time or picks runs by a run column (a semi-join the planner can serve
    from an index of agent_runs); agents and models are checked row by row in any plan."""
    return (f.since is not None or f.until is not None or bool(f.statuses or f.tags)
            or any(getattr(f, name) for name in base.RUN_DIMENSIONS)
            or any(getattr(f, name) is not None for name in base.RUN_MINIMUMS))


def _parse_floats(text: str | None) -> np.ndarray:
    """The numbers of a ``group_concat`` of REALs, parsed in C (strtod: exact, 4x faster than a split)."""
    if not text:
        return np.empty(0)
    return np.fromstring(text, dtype=np.float64, sep=",")


class LocalSource(SqlSource):
    """Reads the SQLite store at ``path``. A missing file or a store without tables reads as empty."""

    kind = "local"
    dialect = _SQLITE

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path).expanduser()

    def describe(self) -> str:
        return f"local store {self.path}"

    # -- plumbing ------------------------------------------------------------------------------------

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection | None]:
        if not self.path.exists():
            yield None
            return
        try:
            conn = sqlite3.connect(f"file:{self.path.as_posix()}?mode=ro", uri=True, timeout=10.0)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        try:
            yield conn
        finally:
            conn.close()

    def _unavailable(self, exc: BaseException) -> SourceUnavailable:
        return SourceUnavailable(
            f"cannot read the local store {self.path}: {flat(exc)}",
            "Check that the path is an agentmeter SQLite store (--db or AGENTMETER_DB) and that this user "
            "can read it and its folder (SQLite needs the -wal and -shm files beside it).",
            f"{type(exc).__name__}: {exc}",
        )

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._conn() as conn:
            if conn is None:
                return []
            try:
                return conn.execute(sql, list(params)).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise self._unavailable(exc) from exc
            except sqlite3.DatabaseError as exc:
                raise self._unavailable(exc) from exc

    @contextmanager
    def _one_connection(self) -> Iterator[_ranges.Rows]:
        """A ``rows(sql, params)`` like :meth:`_rows` that runs every query on one connection (a query per
        bucket or key, each a seek: no connection opened for each); a missing store reads as no rows."""
        with self._conn() as conn:
            def rows(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                if conn is None:
                    return []
                try:
                    return conn.execute(sql, list(params)).fetchall()
                except sqlite3.DatabaseError as exc:
                    raise self._unavailable(exc) from exc
            yield rows

    def _ranged_counts(self, f: Filters, bucket: str, column: str, index: str,
                       spec: base.Spec) -> pd.DataFrame | None:
        """:meth:`_ranged_rows` as the frame of ``spec``."""
        out = self._ranged_rows(f, bucket, column, index)
        return None if out is None else conform(pd.DataFrame.from_records(out, columns=names(spec)), spec)

    def _ranged_rows(self, f: Filters, bucket: str, column: str, index: str) -> list[tuple[Any, ...]] | None:
        """``(bucket, column, runs)`` over every run from ranges of ``index`` (``column``, started_at), with no
        sort (see :mod:`._ranges`): the GROUP BY's rows exactly. None when that path does not apply (a
        filter, no such index, starts that are not text, too many buckets or keys)."""
        length = _ranges.PREFIX[check_bucket(bucket)]
        if f != Filters() or index not in self._indexes():
            return None
        with self._one_connection() as rows:
            ranges = _ranges.bucket_ranges(rows, length)
            keys = _ranges.keys_of(rows, column) if ranges is not None else None
            if ranges is None or keys is None:
                return None
            # runs with no start: the null bucket, first (as ORDER BY puts NULL)
            out = rows(f"SELECT NULL, {column}, count(*) FROM agent_runs WHERE started_at IS NULL "
                       f"GROUP BY {column} ORDER BY {column}", ())
            if ranges and keys:
                label = _SQLITE.buckets[bucket].format(col="p")
                out += [r for r in rows(*_ranges.counts_sql(ranges, keys, column, index, label)) if r[2]]
        return out

    # -- Source --------------------------------------------------------------------------------------

    def check(self) -> None:
        if not self.path.exists():
            return  # nothing tracked yet: the empty state, not an error
        self._rows("SELECT 1 FROM sqlite_master LIMIT 1")
        self._rows("SELECT count(*) FROM (SELECT 1 FROM agent_runs LIMIT 1)")

    def has_runs(self) -> bool:
        return bool(self._rows("SELECT 1 FROM agent_runs LIMIT 1"))

    def _columns(self, table: str) -> set[str] | None:
        return {row[1] for row in self._rows(f"PRAGMA table_info({table})")}

    def filter_values(self, name: str) -> list[str]:
        if name != "models":
            few = self._few_values(name)
            if few is not None:
                return few
        if name in base.RUN_DIMENSIONS:
            recent = self._recent_values(base.RUN_DIMENSIONS[name])
            return recent if recent is not None else super().filter_values(name)
        if name != "models":
            return super().filter_values(name)
        # the distinct (provider, model) pairs walked on ix_calls_rollup, one index seek each (a GROUP BY
        # over a million calls takes seconds: that index is not in model order)
        models: set[str] = set()
        provider = self._rows("SELECT min(provider) FROM api_calls")
        current = provider[0][0] if provider else None
        while current is not None and len(models) < base.FILTER_VALUES_LIMIT:
            (model,), = self._rows("SELECT min(model) FROM api_calls WHERE provider = ?", [current])
            while model is not None and len(models) < base.FILTER_VALUES_LIMIT:
                models.add(str(model))
                (model,), = self._rows("SELECT min(model) FROM api_calls WHERE provider = ? AND model > ?",
                                       [current, model])
            (current,), = self._rows("SELECT min(provider) FROM api_calls WHERE provider > ?", [current])
        return sorted(models)

    def _with_first_model(self, where: str, params: Sequence[Any]) -> str:
        """Sorting by model: when the filters keep at most :data:`FEW_RUNS` of the runs, each kept run's
        smallest model is looked up on the run_id index of its calls (the last hour: 1 ms instead of 0.5 s);
        otherwise every call is grouped by run once (all time: 0.6 s against 0.9 s for 100,000 lookups)."""
        (last,), = self._rows("SELECT coalesce(max(rowid), 0) FROM agent_runs")  # O(log n): ~ the row count
        cap = max(FEW_RUNS_MIN, int(last * FEW_RUNS))
        (n,), = self._rows(f"SELECT count(*) FROM (SELECT 1 FROM agent_runs{where} LIMIT ?)", [*params, cap])
        if n >= cap:
            return super()._with_first_model(where, params)
        return ("(SELECT *, (SELECT min(model) FROM api_calls fm_c WHERE fm_c.run_id = agent_runs.run_id) "
                "AS first_model FROM agent_runs) fm_runs")

    def _few_values(self, name: str) -> list[str] | None:
        """Every value of the runs' column (or tag) ``name``, sorted, when there are at most
        :data:`~agentmeter.queries.base.FILTER_VALUES_LIMIT` of them: the GROUP BY of
        :meth:`SqlSource.filter_values` then keeps them all, and its ranking (latest start first) decides
        nothing. Read with ``DISTINCT``, which keeps only the distinct values in its temporary b-tree where a
        GROUP BY sorts every run (1M-call store: 3 versions in 0.02 s instead of 0.08 s, 200 users 0.04 s
        instead of 0.09 s, the tags 0.03 s instead of 0.13 s), and stops at the first value past the limit
        (18,000 sessions: 1 ms). None when there are more values, or when the column is missing (the caller
        answers)."""
        column = "tags" if name == "tags" else base.RUN_DIMENSIONS.get(name)
        if column is None or column not in (self._columns("agent_runs") or set()):
            return None
        limit = base.FILTER_VALUES_LIMIT
        if name == "tags":  # each distinct tag list once: most runs repeat a few lists
            sql = ("SELECT DISTINCT t.value FROM (SELECT DISTINCT tags FROM agent_runs WHERE tags IS NOT NULL) r, "
                   "json_each(r.tags) t WHERE t.value IS NOT NULL LIMIT ?")
        else:
            sql = f"SELECT DISTINCT {column} FROM agent_runs WHERE {column} IS NOT NULL LIMIT ?"
        rows = self._rows(sql, [limit + 1])
        return sorted(str(row[0]) for row in rows) if len(rows) <= limit else None

    def _recent_values(self, column: str) -> list[str] | None:
        """The :data:`~agentmeter.queries.base.FILTER_VALUES_LIMIT` values of the runs' ``column`` seen last,
        as the GROUP BY of :meth:`SqlSource.filter_values` ranks them (latest start first, then the value),
        read from the newest :data:`VALUES_WALK` runs on the started_at index: a store with many sessions
        does not group every run on every page. None when those runs cannot tell (a small store, fewer
        values, or a tie at the limit): the caller groups every run."""
        if column not in (self._columns("agent_runs") or set()):
            return None
        limit = base.FILTER_VALUES_LIMIT
        rows = self._rows(f"SELECT {column}, started_at FROM agent_runs WHERE started_at IS NOT NULL AND {column} "
                          "IS NOT NULL ORDER BY started_at DESC LIMIT ?", [VALUES_WALK])
        if len(rows) < VALUES_WALK:
            return None
        last: dict[Any, str] = {}
        for value, started in rows:
            last.setdefault(value, started)  # newest first: a value's first row is its latest start
        ranked = sorted(last.items(), key=lambda kv: str(kv[0]))
        ranked.sort(key=lambda kv: kv[1], reverse=True)  # stable: equal starts stay in value order
        # a value not read yet started at most at the last row read: it cannot rank above a later start
        if len(ranked) < limit or not ranked[limit - 1][1] > rows[-1][1]:
            return None
        return sorted(str(value) for value, _ in ranked[:limit])

    def cache_tokens(self, f: Filters) -> pd.DataFrame:
        """Only when some matching run has cache tokens: the calls with cache tokens grouped, read from the
        partial index that holds only them (:data:`CACHE_INDEX`, covering, in group order), the other calls
        of each group counted from the calls summary (the same filters: the Usage and Cost views read it
        anyway). A narrow time range reads its calls through the started_at index instead; a store without
        the partial index (written before it existed) reads every call's row once (1M calls: 0.4 s), not
        through another index (0.85 s: every call sorted)."""
        cache = ("cached_input_tokens", "cache_write_tokens")
        if not set(cache) <= (self._columns("agent_runs") or set()) or not set(cache) <= (
                self._columns("api_calls") or set()):
            return conform([], base.CACHE_TOKENS)
        where, params = _SQLITE.where(f, "agent_runs")
        some = and_(where, "(cached_input_tokens > 0 OR cache_write_tokens > 0)")
        if not self._rows(f"SELECT 1 FROM agent_runs{some} LIMIT 1", params):
            return conform([], base.CACHE_TOKENS)
        where, params = _SQLITE.where(f, "api_calls")
        # rows whose values are 0 or null add nothing to a sum: left out before the sort of GROUP BY (the
        # term is the partial index's WHERE, verbatim, so the planner may read that index)
        nonzero = and_(where, CACHED_CALLS)
        table = self._scan("api_calls", f)
        if table == "api_calls" and CACHE_INDEX in self._indexes():
            table = f"api_calls INDEXED BY {CACHE_INDEX}"
        elif table == "api_calls" and not _narrowed(f):  # every call: the rows in order, not through an index
            table = "api_calls NOT INDEXED"
        sums = "total(cached_input_tokens), total(cache_write_tokens)"
        rows = self._rows(f"SELECT provider, model, {sums} FROM {table}{nonzero} GROUP BY provider, model "
                          "HAVING total(cached_input_tokens) + total(cache_write_tokens) > 0", params)
        if not rows:
            return conform([], base.CACHE_TOKENS)
        summary = self.calls_summary(f)
        counts: dict[tuple[Any, Any], int] = {}
        for provider, model, calls in zip(summary["provider"], summary["model"], summary["calls"], strict=True):
            counts[(provider, model)] = counts.get((provider, model), 0) + int(calls)
        out = [(p, m, counts.get((p, m), 0), c, w) for p, m, c, w in rows]
        out.sort(key=lambda r: (r[0] is not None, r[0] or "", r[1] is not None, r[1] or ""))
        return conform(pd.DataFrame.from_records(out, columns=names(base.CACHE_TOKENS)), base.CACHE_TOKENS)

    def _dimension_select(self) -> str:
        # a store from before session_id, user_id and version reads them as null (the source never writes)
        have = {row[1] for row in self._rows("PRAGMA table_info(agent_runs)")}
        return ", ".join(c if c in have else f"NULL AS {c}" for c in DIMENSION_FIELDS)

    def _indexes(self) -> set[str]:
        return {r[0] for r in self._rows("SELECT name FROM sqlite_master WHERE type = 'index'")}

    def _scan(self, table: str, f: Filters) -> str:
        """The FROM clause of a per-group aggregate over ``table`` (run_steps or api_calls).

        With the rollup index the planner walks it (1M calls: 0.2 s instead of 1.5 s), except for a
        narrow time range (under ``NARROW_RANGE`` of the rows, counted on the started_at index with a
        bound), which reads only its rows through the started_at index (last hour: 15 ms instead of 70 ms).
        A store written before the rollup index existed (it gets it the next time the SQLite sink opens it)
        has only a (provider, model) index that makes SQLite read rows in random order: without a time
        bound a plain scan beats it (measured: 0.47 s vs 0.78 s on 1M calls).
        """
        indexes = self._indexes()
        timed = f.since is not None or f.until is not None
        if ROLLUP_INDEXES[table] not in indexes:
            return table if timed else f"{table} NOT INDEXED"
        by_time = TIME_INDEXES[table]
        if not timed or by_time not in indexes:
            return table
        clauses, params = [], []
        for op, bound in ((">=", f.since), ("<", f.until)):
            if bound is not None:
                clauses.append(f"started_at {op} ?")
                params.append(bound)
        (last,), = self._rows(f"SELECT coalesce(max(rowid), 0) FROM {table}")  # O(log n): ~ the row count
        cap = max(NARROW_MIN, int(last * NARROW_RANGE))
        (n,), = self._rows(f"SELECT count(*) FROM (SELECT 1 FROM {table} INDEXED BY {by_time} "
                           f"WHERE {' AND '.join(clauses)} LIMIT ?)", [*params, cap])
        return f"{table} INDEXED BY {by_time}" if n < cap else table

    def _from(self, table: str, f: Filters) -> str:
        return self._scan(table, f)

    def status_over_time(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        ranged = self._ranged_counts(f, bucket, "status", "ix_runs_status", base.STATUS_OVER_TIME)
        return ranged if ranged is not None else super().status_over_time(f, bucket)

    def runs_per_agent(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        ranged = self._ranged_counts(f, bucket, "agent", "ix_runs_agent", base.RUNS_PER_AGENT)
        return ranged if ranged is not None else super().runs_per_agent(f, bucket)

    def agents(self) -> pd.DataFrame:
        sql = ("SELECT agent, count(*), max(started_at) FROM agent_runs WHERE agent IS NOT NULL "
               "GROUP BY agent ORDER BY agent")
        return self._frame(sql, [], names(base.AGENTS), base.AGENTS)

    def _duration_rows(self, query: Callable[[str], tuple[str, Sequence[Any]]]) -> list[tuple[Any, ...]]:
        """The rows of ``query(durations)``, whose last columns are ``durations`` (:data:`MICROS`), each with
        those two columns replaced by the group's durations (an array of ms): read as microseconds, or read
        again as REALs when some duration is not a whole number of microseconds."""
        rows = self._rows(*query(MICROS)) if READ_MICROS else []
        if not READ_MICROS or any(row[-1] for row in rows):
            rows = self._rows(*query(FLOAT_DURATIONS))
            return [(*row[:-2], _durations(row[-2], micros=False)) for row in rows]
        return [(*row[:-2], _durations(row[-2], micros=True)) for row in rows]

    def kpis(self, f: Filters) -> pd.DataFrame:
        rows = self._duration_rows(lambda durations: _kpis.sqlite_query(f, durations=durations))
        measured, durations = (rows[0][:-1], rows[0][-1]) if rows else ((), np.empty(0))
        row = _kpis.finish(measured or [0] * len(_kpis.MEASURED), percentiles(durations))
        return conform([row], base.KPIS)

    def agent_kpis(self, f: Filters) -> pd.DataFrame:
        rows = [{"agent": r[0], **_kpis.finish(r[1:-1], percentiles(r[-1]))}
                for r in self._duration_rows(lambda d: _kpis.sqlite_query(f, by_agent=True, durations=d))]
        return conform(rows or pd.DataFrame(columns=names(base.AGENT_KPIS)), base.AGENT_KPIS)

    def latency_over_time(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        b = _SQLITE.bucket(bucket)
        where, params = _SQLITE.where(f, "agent_runs")
        where = and_(where, "duration_ms IS NOT NULL")
        ranged = self._latency_ranges(f, bucket)
        query: Callable[[str], tuple[str, Sequence[Any]]] = ranged or (
            lambda durations: (f"SELECT {b} AS b, count(*), {durations} FROM agent_runs{where} GROUP BY b "
                               "ORDER BY b", params))
        rows = [{"bucket": b_, "runs": n, **_pcts(d)} for b_, n, d in self._duration_rows(query) if n]
        return conform(rows or pd.DataFrame(columns=names(base.LATENCY_OVER_TIME)), base.LATENCY_OVER_TIME)

    def _latency_ranges(self, f: Filters, bucket: str) -> Callable[[str], tuple[str, Sequence[Any]]] | None:
        """Over every run: the query of :meth:`latency_over_time` as one aggregate per bucket, each over a
        range of the runs' rollup index (see :mod:`._ranges`; the order of a group's durations does not change
        its percentiles), instead of a GROUP BY that sorts every run; a bucket with no duration gives a row
        of 0 runs, which the caller leaves out. None when that path does not apply (a filter, no rollup
        index, starts that are not text, more than :data:`~._ranges.MAX_UNION` buckets)."""
        length = _ranges.PREFIX[check_bucket(bucket)]
        if f != Filters() or ROLLUP_INDEXES["agent_runs"] not in self._indexes():
            return None
        with self._one_connection() as rows:
            ranges = _ranges.bucket_ranges(rows, length)
        if ranges is None or len(ranges) > _ranges.MAX_UNION:
            return None
        label = _SQLITE.buckets[bucket].format(col="?")
        index = ROLLUP_INDEXES["agent_runs"]

        def query(durations: str) -> tuple[str, Sequence[Any]]:
            parts = [f"SELECT NULL AS b, count(*), {durations} FROM agent_runs WHERE started_at IS NULL "
                     "AND duration_ms IS NOT NULL"]
            parts += [f"SELECT {label}, count(*), {durations} FROM agent_runs INDEXED BY {index} "
                      "WHERE started_at >= ? AND started_at < ? AND duration_ms IS NOT NULL" for _ in ranges]
            return (f"SELECT * FROM ({' UNION ALL '.join(parts)}) ORDER BY b",
                    [x for r in ranges for x in r])
        return query

    def _latency_groups(
        self, f: Filters, table: str, keys: Sequence[str], count_name: str, spec: base.Spec
    ) -> pd.DataFrame:
        where, params = _SQLITE.where(f, table)
        key_sql = ", ".join(keys)
        scan = self._scan(table, f)
        rows = []
        # the mean from the durations fetched for the percentiles anyway (an avg() would cost 10% more)
        for r in self._duration_rows(lambda d: (f"SELECT {key_sql}, count(*), total(status = 'error'), {d} "
                                                f"FROM {scan}{where} GROUP BY {key_sql}", params)):
            key, (n, errors, durations) = r[: len(keys)], r[len(keys):]
            rows.append({
                **dict(zip(keys, key, strict=True)), count_name: n, "errors": errors,
                "mean_ms": float(durations.mean()) if durations.size else None,
                **dict(zip(QUANTILES, percentiles(durations), strict=True)),
            })
        frame = conform(rows or pd.DataFrame(columns=names(spec)), spec)
        return _sort(frame, ["p95_ms", *keys], [False] + [True] * len(keys))

    def step_latency(self, f: Filters) -> pd.DataFrame:
        return self._latency_groups(f, "run_steps", ["name"], "steps", base.STEP_LATENCY)

    def api_latency(self, f: Filters) -> pd.DataFrame:
        return self._latency_groups(f, "api_calls", ["provider", "model"], "calls", base.API_LATENCY)

    def _calls_summary_query(self, f: Filters) -> tuple[str, list[Any]]:
        """One scan of api_calls (see :meth:`_scan`)."""
        where, params = _SQLITE.where(f, "api_calls")
        sql = ("SELECT provider, operation, model, priced, count(*), total(status = 'error'), total(input_tokens), "
               "total(output_tokens), total(total_tokens), total(cost_usd), max(started_at) "
               f"FROM {self._scan('api_calls', f)}{where} "
               "GROUP BY provider, operation, model, priced")
        return sql, params


def _sort(frame: pd.DataFrame, by: list[str], ascending: list[bool]) -> pd.DataFrame:
    """Stable sort with nulls first among ascending keys (as SQLite orders NULL) and last for descending."""
    if frame.empty:
        return frame
    out = frame.sort_values(by, ascending=ascending, na_position="first", kind="mergesort")
    desc_null = [c for c, asc in zip(by, ascending, strict=True) if not asc]
    if desc_null:  # descending numeric keys: NaN (no data) at the end
        nan_mask = out[desc_null[0]].isna()
        out = pd.concat([out[~nan_mask], out[nan_mask]])
    return out.reset_index(drop=True)
