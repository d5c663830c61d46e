"""The dashboard's five views. Each takes a Source, Filters and a time bucket and draws one page; queries go
through ``cached`` so a rerun with the same filters does not query again (for ``CACHE_TTL`` seconds).

User text (names, error messages, tags, metadata, captured values) goes only to tables, charts, code blocks
and option lists, which Streamlit shows as text, or through :func:`~.format.literal` into markdown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from ..queries.base import Filters, Source
from . import charts, drill
from .format import (
    fmt_count,
    fmt_ms,
    fmt_pct,
    fmt_usd,
)
from .sections import lazy_tabs
from .table import table as _table

__all__ = ["RUN_TABLE_ROWS", "VIEWS", "cached", "cached_agents", "cached_values", "kpi_strip"]

CACHE_TTL = 30
#: runs listed in Health's recent failures, Performance's slowest and Cost's most expensive runs
RUN_TABLE_ROWS = 20
#: characters of one captured value shown (the store keeps up to ``capture_max_chars``)
CAPTURE_SHOWN = 20_000


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


@st.cache_data(ttl=CACHE_TTL, show_spinner=False, max_entries=64)
def _values(_source: Source, source_key: str, name: str) -> list[str]:
    return _source.filter_values(name)


def cached_values(source: Source, name: str) -> list[str]:
    """The values a sidebar filter offers (:meth:`Source.filter_values`, cached like the queries)."""
    return _values(source, f"{source.kind}:{source.describe()}", name)


def _chart(chart: Any) -> None:
    st.altair_chart(chart, width="stretch")


def _empty(df: pd.DataFrame, what: str) -> bool:
    if df.empty:
        st.caption(f"No {what} for these filters.")
        return True
    return False


def _target(df: pd.DataFrame) -> pd.Series:
    """``provider · model`` labels."""
    return df["provider"].fillna("(none)") + " · " + df["model"].fillna("(none)")


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


def _errors_table(df: pd.DataFrame, label: str, count: str) -> pd.DataFrame:
    """Groups with at least one error, most errors first, with their error rate."""
    out = df[df["errors"] > 0].assign(error_rate=lambda d: d["errors"] / d[count])
    return out.sort_values(["errors", label], ascending=[False, True], kind="mergesort")[
        [label, count, "errors", "error_rate"]]


def health(source: Source, f: Filters, bucket: str) -> None:
    k = kpi_strip(source, f)
    cols = st.columns(6)
    cols[0].metric("Error rate", fmt_pct(k["error_rate"]),
                   help=f"{fmt_count(k['error_runs'])} of {fmt_count(k['runs'])} runs ended with an error")
    cols[1].metric("Step error rate", fmt_pct(k["step_error_rate"]),
                   help=f"{fmt_count(k['error_steps'])} of {fmt_count(k['steps'])} steps ended with an error")
    cols[2].metric("Call error rate", fmt_pct(k["call_error_rate"]),
                   help=f"{fmt_count(k['error_calls'])} of {fmt_count(k['calls'])} API calls failed")
    cols[3].metric("Cancelled", fmt_count(k["cancelled_runs"]))
    cols[4].metric("p50 latency", fmt_ms(k["p50_ms"]))
    cols[5].metric("p99 latency", fmt_ms(k["p99_ms"]))
    st.caption(f"Failed: {fmt_count(k['error_runs'])} runs, {fmt_count(k['error_steps'])} steps, "
               f"{fmt_count(k['error_calls'])} API calls (of {fmt_count(k['runs'])} runs, "
               f"{fmt_count(k['steps'])} steps, {fmt_count(k['calls'])} calls).")
    df = cached(source, "status_over_time", f, bucket)
    if not _empty(df, "runs"):
        drill.chart(charts.stacked_over_time(df, "status", "runs", "Runs by status", status=True, bucket=bucket,
                                             select=True, brush=True),
                    key="health_status", filter_key="statuses", field="status", brush=True)

    def failures() -> None:
        fails = cached(source, "recent_failures", f, RUN_TABLE_ROWS)
        if not _empty(fails, "failed runs"):
            drill.run_table(fails, "recent_failures")

    def by_step() -> None:
        steps = _errors_table(cached(source, "step_errors", f), "name", "steps")
        if not _empty(steps, "failed steps"):
            _table(steps)

    def by_model() -> None:
        api = cached(source, "call_errors", f)
        api = _errors_table(api.assign(model=_target(api)), "model", "calls")
        if not _empty(api, "failed API calls"):
            _table(api)

    lazy_tabs("health_section", {"Recent failures": failures, "Errors by step": by_step,
                                 "Errors by provider and model": by_model})


def performance(source: Source, f: Filters, bucket: str) -> None:
    kpi_strip(source, f)
    lat = cached(source, "latency_over_time", f, bucket)
    if not _empty(lat, "finished runs"):
        drill.chart(charts.latency_lines(lat, "Run latency percentiles", bucket=bucket, brush=True),
                    key="performance_latency", brush=True)

    def slowest() -> None:
        slow = cached(source, "slowest_runs", f, RUN_TABLE_ROWS)
        if not _empty(slow, "runs"):
            drill.run_table(slow, "slowest_runs")

    def by_step() -> None:
        steps = cached(source, "step_latency", f)
        if not _empty(steps, "steps"):
            _chart(charts.bar(steps, "name", "p95_ms", "p95 step latency", label_title="Step"))
            _table(steps)

    def by_model() -> None:
        api = cached(source, "api_latency", f)
        if not _empty(api, "API calls"):
            api = api.assign(target=_target(api), model_name=api["model"])
            drill.chart(charts.bar(api, "target", "p95_ms", "p95 API latency", label_title="Provider · model",
                                   select="model_name"), key="performance_api", filter_key="models",
                        field="model_name")
            api = api.drop(columns=["model_name"])
            _table(api.drop(columns=["target"]))

    lazy_tabs("performance_section", {"Slowest runs": slowest, "Step latency by step name": by_step,
                                      "API latency by provider and model": by_model})


def _with_cache(df: pd.DataFrame, cache: pd.DataFrame) -> pd.DataFrame:
    """``df`` (per provider and model) with the prompt-cache token columns of ``cache`` (0 where none)."""
    cols = ["cached_input_tokens", "cache_write_tokens"]
    out = df.merge(cache[["provider", "model", *cols]], on=["provider", "model"], how="left")
    return out.assign(**{c: out[c].fillna(0).astype("int64") for c in cols})


def cache_tiles(k: pd.Series, cache: pd.DataFrame) -> None:
    """Input tokens, and how many of them were read from or written to the providers' prompt caches."""
    cols = st.columns(6)
    cols[0].metric("Input tokens", fmt_count(k["input_tokens"]))
    cols[1].metric("Output tokens", fmt_count(k["output_tokens"]))
    cols[2].metric("Cached input tokens", fmt_count(cache["cached_input_tokens"].sum()),
                   help="input tokens read from the provider's prompt cache (billed at its cached-input rate)")
    cols[3].metric("Cache-write tokens", fmt_count(cache["cache_write_tokens"].sum()),
                   help="input tokens written to the provider's prompt cache (billed at its cache-write rate)")


def usage(source: Source, f: Filters, bucket: str) -> None:
    k = kpi_strip(source, f)
    cache = cached(source, "cache_tokens", f)
    cache_tiles(k, cache)
    per_agent = cached(source, "runs_per_agent", f, bucket)
    if not _empty(per_agent, "runs"):
        drill.chart(charts.stacked_over_time(per_agent, "agent", "runs", "Runs per agent", bucket=bucket,
                                             select=True, brush=True),
                    key="usage_agents", filter_key="agents", field="agent", brush=True)

    def by_model() -> None:
        tok = cached(source, "tokens_by_model", f)
        if not _empty(tok, "API calls"):
            tok = tok.assign(target=_target(tok), model_name=tok["model"])
            drill.chart(charts.bar(tok, "target", "total_tokens", "Tokens", label_title="Provider · model",
                                   select="model_name"), key="usage_tokens", filter_key="models", field="model_name")
            tok = _with_cache(tok.drop(columns=["model_name"]), cache)
            _table(tok.drop(columns=["target"]))

    def by_provider() -> None:
        prov = cached(source, "calls_by_provider", f)
        if not _empty(prov, "API calls"):
            _chart(charts.bar(prov, "provider", "calls", "API calls"))
            _table(prov)

    def by_agent() -> None:
        agents = cached(source, "agent_kpis", f)
        if not _empty(agents, "runs"):
            _table(agents, ["agent", "runs", "success_rate", "error_rate", "p50_ms", "p95_ms", "steps", "calls",
                            "total_tokens", "cost_usd", "unpriced_calls"])

    lazy_tabs("usage_section", {"Tokens by model": by_model, "Calls by provider": by_provider,
                                "By agent": by_agent})


def cost(source: Source, f: Filters, bucket: str) -> None:
    k = kpi_strip(source, f)
    if k["unpriced_calls"]:
        st.warning(f"{fmt_count(k['unpriced_calls'])} API call(s) have no known price: the costs shown leave "
                   "them out. Add a price with configure(prices={...}) (see docs/dashboard.md).")
    over = cached(source, "cost_over_time", f, bucket)
    if not _empty(over, "API calls"):
        drill.chart(charts.stacked_over_time(over.assign(series="cost"), "series", "cost_usd",
                                             "Cost over time (USD)", bucket=bucket, legend=False, brush=True),
                    key="cost_over_time", brush=True)

    def breakdown(method: str, label: str, title: str, filter_key: str | None) -> Callable[[], None]:
        def draw() -> None:
            df = cached(source, method, f)
            if _empty(df, "API calls"):
                return
            shown = None
            field = {"models": "model_name", "agents": "agent"}.get(filter_key or "")
            if method == "cost_by_model":
                df = _with_cache(df, cached(source, "cache_tokens", f))
                df = df.assign(model=_target(df), model_name=df["model"])
                shown = [c for c in df.columns if c not in ("provider", "model_name")]  # the label names it
            drill.chart(charts.bar(df, label, "cost_usd", f"Cost {title.lower()} (USD)",
                                   label_title="Provider · model" if label == "model" else None, select=field),
                        key=method, filter_key=filter_key, field=field)
            _table(df, shown)
        return draw

    def expensive() -> None:
        exp = cached(source, "expensive_runs", f, RUN_TABLE_ROWS)
        if not _empty(exp, "priced runs"):
            drill.run_table(exp, "expensive_runs")

    def unpriced() -> None:
        calls = cached(source, "unpriced_calls", f)
        if not _empty(calls, "unpriced calls"):
            _table(calls)

    lazy_tabs("cost_section", {
        "By model": breakdown("cost_by_model", "model", "By model", "models"),
        "By agent": breakdown("cost_by_agent", "agent", "By agent", "agents"),
        "By provider": breakdown("cost_by_provider", "provider", "By provider", None),
        "Most expensive runs": expensive, "Unpriced calls": unpriced})


#: the views of this module (the page adds those of :mod:`.explorer` and :mod:`.rollup_views`)
VIEWS: dict[str, Callable[[Source, Filters, str], None]] = {
    "Health": health,
    "Performance": performance,
    "Usage": usage,
    "Cost": cost,
}
