""":func:`agentmeter.queries.rollups.rollup` vectorized: the same rows as
:func:`~agentmeter.queries.rollups.rollup_rows` (the pure-Python definition the CLI's report uses), grouped
with pandas and numpy, so 100,000 runs in 20,000 sessions take tens of milliseconds instead of most of a
second. The tests compare the two on random runs.

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
    """A frame of object columns named ``fields`` from row tuples (a driver's rows), built column by column:
    no per-value type inference (pandas would make every text column an Arrow string array, 3x slower)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in fields]
    return pd.DataFrame({name: pd.Series(col, dtype=object) for name, col in zip(fields, columns, strict=True)})


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


def _text(col: pd.Series) -> pd.Series:
    """Object values with None for every null (None, NaN, NA)."""
    values = col.astype(object)
    return values.where(values.notna(), None)


def _ints(col: pd.Series) -> np.ndarray | None:
    """``int(float(value))`` of each value (0 for null), as rollup_rows sums them, in int64; None when a value
    is not a number or a group's sum could pass 64 bits."""
    try:
        values = pd.to_numeric(col, errors="raise").astype("float64").fillna(0.0).to_numpy()
    except (TypeError, ValueError, OverflowError):
        return None
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
    try:
        durations = pd.to_numeric(runs["duration_ms"], errors="raise").astype("float64").to_numpy()
        costs = pd.to_numeric(runs["cost_usd"], errors="raise").astype("float64").fillna(0.0).to_numpy()
    except (TypeError, ValueError, OverflowError):
        return None
    if n == 0 or any(v is None for v in ints.values()):
        return None
    keys = _text(runs[column])
    if period is None:
        buckets = pd.Series([None] * n, index=runs.index, dtype=object)
    else:
        started = _text(runs["started_at"])
        if pd.api.types.infer_dtype(started, skipna=True) not in ("string", "empty"):
            return None
        days = started.where(started.ne(""), None).str[:10]
        buckets = _text(days.map({d: _bucket_of(d, period) for d in days.dropna().unique()}))
    codes = pd.DataFrame({"b": buckets, "k": keys}).groupby(["b", "k"], dropna=False, sort=False).ngroup().to_numpy()
    firsts = np.unique(codes, return_index=True)[1]  # each group's first run, by group code
    g = len(firsts)
    status = _text(runs["status"]).to_numpy()
    count = np.bincount(codes, minlength=g)
    ok = np.bincount(codes, weights=(status == "success"), minlength=g).astype(np.int64)
    out: dict[str, Any] = {
        "bucket": buckets.to_numpy()[firsts], "key": keys.to_numpy()[firsts], "runs": count, "success_runs": ok,
        "error_runs": np.bincount(codes, weights=(status == "error"), minlength=g).astype(np.int64),
        "success_rate": ok / count,
        "p50_ms": _percentile(codes, durations, g, 0.5), "p95_ms": _percentile(codes, durations, g, 0.95),
    }
    for name, values in ints.items():
        out[name] = np.zeros(g, dtype=np.int64)
        if values is not None:  # never None here (checked above)
            np.add.at(out[name], codes, values)
    out["cost_usd"] = np.bincount(codes, weights=costs, minlength=g)
    ids = pd.DataFrame({"code": codes, "sessions": _text(runs["session_id"]).to_numpy(),
                        "users": _text(runs["user_id"]).to_numpy()})
    distinct = ids.groupby("code").nunique(dropna=True).reindex(range(g), fill_value=0)
    out["sessions"], out["users"] = distinct["sessions"].to_numpy(), distinct["users"].to_numpy()
    # scores: every value of each run, counted and summed per run, then per group
    given = pd.DataFrame(list(scores), columns=["run_id", "value"])
    score_n: np.ndarray = np.zeros(g, dtype=np.int64)
    score_sum: np.ndarray = np.zeros(g)
    if len(given):
        per_run = given.groupby("run_id")["value"].agg(["count", "sum"]).reindex(_text(runs["run_id"]).to_numpy())
        score_n = np.bincount(codes, weights=per_run["count"].fillna(0).to_numpy(), minlength=g).astype(np.int64)
        score_sum = np.bincount(codes, weights=per_run["sum"].fillna(0.0).to_numpy(), minlength=g)
    out["scores"] = score_n
    with np.errstate(divide="ignore", invalid="ignore"):
        out["mean_score"] = np.where(score_n > 0, score_sum / np.maximum(score_n, 1), np.nan)
    order = sorted(range(g), key=lambda i: (out["bucket"][i] is not None, out["bucket"][i] or "",
                                            out["key"][i] is not None, out["key"][i] or ""))
    return pd.DataFrame(out).iloc[order].reset_index(drop=True)
