"""Drill-down by clicking: a click on a run in a table opens it in the Run explorer, a click on a bar sets
that filter, a brush on a time chart sets the time range.

A click reruns the page (``on_select="rerun"``) while the sidebar's widgets already exist, and Streamlit
refuses a change to a widget's value once it is drawn; so a click files its change with :func:`request`
and reruns, and :func:`apply_pending` puts it into the widgets' state at the start of the next run, before
the sidebar draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import streamlit as st

from .table import table

__all__ = ["BRUSHED", "PENDING", "apply_pending", "chart", "request", "run_table"]

#: session_state key of the changes a click asked for, applied by :func:`apply_pending`
PENDING = "_drill_pending"
#: session_state key of the exact UTC bounds of the last brushed time range (ISO strings)
BRUSHED = "brushed_range"


def request(**state: Any) -> None:
    """Set these session_state keys (widget keys included) at the start of the next run, and rerun now."""
    st.session_state[PENDING] = state
    st.rerun()


def apply_pending() -> None:
    """Apply the changes a click asked for (call before the sidebar draws its widgets)."""
    pending = st.session_state.pop(PENDING, None)
    if isinstance(pending, dict):
        for key, value in pending.items():
            st.session_state[key] = value


def _fresh(key: str, value: Any) -> bool:
    """True once per new selection of the element ``key`` (a selection stays set across reruns)."""
    seen = f"_drill_seen:{key}"
    new = value is not None and st.session_state.get(seen) != value
    st.session_state[seen] = value
    return new


def run_table(df: pd.DataFrame, key: str, columns: Sequence[str] | None = None) -> None:
    """A table of runs (with ``run_id``) whose rows open their run in the Run explorer when clicked."""
    row = table(df, columns, key=key, select=True)
    if _fresh(key, row) and row is not None and row < len(df):
        request(view="Run explorer", open_run=str(df["run_id"].iloc[row]))


def _selected(event: Any, name: str) -> Any:
    """The selection ``name`` of a chart's event (a mapping; attribute access is not always offered)."""
    try:
        return event["selection"][name]
    except (KeyError, TypeError):
        return None


def chart(spec: Any, key: str, filter_key: str | None = None, field: str | None = None,
          brush: bool = False) -> None:
    """Draw an Altair chart; a click on a mark whose ``field`` is set adds that value to the sidebar filter
    ``filter_key`` (and ``(none)`` does nothing); with ``brush`` a dragged interval sets the time range."""
    if filter_key is None and not brush:
        st.altair_chart(spec, width="stretch")
        return
    event = st.altair_chart(spec, width="stretch", on_select="rerun", key=key)
    if filter_key is not None and field is not None:
        points = _selected(event, "pick") or []
        values = sorted({str(p[field]) for p in points if isinstance(p, dict) and p.get(field) not in (None, "(none)")})
        if _fresh(key, tuple(values)) and values:
            request(**{filter_key: sorted({*st.session_state.get(filter_key, []), *values})})
    if brush:
        bounds = brush_bounds(_selected(event, "brush"))
        if _fresh(f"{key}:brush", bounds) and bounds is not None:
            since, until = bounds
            request(time_range="Custom", custom_range=(since.date(), until.date()),
                    **{BRUSHED: (since.isoformat(), until.isoformat())})


def _as_time(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value) / 1000.0, tz=timezone.utc)  # Vega: epoch milliseconds
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def brush_bounds(selection: Any) -> tuple[datetime, datetime] | None:
    """The UTC (since, until) of an interval selection (``{field: [low, high]}``, epoch ms or ISO text);
    None when nothing is brushed. A zero-width brush widens to one minute."""
    if not isinstance(selection, dict):
        return None
    for values in selection.values():
        if isinstance(values, (list, tuple)) and len(values) == 2:
            low, high = (_as_time(v) for v in values)
            if low is not None and high is not None:
                low, high = min(low, high), max(low, high)
                return low, max(high, low + timedelta(minutes=1))
    return None
