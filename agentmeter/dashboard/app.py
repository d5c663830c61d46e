"""agentmeter dashboard: health, performance, usage, cost and a run explorer over one Source.

Start it with ``agentmeter dashboard [--source local|mongodb|snowflake] [--db PATH]``. It reads the source
named by ``AGENTMETER_DASHBOARD_SOURCE`` (default ``local``: the SQLite store at ``AGENTMETER_DB``); an
application embedding it (or a test) may put a ready :class:`agentmeter.queries.Source` in
``st.session_state["agentmeter_source"]`` instead. It never writes to the source.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

import streamlit as st

from ..queries import Filters, Source, SourceUnavailable, open_source
from ..queries.base import STATUSES
from . import views

RANGES: dict[str, timedelta | None] = {
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "All time": None,
}

HINTS = {
    "local": "Check the path given with --db (or AGENTMETER_DB) and that it is an agentmeter store.",
    "mongodb": "Check AGENTMETER_MONGODB_URI (host, port, credentials, TLS), that the server is up and reachable "
               "from here, and AGENTMETER_MONGODB_DATABASE / AGENTMETER_MONGODB_COLLECTION.",
    "snowflake": "Check the Snowflake connection parameters (SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER and a password "
                 "or key, or a connections.toml entry), the warehouse, and that the role can read the views "
                 "created by `agentmeter sql`.",
}


def _source_from_env() -> Source:
    kind = os.environ.get("AGENTMETER_DASHBOARD_SOURCE", "local")
    return _cached_source(kind, os.environ.get("AGENTMETER_DB", ""), os.environ.get("AGENTMETER_MONGODB_URI", ""))


@st.cache_resource(show_spinner=False)
def _cached_source(kind: str, db: str, _uri_key: str) -> Source:
    # keyed on the settings that pick the store, so a changed environment gets a new source
    return open_source(kind, **({"db": db} if kind == "local" and db else {}))


def error_panel(kind: str, exc: BaseException) -> None:
    """What went wrong and what to check; the page stops here."""
    hint = getattr(exc, "hint", "") or HINTS.get(kind, "")
    st.error(f"**Cannot reach the {kind} source.**\n\n{exc}")
    st.markdown(f"**What to check:** {hint}\n\nThen reload this page.")
    st.stop()


def empty_state(source: Source) -> None:
    st.info(
        f"**No runs yet** in {source.describe()}.\n\n"
        "Run `agentmeter demo` to record a few sample runs, or decorate your agent with "
        "`@agentmeter.track_run` and run it; then reload this page."
    )
    st.stop()


def sidebar(source: Source) -> tuple[Filters, str, str]:
    st.sidebar.header("Filters")
    view = st.sidebar.radio("View", list(views.VIEWS), key="view")
    label = st.sidebar.selectbox("Time range", [*RANGES, "Custom"], index=len(RANGES) - 1,
                                 key="time_range") or "All time"
    now = datetime.now(timezone.utc)
    since: datetime | None
    until: datetime | None = None
    if label == "Custom":
        picked: Any = st.sidebar.date_input("From - to (UTC)", value=(now.date() - timedelta(days=7), now.date()),
                                            key="custom_range")
        start, end = picked or (None, None)
        since = datetime.combine(start, datetime.min.time(), timezone.utc) if start else None
        until = datetime.combine(end, datetime.min.time(), timezone.utc) + timedelta(days=1) if end else None
    else:
        delta = RANGES[label]
        since = now.replace(second=0, microsecond=0) - delta if delta is not None else None
    agents = views.cached_agents(source)
    chosen = st.sidebar.multiselect("Agent", agents, key="agents", placeholder="All agents")
    statuses = st.sidebar.multiselect("Run status", list(STATUSES), key="statuses", placeholder="All statuses")
    span = (until or now) - since if since is not None else None
    auto = "hour" if span is not None and span <= timedelta(days=2) else "day"
    bucket = st.sidebar.selectbox("Time bucket", ["auto", "hour", "day"], key="bucket") or "auto"
    if st.sidebar.button("Refresh data"):
        st.cache_data.clear()
    filters = Filters(since=since.isoformat() if since else None, until=until.isoformat() if until else None,
                      agents=tuple(chosen), statuses=tuple(statuses))
    return filters, view or "Health", auto if bucket == "auto" else bucket


def main() -> None:
    st.set_page_config(page_title="agentmeter", page_icon="📈", layout="wide")
    # six headline tiles a row: a smaller figure than Streamlit's default keeps "1,234.5 ms" uncut
    st.markdown("<style>[data-testid='stMetricValue'] {font-size: 1.75rem;}</style>", unsafe_allow_html=True)
    injected: Any = st.session_state.get("agentmeter_source")
    kind = getattr(injected, "kind", None) or os.environ.get("AGENTMETER_DASHBOARD_SOURCE", "local")
    try:
        source = injected if injected is not None else _source_from_env()
        kind = source.kind
        source.check()
        has_runs = source.has_runs()
    except (SourceUnavailable, ValueError) as exc:
        error_panel(kind, exc)
        return
    st.title("agentmeter")
    st.caption(f"Source: {source.describe()}")
    if not has_runs:
        empty_state(source)
        return
    try:
        filters, view, bucket = sidebar(source)
        st.header(view)
        views.VIEWS[view](source, filters, bucket)
    except SourceUnavailable as exc:
        error_panel(kind, exc)

