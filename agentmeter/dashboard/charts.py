"""Altair (Vega-Lite) charts of the dashboard. Each takes a frame of the query interface and returns a chart.

Axis titles and tooltips use human names; durations are shown in the unit that suits the data (ms, s or
min) and money with the decimals its smallest amount needs. User text (step, agent, model names, error
messages) is only ever drawn as chart text or tooltip text, which Vega renders as text.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from .format import column_name, duration_unit, money_decimals

__all__ = ["bar", "latency_lines", "stacked_over_time", "time_axis", "waterfall"]

STATUS_COLORS = alt.Scale(domain=["success", "error", "cancelled"], range=["#2e9d5b", "#d64545", "#9a9a9a"])
#: long names stay readable: Vega cuts axis labels at 180 px by default
LABEL_LIMIT = 360
#: how a time bucket reads in a tooltip, per bucket size
BUCKET_FORMATS = {"minute": "%Y-%m-%d %H:%M", "hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d"}
#: time axis labels per bucket size (UTC, 24-hour clock)
AXIS_FORMATS = {"minute": "%H:%M", "hour": "%b %d %H:00", "day": "%Y-%m-%d"}
#: the Vega-Lite time unit of a bucket: a bar then spans its whole minute, hour or day
TIME_UNITS = {"minute": "utcyearmonthdatehoursminutes", "hour": "utcyearmonthdatehours", "day": "utcyearmonthdate"}
#: up to this many buckets, the time axis ticks at each bucket's start
FEW_BUCKETS = 12


def time_axis(times: Any, bucket: str) -> Any:
    """The time axis of a bucketed chart whose buckets start at ``times``. Over a few buckets Vega would
    tick between them (every 10 seconds over two minutes), each tick labelled with the same minute: then
    it is asked for as many ticks as there are buckets, which it places one bucket apart. (Vega draws no
    labels for explicit ``values`` on these axes and fails on a time-interval ``tickCount``.)"""
    starts = pd.to_datetime(pd.Series(times), utc=True, format="ISO8601").dropna().unique()
    ticks = len(starts) if 0 < len(starts) <= FEW_BUCKETS else alt.Undefined
    return alt.Axis(labelOverlap=True, format=AXIS_FORMATS.get(bucket, "%H:%M"), tickCount=ticks)


def _value_format(column: str, values: Any) -> str:
    if column.endswith("_usd"):
        return f"$,.{money_decimals(values)}f"
    if column.endswith("_rate"):
        return ".1%"
    return ",d"  # counts: runs, calls, tokens


def _pick(chart: Any, field: str | None) -> Any:
    """``chart`` with a click selection named ``pick`` on ``field`` (see :func:`agentmeter.dashboard.drill.chart`);
    a hand cursor says the marks can be clicked."""
    if field is None:
        return chart
    return chart.add_params(alt.selection_point(name="pick", fields=[field])).configure_mark(cursor="pointer")


def _brush(chart: Any, brush: bool) -> Any:
    """``chart`` with a drag-to-select interval named ``brush`` on its time axis."""
    return chart.add_params(alt.selection_interval(name="brush", encodings=["x"])) if brush else chart


def _axis(fmt: str, **kw: Any) -> Any:
    """An axis for values written as ``fmt``: whole ticks for counts, round money without trailing zeros."""
    if fmt == ",d":
        return alt.Axis(format=fmt, tickMinStep=1, **kw)
    return alt.Axis(format=fmt.replace("f", "~f") if fmt.startswith("$") else fmt, **kw)


def stacked_over_time(df: pd.DataFrame, color: str, y: str, title: str, status: bool = False,
                      bucket: str = "hour", legend: bool = True, select: bool = False, brush: bool = False) -> Any:
    """Stacked bars per time bucket, one colour per ``color`` value; each bar spans its whole bucket. With
    ``select`` a click picks a ``color`` value; with ``brush`` a drag along the time axis picks a range."""
    scale = STATUS_COLORS if status else alt.Undefined
    data = df.assign(**{color: df[color].fillna("(none)")})
    fmt = _value_format(y, data[y])
    when = f"{TIME_UNITS.get(bucket, TIME_UNITS['hour'])}(bucket):T"
    chart = (
        alt.Chart(data, title=title)
        .mark_bar()
        .encode(
            x=alt.X(when, title=None, axis=time_axis(data["bucket"], bucket)),
            y=alt.Y(f"{y}:Q", title=column_name(y), axis=_axis(fmt)),
            color=alt.Color(f"{color}:N", scale=scale, title=column_name(color),
                            legend=alt.Legend(labelLimit=LABEL_LIMIT) if legend else None),
            tooltip=[alt.Tooltip(when, title="Time (UTC)", format=BUCKET_FORMATS.get(bucket, "%Y-%m-%d %H:%M")),
                     alt.Tooltip(f"{color}:N", title=column_name(color)),
                     alt.Tooltip(f"{y}:Q", title=column_name(y), format=fmt)],
        )
    )
    return _pick(_brush(chart, brush), color if select else None)


def latency_lines(df: pd.DataFrame, title: str, bucket: str = "hour", brush: bool = False) -> Any:
    """p50/p95/p99 run latency over time, in the unit that suits the slowest bucket."""
    unit, div = duration_unit(df["p99_ms"].max() if len(df) else None)
    long = df.melt(id_vars=["bucket"], value_vars=["p50_ms", "p95_ms", "p99_ms"], var_name="percentile",
                   value_name="latency")
    long["percentile"] = long["percentile"].str.replace("_ms", "", regex=False)
    long["latency"] = long["latency"] / div
    when = f"{TIME_UNITS.get(bucket, TIME_UNITS['hour'])}(bucket):T"
    chart = (
        alt.Chart(long, title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X(when, title=None, axis=time_axis(df["bucket"], bucket)),
            y=alt.Y("latency:Q", title=f"Run latency ({unit})"),
            color=alt.Color("percentile:N", sort=["p50", "p95", "p99"], title="Percentile"),
            tooltip=[alt.Tooltip(when, title="Time (UTC)", format=BUCKET_FORMATS.get(bucket, "%Y-%m-%d %H:%M")),
                     alt.Tooltip("percentile:N", title="Percentile"),
                     alt.Tooltip("latency:Q", title=f"Latency ({unit})", format=",.4~r")],
        )
    )
    return _brush(chart, brush)


def bar(df: pd.DataFrame, label: str, value: str, title: str, label_title: str | None = None,
        select: str | None = None) -> Any:
    """Horizontal bars of ``value`` by ``label`` (in the frame's order). Durations (``*_ms``) are shown in
    the unit that suits the longest. With ``select`` (a column of ``df``) a click on a bar picks its value
    of that column."""
    data = df.assign(**{label: df[label].fillna("(none)")})
    name = column_name(value)
    fmt = _value_format(value, data[value])
    if value.endswith("_ms"):
        unit, div = duration_unit(data[value].max() if len(data) else None)
        data = data.assign(**{value: data[value] / div})
        name, fmt = f"{name} ({unit})", ",.4~r"
    chart = (
        alt.Chart(data, title=title)
        .mark_bar()
        .encode(
            y=alt.Y(f"{label}:N", sort=None, title=None, axis=alt.Axis(labelLimit=LABEL_LIMIT)),
            x=alt.X(f"{value}:Q", title=name, axis=_axis(fmt)),
            tooltip=[alt.Tooltip(f"{label}:N", title=label_title or column_name(label)),
                     alt.Tooltip(f"{value}:Q", title=name, format=fmt)],
        )
    )
    return _pick(chart, select)


def _num(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _call_label(c: Any) -> str:
    return f"call · {c.provider} {c.operation}" + (f" · {c.model}" if isinstance(c.model, str) and c.model else "")


def waterfall(steps: pd.DataFrame, calls: pd.DataFrame, run_start: pd.Timestamp) -> Any:
    """The run's timeline: one bar per step and call from its start to its end, after the run began;
    nested steps and calls are indented under their step, and a call's label shows its model."""
    depth: dict[Any, int] = {}
    parents = dict(zip(steps["step_id"], steps["parent_step_id"], strict=True))

    def level(step_id: Any) -> int:
        if step_id not in depth:
            parent = parents.get(step_id)
            depth[step_id] = 0 if not isinstance(parent, str) or parent not in parents else level(parent) + 1
        return depth[step_id]

    indent = "\u2003"  # an em space: plain spaces would be trimmed from the label
    rows = []
    for s in steps.itertuples():
        rows.append({"lane": indent * level(s.step_id) + f"step · {s.name}", "kind": s.kind, "status": s.status,
                     "id": s.step_id, "start": s.started_at, "end": s.ended_at, "tokens": _num(s.total_tokens),
                     "error": f"{s.error_type}: {s.error_message}" if s.error_type else ""})
    for c in calls.itertuples():
        nested = level(c.step_id) + 1 if isinstance(c.step_id, str) and c.step_id in parents else 0
        rows.append({"lane": indent * nested + _call_label(c), "kind": "api call", "status": c.status,
                     "id": c.call_id, "start": c.started_at, "end": c.ended_at, "tokens": _num(c.total_tokens),
                     "error": f"{c.error_type}: {c.error_message}" if c.error_type else ""})
    data = pd.DataFrame(rows, columns=["lane", "kind", "status", "id", "start", "end", "tokens", "error"])
    unit, div = "ms", 1.0
    if not data.empty:
        data = data.sort_values(["start", "id"]).reset_index(drop=True)
        start_ms = (data["start"] - run_start).dt.total_seconds() * 1000
        end_ms = (data["end"].fillna(data["start"]) - run_start).dt.total_seconds() * 1000
        unit, div = duration_unit(end_ms.max())
        data["start_t"], data["end_t"] = start_ms / div, end_ms / div
        data["duration"] = (end_ms - start_ms) / div
        data["row"] = [f"{i + 1:>3}. {lane}" for i, lane in enumerate(data["lane"])]
        data["lane"] = data["lane"].str.replace(indent, "", regex=False)
        data["tokens"] = pd.to_numeric(data["tokens"], errors="coerce")
        data = data.drop(columns=["start", "end"])
    else:
        data = data.assign(start_t=[], end_t=[], duration=[], row=[]).drop(columns=["start", "end"])
    return (
        alt.Chart(data, title=f"Timeline ({unit} after the run started)")
        .mark_bar(cornerRadius=2)
        .encode(
            # left-aligned labels, so nesting shows as indentation
            y=alt.Y("row:N", sort=None, title=None,
                    axis=alt.Axis(labelLimit=LABEL_LIMIT, labelAlign="left", labelPadding=LABEL_LIMIT - 40)),
            x=alt.X("start_t:Q", title=unit),
            x2="end_t:Q",
            color=alt.Color("status:N", scale=STATUS_COLORS, title="Status"),
            tooltip=[alt.Tooltip("lane:N", title="What"), alt.Tooltip("kind:N", title="Kind"),
                     alt.Tooltip("status:N", title="Status"),
                     alt.Tooltip("start_t:Q", title=f"Start ({unit})", format=",.4~r"),
                     alt.Tooltip("duration:Q", title=f"Duration ({unit})", format=",.4~r"),
                     alt.Tooltip("tokens:Q", title="Tokens", format=","), alt.Tooltip("error:N", title="Error")],
        )
    )
