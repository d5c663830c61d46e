"""The dashboard's page: the source, the sidebar filters, the chosen view, and what is shown when something
fails. ``agentmeter dashboard`` runs it (through ``streamlit_app.py``).

It reads the source named by ``AGENTMETER_DASHBOARD_SOURCE`` (default ``local``: the SQLite store at
``AGENTMETER_DB``); an application embedding it (or a test) may put a ready
:class:`agentmeter.queries.Source` in ``st.session_state["agentmeter_source"]`` instead. It never writes
to the source. No exception reaches the page as a traceback: a source that cannot be read shows a
one-line cause, what to check, the driver's details in an expander and a retry button; a view that
fails shows a one-line cause and the other views keep working.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

import streamlit as st

from ..queries import Filters, Source, SourceUnavailable, open_source
from ..queries.base import STATUSES, iso_bound, one_line
from . import drill, explorer, rollup_views, views
from .format import literal

__all__ = ["RANGES", "VIEWS", "main", "source_from_env"]

log = logging.getLogger("agentmeter.dashboard")

RANGES: dict[str, timedelta | None] = {
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "All time": None,
}
CUSTOM = "Custom"
#: every view, in the sidebar's order
VIEWS: dict[str, Callable[[Source, Filters, str], None]] = {
    **views.VIEWS, **rollup_views.VIEWS, "Run explorer": explorer.run_explorer,
}
BUCKETS = ("auto", "minute", "hour", "day")
#: the auto bucket: the smallest whose buckets over the span the data covers stay this many or fewer
MAX_AUTO_BUCKETS = {"minute": 240, "hour": 240}

#: the sidebar's other multi-selects: Filters field (and session_state key), label, placeholder
FILTER_CONTROLS = (
    ("models", "Model", "All models"),
    ("tags", "Tag", "All tags"),
    ("sessions", "Session", "All sessions"),
    ("users", "User", "All users"),
    ("versions", "Version", "All versions"),
)

HINTS = {
    "local": "Check the path given with --db (or AGENTMETER_DB) and that it is an agentmeter store.",
    "mongodb": "Check AGENTMETER_MONGODB_URI (host, port, credentials, TLS), that the server is up and reachable "
               "from here, and AGENTMETER_MONGODB_DATABASE / AGENTMETER_MONGODB_COLLECTION.",
    "snowflake": "Check the Snowflake connection parameters (SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER and a password "
                 "or key, or a connections.toml entry), the warehouse, and that the role can read the views "
                 "created by `agentmeter sql`.",
}


def source_from_env() -> Source:
    """The source the environment names (``AGENTMETER_DASHBOARD_SOURCE``, ``AGENTMETER_DB``...), opened once
    per process and setting (shared by every session, and by :mod:`.prewarm`)."""
    kind = os.environ.get("AGENTMETER_DASHBOARD_SOURCE", "local")
    return _cached_source(kind, os.environ.get("AGENTMETER_DB", ""), os.environ.get("AGENTMETER_MONGODB_URI", ""))


@st.cache_resource(show_spinner=False)
def _cached_source(kind: str, db: str, _uri_key: str) -> Source:
    # keyed on the settings that pick the store, so a changed environment gets a new source
    return open_source(kind, **({"db": db} if kind == "local" and db else {}))


def _retry_button() -> None:
    if st.button("Retry", key="retry", type="primary"):
        st.cache_data.clear()
        st.cache_resource.clear()
        st.rerun()


def source_error(kind: str, exc: BaseException) -> None:
    """The source cannot be read: a one-line cause, what to check, the details behind an expander, a
    retry. The page stops here."""
    cause = str(exc) if isinstance(exc, SourceUnavailable) else one_line(exc)
    hint = getattr(exc, "hint", "") or HINTS.get(kind, "")
    st.error(f"**Cannot reach the {kind} source:** {literal(cause)}")
    st.markdown(f"**What to check:** {hint}")
    details = getattr(exc, "details", "") or f"{type(exc).__name__}: {exc}"
    with st.expander("Details"):
        st.code(details, language=None, wrap_lines=True)
    _retry_button()
    st.stop()


def view_error(view: str, exc: BaseException) -> None:
    """A view failed (a bug, a query the store refused): one line in the error panel; the traceback goes to
    the server's log, never to the page."""
    log.error("dashboard view %r failed", view, exc_info=exc)
    st.error(f"**{view} failed:** {literal(one_line(exc))}")


def empty_state(source: Source) -> None:
    st.info(
        f"**No runs yet** in {literal(source.describe())}.\n\n"
        "Run `agentmeter demo` to record a few sample runs, or decorate your agent with "
        "`@agentmeter.track_run` and run it; then reload this page."
    )
    st.stop()


def _day_bounds(picked: Any, today: date) -> tuple[datetime | None, datetime | None]:
    """The UTC bounds of a date range input: both dates, or the one picked so far (that day)."""
    days = [d for d in (picked if isinstance(picked, (tuple, list)) else (picked,)) if isinstance(d, date)]
    if not days:
        return None, None
    first, last = min(days), max(days)
    return (datetime.combine(first, datetime.min.time(), timezone.utc),
            datetime.combine(last, datetime.min.time(), timezone.utc) + timedelta(days=1))


def time_range(now: datetime) -> tuple[datetime | None, datetime | None]:
    """The sidebar's time range as UTC bounds (None: open)."""
    # a fixed default: a range a brush set (drill.request) comes from session_state (Streamlit logs a warning)
    label = st.sidebar.selectbox("Time range", [*RANGES, CUSTOM], index=len(RANGES) - 1, key="time_range")
    if label == CUSTOM:
        today = now.date()
        # the value decides range mode, so it is always given (a brushed range then logs Streamlit's warning)
        picked = st.sidebar.date_input("From - to (UTC)", value=(today - timedelta(days=7), today),
                                       key="custom_range")
        since, until = _day_bounds(picked, today)
        brushed = st.session_state.get(drill.BRUSHED)
        if brushed is not None:  # a range brushed on a chart: its exact times, while its days stay picked
            low, high = (datetime.fromisoformat(t) for t in brushed)
            if since is not None and until is not None and since <= low and high <= until:
                st.sidebar.caption(f"From the chart: {low:%Y-%m-%d %H:%M} to {high:%Y-%m-%d %H:%M} UTC")
                return low, high
            del st.session_state[drill.BRUSHED]
        return since, until
    st.session_state.pop(drill.BRUSHED, None)  # another range: a brushed one is over
    delta = RANGES.get(label or "All time")
    # whole minutes, so reruns within a minute hit the query cache
    return (now.replace(second=0, microsecond=0) - delta if delta is not None else None), None


def auto_bucket(first: Any, last: Any) -> str:
    """The bucket for data whose runs started from ``first`` to ``last``: minutes up to 4 hours, hours up
    to 10 days, days beyond (at most 240 bars or points either way)."""
    if first is None or last is None or first != first or last != last:  # no runs (NaT)
        return "hour"
    span = (last - first).total_seconds()
    if span <= MAX_AUTO_BUCKETS["minute"] * 60:
        return "minute"
    return "hour" if span <= MAX_AUTO_BUCKETS["hour"] * 3600 else "day"


def sidebar(source: Source) -> tuple[Filters, str, str]:
    drill.apply_pending()  # what a click asked for, before the widgets it changes are drawn
    st.sidebar.header("Filters")
    linked = st.query_params.get("view")
    if "view" not in st.session_state and linked in VIEWS:  # a link's ?view=Cost opens that view
        st.session_state["view"] = linked
    view = st.sidebar.radio("View", list(VIEWS), key="view") or "Health"
    now = datetime.now(timezone.utc)
    since, until = time_range(now)
    agents = views.cached_agents(source)
    chosen = st.sidebar.multiselect("Agent", agents, key="agents", placeholder="All agents")
    statuses = st.sidebar.multiselect("Run status", list(STATUSES), key="statuses", placeholder="All statuses")
    picked: dict[str, tuple[str, ...]] = {}
    for name, label, placeholder in FILTER_CONTROLS:
        values = views.cached_values(source, name)
        # a value set by a click (drill-down) stays pickable even when the list has moved on
        options = sorted({*values, *st.session_state.get(name, [])})
        picked[name] = tuple(st.sidebar.multiselect(label, options, key=name, placeholder=placeholder))
    filters = Filters(since=iso_bound(since), until=iso_bound(until), agents=tuple(chosen), statuses=tuple(statuses),
                      models=picked["models"], tags=picked["tags"], sessions=picked["sessions"],
                      users=picked["users"], versions=picked["versions"])
    k = views.cached(source, "kpis", filters).iloc[0]
    auto = auto_bucket(k["first_started_at"], k["last_started_at"])
    # fixed option labels: a label that changes between reruns loses the choice in Streamlit's selectbox
    bucket = st.sidebar.selectbox("Time bucket", BUCKETS, key="bucket") or "auto"
    if bucket == "auto":
        st.sidebar.caption(f"auto: {auto}, for the span these runs cover")
    # cleared before the run the click starts: the sidebar's lists are read again too
    st.sidebar.button("Refresh data", on_click=st.cache_data.clear,
                      help=f"Results are cached for {views.CACHE_TTL} seconds (new runs show up within that time); "
                           "this reads them again now.")
    return filters, view, bucket if bucket in BUCKETS[1:] else auto


def main() -> None:
    st.set_page_config(page_title="agentmeter", page_icon="📈", layout="wide")
    # six headline tiles a row: the figure shrinks with its tile (a container query) so "2,196,585,642" stays
    # whole at 1440 px; a still longer one wraps instead of being cut with an ellipsis
    st.markdown("<style>[data-testid='stMetric'] {container-type: inline-size;}"
                "[data-testid='stMetricValue'] {font-size: min(1.75rem, 14cqi);}"
                "[data-testid='stMetricValue'] *, [data-testid='stMetricLabel'] * {white-space: normal !important; "
                "overflow-wrap: anywhere; text-overflow: clip;}</style>", unsafe_allow_html=True)
    injected: Any = st.session_state.get("agentmeter_source")
    kind = getattr(injected, "kind", None) or os.environ.get("AGENTMETER_DASHBOARD_SOURCE", "local")
    try:
        source = injected if injected is not None else source_from_env()
        kind = source.kind
        source.check()
        has_runs = source.has_runs()
    except Exception as exc:  # any failure to open or read the source: the error panel, not a traceback
        source_error(kind, exc)
        return
    st.title("agentmeter")
    st.caption(f"Source: {literal(source.describe())}")
    if not has_runs:
        empty_state(source)
        return
    try:
        filters, view, bucket = sidebar(source)
    except SourceUnavailable as exc:
        source_error(kind, exc)
        return
    st.header(view)
    try:
        VIEWS[view](source, filters, bucket)
    except SourceUnavailable as exc:
        source_error(kind, exc)
    except Exception as exc:  # a view's bug or a refused query: one line on the page, the rest still works
        view_error(view, exc)
