"""Percentiles for sources that compute them in Python: vectorized, same definition as PERCENTILE_CONT.

:func:`percentiles` gives exactly :func:`agentmeter._percentile.percentile_cont` (linear interpolation
between the two nearest ranks), with numpy so a million values take milliseconds; the tests check the two
agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["QUANTILES", "grouped_percentiles", "percentiles"]

#: the quantiles every latency frame shows, as column name -> q
QUANTILES = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}


def percentiles(values: Any, qs: Sequence[float] = tuple(QUANTILES.values())) -> list[float | None]:
    """The ``qs`` quantiles of ``values`` (NaN and None ignored); None each when there are no values."""
    data = np.asarray(values, dtype="float64")
    data = data[~np.isnan(data)]
    if data.size == 0:
        return [None for _ in qs]
    return [float(v) for v in np.percentile(data, [q * 100 for q in qs], method="linear")]


def grouped_percentiles(
    codes: np.ndarray, values: np.ndarray, n_groups: int, qs: Sequence[float] = tuple(QUANTILES.values())
) -> np.ndarray:
    """Quantiles per group: ``codes[i]`` (0..n_groups-1) is the group of ``values[i]`` (no NaN).

    Returns an array of shape (n_groups, len(qs)), NaN for an empty group. One sort for all groups.
    """
    out = np.full((n_groups, len(qs)), np.nan)
    if values.size == 0:
        return out
    order = np.lexsort((values, codes))
    sorted_codes = codes[order]
    sorted_values = values[order]
    starts = np.searchsorted(sorted_codes, np.arange(n_groups), side="left")
    ends = np.searchsorted(sorted_codes, np.arange(n_groups), side="right")
    counts = ends - starts
    present = counts > 0
    for j, q in enumerate(qs):
        pos = (counts[present] - 1) * q
        lo = np.floor(pos).astype(np.int64)
        hi = np.ceil(pos).astype(np.int64)
        base = starts[present]
        vlo = sorted_values[base + lo]
        vhi = sorted_values[base + hi]
        out[present, j] = vlo + (vhi - vlo) * (pos - lo)
    return out
