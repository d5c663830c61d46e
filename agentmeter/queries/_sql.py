"""What the two SQL sources (:mod:`.local` on SQLite, :mod:`.snowflake`) share: the per-filters memo of
the calls summary and the queries whose SQL is the same in both dialects (how the SQL differs, and the
filter clause, are in :mod:`._dialect`)."""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import pandas as pd

from . import base, derive
from ._dialect import Dialect, and_, names, order_by
from .base import Filters, RunDetail, Source, check_limit, check_order, conform
from .rollups import DIMENSION_FIELDS

__all__ = ["RUN_COLS", "Dialect", "SqlSource", "and_", "names"]

#: the columns of :data:`~agentmeter.queries.base.SLOWEST_RUNS` (a prefix of the other run lists)
RUN_COLS = ("run_id, name, agent, status, started_at, duration_ms, step_count, call_count, "
            "total_tokens, cost_usd")


class SqlSource(Source):
    """A :class:`Source` over SQL: subclasses give :attr:`dialect`, :meth:`_rows` (run one query) and
    :meth:`_calls_summary_query`, and write the queries whose SQL differs between dialects."""

    dialect: Dialect

    #: seconds a calls summary is reused (the call views of one page share one query)
    SUMMARY_TTL = 10.0

    def __init__(self) -> None:
        self._memo: dict[Filters, tuple[float, pd.DataFrame]] = {}
        self._memo_lock = threading.Lock()

    @abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query; raises :class:`~agentmeter.queries.base.SourceUnavailable`."""

    @abstractmethod
    def _calls_summary_query(self, f: Filters) -> tuple[str, list[Any]]:
        """The SQL and parameters of :data:`~agentmeter.queries.base.CALLS_SUMMARY`."""

    def _frame(self, sql: str, params: Sequence[Any], cols: Sequence[str], spec: base.Spec) -> pd.DataFrame:
        rows = self._rows(sql, params)
        return conform(pd.DataFrame.from_records(rows, columns=list(cols)), spec)

    def _run_list(self, f: Filters, cols: str, clause: str | None, order: str, limit: int,
                  spec: base.Spec, extra: Sequence[Any] = ()) -> pd.DataFrame:
        """At most ``limit`` runs matching ``f`` (and ``clause``, whose parameters are ``extra``)."""
        where, params = self.dialect.where(f, self.dialect.runs)
        if clause is not None:
            where = and_(where, clause)
        sql = f"SELECT {cols} FROM {self.dialect.runs}{where} ORDER BY {order} LIMIT {self.dialect.mark}"
        return self._frame(sql, [*params, *extra, check_limit(limit)], names(spec), spec)

    def _runs_grouped(self, f: Filters, select: str, group: str, order: str, spec: base.Spec) -> pd.DataFrame:
        """``select`` over the runs matching ``f``, grouped by ``group`` and sorted by ``order``."""
        d = self.dialect
        where, params = d.where(f, d.runs)
        sql = f"SELECT {select} FROM {d.runs}{where} GROUP BY {group} ORDER BY {order}"
        return self._frame(sql, params, names(spec), spec)

    def _run_sums(self) -> str:
        """Runs, calls, cost and unpriced calls summed over the runs of a group."""
        t = self.dialect.total.format
        return (f"COUNT(*) AS runs, {t('call_count')} AS calls, {t('cost_usd')} AS c, "
                f"{t('unpriced_call_count')} AS unpriced")

    # -- rollups (agentmeter.queries.rollups) -------------------------------------------------------

    #: the scores table as it appears in the SQL text
    scores_table = "run_scores"

    def _dimension_select(self) -> str:
        return ", ".join(DIMENSION_FIELDS)

    def dimension_runs(self, f: Filters) -> list[dict[str, Any]]:
        d = self.dialect
        where, params = d.where(f, d.runs)
        rows = self._rows(f"SELECT {self._dimension_select()} FROM {d.runs}{where}", params)
        out = []
        for row in rows:
            run = dict(zip(DIMENSION_FIELDS, row, strict=True))
            if not isinstance(run["started_at"], str) and run["started_at"] is not None:
                run["started_at"] = base.iso_bound(run["started_at"])  # a driver's datetime
            out.append(run)
        return out

    def dimension_frame(self, f: Filters) -> pd.DataFrame:
        from ._rollup_frame import columns_frame  # numpy, pandas: the dashboard's extra

        d = self.dialect
        where, params = d.where(f, d.runs)
        frame = columns_frame(self._rows(f"SELECT {self._dimension_select()} FROM {d.runs}{where}", params),
                              DIMENSION_FIELDS)
        started = frame["started_at"]
        if pd.api.types.infer_dtype(started, skipna=True) not in ("string", "empty"):
            frame["started_at"] = pd.Series([v if isinstance(v, str) or v is None else base.iso_bound(v)
                                             for v in started], dtype=object)  # a driver's datetimes
        return frame

    def latest_scores(self) -> list[tuple[str, float]]:
        rows = self._rows(f"SELECT run_id, value FROM {self.scores_table} WHERE value IS NOT NULL")
        return [(str(run_id), float(value)) for run_id, value in rows]

    # -- Source --------------------------------------------------------------------------------------

    def _columns(self, table: str) -> set[str] | None:
        """The columns of ``table`` (by its contract name), or None when it has every column of the contract
        (a local store written by an older agentmeter may lack some)."""
        return None

    def _has_column(self, table: str, column: str) -> bool:
        have = self._columns(table)
        return have is None or column in have

    def run_scores(self, run_id: str) -> pd.DataFrame:
        cols = names(base.RUN_SCORES)
        sql = (f"SELECT {', '.join(cols)} FROM {self.scores_table} WHERE run_id = {self.dialect.mark} "
               "ORDER BY name, source")
        return self._frame(sql, [str(run_id)], cols, base.RUN_SCORES)

    def scores(self, f: Filters) -> pd.DataFrame:
        d = self.dialect
        where, params = d.where(f, d.runs)
        sql = (f"SELECT s.run_id, r.started_at, s.name, s.source, s.data_type, s.value, s.label "
               f"FROM {self.scores_table} s JOIN (SELECT run_id, started_at FROM {d.runs}{where}) r "
               "ON r.run_id = s.run_id ORDER BY r.started_at, s.run_id, s.name, s.source")
        return self._frame(sql, params, names(base.SCORES), base.SCORES)

    def filter_values(self, name: str) -> list[str]:
        d = self.dialect
        limit = base.FILTER_VALUES_LIMIT
        if name == "tags":
            if not self._has_column("agent_runs", "tags"):
                return []
            sql = d.tag_values.replace("<runs>", d.runs).replace("<where>", " WHERE r.tags IS NOT NULL")
            sql = f"SELECT v FROM ({sql}) x WHERE v IS NOT NULL ORDER BY last DESC, v LIMIT {d.mark}"
        else:
            table, column = ((d.calls, "model") if name == "models"
                             else (d.runs, base.RUN_DIMENSIONS[base.check_filter_name(name)]))
            if not self._has_column("api_calls" if name == "models" else "agent_runs", column):
                return []
            sql = (f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL GROUP BY {column} "
                   f"ORDER BY MAX(started_at) DESC, {column} LIMIT {d.mark}")
        return sorted(str(row[0]) for row in self._rows(sql, [limit]))

    def status_over_time(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        d = self.dialect
        return self._runs_grouped(f, f"{d.bucket(bucket)} AS b, status, COUNT(*) AS runs", "b, status",
                                  f"b, status{d.nulls_first}", base.STATUS_OVER_TIME)

    def runs_per_agent(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        d = self.dialect
        return self._runs_grouped(f, f"{d.bucket(bucket)} AS b, agent, COUNT(*) AS runs", "b, agent",
                                  f"b, agent{d.nulls_first}", base.RUNS_PER_AGENT)

    def cost_over_time(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        return self._runs_grouped(f, f"{self.dialect.bucket(bucket)} AS b, {self._run_sums()}", "b", "b",
                                  base.COST_OVER_TIME)

    def cost_by_agent(self, f: Filters) -> pd.DataFrame:
        return self._runs_grouped(f, f"agent, {self._run_sums()}", "agent",
                                  f"c DESC, agent{self.dialect.nulls_first}", base.COST_BY_AGENT)

    def slowest_runs(self, f: Filters, limit: int = 20) -> pd.DataFrame:
        return self._run_list(f, RUN_COLS, "duration_ms IS NOT NULL", "duration_ms DESC, run_id", limit,
                              base.SLOWEST_RUNS)

    def recent_failures(self, f: Filters, limit: int = 20) -> pd.DataFrame:
        cols = "run_id, name, agent, started_at, duration_ms, error_type, error_message"
        return self._run_list(f, cols, "status = 'error'", "started_at DESC, run_id", limit,
                              base.RECENT_FAILURES)

    def expensive_runs(self, f: Filters, limit: int = 20) -> pd.DataFrame:
        return self._run_list(f, f"{RUN_COLS}, unpriced_call_count", "cost_usd IS NOT NULL",
                              "cost_usd DESC, run_id", limit, base.EXPENSIVE_RUNS)

    def _prefix(self, run_id_prefix: str) -> tuple[str | None, list[Any]]:
        prefix = str(run_id_prefix or "").strip()
        # a substring comparison, not LIKE: no wildcard or escape character can change the match
        clause = f"substr(run_id, 1, {self.dialect.mark}) = {self.dialect.mark}" if prefix else None
        return clause, ([len(prefix), prefix] if prefix else [])

    def search_runs(self, f: Filters, run_id_prefix: str = "", limit: int = 100,
                    order: str = "newest") -> pd.DataFrame:
        d = self.dialect
        keys = check_order(order)
        clause, extra = self._prefix(run_id_prefix)
        where, params = d.where(f, d.runs)
        if clause is not None:
            where = and_(where, clause)
        have = self._columns("agent_runs")
        cols = ", ".join(c if have is None or c in have else f"NULL AS {c}" for c in names(base.RUN_SEARCH))
        table = d.runs
        if any(key == "first_model" for key, _ in keys):  # the join only when sorting by model
            table = self._with_first_model(where, [*params, *extra])
        sql = (f"SELECT {cols} FROM {table}{where} ORDER BY {order_by(keys, d.first_tag)} "
               f"LIMIT {d.mark}")
        return self._frame(sql, [*params, *extra, check_limit(limit)], names(base.RUN_SEARCH), base.RUN_SEARCH)

    def _with_first_model(self, where: str, params: Sequence[Any]) -> str:
        """The FROM text of the runs with their ``first_model`` column, for runs matching ``where``."""
        d = self.dialect
        return f"{d.runs} {d.first_models.replace('<calls>', d.calls)}"

    def count_runs(self, f: Filters, run_id_prefix: str = "") -> int:
        clause, extra = self._prefix(run_id_prefix)
        where, params = self.dialect.where(f, self.dialect.runs)
        if clause is not None:
            where = and_(where, clause)
        rows = self._rows(f"SELECT COUNT(*) FROM {self.dialect.runs}{where}", [*params, *extra])
        return int(rows[0][0] or 0) if rows else 0

    def run_detail(self, run_id: str) -> RunDetail | None:
        d = self.dialect
        specs = (
            (base.RUN_SUMMARY, d.runs, "run_id", "agent_runs"),
            (base.RUN_STEPS, d.steps, "started_at, step_id", "run_steps"),
            (base.RUN_CALLS, d.calls, "started_at, call_id", "api_calls"),
        )
        frames = []
        for spec, table, order, name in specs:
            cols = names(spec)
            have = self._columns(name)
            select = ", ".join(c if have is None or c in have else f"NULL AS {c}" for c in cols)
            sql = f"SELECT {select} FROM {table} WHERE run_id = {d.mark} ORDER BY {order}"
            frames.append(self._frame(sql, [str(run_id)], cols, spec))
        if frames[0].empty:
            return None
        return RunDetail(*frames)

    def calls_summary(self, f: Filters) -> pd.DataFrame:
        """:data:`~agentmeter.queries.base.CALLS_SUMMARY` (one aggregate query over the calls), reused for
        ``SUMMARY_TTL`` seconds per filters so the call views of a page, derived from it, share it."""
        now = time.monotonic()
        with self._memo_lock:
            hit = self._memo.get(f)
            if hit is not None and hit[0] > now:
                return hit[1]
        sql, params = self._calls_summary_query(f)
        frame = self._frame(sql, params, names(base.CALLS_SUMMARY), base.CALLS_SUMMARY)
        with self._memo_lock:
            self._memo = {k: v for k, v in self._memo.items() if v[0] > now}
            self._memo[f] = (now + self.SUMMARY_TTL, frame)
        return frame

    def _from(self, table: str, f: Filters) -> str:
        """The FROM text of an aggregate over ``table`` (a source may pick an index for it)."""
        return table

    def step_errors(self, f: Filters) -> pd.DataFrame:
        d = self.dialect
        where, params = d.where(f, d.steps)
        failed = d.count_if.format("status = 'error'")
        sql = (f"SELECT name, COUNT(*) AS n, {failed} AS errors "
               f"FROM {self._from(d.steps, f)}{where} GROUP BY name ORDER BY errors DESC, name{d.nulls_first}")
        return self._frame(sql, params, names(base.STEP_ERRORS), base.STEP_ERRORS)

    def call_errors(self, f: Filters) -> pd.DataFrame:
        # its own query rather than the calls summary: fewer groups and sums (1M calls: 0.3 s, not 0.7 s)
        d = self.dialect
        where, params = d.where(f, d.calls)
        failed = d.count_if.format("status = 'error'")
        sql = (f"SELECT provider, model, COUNT(*) AS n, {failed} AS errors FROM {self._from(d.calls, f)}{where} "
               f"GROUP BY provider, model ORDER BY errors DESC, provider{d.nulls_first}, model{d.nulls_first}")
        return self._frame(sql, params, names(base.CALL_ERRORS), base.CALL_ERRORS)

    def cache_tokens(self, f: Filters) -> pd.DataFrame:
        d = self.dialect
        where, params = d.where(f, d.calls)
        have = self._columns("api_calls")
        totals = [d.total.format(c) if have is None or c in have else "0"
                  for c in ("cached_input_tokens", "cache_write_tokens")]
        sums, having = ", ".join(totals), " + ".join(totals)
        sql = (f"SELECT provider, model, COUNT(*) AS n, {sums} FROM {d.calls}{where} GROUP BY provider, model "
               f"HAVING {having} > 0 ORDER BY provider{d.nulls_first}, model{d.nulls_first}")
        return self._frame(sql, params, names(base.CACHE_TOKENS), base.CACHE_TOKENS)

    def calls_by_provider(self, f: Filters) -> pd.DataFrame:
        return derive.calls_by_provider(self.calls_summary(f))

    def tokens_by_model(self, f: Filters) -> pd.DataFrame:
        return derive.tokens_by_model(self.calls_summary(f))

    def cost_by_model(self, f: Filters) -> pd.DataFrame:
        return derive.cost_by_model(self.calls_summary(f))

    def cost_by_provider(self, f: Filters) -> pd.DataFrame:
        return derive.cost_by_provider(self.calls_summary(f))

    def unpriced_calls(self, f: Filters) -> pd.DataFrame:
        return derive.unpriced_calls(self.calls_summary(f))
