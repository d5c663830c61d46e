"""The dashboard's five views. Each takes a Source, Filters and a time bucket and draws one page; queries go
through ``cached`` so a rerun with the same filters does not query again (for ``CACHE_TTL`` seconds).

User text (names, error messages, tags, metadata, captured values) goes only to tables, charts, code blocks
and option lists, which Streamlit shows as text, or through :func:`~.format.literal` into markdown.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from ..queries.base import Filters, Source
from . import charts
from .format import (
    column_name,
    duration_unit,
    fmt_count,
    fmt_ms,
    fmt_pct,
    fmt_usd,
    is_missing,
    literal,
    money_decimals,
)

__all__ = ["RUN_SORTS", "VIEWS", "cached", "cached_agents", "kpi_strip"]

CACHE_TTL = 30
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


def _chart(chart: Any) -> None:
    st.altair_chart(chart, width="stretch")


def _table(df: pd.DataFrame, columns: Sequence[str] | None = None) -> None:
    """A table with human column names: durations in the unit that suits the column (ms, s or min), money
    with the decimals its smallest amount needs, rates as percentages. ``columns``: the ones shown, in order
    (all by default)."""
    shown = df.copy()
    config: dict[str, Any] = {}
    for c in shown.columns:
        label = column_name(str(c))
        if str(c).endswith("_ms"):
            unit, div = duration_unit(shown[c].max() if len(shown) else None)
            shown[c] = shown[c] / div
            config[c] = st.column_config.NumberColumn(f"{label} ({unit})", format="%,.1f" if unit == "ms" else "%,.2f")
        elif c == "cost_usd":
            config[c] = st.column_config.NumberColumn(label, format=f"$%,.{money_decimals(shown[c])}f")
        elif str(c).endswith("_rate"):
            config[c] = st.column_config.NumberColumn(label, format="percent")
        elif pd.api.types.is_datetime64_any_dtype(shown[c]):
            config[c] = st.column_config.DatetimeColumn(label, format="YYYY-MM-DD HH:mm:ss")
        elif pd.api.types.is_bool_dtype(shown[c]):
            config[c] = st.column_config.CheckboxColumn(label)
        elif pd.api.types.is_numeric_dtype(shown[c]):
            config[c] = st.column_config.NumberColumn(label, format="%,d" if pd.api.types.is_integer_dtype(
                shown[c]) else "%,.2f")
        else:
            config[c] = st.column_config.TextColumn(label)
    st.dataframe(shown, hide_index=True, column_config=config, column_order=columns, width="stretch")


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
        _chart(charts.stacked_over_time(df, "status", "runs", "Runs by status", status=True, bucket=bucket))
    left, right = st.columns(2)
    with left:
        st.subheader("Errors by step")
        steps = _errors_table(cached(source, "step_errors", f), "name", "steps")
        if not _empty(steps, "failed steps"):
            _table(steps)
    with right:
        st.subheader("Errors by provider and model")
        api = cached(source, "call_errors", f)
        api = _errors_table(api.assign(model=_target(api)), "model", "calls")
        if not _empty(api, "failed API calls"):
            _table(api)
    st.subheader("Recent failures")
    fails = cached(source, "recent_failures", f, 20)
    if not _empty(fails, "failed runs"):
        _table(fails)


def performance(source: Source, f: Filters, bucket: str) -> None:
    kpi_strip(source, f)
    lat = cached(source, "latency_over_time", f, bucket)
    if not _empty(lat, "finished runs"):
        _chart(charts.latency_lines(lat, "Run latency percentiles", bucket=bucket))
    left, right = st.columns(2)
    with left:
        st.subheader("Step latency by step name")
        steps = cached(source, "step_latency", f)
        if not _empty(steps, "steps"):
            _chart(charts.bar(steps, "name", "p95_ms", "p95 step latency", label_title="Step"))
            _table(steps)
    with right:
        st.subheader("API latency by provider and model")
        api = cached(source, "api_latency", f)
        if not _empty(api, "API calls"):
            api = api.assign(target=_target(api))
            _chart(charts.bar(api, "target", "p95_ms", "p95 API latency", label_title="Provider · model"))
            _table(api.drop(columns=["target"]))
    st.subheader("Slowest runs")
    slow = cached(source, "slowest_runs", f, 20)
    if not _empty(slow, "runs"):
        _table(slow)


def usage(source: Source, f: Filters, bucket: str) -> None:
    kpi_strip(source, f)
    per_agent = cached(source, "runs_per_agent", f, bucket)
    if not _empty(per_agent, "runs"):
        _chart(charts.stacked_over_time(per_agent, "agent", "runs", "Runs per agent", bucket=bucket))
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
            tok = tok.assign(target=_target(tok))
            _chart(charts.bar(tok, "target", "total_tokens", "Tokens", label_title="Provider · model"))
            _table(tok.drop(columns=["target"]))
    st.subheader("By agent")
    agents = cached(source, "agent_kpis", f)
    if not _empty(agents, "runs"):
        _table(agents, ["agent", "runs", "success_rate", "error_rate", "p50_ms", "p95_ms", "steps", "calls",
                        "total_tokens", "cost_usd", "unpriced_calls"])


def cost(source: Source, f: Filters, bucket: str) -> None:
    k = kpi_strip(source, f)
    if k["unpriced_calls"]:
        st.warning(f"{fmt_count(k['unpriced_calls'])} API call(s) have no known price: the costs shown leave "
                   "them out. Add a price with configure(prices={...}) (see docs/dashboard.md).")
    over = cached(source, "cost_over_time", f, bucket)
    if not _empty(over, "API calls"):
        _chart(charts.stacked_over_time(over.assign(series="cost"), "series", "cost_usd", "Cost over time (USD)",
                                        bucket=bucket, legend=False))
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
                shown = None
                if method == "cost_by_model":
                    df = df.assign(model=_target(df))
                    shown = [c for c in df.columns if c != "provider"]  # the label names the provider
                _chart(charts.bar(df, label, "cost_usd", f"Cost {title.lower()} (USD)",
                                  label_title="Provider · model" if label == "model" else None))
                _table(df, shown)
    st.subheader("Most expensive runs")
    exp = cached(source, "expensive_runs", f, 20)
    if not _empty(exp, "priced runs"):
        _table(exp)
    st.subheader("Unpriced calls")
    unpriced = cached(source, "unpriced_calls", f)
    if not _empty(unpriced, "unpriced calls"):
        _table(unpriced)


#: the Run explorer's sort choices: label -> the order name of :meth:`Source.search_runs`
RUN_SORTS = {"Newest first": "newest", "Oldest first": "oldest", "Slowest first": "slowest",
             "Fastest first": "fastest", "Most expensive first": "costliest", "Errors first": "status"}
#: runs listed at most
RUN_LIST_LIMIT = 200


def _capture(label: str, value: Any) -> bool:
    """A captured value (JSON text) as a code block: a string as it is, anything else as indented JSON; cut
    to ``CAPTURE_SHOWN`` characters. False when there is nothing to show."""
    if is_missing(value):
        return False
    parsed = json.loads(value)
    text = parsed if isinstance(parsed, str) else json.dumps(parsed, indent=2, ensure_ascii=False)
    if len(text) > CAPTURE_SHOWN:
        text = text[:CAPTURE_SHOWN] + f"\n... ({len(text) - CAPTURE_SHOWN:,} more characters not shown)"
    st.caption(label)
    st.code(text, language=None if isinstance(parsed, str) else "json", wrap_lines=True)
    return True


def _about(run: pd.Series) -> pd.DataFrame:
    """The run's identity, tags and metadata as key / value rows (values as text)."""
    def when(t: Any) -> str | None:
        return None if is_missing(t) else f"{t:%Y-%m-%d %H:%M:%S.%f}"

    rows = [("Name", run["name"]), ("Agent", run["agent"]), ("Run id", run["run_id"]),
            ("Parent run", run["parent_run_id"]), ("Started (UTC)", when(run["started_at"])),
            ("Ended (UTC)", when(run["ended_at"]))]
    tags = json.loads(run["tags"]) if not is_missing(run["tags"]) else []
    rows.append(("Tags", ", ".join(str(t) for t in tags) if tags else "(none)"))
    metadata = json.loads(run["metadata"]) if not is_missing(run["metadata"]) else {}
    for key, value in (metadata.items() if isinstance(metadata, dict) else [("metadata", metadata)]):
        rows.append((f"metadata · {key}", value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)))
    return pd.DataFrame([(k, None if v is None or is_missing(v) else str(v)) for k, v in rows],
                        columns=["key", "value"])


def _failures(detail_steps: pd.DataFrame, detail_calls: pd.DataFrame) -> pd.DataFrame:
    """Every failed step and call, each with the step it happened in."""
    names = dict(zip(detail_steps["step_id"], detail_steps["name"], strict=True))
    rows = []
    for s in detail_steps[detail_steps["error_type"].notna()].itertuples():
        rows.append({"where": "step", "step": s.name, "error_type": s.error_type, "error_message": s.error_message})
    for c in detail_calls[detail_calls["error_type"].notna()].itertuples():
        what = f"call {c.provider} {c.operation}" + (f" · {c.model}" if isinstance(c.model, str) else "")
        rows.append({"where": what, "step": names.get(c.step_id, "(run)"), "error_type": c.error_type,
                     "error_message": c.error_message})
    return pd.DataFrame(rows, columns=["where", "step", "error_type", "error_message"])


def _pick_key(sort: str, prefix: str) -> str:
    """The run picker's key: a new sort or search is a new picker, which opens the first run of its list."""
    return "run_pick" if (sort, prefix) == ("Newest first", "") else f"run_pick:{RUN_SORTS[sort]}:{prefix}"


def run_explorer(source: Source, f: Filters, bucket: str) -> None:
    left, right = st.columns([2, 1])
    prefix = left.text_input("Run id starts with", key="run_id_prefix", placeholder="e.g. 0199a3c2-").strip()
    sort = right.selectbox("Sort", list(RUN_SORTS), key="run_sort") or "Newest first"
    total = cached(source, "count_runs", f, prefix)
    found = cached(source, "search_runs", f, prefix, RUN_LIST_LIMIT, RUN_SORTS[sort])
    st.metric("Matching runs", fmt_count(total))
    if len(found) < total:
        st.caption(f"Showing the first {len(found):,} of {total:,} matching runs ({sort.lower()}); narrow the "
                   "filters or type more of the run id to see others.")
    if found.empty:
        st.info("No run matches. Widen the time range, clear the agent or status filters, or check the id.")
        return
    _table(found)
    labels = {
        r.run_id: f"{r.run_id} · {r.agent or '-'} · {r.status} · {r.started_at:%Y-%m-%d %H:%M:%S}"
        for r in found.itertuples()
    }
    run_id = st.selectbox("Run", list(labels), format_func=labels.__getitem__, key=_pick_key(sort, prefix))
    detail = source.run_detail(run_id) if run_id else None
    if detail is None:
        st.warning("That run is no longer in the store.")
        return
    run = detail.run.iloc[0]
    cols = st.columns(5)
    cols[0].metric("Status", literal(run["status"]))
    cols[1].metric("Duration", fmt_ms(run["duration_ms"]))
    cols[2].metric("Steps · calls", f"{fmt_count(run['step_count'])} · {fmt_count(run['call_count'])}")
    cols[3].metric("Run tokens", fmt_count(run["total_tokens"]))
    cols[4].metric("Run cost", fmt_usd(run["cost_usd"]))
    if not is_missing(run["error_type"]):
        st.error(f"**This run ended with status {literal(run['status'])}:**")
        st.code(f"{run['error_type']}: {run['error_message'] or ''}", language=None, wrap_lines=True)
    about, captured = st.columns([1, 1])
    with about:
        st.subheader("About this run")
        _table(_about(run))
    with captured:
        st.subheader("Captured input and output")
        shown = _capture("Input", run["inputs"])
        shown = _capture("Output", run["output"]) or shown
        if bool(run["truncated"]):
            st.caption("A captured value was cut to the capture size limit (capture_max_chars).")
        if not shown:
            st.caption("Nothing captured: turn capture on with configure(capture=True) or track_run(capture=True).")
    failures = _failures(detail.steps, detail.calls)
    if not failures.empty:
        st.subheader("Errors")
        _table(failures)
    _chart(charts.waterfall(detail.steps, detail.calls, run["started_at"]))
    st.subheader("Steps")
    _table(detail.steps, ["name", "kind", "status", "duration_ms", "call_count", "total_tokens", "cost_usd",
                          "error_type", "error_message", "metadata", "started_at"])
    st.subheader("API calls")
    _table(detail.calls, ["provider", "operation", "model", "status", "duration_ms", "input_tokens",
                          "output_tokens", "total_tokens", "cost_usd", "priced", "http_status", "error_type",
                          "error_message", "metadata", "started_at"])
    step_captures = [(s.name, s.inputs, s.output) for s in detail.steps.itertuples()
                     if not is_missing(s.inputs) or not is_missing(s.output)]
    if step_captures:
        with st.expander(f"Captured values of {len(step_captures)} step(s)"):
            for name, inputs, output in step_captures:
                st.caption("Step")
                st.code(str(name), language=None)
                _capture("Input", inputs)
                _capture("Output", output)


VIEWS: dict[str, Callable[[Source, Filters, str], None]] = {
    "Health": health,
    "Performance": performance,
    "Usage": usage,
    "Cost": cost,
    "Run explorer": run_explorer,
}
