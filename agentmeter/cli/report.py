"""``agentmeter report``: a terminal summary of the local store."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

from .._config import default_db_path
from .._percentile import percentile_cont
from ._common import since_iso

__all__ = ["register", "summarize"]


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="summarize the local store: runs, success rate, latency, tokens, cost")
    p.add_argument("--since", default="24h", help="time window: 30m, 24h, 7d, 2w or all (default 24h)")
    p.add_argument("--agent", default=None, help="only runs of this agent")
    p.add_argument("--db", default=None, help="SQLite store (default: $AGENTMETER_DB or ~/.agentmeter/agentmeter.db)")
    p.set_defaults(func=run)


def _group(rows: list[sqlite3.Row], tokens_unknown: int = 0) -> dict[str, Any]:
    durations = [r["duration_ms"] for r in rows if r["duration_ms"] is not None]
    n = len(rows)
    ok = sum(1 for r in rows if r["status"] == "success")
    costs = [r["cost_usd"] for r in rows if r["cost_usd"] is not None]
    return {
        "runs": n,
        "success": ok,
        "errors": sum(1 for r in rows if r["status"] == "error"),
        "cancelled": sum(1 for r in rows if r["status"] == "cancelled"),
        "success_rate": ok / n if n else None,
        "p50_ms": percentile_cont(durations, 0.5),
        "p95_ms": percentile_cont(durations, 0.95),
        "steps": sum(r["step_count"] or 0 for r in rows),
        "calls": sum(r["call_count"] or 0 for r in rows),
        "input_tokens": sum(r["input_tokens"] or 0 for r in rows),
        "output_tokens": sum(r["output_tokens"] or 0 for r in rows),
        "total_tokens": sum(r["total_tokens"] or 0 for r in rows),
        "cost_usd": sum(costs),
        # unpriced because no price is known for the model, apart from those whose tokens are unknown
        "unpriced_calls": sum(r["unpriced_call_count"] or 0 for r in rows) - tokens_unknown,
        "tokens_unknown_calls": tokens_unknown,
    }


def summarize(db: str | Path, since: str | None = "24h", agent: str | None = None) -> dict[str, Any]:
    """The report's numbers: ``{"total": {...}, "agents": {name: {...}}}``. Raises FileNotFoundError."""
    path = Path(db).expanduser()
    if not path.exists():
        raise FileNotFoundError(str(path))
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        sql = ("SELECT agent, status, duration_ms, step_count, call_count, input_tokens, output_tokens, "
               "total_tokens, cost_usd, unpriced_call_count FROM agent_runs r WHERE 1=1")
        filters, params = "", []
        start = since_iso(since)
        if start is not None:
            filters += " AND r.started_at >= ?"
            params.append(start)
        if agent is not None:
            filters += " AND r.agent = ?"
            params.append(agent)
        rows = conn.execute(sql + filters, params).fetchall()
        # unpriced calls whose tokens are unknown (agentmeter.pricing.tokens_unknown), per agent of the run
        unknown = dict(conn.execute(
            "SELECT r.agent, count(*) FROM api_calls c JOIN agent_runs r ON r.run_id = c.run_id "
            "WHERE NOT c.priced AND c.output_tokens IS NULL AND (c.input_tokens IS NULL "
            "OR json_extract(c.metadata, '$.stream') = 1)" + filters + " GROUP BY r.agent", params).fetchall())
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            rows, unknown = [], {}
        else:
            raise
    finally:
        conn.close()
    by_agent: dict[str, list[sqlite3.Row]] = {}
    for r in rows:
        by_agent.setdefault(r["agent"] or "(none)", []).append(r)
    agents = {k: _group(v, unknown.get(None if k == "(none)" else k, 0)) for k, v in sorted(by_agent.items())}
    return {"total": _group(rows, sum(unknown.values())), "agents": agents}


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
