"""Every frame of the query interface computed in pandas from filtered rows of the three tables.

For sources that fetch (projected, filtered) rows and aggregate on the client: the MongoDB source, and a
reference implementation the tests hold the SQL sources against. Inputs are DataFrames of rows already
filtered as :class:`~agentmeter.queries.base.Filters` says; ISO strings for times.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from . import _kpis, base, derive
from ._stats import QUANTILES, percentiles
from .base import conform

__all__ = ["CALL_FIELDS", "RUN_FIELDS", "STEP_FIELDS", "Frames"]

RUN_FIELDS = ("run_id", "name", "agent", "status", "error_type", "error_message", "started_at", "duration_ms",
              "step_count", "call_count", "error_step_count", "error_call_count", "input_tokens",
              "output_tokens", "total_tokens", "cost_usd", "unpriced_call_count", "session_id", "user_id", "version",
              "tags", "models")
STEP_FIELDS = ("name", "status", "duration_ms")
CALL_FIELDS = ("provider", "operation", "model", "priced", "status", "input_tokens", "output_tokens",
               "total_tokens", "cost_usd", "duration_ms", "started_at", "cached_input_tokens", "cache_write_tokens")

_NULL = "\x00null"


def _bucket(started: pd.Series, bucket: str) -> pd.Series:
    text = started.astype(str)
    if bucket == "day":
        return text.str.slice(0, 10) + "T00:00:00Z"
    return text.str.slice(0, 13) + ":00:00Z" if bucket == "hour" else text.str.slice(0, 16) + ":00Z"


def _sort(df: pd.DataFrame, keys: Sequence[tuple[str, bool]]) -> pd.DataFrame:
    """SQL-like ORDER BY: ascending keys put nulls first, descending keys put nulls (NaN) last."""
    if df.empty:
        return df
    tmp = df.copy()
    by: list[str] = []
    asc: list[bool] = []
    for i, (col, ascending) in enumerate(keys):
        flag = f"_n{i}"
        tmp[flag] = tmp[col].notna() if ascending else tmp[col].isna()
        by += [flag, col]
        asc += [True, ascending]
    tmp = tmp.sort_values(by, ascending=asc, kind="mergesort", na_position="last")
    return tmp.drop(columns=[f"_n{i}" for i in range(len(keys))]).reset_index(drop=True)


def _groups(df: pd.DataFrame, keys: Sequence[str]) -> pd.core.groupby.DataFrameGroupBy:
    filled = df.assign(**{k: df[k].astype(object).where(df[k].notna(), _NULL) for k in keys})
    return filled.groupby(list(keys), sort=False)


def _unnull(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    return df.assign(**{k: df[k].astype(object).where(df[k] != _NULL, None) for k in keys})


class Frames:
    """The frames of one filtered selection: ``runs``, ``steps`` and ``calls`` rows."""

    def __init__(self, runs: pd.DataFrame, steps: pd.DataFrame, calls: pd.DataFrame) -> None:
        self.runs = runs.reindex(columns=list(RUN_FIELDS))
        self.steps = steps.reindex(columns=list(STEP_FIELDS))
        self.calls = calls.reindex(columns=list(CALL_FIELDS))
        for df, cols in ((self.runs, ("duration_ms", "cost_usd")), (self.steps, ("duration_ms",)),
                         (self.calls, ("duration_ms", "cost_usd"))):
            for c in cols:
                df[c] = pd.to_numeric(df[c], errors="coerce")

    @staticmethod
    def _kpi_row(r: pd.DataFrame) -> dict[str, object]:
        """:mod:`._kpis`' definitions over the run rows ``r``."""
        measured = [len(r), *((r["status"] == status).sum() for _, status in _kpis.STATUS_COUNTS),
                    *(pd.to_numeric(r[column], errors="coerce").fillna(0).sum() for _, column in _kpis.SUMS),
                    r["started_at"].min() if len(r) else None, r["started_at"].max() if len(r) else None]
        return _kpis.finish(measured, percentiles(r["duration_ms"].to_numpy(dtype="float64")))

    def kpis(self) -> pd.DataFrame:
        return conform([self._kpi_row(self.runs)], base.KPIS)

    def agent_kpis(self) -> pd.DataFrame:
        rows = [{"agent": key[0] if isinstance(key, tuple) else key, **self._kpi_row(g)}
                for key, g in _groups(self.runs, ["agent"])]
        out = _unnull(pd.DataFrame(rows, columns=_names(base.AGENT_KPIS)), ["agent"])
        return conform(_sort(out, [("agent", True)]), base.AGENT_KPIS)

    def status_over_time(self, bucket: str) -> pd.DataFrame:
        r = self.runs.assign(bucket=_bucket(self.runs["started_at"], bucket))
        g = r.groupby(["bucket", "status"], as_index=False).size().rename(columns={"size": "runs"})
        return conform(_sort(g, [("bucket", True), ("status", True)]), base.STATUS_OVER_TIME)

    def latency_over_time(self, bucket: str) -> pd.DataFrame:
        r = self.runs[self.runs["duration_ms"].notna()]
        r = r.assign(bucket=_bucket(r["started_at"], bucket))
        rows = [{"bucket": b, "runs": len(g), **dict(zip(QUANTILES, percentiles(g["duration_ms"]), strict=True))}
                for b, g in r.groupby("bucket", sort=True)]
        return conform(rows or pd.DataFrame(columns=_names(base.LATENCY_OVER_TIME)), base.LATENCY_OVER_TIME)

    def _latency(self, df: pd.DataFrame, keys: list[str], count: str, spec: base.Spec) -> pd.DataFrame:
        rows = []
        for key, g in _groups(df, keys):
            key = key if isinstance(key, tuple) else (key,)
            rows.append({**dict(zip(keys, key, strict=True)), count: len(g),
                         "errors": int((g["status"] == "error").sum()), "mean_ms": g["duration_ms"].mean(),
                         **dict(zip(QUANTILES, percentiles(g["duration_ms"]), strict=True))})
        out = _unnull(pd.DataFrame(rows, columns=[*keys, count, "errors", "mean_ms", *QUANTILES]), keys)
        return conform(_sort(out, [("p95_ms", False), *[(k, True) for k in keys]]), spec)

    def step_errors(self) -> pd.DataFrame:
        s = self.steps.assign(errors=(self.steps["status"] == "error").astype(int))
        g = _groups(s, ["name"]).agg(steps=("status", "size"), errors=("errors", "sum")).reset_index() if len(
            s) else pd.DataFrame(columns=_names(base.STEP_ERRORS))
        out = _unnull(g, ["name"])
        return conform(_sort(out, [("errors", False), ("name", True)]), base.STEP_ERRORS)

    def call_errors(self) -> pd.DataFrame:
        return derive.call_errors(self.calls_summary())

    def step_latency(self) -> pd.DataFrame:
        return self._latency(self.steps, ["name"], "steps", base.STEP_LATENCY)

    def api_latency(self) -> pd.DataFrame:
        return self._latency(self.calls, ["provider", "model"], "calls", base.API_LATENCY)

    def _top(self, df: pd.DataFrame, col: str, limit: int, spec: base.Spec) -> pd.DataFrame:
        rows = _sort(df[df[col].notna()], [(col, False), ("run_id", True)]).head(limit)
        return conform(rows, spec)

    def slowest_runs(self, limit: int) -> pd.DataFrame:
        return self._top(self.runs, "duration_ms", limit, base.SLOWEST_RUNS)

    def expensive_runs(self, limit: int) -> pd.DataFrame:
        return self._top(self.runs, "cost_usd", limit, base.EXPENSIVE_RUNS)

    def recent_failures(self, limit: int) -> pd.DataFrame:
        r = self.runs[self.runs["status"] == "error"]
        return conform(_sort(r, [("started_at", False), ("run_id", True)]).head(limit), base.RECENT_FAILURES)

    def runs_per_agent(self, bucket: str) -> pd.DataFrame:
        r = self.runs.assign(bucket=_bucket(self.runs["started_at"], bucket))
        g = _unnull(_groups(r, ["bucket", "agent"]).size().reset_index(name="runs"), ["agent"])
        return conform(_sort(g, [("bucket", True), ("agent", True)]), base.RUNS_PER_AGENT)

    @staticmethod
    def _run_sums(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        if runs.empty:
            return pd.DataFrame(columns=[*keys, "runs", "calls", "cost_usd", "unpriced_calls"])
        r = runs.assign(
            calls=pd.to_numeric(runs["call_count"], errors="coerce").fillna(0),
            cost=runs["cost_usd"].fillna(0),
            unpriced=pd.to_numeric(runs["unpriced_call_count"], errors="coerce").fillna(0),
        )
        g = _groups(r, keys).agg(runs=("run_id", "size"), calls=("calls", "sum"), cost_usd=("cost", "sum"),
                                 unpriced_calls=("unpriced", "sum")).reset_index()
        return _unnull(g, keys)

    def cost_over_time(self, bucket: str) -> pd.DataFrame:
        r = self.runs.assign(bucket=_bucket(self.runs["started_at"], bucket))
        return conform(_sort(self._run_sums(r, ["bucket"]), [("bucket", True)]), base.COST_OVER_TIME)

    def cost_by_agent(self) -> pd.DataFrame:
        sums = self._run_sums(self.runs, ["agent"])
        return conform(_sort(sums, [("cost_usd", False), ("agent", True)]), base.COST_BY_AGENT)

    def calls_summary(self) -> pd.DataFrame:
        c = self.calls.assign(
            priced=self.calls["priced"].fillna(False).astype(bool),
            errors=(self.calls["status"] == "error").astype(int),
            **{k: pd.to_numeric(self.calls[k], errors="coerce").fillna(0)
               for k in ("input_tokens", "output_tokens", "total_tokens", "cost_usd")},
        )
        keys = ["provider", "operation", "model", "priced"]
        g = _groups(c, keys).agg(
            calls=("status", "size"), errors=("errors", "sum"), input_tokens=("input_tokens", "sum"),
            output_tokens=("output_tokens", "sum"), total_tokens=("total_tokens", "sum"),
            cost_usd=("cost_usd", "sum"), last_seen=("started_at", "max"),
        ).reset_index() if len(c) else pd.DataFrame(columns=_names(base.CALLS_SUMMARY))
        return conform(_unnull(g, keys), base.CALLS_SUMMARY)

    def cache_tokens(self) -> pd.DataFrame:
        if self.calls.empty:
            return conform([], base.CACHE_TOKENS)
        c = self.calls.assign(**{k: pd.to_numeric(self.calls[k], errors="coerce").fillna(0)
                                 for k in ("cached_input_tokens", "cache_write_tokens")})
        g = _groups(c, ["provider", "model"]).agg(
            calls=("status", "size"), cached_input_tokens=("cached_input_tokens", "sum"),
            cache_write_tokens=("cache_write_tokens", "sum")).reset_index()
        out = _unnull(g, ["provider", "model"])
        out = out[(out["cached_input_tokens"] + out["cache_write_tokens"]) > 0]
        return conform(_sort(out, [("provider", True), ("model", True)]), base.CACHE_TOKENS)

    def calls_by_provider(self) -> pd.DataFrame:
        return derive.calls_by_provider(self.calls_summary())

    def tokens_by_model(self) -> pd.DataFrame:
        return derive.tokens_by_model(self.calls_summary())

    def cost_by_model(self) -> pd.DataFrame:
        return derive.cost_by_model(self.calls_summary())

    def cost_by_provider(self) -> pd.DataFrame:
        return derive.cost_by_provider(self.calls_summary())

    def unpriced_calls(self) -> pd.DataFrame:
        return derive.unpriced_calls(self.calls_summary())

    def _matching(self, prefix: str) -> pd.DataFrame:
        r = self.runs
        return r[r["run_id"].astype(str).str.startswith(prefix)] if prefix else r

    def search_runs(self, prefix: str, limit: int, order: str = "newest") -> pd.DataFrame:
        r = self._matching(prefix)
        keys = base.check_order(order)
        if r.empty:
            return conform(r, base.RUN_SEARCH)
        rank = {"error": 0, "cancelled": 1, "success": 2}
        tmp = r.assign(status_rank=r["status"].map(rank), first_model=r["models"].map(_first_model),
                       first_tag=r["tags"].map(_first_tag))
        by: list[str] = []
        asc: list[bool] = []
        for i, (key, ascending) in enumerate(keys):  # nulls last either way, as the SQL sources sort
            tmp[f"_n{i}"] = tmp[key].isna()
            by += [f"_n{i}", key]
            asc += [True, ascending]
        ordered = tmp.sort_values(by, ascending=asc, kind="mergesort").head(limit).reset_index(drop=True)
        return conform(ordered, base.RUN_SEARCH)

    def count_runs(self, prefix: str) -> int:
        return len(self._matching(prefix))


def _first_model(models: Any) -> str | None:
    """The smallest model name among a run's calls (None without one), as the SQL sources sort by model."""
    names = [m for m in models if isinstance(m, str)] if isinstance(models, (list, tuple)) else []
    return min(names) if names else None


def _first_tag(tags: Any) -> str | None:
    if isinstance(tags, str):  # JSON text
        tags = json.loads(tags)
    return str(tags[0]) if isinstance(tags, (list, tuple)) and tags else None


def _names(spec: base.Spec) -> list[str]:
    return [n for n, _ in spec]
