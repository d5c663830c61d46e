"""How the dashboard writes numbers. Pure functions; every one accepts None/NaN and returns "-" for it."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fmt_count", "fmt_ms", "fmt_pct", "fmt_usd", "is_missing"]


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(math.isnan(float(value)))
    except (TypeError, ValueError):
        return False


def fmt_count(value: Any) -> str:
    """``12,345``."""
    return "-" if is_missing(value) else f"{round(float(value)):,}"


def fmt_pct(value: Any) -> str:
    """A fraction 0..1 as ``87.50%``."""
    return "-" if is_missing(value) else f"{float(value) * 100:.2f}%"


def fmt_ms(value: Any) -> str:
    """Milliseconds to about four significant digits, so a metric tile is never cut off: ``0.036 ms``,
    ``32.14 ms``, ``329.7 ms``, ``1,234.5 ms``; from ten seconds on, ``12.35 s``."""
    if is_missing(value):
        return "-"
    v = float(value)
    if v >= 10_000:
        return f"{v / 1000:,.2f} s"
    decimals = 3 if v < 10 else 2 if v < 100 else 1
    return f"{v:,.{decimals}f} ms"


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
