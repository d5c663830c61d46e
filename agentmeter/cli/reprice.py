"""``agentmeter reprice``: recompute stored calls' cost from the current price table and your overrides."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .._config import default_db_path
from ..repricing import reprice
from ._common import since_iso

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "reprice",
        help="recompute the cost of stored calls (local store) from the current prices and your overrides",
        description=(
            "Price every call of the local store again, from genai-prices and the overrides in --prices, "
            "and update the calls, steps and runs whose cost changes (one transaction). MongoDB and "
            "Snowflake are not rewritten: see docs/integrations.md."
        ),
    )
    p.add_argument("--since", default="all", help="only calls started in this window: 30m, 24h, 30d, 2w or all "
                                                  "(default all)")
    p.add_argument("--db", default=None, help="SQLite store (default: $AGENTMETER_DB or ~/.agentmeter/agentmeter.db)")
    p.add_argument("--prices", default=None,
                   help="JSON file of price overrides, as configure(prices=...) takes them")
    p.add_argument("--dry-run", action="store_true", help="count what would change; write nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    db = Path(args.db).expanduser() if args.db else default_db_path()
    prices: dict[str, Any] = {}
    if args.prices is not None:
        try:
            prices = json.loads(Path(args.prices).expanduser().read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"--prices must be a readable JSON file of price overrides: {exc}") from None
        if not isinstance(prices, dict):
            raise ValueError("--prices must hold a JSON object: model -> price")
    try:
        result = reprice(db, since_iso(args.since), prices, dry_run=args.dry_run)
    except FileNotFoundError:
        print(f"No local store at {db}. Run `agentmeter demo` or track a run first.")
        return 1
    verb = "would change" if args.dry_run else "changed"
    print(f"{result.calls:,} call(s) priced again in {db}: {verb} {result.calls_changed:,} call(s), "
          f"{result.steps_changed:,} step(s), {result.runs_changed:,} run(s)")
    return 0
