"""The dashboard's five views. Each takes a Source and Filters and draws one page; queries go through
``cached`` so a rerun with the same filters does not query again (for ``CACHE_TTL`` seconds)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from ..queries.base import Filters, Source
from . import charts
from .format import fmt_count, fmt_ms, fmt_pct, fmt_usd

__all__ = ["VIEWS", "cached", "cached_agents", "kpi_strip"]

CACHE_TTL = 30


@st.cache_data(ttl=CACHE_TTL, show_spinner=False, max_entries=256)
def _query(_source: Source, source_key: str, method: str, f: Filters, args: tuple[Any, ...]) -> Any:
    return getattr(_source, method)(f, *args)


def cached(source: Source, method: str, f: Filters, *args: Any) -> Any:
    """``source.method(f, *args)``, cached per source, method, filters and arguments."""
    return _query(source, f"{source.kind}:{source.describe()}", method, f, args)


@st.cache_data(ttl=CACHE_TTL, show_spinner=False, max_entries=32)
def _agents(_source: Source, source_key: str) -> list[str]:
    return [str(a) for a in _source.agents()["agent"]]


def cached_agents(source: Source) -> list[str]:
    """Agent names for the filter (cached like the queries)."""
    return _agents(source, f"{source.kind}:{source.describe()}")


def _chart(chart: Any) -> None:
    st.altair_chart(chart, width="stretch")


def _table(df: pd.DataFrame, money: tuple[str, ...] = ("cost_usd",), ms: tuple[str, ...] = ()) -> None:
    config: dict[str, Any] = {c: st.column_config.NumberColumn(c, format="$%.6f") for c in money if c in df}
    config.update({c: st.column_config.NumberColumn(c, format="%.3f") for c in ms if c in df})
    st.dataframe(df, hide_index=True, column_config=config, width="stretch")


def _empty(df: pd.DataFrame, what: str) -> bool:
    if df.empty:
        st.caption(f"No {what} for these filters.")
        return True
    return False


def kpi_strip(source: Source, f: Filters) -> pd.Series:
    """The headline numbers shown above every view; returns the KPI row."""
    k = cached(source, "kpis", f).iloc[0]
    cols = st.columns(6)
    cols[0].metric("Runs", fmt_count(k["runs"]))
    cols[1].metric("Success rate", fmt_pct(k["success_rate"]))
    cols[2].metric("p95 latency", fmt_ms(k["p95_ms"]))
    cols[3].metric("Tokens", fmt_count(k["total_tokens"]))
    cols[4].metric("Cost", fmt_usd(k["cost_usd"]), help="sum of priced calls; unpriced calls are not in it")
    cols[5].metric("Unpriced calls", fmt_count(k["unpriced_calls"]))
    return k


def health(source: Source, f: Filters, bucket: str) -> None:
    k = kpi_strip(source, f)
    cols = st.columns(6)
    cols[0].metric("Errors", fmt_count(k["error_runs"]))
    cols[1].metric("Error rate", fmt_pct(k["error_rate"]))
    cols[2].metric("Cancelled", fmt_count(k["cancelled_runs"]))
    cols[3].metric("p50 latency", fmt_ms(k["p50_ms"]))
    cols[4].metric("p99 latency", fmt_ms(k["p99_ms"]))
    cols[5].metric("API calls", fmt_count(k["calls"]))
    df = cached(source, "status_over_time", f, bucket)
    if not _empty(df, "runs"):
        _chart(charts.stacked_over_time(df, "status", "runs", "Runs by status", status=True))
    st.subheader("Recent failures")
    fails = cached(source, "recent_failures", f, 20)
    if not _empty(fails, "failed runs"):
        _table(fails, ms=("duration_ms",))


def performance(source: Source, f: Filters, bucket: str) -> None:
    kpi_strip(source, f)
    lat = cached(source, "latency_over_time", f, bucket)
    if not _empty(lat, "finished runs"):
        _chart(charts.latency_lines(lat, "Run latency percentiles"))
    left, right = st.columns(2)
    with left:
        st.subheader("Step latency by step name")
        steps = cached(source, "step_latency", f)
        if not _empty(steps, "steps"):
            _chart(charts.bar(steps, "name", "p95_ms", "p95 step latency (ms)", ",.3f"))
            _table(steps, ms=("mean_ms", "p50_ms", "p95_ms", "p99_ms"))
    with right:
        st.subheader("API latency by provider and model")
        api = cached(source, "api_latency", f)
        if not _empty(api, "API calls"):
            api = api.assign(target=api["provider"] + " · " + api["model"].fillna("(none)"))
            _chart(charts.bar(api, "target", "p95_ms", "p95 API latency (ms)", ",.3f"))
            _table(api.drop(columns=["target"]), ms=("mean_ms", "p50_ms", "p95_ms", "p99_ms"))
    st.subheader("Slowest runs")
    slow = cached(source, "slowest_runs", f, 20)
    if not _empty(slow, "runs"):
        _table(slow, ms=("duration_ms",))


def usage(source: Source, f: Filters, bucket: str) -> None:
    kpi_strip(source, f)
    per_agent = cached(source, "runs_per_agent", f, bucket)
    if not _empty(per_agent, "runs"):
        _chart(charts.stacked_over_time(per_agent, "agent", "runs", "Runs per agent"))
    left, right = st.columns(2)
    with left:
        st.subheader("Calls by provider")
        prov = cached(source, "calls_by_provider", f)
        if not _empty(prov, "API calls"):
            _chart(charts.bar(prov, "provider", "calls", "API calls"))
            _table(prov)
    with right:
        st.subheader("Tokens by model")
        tok = cached(source, "tokens_by_model", f)
        if not _empty(tok, "API calls"):
            tok = tok.assign(target=tok["provider"] + " · " + tok["model"].fillna("(none)"))
            _chart(charts.bar(tok, "target", "total_tokens", "Tokens"))
            _table(tok.drop(columns=["target"]))


def cost(source: Source, f: Filters, bucket: str) -> None:
    k = kpi_strip(source, f)
    if k["unpriced_calls"]:
        st.warning(f"{fmt_count(k['unpriced_calls'])} API call(s) have no known price: the costs shown leave "
                   "them out. Add a price with configure(prices={...}) (see docs/dashboard.md).")
    over = cached(source, "cost_over_time", f, bucket)
    if not _empty(over, "API calls"):
        _chart(charts.stacked_over_time(over.assign(series="cost"), "series", "cost_usd", "Cost over time (USD)"))
    cols = st.columns(3)
    for col, method, label, title in (
        (cols[0], "cost_by_model", "model", "By model"),
        (cols[1], "cost_by_provider", "provider", "By provider"),
        (cols[2], "cost_by_agent", "agent", "By agent"),
    ):
        with col:
            st.subheader(title)
            df = cached(source, method, f)
            if not _empty(df, "API calls"):
                if method == "cost_by_model":
                    df = df.assign(model=df["provider"] + " · " + df["model"].fillna("(none)"))
                _chart(charts.bar(df, label, "cost_usd", f"Cost {title.lower()} (USD)", "$,.6f"))
                _table(df)
    st.subheader("Most expensive runs")
    exp = cached(source, "expensive_runs", f, 20)
    if not _empty(exp, "priced runs"):
        _table(exp, ms=("duration_ms",))
    st.subheader("Unpriced calls")
    unpriced = cached(source, "unpriced_calls", f)
    if not _empty(unpriced, "unpriced calls"):
        _table(unpriced)


def run_explorer(source: Source, f: Filters, bucket: str) -> None:
    prefix = st.text_input("Run id starts with", key="run_id_prefix", placeholder="e.g. 0199a3c2-")
    found = cached(source, "search_runs", f, prefix.strip(), 200)
    st.caption(f"{len(found)} run(s) match the filters" + (" (first 200)" if len(found) == 200 else ""))
    if found.empty:
        st.info("No run matches. Widen the time range, clear the agent or status filters, or check the id.")
        return
    _table(found, ms=("duration_ms",))
    labels = {
        r.run_id: f"{r.run_id} · {r.agent or '-'} · {r.status} · {r.started_at:%Y-%m-%d %H:%M:%S}"
        for r in found.itertuples()
    }
    run_id = st.selectbox("Run", list(labels), format_func=labels.__getitem__, key="run_pick")
    detail = source.run_detail(run_id) if run_id else None
    if detail is None:
        st.warning("That run is no longer in the store.")
        return
    run = detail.run.iloc[0]
    cols = st.columns(5)
    cols[0].metric("Status", str(run["status"]))
    cols[1].metric("Duration", fmt_ms(run["duration_ms"]))
    cols[2].metric("Steps · calls", f"{fmt_count(run['step_count'])} · {fmt_count(run['call_count'])}")
    cols[3].metric("Run tokens", fmt_count(run["total_tokens"]))
    cols[4].metric("Run cost", fmt_usd(run["cost_usd"]))
    if run["error_type"]:
        st.error(f"{run['error_type']}: {run['error_message']}")
    _chart(charts.waterfall(detail.steps, detail.calls, run["started_at"]))
    st.subheader("Steps")
    _table(detail.steps, ms=("duration_ms",))
    st.subheader("API calls")
    _table(detail.calls, ms=("duration_ms",))


VIEWS: dict[str, Callable[[Source, Filters, str], None]] = {
    "Health": health,
    "Performance": performance,
    "Usage": usage,
    "Cost": cost,
    "Run explorer": run_explorer,
}
