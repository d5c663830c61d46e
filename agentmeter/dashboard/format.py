"""How the dashboard writes numbers and user text. Pure functions; every number formatter accepts None,
NaN, NaT and ``pd.NA`` and returns "-" for them.

User text (names, error messages, tags, anything an agent wrote) is never handed to Streamlit's markdown
as it is: :func:`literal` escapes it so it reads exactly as written, and long or multi-line text goes to
code blocks or tables instead, which Streamlit never interprets.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = [
    "COLUMN_NAMES",
    "column_name",
    "duration_unit",
    "fmt_count",
    "fmt_ms",
    "fmt_pct",
    "fmt_usd",
    "is_missing",
    "literal",
    "money_decimals",
]


def is_missing(value: Any) -> bool:
    """True for None, NaN, NaT and ``pd.NA``."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and NaT differ from themselves
    except (TypeError, ValueError):
        return True  # pd.NA: its comparisons are NA, which has no truth value


def fmt_count(value: Any) -> str:
    """``12,345``."""
    return "-" if is_missing(value) else f"{round(float(value)):,}"


def fmt_pct(value: Any) -> str:
    """A fraction 0..1 as ``87.50%``."""
    return "-" if is_missing(value) else f"{float(value) * 100:.2f}%"


def _four(v: float, unit: str) -> str:
    decimals = 3 if v < 10 else 2 if v < 100 else 1
    return f"{v:,.{decimals}f} {unit}"


def fmt_ms(value: Any) -> str:
    """A duration given in milliseconds, in the unit that reads best, to about four significant digits so
    a metric tile is never cut off: ``0.036 ms``, ``329.7 ms``, ``1.234 s``, ``12.35 s``, ``2.500 min``,
    ``1.250 h``."""
    if is_missing(value):
        return "-"
    v = float(value)
    if v < 1000:
        return _four(v, "ms")
    if v < 60_000:
        return _four(v / 1000, "s")
    if v < 3_600_000:
        return _four(v / 60_000, "min")
    return f"{v / 3_600_000:,.3f} h" if v < 36_000_000 else f"{v / 3_600_000:,.1f} h"


def duration_unit(max_ms: Any) -> tuple[str, float]:
    """The unit for a chart axis or a table column of durations whose largest is ``max_ms``, and the
    divisor from milliseconds: ``("ms", 1)``, ``("s", 1000)`` or ``("min", 60000)``."""
    if is_missing(max_ms) or float(max_ms) < 1000:
        return "ms", 1.0
    if float(max_ms) < 120_000:
        return "s", 1000.0
    return "min", 60_000.0


def fmt_usd(value: Any) -> str:
    """Dollars: ``$1,234.56`` from $100, ``$12.3456`` from $1, four significant digits below
    (``$0.03239``, ``$0.0001234``), so the figure fits a metric tile."""
    if is_missing(value):
        return "-"
    v = float(value)
    if v >= 100:
        return f"${v:,.2f}"
    if v >= 1:
        return f"${v:,.4f}"
    if v <= 0:
        return "$0"
    digits = min(10, 3 - math.floor(math.log10(v)))
    return f"${v:.{digits}f}"


def money_decimals(values: Any) -> int:
    """Decimals that show the smallest non-zero amount of ``values`` to three significant digits (2 to 8)."""
    amounts = [abs(float(v)) for v in values if not is_missing(v) and float(v) != 0]
    if not amounts:
        return 2
    return max(2, min(8, 2 - math.floor(math.log10(min(amounts)))))


#: column -> the name a table shows
COLUMN_NAMES = {
    "run_id": "Run id", "name": "Name", "agent": "Agent", "status": "Status", "started_at": "Started (UTC)",
    "ended_at": "Ended (UTC)", "duration_ms": "Duration", "step_count": "Steps", "call_count": "Calls",
    "total_tokens": "Tokens", "input_tokens": "Input tokens", "output_tokens": "Output tokens",
    "cost_usd": "Cost (USD)", "unpriced_call_count": "Unpriced calls", "unpriced_calls": "Unpriced calls",
    "error_type": "Error type", "error_message": "Error", "provider": "Provider", "operation": "Operation",
    "model": "Model", "calls": "Calls", "steps": "Steps", "errors": "Errors", "error_rate": "Error rate",
    "mean_ms": "Mean", "p50_ms": "p50", "p95_ms": "p95", "p99_ms": "p99", "runs": "Runs",
    "last_seen": "Last seen (UTC)", "kind": "Kind", "step_id": "Step id", "call_id": "Call id",
    "parent_step_id": "Parent step", "http_status": "HTTP status", "priced": "Priced", "where": "Where",
    "step": "Step", "success_rate": "Success rate", "key": "Key", "value": "Value",
    "session_id": "Session", "user_id": "User", "version": "Version", "tags": "Tags",
    "cached_input_tokens": "Cached input tokens", "cache_write_tokens": "Cache-write tokens",
    "mean_score": "Mean score", "scores": "Scores", "source": "Source", "label": "Label", "comment": "Comment",
    "scored_at": "Scored (UTC)", "total_ms": "Total run time", "first_started_at": "First run (UTC)",
    "last_started_at": "Last run (UTC)", "cost_per_run_usd": "Cost per run (USD)", "data_type": "Type",
    "mean": "Mean", "count": "Count", "session": "Session",
}


def column_name(column: str) -> str:
    """The human name of a column (``cost_usd`` -> ``Cost (USD)``)."""
    return COLUMN_NAMES.get(column, column.replace("_", " ").capitalize())


# Every ASCII character that can start markdown or HTML, or a Streamlit directive, emoji or formula. The
# underscore only emphasizes at a word boundary, so one inside a word (SNOWFLAKE_ACCOUNT) stays as it is;
# a colon only starts something (":red[", ":smile:", "http://") when something follows it directly.
_ALWAYS = re.compile(r"([\\`*\[\]()!<>#+|~${}&@^])")
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_COLON = re.compile(r":(?=\S)")
_WWW = re.compile(r"(?i)(www)\.")
# GitHub's autolinks are found in the text after escapes are resolved: a word joiner (U+2060, invisible)
# after the scheme or the @ keeps "http://x", "www.x" and "a@b.c" from becoming links
_AUTOLINK = re.compile(r"(?i)((?:https?|ftp)(?=\\?:)|www(?=\\?\.)|@(?=[-\w]))")
_LIST = re.compile(r"^(\d+)\.")


def literal(text: Any) -> str:
    """``text`` on one line, escaped so Streamlit's markdown shows it as written: no image, link, HTML,
    emphasis, colour, emoji or formula (an invisible word joiner follows a URL scheme or an @). For short
    text of ours or a driver's inside a markdown element; what users and agents wrote goes to code blocks
    and tables instead."""
    s = " ".join(str(text).split())
    s = _ALWAYS.sub(r"\\\1", s)
    s = _UNDERSCORE.sub(r"\\_", s)
    s = _COLON.sub(r"\\:", s)
    s = _WWW.sub(r"\1\\.", s)
    s = _AUTOLINK.sub("\\1\u2060", s)
    s = _LIST.sub(r"\1\\.", s)  # "1. x" would be a list item
    return "\\" + s if s[:1] in ("-", "=") else s  # "- x" a list item, "=" a heading underline
