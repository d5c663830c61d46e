"""What ``agentmeter dashboard`` reads at start (agentmeter/dashboard/prewarm.py): after it, the default page
runs no query, and shows exactly what a page of a cold cache shows; the server does it in its own runtime's
cache, before anyone opens a page."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from agentmeter.dashboard import prewarm
from agentmeter.queries.local import LocalSource

from .. import _chromium as helpers
from ._apptest import Seeded, app, metrics

#: Source methods that are not queries of the cache: the page calls them on every run
NOT_CACHED = {"describe", "check", "has_runs"}


class CountingSource(LocalSource):
    """The real local store, recording the name of every other public method the page or prewarm calls."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.asked: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if not name.startswith("_") and name not in NOT_CACHED and callable(value):
            super().__getattribute__("asked").append(name)
        return value


def _shown(at: AppTest) -> tuple[dict[str, str], list[pd.DataFrame], list[tuple[str, bytes]]]:
    """The tiles, the tables and the charts (spec and data) of a page."""
    return (metrics(at), [d.value for d in at.dataframe],
            [(c.proto.spec, c.proto.data.data) for c in at.get("vega_lite_chart")])


def _warm_in_a_thread(source: LocalSource) -> None:
    """prewarm.first_page off the script's thread, as the server runs it (no ScriptRunContext)."""
    failed: list[BaseException] = []

    def target() -> None:
        try:
            prewarm.first_page(source)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    assert failed == []


def test_the_default_page_after_prewarm_runs_no_query_and_shows_the_same(seeded: Seeded) -> None:
    cold_source = CountingSource(seeded[0])
    cold = app(cold_source).run()
    assert not cold.exception and not cold.error
    assert "kpis" in cold_source.asked and "status_over_time" in cold_source.asked  # the counting works
    st.cache_data.clear()

    source = CountingSource(seeded[0])
    _warm_in_a_thread(source)
    assert sorted(set(source.asked)) == sorted(set(cold_source.asked))  # what the page would have read
    source.asked.clear()
    warm = app(source).run()
    assert not warm.exception and not warm.error
    assert source.asked == []  # every query of the page was already in its cache
    assert warm.sidebar.radio(key="view").value == "Health"
    cold_tiles, cold_tables, cold_charts = _shown(cold)
    warm_tiles, warm_tables, warm_charts = _shown(warm)
    assert warm_tiles == cold_tiles and len(warm_tiles) >= 12
    assert len(warm_tables) == len(cold_tables) > 0
    for w, c in zip(warm_tables, cold_tables, strict=True):
        pd.testing.assert_frame_equal(w, c)
    assert warm_charts == cold_charts and warm_charts


def test_prewarm_of_an_empty_store_reads_nothing_and_the_page_shows_the_empty_state(tmp_path: Path) -> None:
    source = CountingSource(tmp_path / "none.db")
    _warm_in_a_thread(source)
    assert source.asked == []
    at = app(source).run()
    assert any(i.value.startswith("**No runs yet**") for i in at.info)


@pytest.mark.parametrize("kind", ["mongodb", "snowflake"])
def test_only_the_local_store_is_read_at_start(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMETER_DASHBOARD_SOURCE", kind)
    assert prewarm.in_background() is None


def _lookups(url: str) -> dict[tuple[str, str], int]:
    """The server's cache lookups (Streamlit's /_stcore/metrics): (cached function, hit or miss) -> count."""
    with urllib.request.urlopen(f"{url}/_stcore/metrics?families=cache_lookups", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        found = re.match(r'cache_lookups_total\{(.*)\} (\d+)', line)
        if found:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1)))
            out[(labels["cache"].rpartition(".")[2], labels["result"])] = int(found.group(2))
    return out


def test_the_server_reads_the_default_page_into_its_own_cache_before_a_visitor(seeded: Seeded) -> None:
    # agentmeter dashboard as a user starts it; nobody opens a page: the lookups are prewarm's
    with helpers.serve(db=seeded[0]) as server:
        # the source opened once; the agents and the five other filters' lists; kpis, Health's time chart and
        # the tab it opens on (recent failures)
        want = {("_cached_source", "miss"): 1, ("_agents", "miss"): 1, ("_values", "miss"): 5, ("_query", "miss"): 3}
        deadline = time.monotonic() + 60
        while (seen := {k: v for k, v in _lookups(server.url).items() if v}) != want:
            # another process: its metrics endpoint is all there is to wait on
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
        log = server.log.read_text()
    # nothing logged: no warning from Streamlit (a missing run context) and none of prewarm's own failures
    assert "Traceback" not in log and "WARNING" not in log and "agentmeter dashboard:" not in log, log
