"""``agentmeter report``: a terminal summary of the local store.

Without ``--by``: the KPIs per agent and in total. ``--by session|user|version|agent`` groups runs by that
dimension (:mod:`agentmeter.queries.rollups`: each run's own tokens and cost, counted once), ``--by model``
groups calls by provider and model, ``--by run`` lists the costliest runs with their child runs' totals;
``--every day|week|month`` adds UTC time buckets."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

from .._config import default_db_path
from .._percentile import percentile_cont
from ..queries import _kpis, rollups
from ..queries._dialect import SQLITE
from ..queries.base import Filters
from ..queries.rollups import PERIODS
from ._common import since_iso

__all__ = ["BY_CHOICES", "breakdown", "register", "summarize"]

#: what ``--by`` accepts
BY_CHOICES = ("session", "user", "version", "agent", "model", "run")


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="summarize the local store: runs, success rate, latency, tokens, cost")
    p.add_argument("--since", default="24h", help="time window: 30m, 24h, 7d, 2w or all (default 24h)")
    p.add_argument("--agent", default=None, help="only runs of this agent")
    p.add_argument("--db", default=None, help="SQLite store (default: $AGENTMETER_DB or ~/.agentmeter/agentmeter.db)")
    p.add_argument("--by", choices=BY_CHOICES, default=None,
                   help="group by session, user, version, agent or model; 'run': runs with their child runs' totals")
    p.add_argument("--every", choices=("day", "week", "month"), default=None,
                   help="with --by (default agent): one row per UTC day, week (from Monday) or month")
    p.add_argument("--limit", type=int, default=20, help="with --by run: how many runs (default 20)")
    p.set_defaults(func=run)


def _group(kpi: dict[str, Any], tokens_unknown: int = 0) -> dict[str, Any]:
    """The report's numbers for one group, from the query layer's KPI row; ``tokens_unknown``: its unpriced
    calls whose tokens are unknown (reported apart from calls whose model has no price)."""
    return {
        "runs": kpi["runs"],
        "success": kpi["success_runs"],
        "errors": kpi["error_runs"],
        "cancelled": kpi["cancelled_runs"],
        "success_rate": kpi["success_rate"],
        "p50_ms": kpi["p50_ms"],
        "p95_ms": kpi["p95_ms"],
        "steps": kpi["steps"],
        "calls": kpi["calls"],
        "input_tokens": kpi["input_tokens"],
        "output_tokens": kpi["output_tokens"],
        "total_tokens": kpi["total_tokens"],
        "cost_usd": kpi["cost_usd"],
        "unpriced_calls": kpi["unpriced_calls"] - tokens_unknown,
        "tokens_unknown_calls": tokens_unknown,
    }


def _durations(joined: str | None) -> list[float]:
    return [float(v) for v in joined.split(",")] if joined else []


def summarize(db: str | Path, since: str | None = "24h", agent: str | None = None) -> dict[str, Any]:
    """The report's numbers: ``{"total": {...}, "agents": {name: {...}}}``. Raises FileNotFoundError.

    The KPIs are the query layer's (:mod:`agentmeter.queries._kpis`, the dashboard's headline numbers),
    read with the local source's query; no pandas needed."""
    path = Path(db).expanduser()
    if not path.exists():
        raise FileNotFoundError(str(path))
    f = Filters(since=since_iso(since), agents=(agent,) if agent is not None else ())
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = [conn.execute(*_kpis.sqlite_query(f)).fetchone()]
        rows += conn.execute(*_kpis.sqlite_query(f, by_agent=True)).fetchall()
        unknown = _tokens_unknown(conn, since, agent)
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        rows, unknown = [None], {}
    finally:
        conn.close()

    def kpi(row: Any) -> dict[str, Any]:
        measured, joined = (row[:-1], row[-1]) if row else ([0] * len(_kpis.MEASURED), None)
        values = _durations(joined)
        return _kpis.finish(measured, [percentile_cont(values, q) for _, q in _kpis.PERCENTILES])

    total, *groups = rows
    agents = {(r[0] or "(none)"): _group(kpi(r[1:]), unknown.get(r[0], 0)) for r in groups}
    return {"total": _group(kpi(total), sum(unknown.values())), "agents": dict(sorted(agents.items()))}


def _tokens_unknown(conn: sqlite3.Connection, since: str | None, agent: str | None) -> dict[str | None, int]:
    """Per agent of the run: unpriced calls whose tokens are unknown (:func:`agentmeter.pricing.tokens_unknown`:
    no output count, or a stream whose usage never came)."""
    filters, params = "", []
    start = since_iso(since)
    if start is not None:
        filters += " AND r.started_at >= ?"
        params.append(start)
    if agent is not None:
        filters += " AND r.agent = ?"
        params.append(agent)
    return dict(conn.execute(
        "SELECT r.agent, count(*) FROM api_calls c JOIN agent_runs r ON r.run_id = c.run_id "
        "WHERE NOT c.priced AND c.output_tokens IS NULL AND (c.input_tokens IS NULL "
        "OR json_extract(c.metadata, '$.stream') = 1)" + filters + " GROUP BY r.agent", params).fetchall())


def breakdown(db: str | Path, by: str, since: str | None = "24h", agent: str | None = None,
              every: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The rows of ``report --by``: :func:`agentmeter.queries.rollups.rollup_rows` (session, user,
    version, agent), calls per provider and model (``model``), or the costliest root runs with their
    trees' totals (``run``, :func:`~agentmeter.queries.rollups.tree_totals`). Raises FileNotFoundError."""
    path = Path(db).expanduser()
    if not path.exists():
        raise FileNotFoundError(str(path))
    f = Filters(since=since_iso(since), agents=(agent,) if agent is not None else ())
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if by == "model":
            return _by_model(conn, f, every)
        runs, scores = rollups.sqlite_reads(conn, f)
    finally:
        conn.close()
    if by == "run":
        return rollups.tree_totals(runs)[:limit]
    return rollups.rollup_rows(runs, scores, by, every)


def _by_model(conn: sqlite3.Connection, f: Filters, every: str | None) -> list[dict[str, Any]]:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "api_calls" not in tables:
        return []
    where, params = SQLITE.where(f, SQLITE.calls)
    bucket = {None: "NULL", "day": "substr(started_at, 1, 10) || 'T00:00:00Z'",
              "month": "substr(started_at, 1, 7) || '-01T00:00:00Z'",
              "week": "date(substr(started_at, 1, 10), '-' || ((strftime('%w', substr(started_at, 1, 10)) + 6) % 7) "
                      "|| ' days') || 'T00:00:00Z'"}[every if every in PERIODS else None]
    sql = (f"SELECT {bucket} AS bucket, provider, model, count(*), coalesce(sum(input_tokens), 0), "
           "coalesce(sum(output_tokens), 0), coalesce(sum(total_tokens), 0), "
           "coalesce(sum(CASE WHEN priced THEN cost_usd END), 0), sum(CASE WHEN priced THEN 0 ELSE 1 END), "
           f"sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) FROM api_calls{where} "
           "GROUP BY bucket, provider, model ORDER BY bucket, provider, model")
    keys = ("bucket", "provider", "model", "calls", "input_tokens", "output_tokens", "total_tokens", "cost_usd",
            "unpriced_calls", "errors")
    return [dict(zip(keys, row, strict=True)) for row in conn.execute(sql, params)]


def _money(v: float | None) -> str:
    return "-" if v is None else f"${v:,.4f}"


def render_breakdown(rows: list[dict[str, Any]], by: str, db: Path, since: str | None) -> None:
    from rich.console import Console  # rich: ~30 ms, only when a table is printed
    from rich.table import Table  # rich: only when a table is printed

    console = Console() if sys.stdout.isatty() else Console(width=160)
    if not rows:
        console.print(f"No runs in [bold]{db}[/] for the last {since}.")
        return
    table = Table(title=f"agentmeter report --by {by} - {db} - since {since}", title_justify="left")
    cols: tuple[str, ...]
    cells: list[tuple[Any, ...]]
    if by == "run":
        cols = ("run", "name", "agent", "session", "runs in tree", "own cost (USD)", "cost with children (USD)",
                "tokens with children", "unpriced")
        cells = [(r["run_id"], r["name"], r["agent"] or "-", r["session_id"] or "-", f"{r['runs']:,}",
                  _money(r["own_cost_usd"]), _money(r["cost_usd"]), f"{r['total_tokens']:,}",
                  f"{r['unpriced_calls']:,}") for r in rows]
    elif by == "model":
        cols = ("bucket", "provider", "model", "calls", "errors", "tokens", "cost (USD)", "unpriced")
        cells = [((r["bucket"] or "")[:10] or "-", r["provider"], r["model"] or "(none)", f"{r['calls']:,}",
                  f"{r['errors']:,}", f"{r['total_tokens']:,}", _money(r["cost_usd"]), f"{r['unpriced_calls']:,}")
                 for r in rows]
    else:
        cols = ("bucket", by, "runs", "success", "p50", "p95", "calls", "tokens", "cost (USD)", "unpriced",
                "sessions", "users", "scores", "mean score")
        cells = [((r["bucket"] or "")[:10] or "-", r["key"] if r["key"] is not None else "(none)",
                  f"{r['runs']:,}", f"{r['success_rate']:.1%}", _fmt_ms(r["p50_ms"]), _fmt_ms(r["p95_ms"]),
                  f"{r['calls']:,}", f"{r['total_tokens']:,}", _money(r["cost_usd"]), f"{r['unpriced_calls']:,}",
                  f"{r['sessions']:,}", f"{r['users']:,}", f"{r['scores']:,}",
                  "-" if r["mean_score"] is None else f"{r['mean_score']:.3f}") for r in rows]
    for col in cols:
        table.add_column(col, justify="right" if col not in ("bucket", by, "run", "name", "agent", "session",
                                                             "provider", "model") else "left")
    for row in cells:
        table.add_row(*row)
    console.print(table)


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:,.1f} ms" if v < 10_000 else f"{v / 1000:,.2f} s")


def render(summary: dict[str, Any], db: Path, since: str | None) -> None:
    from rich.console import Console  # rich: ~30 ms, only when a table is printed
    from rich.table import Table  # rich: only when a table is printed

    # rich draws 80 columns when stdout is not a terminal (CI logs, pipes): too narrow for this table
    console = Console() if sys.stdout.isatty() else Console(width=140)
    total = summary["total"]
    if not total["runs"]:
        console.print(f"No runs in [bold]{db}[/] for the last {since}. Run [bold]agentmeter demo[/] to make some.")
        return
    table = Table(title=f"agentmeter report - {db} - since {since}", title_justify="left")
    for col in ("agent", "runs", "success", "p50", "p95", "steps", "calls", "tokens", "cost (USD)", "unpriced"):
        table.add_column(col, justify="left" if col == "agent" else "right")
    rows = [*summary["agents"].items(), ("TOTAL", total)]
    for name, g in rows:
        rate = "-" if g["success_rate"] is None else f"{g['success_rate']:.1%}"
        table.add_row(
            name, f"{g['runs']:,}", rate, _fmt_ms(g["p50_ms"]), _fmt_ms(g["p95_ms"]), f"{g['steps']:,}",
            f"{g['calls']:,}", f"{g['total_tokens']:,}", f"${g['cost_usd']:,.4f}",
            f"{g['unpriced_calls']:,}", end_section=(name == rows[-2][0]) if len(rows) > 1 else False,
        )
    console.print(table)
    if total["unpriced_calls"]:
        console.print(f"[yellow]{total['unpriced_calls']} call(s) have no known price: cost shown excludes them "
                      "(see docs/integrations.md to price a model).[/]")
    if total["tokens_unknown_calls"]:
        console.print(f"[yellow]{total['tokens_unknown_calls']} call(s) have tokens unknown (a stream read without "
                      "its usage, or cut short): cost shown excludes them (see docs/integrations.md).[/]")


def run(args: argparse.Namespace) -> int:
    db = Path(args.db).expanduser() if args.db else default_db_path()
    if args.by is not None or args.every is not None:
        if args.limit < 1:
            print("--limit must be a positive integer", file=sys.stderr)
            return 2
        by = args.by or "agent"
        try:
            rows = breakdown(db, by, args.since, args.agent, args.every, args.limit)
        except FileNotFoundError:
            print(f"No local store at {db}. Run `agentmeter demo` or track a run first.")
            return 1
        render_breakdown(rows, by, db, args.since)
        return 0
    try:
        summary = summarize(db, args.since, args.agent)
    except FileNotFoundError:
        print(f"No local store at {db}. Run `agentmeter demo` or track a run first.")
        return 1
    render(summary, db, args.since)
    return 0
