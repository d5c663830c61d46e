"""Rollups by session, user, version and agent, with day, week or month buckets, and parent runs' totals
including their child runs: one implementation shared by every source.

Each source gives the same two reads (:meth:`~agentmeter.queries.base.Source.dimension_runs`: one light
row per run matching the filters, with :data:`DIMENSION_FIELDS`; and
:meth:`~agentmeter.queries.base.Source.latest_scores`: ``(run_id, value)`` of the latest numeric or
boolean score of each key); the grouping is done here, in Python, so the local store, MongoDB and
Snowflake give the same numbers by construction.

* A group's tokens and cost sum its runs' **own** calls: a sub-agent's run (``parent_run_id``) counts in
  its own group, once, never again in its parent's.
* :func:`run_trees` gives each root run (a run whose parent is not among the runs read) with the totals of
  its whole tree: itself and every run below it, each counted once (a cycle cannot loop).
* Buckets are UTC: ``day``, ``week`` (starting Monday) or ``month`` of the run's start.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Final

from .._percentile import percentile_cont
from ._dialect import SQLITE
from ._specs import DIMENSION_FIELDS
from .base import Filters, Source, conform

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BY", "DIMENSION_FIELDS", "PERIODS", "ROLLUP", "RUN_TREES", "by_dimension", "rollup", "rollup_rows",
           "run_trees", "sqlite_reads", "tree_totals"]

#: what a rollup groups by (``model`` is the call views' cost and tokens per model, see the report)
BY: Final = ("session", "user", "version", "agent")
_COLUMN = {"session": "session_id", "user": "user_id", "version": "version", "agent": "agent"}
#: bucket sizes of a rollup (None: one row per key)
PERIODS: Final = ("day", "week", "month")
#: One row per bucket (NaT without buckets) and key (null: runs without one); ordered by bucket, key (nulls
#: first). Tokens and cost are sums of the runs' own (0 when unknown); ``p50_ms``/``p95_ms`` are run
#: durations; ``sessions``/``users`` distinct non-null ids; ``scores`` the latest numeric or boolean scores
#: of the group's runs, ``mean_score`` their mean (NaN for none).
ROLLUP: Final = (
    ("bucket", "time"), ("key", "str"), ("runs", "int"), ("success_runs", "int"), ("error_runs", "int"),
    ("success_rate", "float"), ("p50_ms", "float"), ("p95_ms", "float"), ("calls", "int"),
    ("input_tokens", "int"), ("output_tokens", "int"), ("total_tokens", "int"), ("cost_usd", "float"),
    ("unpriced_calls", "int"), ("sessions", "int"), ("users", "int"), ("scores", "int"), ("mean_score", "float"),
)
#: One row per root run; ordered by cost_usd descending, run_id. ``runs`` counts the tree (the root
#: included); ``own_cost_usd`` is the root's own calls, ``cost_usd``/``total_tokens``/``unpriced_calls`` the
#: whole tree's.
RUN_TREES: Final = (
    ("run_id", "str"), ("name", "str"), ("agent", "str"), ("session_id", "str"), ("started_at", "time"),
    ("runs", "int"), ("own_cost_usd", "float"), ("cost_usd", "float"), ("total_tokens", "int"),
    ("unpriced_calls", "int"),
)


def _bucket(started: str | None, period: str | None) -> str | None:
    if period is None or not started:
        return None
    if period == "day":
        return started[:10] + "T00:00:00Z"
    if period == "month":
        return started[:7] + "-01T00:00:00Z"
    day = date.fromisoformat(started[:10])
    return (day - timedelta(days=day.weekday())).isoformat() + "T00:00:00Z"


def _n(value: Any) -> float:
    return 0.0 if value is None or value != value else float(value)  # None and NaN count as 0


def rollup(runs: Iterable[Mapping[str, Any]] | pd.DataFrame, scores: Iterable[tuple[str, float]], by: str,
           period: str | None = None) -> pd.DataFrame:
    """:data:`ROLLUP` of ``runs`` grouped by ``by``: rows with :data:`DIMENSION_FIELDS` (grouped by
    :func:`rollup_rows`), or a frame with those columns, such as
    :meth:`~agentmeter.queries.base.Source.dimension_frame` gives (grouped with numpy: the same numbers, in
    about half the time on 100,000 runs; see ``benchmarks/bench_dashboard.py``). Pure."""
    import pandas as pd  # the dashboard's extra: the CLI's report uses rollup_rows without it

    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}; got {by!r}")
    if period is not None and period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}; got {period!r}")
    columns = [name for name, _ in ROLLUP]
    if isinstance(runs, pd.DataFrame):
        from ._rollup_frame import rollup_frame  # numpy, pandas: the dashboard's extra

        scores = list(scores)
        done = rollup_frame(runs, scores, _COLUMN[by], period)
        if done is not None:
            return conform(done, ROLLUP)
        # no runs, or values only the Python definition handles
        runs = runs.astype(object).where(runs.notna(), None).to_dict("records")
    return conform(pd.DataFrame(rollup_rows(runs, scores, by, period), columns=columns), ROLLUP)


def rollup_rows(runs: Iterable[Mapping[str, Any]], scores: Iterable[tuple[str, float]], by: str,
                period: str | None = None) -> list[dict[str, Any]]:
    """:func:`rollup` as plain dicts (bucket an ISO string or None), without pandas (the CLI's report)."""
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}; got {by!r}")
    if period is not None and period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}; got {period!r}")
    values: dict[str, list[float]] = defaultdict(list)
    for run_id, value in scores:
        values[run_id].append(float(value))
    groups: dict[tuple[str | None, str | None], list[Mapping[str, Any]]] = defaultdict(list)
    column = _COLUMN[by]
    for run in runs:
        groups[(_bucket(run["started_at"], period), run[column])].append(run)
    rows = []
    for (bucket, key), members in groups.items():
        n = len(members)
        ok = sum(1 for r in members if r["status"] == "success")
        durations = [float(r["duration_ms"]) for r in members if r["duration_ms"] is not None]
        given = [v for r in members for v in values.get(r["run_id"], ())]
        rows.append({
            "bucket": bucket, "key": key, "runs": n, "success_runs": ok,
            "error_runs": sum(1 for r in members if r["status"] == "error"),
            "success_rate": ok / n, "p50_ms": percentile_cont(durations, 0.5),
            "p95_ms": percentile_cont(durations, 0.95),
            "calls": sum(int(_n(r["call_count"])) for r in members),
            "input_tokens": sum(int(_n(r["input_tokens"])) for r in members),
            "output_tokens": sum(int(_n(r["output_tokens"])) for r in members),
            "total_tokens": sum(int(_n(r["total_tokens"])) for r in members),
            "cost_usd": sum(_n(r["cost_usd"]) for r in members),
            "unpriced_calls": sum(int(_n(r["unpriced_call_count"])) for r in members),
            "sessions": len({r["session_id"] for r in members if r["session_id"] is not None}),
            "users": len({r["user_id"] for r in members if r["user_id"] is not None}),
            "scores": len(given), "mean_score": sum(given) / len(given) if given else None,
        })
    rows.sort(key=lambda r: (r["bucket"] is not None, r["bucket"] or "", r["key"] is not None, r["key"] or ""))
    return rows


def sqlite_reads(conn: Any, f: Filters) -> tuple[list[dict[str, Any]], list[tuple[str, float]]]:
    """(:meth:`~agentmeter.queries.base.Source.dimension_runs`, ``latest_scores``) of a local store's open
    ``sqlite3`` connection, without pandas (the CLI's report; :class:`~agentmeter.queries.local.LocalSource`
    reads the same with the same SQL)."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "agent_runs" not in tables:
        return [], []
    have = {row[1] for row in conn.execute("PRAGMA table_info(agent_runs)")}
    select = ", ".join(c if c in have else f"NULL AS {c}" for c in DIMENSION_FIELDS)
    where, params = SQLITE.where(f, SQLITE.runs)
    runs = [dict(zip(DIMENSION_FIELDS, row, strict=True))
            for row in conn.execute(f"SELECT {select} FROM agent_runs{where}", params)]
    scores: list[tuple[str, float]] = []
    if "run_scores" in tables:
        scores = [(str(r), float(v)) for r, v in conn.execute(
            "SELECT run_id, value FROM run_scores WHERE value IS NOT NULL")]
    return runs, scores


def tree_totals(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each root run of ``runs`` with its tree's totals (see :data:`RUN_TREES`), in plain dicts. Pure."""
    by_id = {r["run_id"]: r for r in runs}
    children: dict[str, list[str]] = defaultdict(list)
    for r in runs:
        parent = r["parent_run_id"]
        if parent is not None and parent in by_id and parent != r["run_id"]:
            children[parent].append(r["run_id"])
    reached: set[str] = set()
    out = []
    roots = [r for r in runs if r["parent_run_id"] not in by_id or r["parent_run_id"] == r["run_id"]]
    for root in roots:
        stack, tree = [root["run_id"]], []
        while stack:
            run_id = stack.pop()
            if run_id in reached:
                continue
            reached.add(run_id)
            tree.append(by_id[run_id])
            stack.extend(children.get(run_id, ()))
        out.append({"run_id": root["run_id"], "name": root["name"], "agent": root["agent"],
                    "session_id": root["session_id"], "started_at": root["started_at"], "runs": len(tree),
                    "own_cost_usd": _n(root["cost_usd"]), "cost_usd": sum(_n(r["cost_usd"]) for r in tree),
                    "total_tokens": sum(int(_n(r["total_tokens"])) for r in tree),
                    "unpriced_calls": sum(int(_n(r["unpriced_call_count"])) for r in tree)})
    out.sort(key=lambda r: (-r["cost_usd"], r["run_id"]))
    return out


def run_trees(source: Source, f: Filters, limit: int | None = None) -> pd.DataFrame:
    """:data:`RUN_TREES` of the runs ``source`` holds that match ``f`` (at most ``limit`` rows)."""
    import pandas as pd  # the dashboard's extra, as in rollup()

    rows = tree_totals(source.dimension_runs(f))
    if limit is not None:
        rows = rows[:limit]
    return conform(pd.DataFrame(rows, columns=[name for name, _ in RUN_TREES]), RUN_TREES)


def by_dimension(source: Source, f: Filters, by: str, period: str | None = None) -> pd.DataFrame:
    """:data:`ROLLUP` of the runs ``source`` holds that match ``f``, grouped by ``by``."""
    return rollup(source.dimension_frame(f), source.latest_scores(), by, period)
