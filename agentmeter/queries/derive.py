"""The call views derived from one :data:`~agentmeter.queries.base.CALLS_SUMMARY` frame, in pandas.

A source that can produce the summary with one scan of ``api_calls`` gets five views for the price of
one query. Pure functions: they never modify their argument and never raise on an empty frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from . import base
from .base import conform

_NULL = "\x00null"  # stands for a null key while grouping

__all__ = ["call_errors", "calls_by_provider", "cost_by_model", "cost_by_provider", "tokens_by_model",
           "unpriced_calls"]


def _group(summary: pd.DataFrame, keys: Sequence[str], sums: Sequence[str], maxes: Sequence[str] = ()) -> pd.DataFrame:
    df = summary.assign(unpriced_calls=summary["calls"].where(~summary["priced"].astype(bool), 0))
    filled = df.assign(**{k: df[k].astype(object).fillna(_NULL) for k in keys})  # groupby drops None keys
    agg = {**{c: "sum" for c in sums}, **{c: "max" for c in maxes}}
    out = filled.groupby(list(keys), sort=False, as_index=False).agg(agg) if len(filled) else filled[
        [*keys, *sums, *maxes]]
    for k in keys:
        out[k] = out[k].astype(object).where(out[k] != _NULL, None)
    return out


def _order(df: pd.DataFrame, first: str, keys: Sequence[str], spec: base.Spec) -> pd.DataFrame:
    """Sort by ``first`` descending, then ``keys`` ascending with nulls first (as SQL NULLS FIRST)."""
    if df.empty:
        return conform(df, spec)
    tmp = df.assign(**{f"_null_{k}": df[k].notna() for k in keys})
    by = [first] + [c for k in keys for c in (f"_null_{k}", k)]
    tmp = tmp.sort_values(by, ascending=[False] + [True] * (2 * len(keys)), kind="mergesort", na_position="first")
    return conform(tmp.reset_index(drop=True), spec)


def calls_by_provider(summary: pd.DataFrame) -> pd.DataFrame:
    """:data:`~agentmeter.queries.base.CALLS_BY_PROVIDER`."""
    g = _group(summary, ["provider"], ["calls", "errors", "total_tokens", "cost_usd"])
    return _order(g, "calls", ["provider"], base.CALLS_BY_PROVIDER)


def call_errors(summary: pd.DataFrame) -> pd.DataFrame:
    """:data:`~agentmeter.queries.base.CALL_ERRORS`."""
    g = _group(summary, ["provider", "model"], ["calls", "errors"])
    return _order(g, "errors", ["provider", "model"], base.CALL_ERRORS)


def tokens_by_model(summary: pd.DataFrame) -> pd.DataFrame:
    """:data:`~agentmeter.queries.base.TOKENS_BY_MODEL`."""
    g = _group(summary, ["provider", "model"], ["calls", "input_tokens", "output_tokens", "total_tokens"])
    return _order(g, "total_tokens", ["provider", "model"], base.TOKENS_BY_MODEL)


def cost_by_model(summary: pd.DataFrame) -> pd.DataFrame:
    """:data:`~agentmeter.queries.base.COST_BY_MODEL`."""
    g = _group(summary, ["provider", "model"], ["calls", "cost_usd", "unpriced_calls"])
    return _order(g, "cost_usd", ["provider", "model"], base.COST_BY_MODEL)


def cost_by_provider(summary: pd.DataFrame) -> pd.DataFrame:
    """:data:`~agentmeter.queries.base.COST_BY_PROVIDER`."""
    g = _group(summary, ["provider"], ["calls", "cost_usd", "unpriced_calls"])
    return _order(g, "cost_usd", ["provider"], base.COST_BY_PROVIDER)


def unpriced_calls(summary: pd.DataFrame) -> pd.DataFrame:
    """:data:`~agentmeter.queries.base.UNPRICED_CALLS`."""
    keys = ["provider", "operation", "model"]
    g = _group(summary[~summary["priced"].astype(bool)], keys, ["calls", "total_tokens"], ["last_seen"])
    return _order(g, "calls", keys, base.UNPRICED_CALLS)
