"""How the SQL of the two SQL sources differs, and the filter clause they share. Imports no pandas, so
``agentmeter report`` can use it with a bare install.

A :class:`Dialect` says how the SQL differs: the driver's parameter mark (``?`` or ``%s``), how a bound
time is wrapped before it is compared with ``started_at``, how the three tables are named, how a time
bucket, a count of rows meeting a condition and a sum that is 0 over no rows are written, and whether
ascending NULL keys need ``NULLS FIRST``. Every filter value is a bound parameter; only marks, table names
and fixed SQL are put into the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import base
from .base import Filters, check_bucket

__all__ = ["SQLITE", "Dialect", "and_", "names", "order_by"]


@dataclass(frozen=True)
class Dialect:
    """How one SQL source writes its queries. ``runs``, ``steps`` and ``calls`` are the table names as
    they appear in the SQL text (for Snowflake a ``{runs}`` placeholder its source fills in)."""

    mark: str
    runs: str
    steps: str
    calls: str
    #: ``minute`` / ``hour`` / ``day`` -> the UTC start of the bucket of ``{col}``
    buckets: Mapping[str, str]
    #: the sum of ``{}`` that is 0, not NULL, over no rows
    total: str
    #: the number of rows for which the condition ``{}`` holds (0 over no rows)
    count_if: str
    #: wraps the mark of a time bound compared with ``started_at`` (``{}`` leaves it as is)
    time: str = "{}"
    #: appended to an ascending ORDER BY key that may be NULL, so NULL sorts first
    nulls_first: str = ""
    #: the run ids of runs carrying one of the tags bound at ``<marks>`` (``<runs>``: the runs table)
    tag_runs: str = "SELECT r.run_id FROM <runs> r, json_each(r.tags) t WHERE t.value IN (<marks>)"
    #: the distinct tags of runs (``<runs>`` as above, ``<where>`` a ``WHERE`` on r), most recent use first
    #: a run's first tag (null when it has none)
    first_tag: str = "json_extract(tags, '$[0]')"
    #: joined to the runs when sorting by model: one row per run with calls, its smallest model name
    first_models: str = ("LEFT JOIN (SELECT run_id AS fm_run_id, MIN(model) AS first_model FROM <calls> "
                         "GROUP BY run_id) fm ON fm.fm_run_id = run_id")
    tag_values: str = ("SELECT t.value AS v, MAX(r.started_at) AS last FROM <runs> r, json_each(r.tags) t<where> "
                       "GROUP BY v")

    def bucket(self, bucket: str) -> str:
        """The bucket of ``started_at``; raises ``ValueError`` for a size not in ``BUCKETS``."""
        return self.buckets[check_bucket(bucket)].format(col="started_at")

    def marks(self, n: int) -> str:
        return ", ".join(self.mark for _ in range(n))

    def where(self, f: Filters, table: str) -> tuple[str, list[Any]]:
        """``WHERE ...`` for ``table`` (:attr:`runs`, :attr:`steps` or :attr:`calls`) and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        bound = self.time.format(self.mark)
        if f.since is not None:
            clauses.append(f"started_at >= {bound}")
            params.append(f.since)
        if f.until is not None:
            clauses.append(f"started_at < {bound}")
            params.append(f.until)
        if f.agents:
            clauses.append(f"agent IN ({self.marks(len(f.agents))})")
            params.extend(f.agents)
        # run columns: on runs themselves, a semi-join for steps and calls
        for values, column in ((f.statuses, "status"),
                               *((getattr(f, name), col) for name, col in base.RUN_DIMENSIONS.items())):
            if values:
                marks = self.marks(len(values))
                if table == self.runs:
                    clauses.append(f"{column} IN ({marks})")
                else:
                    clauses.append(f"run_id IN (SELECT run_id FROM {self.runs} WHERE {column} IN ({marks}))")
                params.extend(values)
        for name, column in base.RUN_MINIMUMS.items():
            if getattr(f, name) is not None:
                if table == self.runs:
                    clauses.append(f"{column} >= {self.mark}")
                else:
                    clauses.append(f"run_id IN (SELECT run_id FROM {self.runs} WHERE {column} >= {self.mark})")
                params.append(getattr(f, name))
        if f.tags:
            tagged = self.tag_runs.replace("<runs>", self.runs).replace("<marks>", self.marks(len(f.tags)))
            clauses.append(f"run_id IN ({tagged})")
            params.extend(f.tags)
        if f.models:
            marks = self.marks(len(f.models))
            if table == self.calls:  # the call views show only the chosen models' calls
                clauses.append(f"model IN ({marks})")
            else:  # runs (and their steps) that called one of them
                clauses.append(f"run_id IN (SELECT run_id FROM {self.calls} WHERE model IN ({marks}))")
            params.extend(f.models)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


#: the SQL of a sort key of :data:`~agentmeter.queries.base.RUN_ORDERS` (``first_tag`` is the dialect's
#: :attr:`Dialect.first_tag`; ``first_model`` a column of :attr:`Dialect.first_models`, joined for it)
_ORDER_KEYS = {"started_at": "started_at", "run_id": "run_id", "duration_ms": "duration_ms", "cost_usd": "cost_usd",
               "status_rank": "CASE status WHEN 'error' THEN 0 WHEN 'cancelled' THEN 1 ELSE 2 END",
               "error_type": "error_type", "session_id": "session_id", "user_id": "user_id", "version": "version",
               "first_model": "first_model", "first_tag": "first_tag"}


#: sort keys that are never null (a run always has an id, a start and a status)
_NOT_NULL = ("started_at", "run_id", "status_rank")


def order_by(keys: tuple[tuple[str, bool], ...], first_tag: str = "first_tag") -> str:
    """``ORDER BY`` text for sort keys with nulls last in either direction (the same in every dialect: a
    false ``IS NULL`` sorts before a true one). Keys that are never null get no ``IS NULL`` term, so the
    store can walk its ``started_at`` index for the newest and oldest runs. ``first_tag``: the SQL of a run's
    first tag."""
    parts = []
    for key, ascending in keys:
        expr = first_tag if key == "first_tag" else _ORDER_KEYS[key]
        direction = "ASC" if ascending else "DESC"
        parts.append(f"{expr} {direction}" if key in _NOT_NULL else f"({expr} IS NULL), {expr} {direction}")
    return ", ".join(parts)


def and_(where: str, clause: str) -> str:
    """``where`` (a ``WHERE ...`` clause or empty) narrowed by ``clause``."""
    return f"{where} AND {clause}" if where else f" WHERE {clause}"


def names(spec: base.Spec) -> list[str]:
    return [name for name, _ in spec]


#: the local SQLite store (:mod:`.local`)
SQLITE = Dialect(
    mark="?", runs="agent_runs", steps="run_steps", calls="api_calls",
    buckets={"day": "substr({col}, 1, 10) || 'T00:00:00Z'", "hour": "substr({col}, 1, 13) || ':00:00Z'",
             "minute": "substr({col}, 1, 16) || ':00Z'"},
    total="total({})", count_if="total({})",
)
