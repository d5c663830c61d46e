"""The first page's queries, read before the first visitor asks for them.

``agentmeter dashboard`` starts :func:`in_background` (from ``_serve.py``): once Streamlit's runtime
exists, a daemon thread opens the source the page would open and reads, through the page's own query
cache (:func:`agentmeter.dashboard.views.cached`, shared by every session for ``CACHE_TTL`` seconds), what a
new visitor's first page reads: the sidebar's lists, the headline numbers and the Health view, over all time
with no filter (the page's defaults). A visitor arriving meanwhile waits for the same results instead of
querying again (Streamlit computes a cached value once). Only the local store is read this way: a MongoDB or
Snowflake query at every start could wait on a network or spend warehouse credits for a page nobody opens.

``tests/dashboard/test_prewarm.py`` checks that a page opened after :func:`first_page` runs no query and
shows what an unwarmed page shows; a change to what Health or the sidebar reads must change this module too.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from streamlit import runtime
from streamlit.runtime.runtime import RuntimeState

from ..queries.base import Filters, Source
from . import app, views

__all__ = ["first_page", "in_background"]

log = logging.getLogger("agentmeter.dashboard")

#: how long the thread waits for Streamlit's runtime to start before giving up (seconds)
RUNTIME_WAIT_S = 120.0


def first_page(source: Source) -> None:
    """Read, through the page's query cache, what the default page of a new visitor reads: the sidebar's
    option lists and headline numbers, and Health over all time with no filter (its headline and the tab it
    opens on). Raises what the source
    raises."""
    if not source.has_runs():  # the page shows the empty state and reads nothing else
        return
    views.cached_agents(source)
    for name, _label, _placeholder in app.FILTER_CONTROLS:
        views.cached_values(source, name)
    f = Filters()  # the sidebar's defaults: all time, every agent, status, model, tag...
    k = views.cached(source, "kpis", f).iloc[0]
    bucket = app.auto_bucket(k["first_started_at"], k["last_started_at"])
    views.cached(source, "status_over_time", f, bucket)
    # the tab Health opens on; its other tabs run their queries when they are opened
    views.cached(source, "recent_failures", f, views.RUN_TABLE_ROWS)


def _runtime_started() -> bool:
    """True once Streamlit's runtime has started: its cache storage is then the one its sessions read."""
    return runtime.exists() and runtime.get_instance().state is not RuntimeState.INITIAL


def _warm() -> None:
    deadline = time.monotonic() + RUNTIME_WAIT_S
    while not _runtime_started():
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)  # Streamlit offers no hook for "runtime started": poll it
    started = time.perf_counter()
    try:
        first_page(app.source_from_env())
    except Exception:  # the page will query (and show the error panel) as it would have without this
        log.warning("agentmeter dashboard: reading the first page's queries at start failed", exc_info=True)
        return
    log.info("agentmeter dashboard: the first page's queries read in %.2f s", time.perf_counter() - started)


def in_background() -> threading.Thread | None:
    """Start the daemon thread that reads the first page's queries once Streamlit's runtime has started
    (the local store only). Returns it (None when the source is not the local store); never raises."""
    if os.environ.get("AGENTMETER_DASHBOARD_SOURCE", "local") != "local":
        return None
    thread = threading.Thread(target=_warm, name="agentmeter-dashboard-prewarm", daemon=True)
    thread.start()
    return thread
