"""Snowflake as a dashboard :class:`~agentmeter.queries.base.Source` (``agentmeter[snowflake]``).

Reads the typed views ``AGENT_RUNS``, ``RUN_STEPS`` and ``API_CALLS`` that ``agentmeter sql`` creates
(one row per record id, so records Firehose delivered twice count once). Counts, sums, percentiles
(``PERCENTILE_CONT``) and groupings all run in Snowflake; only the rows a panel shows come back. Every
filter value is a bound parameter; the database and schema names are validated identifiers.

Connection, first match wins:

1. ``connection_name=`` (or ``AGENTMETER_SNOWFLAKE_CONNECTION``): that entry of ``connections.toml``;
2. ``SNOWFLAKE_ACCOUNT`` set: the standard ``SNOWFLAKE_*`` variables (``USER``, ``PASSWORD``, ``ROLE``,
   ``WAREHOUSE``, ``AUTHENTICATOR``, ``PRIVATE_KEY_FILE``...);
3. otherwise the connector's default ``connections.toml`` entry (``SNOWFLAKE_DEFAULT_CONNECTION_NAME``).

Views are looked up in ``database``/``schema`` (default ``AGENTMETER_SNOWFLAKE_DATABASE`` /
``AGENTMETER_SNOWFLAKE_SCHEMA``, then ``SNOWFLAKE_DATABASE`` / ``SNOWFLAKE_SCHEMA``, then the defaults
of ``agentmeter sql``: ``AGENTMETER`` / ``METRICS``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from . import _kpis, base
from ._dialect import Dialect
from ._sql import SqlSource, and_, names
from .base import Filters, SourceUnavailable, conform, flat

__all__ = ["SnowflakeSource", "connection_params", "from_env"]

#: SNOWFLAKE_<NAME> environment variables passed to ``snowflake.connector.connect`` as ``<name>``
_ENV_PARAMS = (
    "account", "user", "password", "role", "warehouse", "database", "schema", "authenticator",
    "private_key_file", "private_key_file_pwd", "token", "host", "port", "protocol", "region",
)
#: table names are placeholders that :meth:`SnowflakeSource._sql` fills with the qualified view names
_SNOWFLAKE = Dialect(
    mark="%s", runs="{runs}", steps="{steps}", calls="{calls}",
    buckets={"day": "DATE_TRUNC('DAY', {col})", "hour": "DATE_TRUNC('HOUR', {col})",
             "minute": "DATE_TRUNC('MINUTE', {col})"},
    total="COALESCE(SUM({}), 0)", count_if="COUNT_IF({})", time="TO_TIMESTAMP_TZ({})", nulls_first=" NULLS FIRST",
    tag_runs="SELECT r.run_id FROM <runs> r, LATERAL FLATTEN(input => r.tags) t WHERE t.value::STRING IN (<marks>)",
    first_tag="tags[0]::STRING",
    tag_values=("SELECT t.value::STRING AS v, MAX(r.started_at) AS last FROM <runs> r, "
                "LATERAL FLATTEN(input => r.tags) t<where> GROUP BY v"),
)
_HINT = (
    "Check the connection: SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER and a credential (SNOWFLAKE_PASSWORD, "
    "SNOWFLAKE_PRIVATE_KEY_FILE or SNOWFLAKE_AUTHENTICATOR), or a connections.toml entry "
    "(AGENTMETER_SNOWFLAKE_CONNECTION); SNOWFLAKE_WAREHOUSE must name a warehouse the role may use. "
    "The views must exist ({where}.AGENT_RUNS...: deploy them with `agentmeter sql`) and the role needs "
    "SELECT on them (the reader role of `agentmeter sql`). See docs/snowflake.md."
)


def connection_params(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Connector keywords from the ``SNOWFLAKE_*`` variables; empty when ``SNOWFLAKE_ACCOUNT`` is unset."""
    env = os.environ if environ is None else environ
    if not env.get("SNOWFLAKE_ACCOUNT"):
        return {}
    params: dict[str, Any] = {}
    for name in _ENV_PARAMS:
        value = env.get(f"SNOWFLAKE_{name.upper()}")
        if value:
            params[name] = int(value) if name == "port" else value
    return params


def from_env(
    connection_name: str | None = None,
    database: str | None = None,
    schema: str | None = None,
    **connect_params: Any,
) -> SnowflakeSource:
    """A source configured from the arguments and the environment (see the module docstring).

    Does not connect. Raises ``ValueError`` for a database or schema that is not a plain identifier.
    """
    env = os.environ
    name = connection_name or env.get("AGENTMETER_SNOWFLAKE_CONNECTION") or None
    db = database or env.get("AGENTMETER_SNOWFLAKE_DATABASE") or env.get("SNOWFLAKE_DATABASE") or "AGENTMETER"
    sch = schema or env.get("AGENTMETER_SNOWFLAKE_SCHEMA") or env.get("SNOWFLAKE_SCHEMA") or "METRICS"
    params = {} if name else connection_params()
    params.update(connect_params)
    if name:
        params["connection_name"] = name
    return SnowflakeSource(database=db, schema=sch, **params)


_PCTS = (
    "PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50, "
    "PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95, "
    "PERCENTILE_CONT(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99"
)


class SnowflakeSource(SqlSource):
    """Reads the agentmeter views in ``database.schema`` over one lazily opened connection.

    ``connect`` (tests, custom auth) replaces ``snowflake.connector.connect``; the remaining keywords are
    passed to it. Never writes. Methods raise :class:`SourceUnavailable` (with a hint) when Snowflake
    cannot be reached or the views cannot be read.
    """

    kind = "snowflake"
    dialect = _SNOWFLAKE

    def __init__(
        self,
        database: str = "AGENTMETER",
        schema: str = "METRICS",
        connect: Callable[..., Any] | None = None,
        **connect_params: Any,
    ) -> None:
        from ..snowflake_sql import check_identifier  # only when a Snowflake source is opened

        super().__init__()
        self.database = check_identifier("database", database)
        self.schema = check_identifier("schema", schema)
        self._connect_fn = connect
        self._params = dict(connect_params)
        # the views' database and schema are the session's too (unqualified functions such as FLATTEN
        # resolve there; a connections.toml entry's own database is overridden, as the views live here)
        self._params.setdefault("database", self.database)
        self._params.setdefault("schema", self.schema)
        self._params.setdefault("login_timeout", 20)
        self._params.setdefault("network_timeout", 60)
        self._conn: Any = None
        self._lock = threading.Lock()
        q = f"{self.database}.{self.schema}"
        self._tables = {"runs": f"{q}.AGENT_RUNS", "steps": f"{q}.RUN_STEPS", "calls": f"{q}.API_CALLS"}
        self.scores_table = f"{q}.RUN_SCORES"

    def describe(self) -> str:
        where = self._params.get("connection_name") or self._params.get("account") or "default connection"
        return f"Snowflake {where} - {self.database}.{self.schema}"

    # -- plumbing ------------------------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> SourceUnavailable:
        return SourceUnavailable(
            f"cannot read Snowflake ({self.database}.{self.schema}): {flat(exc)}",
            _HINT.format(where=f"{self.database}.{self.schema}"),
            f"{type(exc).__name__}: {exc}"[:5000],
        )

    def _connection(self) -> Any:
        if self._conn is None:
            try:
                if self._connect_fn is not None:
                    self._conn = self._connect_fn(**self._params)
                else:
                    import snowflake.connector  # optional extra [snowflake]

                    self._conn = snowflake.connector.connect(**self._params)
            except ImportError as exc:
                raise SourceUnavailable(
                    f"snowflake-connector-python is not installed: {exc}",
                    "pip install 'agentmeter[snowflake]'",
                ) from exc
            except Exception as exc:
                raise self._unavailable(exc) from exc
        return self._conn

    def _sql(self, sql: str) -> str:
        return sql.format(runs=self._tables["runs"], steps=self._tables["steps"], calls=self._tables["calls"])

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._connection()
            try:
                cur = conn.cursor()
                try:
                    cur.execute(self._sql(sql), list(params) or None)
                    return [tuple(r) for r in cur.fetchall()]
                finally:
                    cur.close()
            except SourceUnavailable:
                raise
            except Exception as exc:
                if _is_connection_error(exc):  # reconnect on the next call
                    self._close_locked()
                raise self._unavailable(exc) from exc

    def _close_locked(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail; nothing to do
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    # -- Source --------------------------------------------------------------------------------------

    def check(self) -> None:
        self._rows("SELECT COUNT(*) FROM (SELECT 1 FROM {runs} LIMIT 1)")

    def has_runs(self) -> bool:
        return bool(self._rows("SELECT 1 FROM {runs} LIMIT 1"))

    def agents(self) -> pd.DataFrame:
        sql = ("SELECT agent, COUNT(*) AS runs, MAX(started_at) AS last_seen FROM {runs} WHERE agent IS NOT NULL "
               "GROUP BY agent ORDER BY agent")
        return self._frame(sql, [], names(base.AGENTS), base.AGENTS)

    def _kpi_rows(self, f: Filters, by_agent: bool) -> list[tuple[Any, ...]]:
        where, params = _SNOWFLAKE.where(f, "{runs}")
        key, group = ("agent, ", " GROUP BY agent ORDER BY agent NULLS FIRST") if by_agent else ("", "")
        return self._rows(f"SELECT {key}{_kpis.select_list(_SNOWFLAKE)}, {_PCTS} FROM {{runs}}{where}{group}",
                          params)

    def kpis(self, f: Filters) -> pd.DataFrame:
        (row,) = self._kpi_rows(f, by_agent=False)
        return conform([_kpis.finish(row[:-3], row[-3:])], base.KPIS)

    def agent_kpis(self, f: Filters) -> pd.DataFrame:
        rows = [{"agent": r[0], **_kpis.finish(r[1:-3], r[-3:])} for r in self._kpi_rows(f, by_agent=True)]
        return conform(rows or pd.DataFrame(columns=names(base.AGENT_KPIS)), base.AGENT_KPIS)

    def latency_over_time(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        b = _SNOWFLAKE.bucket(bucket)
        where, params = _SNOWFLAKE.where(f, "{runs}")
        sql = (f"SELECT {b} AS b, COUNT(*) AS runs, {_PCTS} FROM {{runs}}"
               f"{and_(where, 'duration_ms IS NOT NULL')} GROUP BY b ORDER BY b")
        return self._frame(sql, params, names(base.LATENCY_OVER_TIME), base.LATENCY_OVER_TIME)

    def _latency_groups(
        self, f: Filters, table: str, keys: Sequence[str], spec: base.Spec
    ) -> pd.DataFrame:
        where, params = _SNOWFLAKE.where(f, table)
        key_sql = ", ".join(keys)
        order = ", ".join(f"{k} NULLS FIRST" for k in keys)
        sql = (
            f"SELECT {key_sql}, COUNT(*) AS n, COUNT_IF(status = 'error') AS errors, "
            f"AVG(duration_ms) AS mean_ms, {_PCTS} "
            f"FROM {table}{where} GROUP BY {key_sql} "
            f"ORDER BY p95 DESC NULLS LAST, {order}"
        )
        return self._frame(sql, params, names(spec), spec)

    def step_latency(self, f: Filters) -> pd.DataFrame:
        return self._latency_groups(f, _SNOWFLAKE.steps, ["name"], base.STEP_LATENCY)

    def api_latency(self, f: Filters) -> pd.DataFrame:
        return self._latency_groups(f, _SNOWFLAKE.calls, ["provider", "model"], base.API_LATENCY)

    def _calls_summary_query(self, f: Filters) -> tuple[str, list[Any]]:
        where, params = _SNOWFLAKE.where(f, "{calls}")
        sql = ("SELECT provider, operation, model, priced, COUNT(*) AS n, COUNT_IF(status = 'error') AS errors, "
               "COALESCE(SUM(input_tokens), 0) AS tin, COALESCE(SUM(output_tokens), 0) AS tout, "
               "COALESCE(SUM(total_tokens), 0) AS t, COALESCE(SUM(cost_usd), 0) AS c, "
               f"MAX(started_at) AS last_seen FROM {{calls}}{where} GROUP BY provider, operation, model, priced")
        return sql, params


def _is_connection_error(exc: BaseException) -> bool:
    try:
        from snowflake.connector import errors  # optional extra [snowflake]
    except ImportError:  # pragma: no cover - the connector is what raised
        return False
    return isinstance(exc, (errors.OperationalError, errors.InterfaceError))
