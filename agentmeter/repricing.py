"""``agentmeter reprice``: recompute the cost of calls already in the local store from the current price
table and your overrides, so a price-table update or a late override fixes history.

Each stored call in the window is priced again exactly as the exporter prices a new one
(:func:`agentmeter.pricing.make_pricer`: overrides, then genai-prices, else unpriced); a call whose
``cost_usd``, ``priced`` or ``price_source`` changes is updated, and so are the cost rollups of its step
(``cost_usd``) and its run (``cost_usd``, ``unpriced_call_count``), with the contract's rules (a run
without calls costs 0; with calls none of which is priced, null). Nothing else is touched, and the whole
change is one transaction: a reader sees the old numbers or the new ones.

MongoDB and Snowflake are not rewritten: their documents and records are what was exported. Re-price
there by reading ``api_calls`` (its tokens, ``model`` and ``started_at``) against your price table in a
query, or, for MongoDB, re-export with ``agentmeter stream`` after re-pricing a local copy.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .pricing import load_library, make_pricer

__all__ = ["RepriceResult", "reprice"]

_CALL_FIELDS = ("call_id", "run_id", "step_id", "provider", "operation", "model", "status", "http_status",
                "started_at", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
                "reasoning_tokens", "total_tokens", "units", "cost_usd", "priced", "price_source", "metadata")


class RepriceResult(NamedTuple):
    """What :func:`reprice` looked at and changed."""

    calls: int  # calls in the window
    calls_changed: int
    steps_changed: int
    runs_changed: int


def _cost(calls: list[tuple[Any, Any]]) -> float | None:
    """The contract's rollup of ``(cost_usd, priced)`` pairs (see agentmeter.contract._rollup)."""
    costs = [c for c, priced in calls if priced and c is not None]
    return round(sum(costs), 10) if costs or not calls else None


def reprice(db: str | Path, since: str | None = None, prices: Mapping[str, Any] | None = None,
            dry_run: bool = False) -> RepriceResult:
    """Re-price the calls of the local store ``db`` started at or after ``since`` (an ISO time; None: all)
    with ``prices`` (overrides, as ``configure(prices=...)`` takes them) and genai-prices. ``dry_run``
    counts what would change and writes nothing. Raises ``FileNotFoundError`` for a missing store and
    ``ValueError`` for invalid ``prices``."""
    path = Path(db).expanduser()
    if not path.exists():
        raise FileNotFoundError(str(path))
    pricer = make_pricer(prices or {})  # ValueError naming the override
    load_library()
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        where, params = ("WHERE started_at >= ?", [since]) if since else ("", [])
        rows = conn.execute(f"SELECT {', '.join(_CALL_FIELDS)} FROM api_calls {where}", params).fetchall()
        changed: list[tuple[Any, ...]] = []
        for row in rows:
            call = dict(zip(_CALL_FIELDS, row, strict=True))
            call["priced"] = bool(call["priced"])
            try:
                call["metadata"] = json.loads(call["metadata"]) if call["metadata"] else {}
            except ValueError:
                call["metadata"] = {}
            price = pricer(call)
            if (price.cost_usd, price.priced, price.source) != (call["cost_usd"], call["priced"],
                                                                 call["price_source"]):
                changed.append((price.cost_usd, int(price.priced), price.source, call["call_id"],
                                call["run_id"], call["step_id"]))
        runs = sorted({c[4] for c in changed})
        steps = sorted({c[5] for c in changed if c[5] is not None})
        if dry_run or not changed:
            conn.execute("ROLLBACK")
            return RepriceResult(len(rows), len(changed), len(steps), len(runs))
        conn.executemany("UPDATE api_calls SET cost_usd = ?, priced = ?, price_source = ? WHERE call_id = ?",
                         [c[:4] for c in changed])
        for step_id in steps:
            calls = conn.execute("SELECT cost_usd, priced FROM api_calls WHERE step_id = ?", (step_id,)).fetchall()
            conn.execute("UPDATE run_steps SET cost_usd = ? WHERE step_id = ?",
                         (_cost(calls) if calls else None, step_id))
        for run_id in runs:
            calls = conn.execute("SELECT cost_usd, priced FROM api_calls WHERE run_id = ?", (run_id,)).fetchall()
            conn.execute("UPDATE agent_runs SET cost_usd = ?, unpriced_call_count = ? WHERE run_id = ?",
                         (_cost(calls), sum(1 for _c, priced in calls if not priced), run_id))
        conn.execute("COMMIT")
        return RepriceResult(len(rows), len(changed), len(steps), len(runs))
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
