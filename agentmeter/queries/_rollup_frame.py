""":func:`agentmeter.queries.rollups.rollup` vectorized: the same rows as
:func:`~agentmeter.queries.rollups.rollup_rows` (the pure-Python definition the CLI's report uses), grouped
with pandas and numpy instead of a Python loop over the runs and their groups (100,000 runs in 18,000
sessions: about half the time; most of what is left is turning object columns into arrays). The tests
compare the two on random runs.

Same meaning, value by value: a count or an integer sum counts None/NaN as 0 (each value cut to an integer
first, as ``int()`` does); ``p50_ms``/``p95_ms`` are PERCENTILE_CONT of the group's known durations, computed
with the exact arithmetic of :func:`agentmeter._percentile.percentile_cont`; ``scores``/``mean_score`` count
and average every value of the group's runs. Sums of floats may differ from Python's ``sum`` in the last bits
(another order of additions). Integer sums that could pass 64 bits are left to the Python definition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["columns_frame", "records_frame", "rollup_frame"]

#: integer fields summed per group (DIMENSION_FIELDS name -> ROLLUP column)
_INT_SUMS = (("call_count", "calls"), ("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
             ("total_tokens", "total_tokens"), ("unpriced_call_count", "unpriced_calls"))
#: a group's integer sums stay exact in int64 below this
_SAFE = 2**62


def columns_frame(rows: Sequence[Sequence[Any]], fields: Sequence[str]) -> pd.DataFrame:
    """A frame of object columns named ``fields`` from row tuples (a driver's rows), in one 2-D object array:
    no per-value type inference (pandas would make every text column an Arrow string array, 3x slower)."""
    if not rows:
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in fields})
    grid = np.empty((len(rows), len(fields)), dtype=object)
    grid[:] = rows
    return pd.DataFrame(grid, columns=list(fields), dtype=object)


def records_frame(records: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> pd.DataFrame:
    """:func:`columns_frame` of dicts (a ``KeyError`` for a missing field, as reading it would raise)."""
    pick = itemgetter(*fields)
    return columns_frame([pick(r) for r in records], fields)


def _bucket_of(day: str, period: str) -> str:
    """The bucket of a run started on ``day`` (``YYYY-MM-DD``), as rollup_rows writes it."""
    if period == "day":
        return day + "T00:00:00Z"
    if period == "month":
        return day[:7] + "-01T00:00:00Z"
    d = date.fromisoformat(day)
    return (d - timedelta(days=d.weekday())).isoformat() + "T00:00:00Z"


def _text(col: pd.Series) -> np.ndarray:
    """The values as an object array with None for every null (None, NaN, NA)."""
    values: np.ndarray = col.to_numpy(dtype=object, na_value=None)
    return values


def _codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """(a code per value, null included as a value of its own; the number of codes)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes.astype(np.int64), len(uniques)


def _floats(col: pd.Series) -> np.ndarray | None:
    """``float(value)`` of each value (NaN for null), or None when a value is not a number."""
    try:
        values: np.ndarray = np.array(col.to_numpy(dtype=object), dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    return values


def _ints(col: pd.Series) -> np.ndarray | None:
    """``int(float(value))`` of each value (0 for null), as rollup_rows sums them, in int64; None when a value
    is not a number or a group's sum could pass 64 bits."""
    values = _floats(col)
    if values is None:
        return None
    values = np.where(np.isnan(values), 0.0, values)
    if values.size and float(np.abs(values).max()) * values.size >= _SAFE:
        return None
    exact: np.ndarray = np.trunc(values).astype(np.int64)
    return exact


def _percentile(codes: np.ndarray, values: np.ndarray, groups: int, q: float) -> np.ndarray:
    """PERCENTILE_CONT ``q`` of ``values`` per group code (NaN for a group without values), in the arithmetic
    of ``percentile_cont``: ``data[lo] + (data[hi] - data[lo]) * (pos - lo)``, ``pos = (n - 1) * q``."""
    out = np.full(groups, np.nan)
    known = ~np.isnan(values)
    codes, values = codes[known], values[known]
    if not values.size:
        return out
    order = np.lexsort((values, codes))
    codes, values = codes[order], values[order]
    counts = np.bincount(codes, minlength=groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    has = counts > 0
    n, start = counts[has], starts[has]
    pos = (n - 1) * q
    lo = np.floor(pos)
    hi = np.ceil(pos)
    low = values[start + lo.astype(np.int64)]
    high = values[start + hi.astype(np.int64)]
    out[has] = np.where(lo == hi, low, low + (high - low) * (pos - lo))
    return out


def rollup_frame(runs: pd.DataFrame, scores: Iterable[tuple[str, float]], column: str,
                 period: str | None) -> pd.DataFrame | None:
    """The rows of rollup_rows for ``runs`` grouped by ``column`` (and ``period``), in its order and with the
    columns of :data:`~agentmeter.queries.rollups.ROLLUP` (not yet conformed); None when the runs hold
    something only the Python definition handles (see the module docstring)."""
    n = len(runs)
    ints = {out: _ints(runs[name]) for name, out in _INT_SUMS}
    durations, costs = _floats(runs["duration_ms"]), _floats(runs["cost_usd"])
    if n == 0 or durations is None or costs is None or any(v is None for v in ints.values()):
        return None
    costs = np.where(np.isnan(costs), 0.0, costs)
    keys = _text(runs[column])
    if period is None:
        buckets = np.full(n, None, dtype=object)
    else:
        started = _text(runs["started_at"])
        if not all(v is None or isinstance(v, str) for v in pd.unique(started)):
            return None
        table = {v: _bucket_of(v[:10], period) for v in {d[:10] for d in pd.unique(started) if d}}
        buckets = np.array([table[v[:10]] if v else None for v in started], dtype=object)
    key_codes, nk = _codes(keys)
    bucket_codes, _ = _codes(buckets)
    codes, g = _codes(bucket_codes * nk + key_codes)  # in order of first appearance
    firsts = np.unique(codes, return_index=True)[1]  # each group's first run, by group code
    status = _text(runs["status"])
    count = np.bincount(codes, minlength=g)
    ok = np.bincount(codes, weights=(status == "success"), minlength=g).astype(np.int64)
    out: dict[str, Any] = {
        "bucket": buckets[firsts], "key": keys[firsts], "runs": count, "success_runs": ok,
        "error_runs": np.bincount(codes, weights=(status == "error"), minlength=g).astype(np.int64),
        "success_rate": ok / count,
        "p50_ms": _percentile(codes, durations, g, 0.5), "p95_ms": _percentile(codes, durations, g, 0.95),
    }
    for name, values in ints.items():
        out[name] = np.zeros(g, dtype=np.int64)
        if values is not None:  # never None here (checked above)
            np.add.at(out[name], codes, values)
    out["cost_usd"] = np.bincount(codes, weights=costs, minlength=g)
    for name, field in (("sessions", "session_id"), ("users", "user_id")):  # distinct non-null ids per group
        values = _text(runs[field])
        ids, m = _codes(values)
        known = pd.notna(values)
        out[name] = np.bincount(np.unique(codes[known] * m + ids[known]) // m, minlength=g).astype(np.int64)
    # scores: every value of each run of the group
    given = list(scores)
    score_n: np.ndarray = np.zeros(g, dtype=np.int64)
    score_sum: np.ndarray = np.zeros(g)
    run_ids = pd.Index(_text(runs["run_id"]))
    if given and not run_ids.is_unique:  # a run listed twice: its scores count twice, as rollup_rows does
        return None
    if given:
        where = run_ids.get_indexer([r for r, _ in given])
        values = np.array([v for _, v in given], dtype=np.float64)
        scored = where >= 0
        score_n = np.bincount(codes[where[scored]], minlength=g).astype(np.int64)
        score_sum = np.bincount(codes[where[scored]], weights=values[scored], minlength=g)
    out["scores"] = score_n
    with np.errstate(divide="ignore", invalid="ignore"):
        out["mean_score"] = np.where(score_n > 0, score_sum / np.maximum(score_n, 1), np.nan)
    order = sorted(range(g), key=lambda i: (out["bucket"][i] is not None, out["bucket"][i] or "",
                                            out["key"][i] is not None, out["key"][i] or ""))
    return pd.DataFrame(out).iloc[order].reset_index(drop=True)
