"""Altair (Vega-Lite) charts of the dashboard. Each takes a frame of the query interface and returns a chart."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

__all__ = ["bar", "latency_lines", "stacked_over_time", "waterfall"]

STATUS_COLORS = alt.Scale(domain=["success", "error", "cancelled"], range=["#2e9d5b", "#d64545", "#9a9a9a"])


def stacked_over_time(df: pd.DataFrame, color: str, y: str, title: str, status: bool = False) -> Any:
    """Stacked bars per time bucket, one colour per ``color`` value."""
    scale = STATUS_COLORS if status else alt.Undefined
    data = df.assign(**{color: df[color].fillna("(none)")})
    return (
        alt.Chart(data, title=title)
        .mark_bar()
        .encode(
            x=alt.X("bucket:T", title=None),
            y=alt.Y(f"{y}:Q", title=y.replace("_", " ")),
            color=alt.Color(f"{color}:N", scale=scale, title=color),
            tooltip=[alt.Tooltip("bucket:T"), f"{color}:N", alt.Tooltip(f"{y}:Q", format=",")],
        )
    )


def latency_lines(df: pd.DataFrame, title: str) -> Any:
    """p50/p95/p99 lines over time (ms)."""
    long = df.melt(id_vars=["bucket"], value_vars=["p50_ms", "p95_ms", "p99_ms"], var_name="percentile",
                   value_name="ms")
    long["percentile"] = long["percentile"].str.replace("_ms", "", regex=False)
    return (
        alt.Chart(long, title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("bucket:T", title=None),
            y=alt.Y("ms:Q", title="run latency (ms)"),
            color=alt.Color("percentile:N", sort=["p50", "p95", "p99"]),
            tooltip=[alt.Tooltip("bucket:T"), "percentile:N", alt.Tooltip("ms:Q", format=",.3f")],
        )
    )


def bar(df: pd.DataFrame, label: str, value: str, title: str, fmt: str = ",") -> Any:
    """Horizontal bars of ``value`` by ``label`` (in the frame's order)."""
    data = df.assign(**{label: df[label].fillna("(none)")})
    return (
        alt.Chart(data, title=title)
        .mark_bar()
        .encode(
            y=alt.Y(f"{label}:N", sort=None, title=None),
            x=alt.X(f"{value}:Q", title=value.replace("_", " ")),
            tooltip=[f"{label}:N", alt.Tooltip(f"{value}:Q", format=fmt)],
        )
    )


def _num(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def waterfall(steps: pd.DataFrame, calls: pd.DataFrame, run_start: pd.Timestamp) -> Any:
    """The run's timeline: one bar per step and call from its start to its end, ms after the run began."""
    rows = []
    for s in steps.itertuples():
        rows.append({"lane": f"step · {s.name}", "kind": s.kind, "status": s.status, "id": s.step_id,
                     "start": s.started_at, "end": s.ended_at, "tokens": _num(s.total_tokens),
                     "error": f"{s.error_type}: {s.error_message}" if s.error_type else ""})
    for c in calls.itertuples():
        rows.append({"lane": f"call · {c.provider} {c.operation}" + (f" ({c.model})" if c.model else ""),
                     "kind": "api call", "status": c.status, "id": c.call_id, "start": c.started_at,
                     "end": c.ended_at, "tokens": _num(c.total_tokens),
                     "error": f"{c.error_type}: {c.error_message}" if c.error_type else ""})
    data = pd.DataFrame(rows, columns=["lane", "kind", "status", "id", "start", "end", "tokens", "error"])
    if not data.empty:
        data = data.sort_values(["start", "id"]).reset_index(drop=True)
        data["start_ms"] = (data["start"] - run_start).dt.total_seconds() * 1000
        data["end_ms"] = (data["end"].fillna(data["start"]) - run_start).dt.total_seconds() * 1000
        data["row"] = [f"{i + 1:>3}. {lane}" for i, lane in enumerate(data["lane"])]
        data["tokens"] = pd.to_numeric(data["tokens"], errors="coerce")
        data = data.drop(columns=["start", "end"])
    else:
        data = data.assign(start_ms=[], end_ms=[], row=[]).drop(columns=["start", "end"])
    return (
        alt.Chart(data, title="Timeline (ms after the run started)")
        .mark_bar(cornerRadius=2)
        .encode(
            y=alt.Y("row:N", sort=None, title=None),
            x=alt.X("start_ms:Q", title="ms"),
            x2="end_ms:Q",
            color=alt.Color("status:N", scale=STATUS_COLORS),
            tooltip=["lane:N", "kind:N", "status:N", alt.Tooltip("start_ms:Q", format=",.3f"),
                     alt.Tooltip("end_ms:Q", format=",.3f"), alt.Tooltip("tokens:Q", format=","), "error:N"],
        )
    )
