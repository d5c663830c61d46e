"""``agentmeter report``: a terminal summary of the local store."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

from .._config import default_db_path
from .._percentile import percentile_cont
from ..queries import _kpis
from ..queries.base import Filters
from ._common import since_iso

__all__ = ["register", "summarize"]


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="summarize the local store: runs, success rate, latency, tokens, cost")
    p.add_argument("--since", default="24h", help="time window: 30m, 24h, 7d, 2w or all (default 24h)")
    p.add_argument("--agent", default=None, help="only runs of this agent")
    p.add_argument("--db", default=None, help="SQLite store (default: $AGENTMETER_DB or ~/.agentmeter/agentmeter.db)")
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


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:,.1f} ms" if v < 10_000 else f"{v / 1000:,.2f} s")


def render(summary: dict[str, Any], db: Path, since: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

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
    try:
        summary = summarize(db, args.since, args.agent)
    except FileNotFoundError:
        print(f"No local store at {db}. Run `agentmeter demo` or track a run first.")
        return 1
    render(summary, db, args.since)
    return 0
