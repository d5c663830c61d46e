"""Percentiles with one definition everywhere: linear interpolation, as SQL's PERCENTILE_CONT."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["percentile_cont"]


def percentile_cont(values: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation; None for no values."""
    data = sorted(v for v in values if v is not None and not math.isnan(v))
    if not data:
        return None
    pos = (len(data) - 1) * q
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(data[lo])
    return float(data[lo] + (data[hi] - data[lo]) * (pos - lo))
