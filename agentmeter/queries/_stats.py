"""Percentiles for sources that compute them in Python: vectorized, same definition as PERCENTILE_CONT.

:func:`percentiles` gives exactly :func:`agentmeter._percentile.percentile_cont` (linear interpolation
between the two nearest ranks), with numpy so a million values take milliseconds; the tests check the two
agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["QUANTILES", "percentiles"]

#: the quantiles every latency frame shows, as column name -> q
QUANTILES = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}


def percentiles(values: Any, qs: Sequence[float] = tuple(QUANTILES.values())) -> list[float | None]:
    """The ``qs`` quantiles of ``values`` (NaN and None ignored); None each when there are no values."""
    data = np.asarray(values, dtype="float64")
    data = data[~np.isnan(data)]
    if data.size == 0:
        return [None for _ in qs]
    return [float(v) for v in np.percentile(data, [q * 100 for q in qs], method="linear")]
