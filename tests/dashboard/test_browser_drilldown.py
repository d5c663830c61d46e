"""Drill-down in the real page (`agentmeter dashboard` in Debian's chromium, driven by Playwright): a click
on a row of a run table opens that run in the Run explorer, and a click on a bar filters by it. The other
drill-downs (every run table, bar and brushed time chart) are in test_app_drilldown.py under AppTest.

Needs /usr/bin/chromium (`apt-get install -y chromium`); never `playwright install`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .._chromium import chromium as launch
from .conftest import expected
from .test_browser import open_tab, open_view, panel, problems, ready, serving, tiles, wait_picked, wait_tile

pytestmark = pytest.mark.browser
Docs = list[dict[str, Any]]
#: Streamlit's data grid: header and row height in pixels; the row selection checkboxes are its first column
HEADER_PX, ROW_PX, MARKER_PX = 35, 35, 20


@pytest.fixture
def chromium() -> Iterator[Any]:
    with launch() as browser:
        yield browser


def _most_expensive(docs: Docs) -> list[dict[str, Any]]:
    priced = [d for d in docs if d["cost_usd"] is not None]
    return sorted(sorted(priced, key=lambda d: d["run_id"]), key=lambda d: d["cost_usd"], reverse=True)


def test_clicking_a_run_row_and_a_bar_in_chromium(seeded: tuple[Path, Docs], chromium: Any, tmp_path: Path) -> None:
    db, docs = seeded
    with serving(db, tmp_path) as url:
        page = chromium.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(url)
        ready(page)
        open_view(page, "Cost")
        # a row: the second most expensive run, clicked in the "Most expensive runs" grid
        target = _most_expensive(docs)[1]
        newest = max(docs, key=lambda d: (d["started_at"], d["run_id"]))
        assert target["run_id"] != newest["run_id"]  # the Run explorer would open the newest without the click
        open_tab(page, "Most expensive runs")
        grid = panel(page).locator('[data-testid="stDataFrame"]').first
        grid.scroll_into_view_if_needed()
        ready(page)
        box = grid.bounding_box()
        page.mouse.click(box["x"] + MARKER_PX, box["y"] + HEADER_PX + ROW_PX * 1 + ROW_PX / 2)
        page.wait_for_function("v => [...document.querySelectorAll('h2')].some(h => h.innerText.trim() === v)",
                               arg="Run explorer", timeout=60_000)
        wait_picked(page, target["run_id"])
        wait_tile(page, "Status", target["status"])
        assert problems(page) == []
        # a bar: an agent's bar of "Cost by agent" sets the agent filter
        open_view(page, "Cost")
        open_tab(page, "By agent")
        chart = panel(page).locator('[data-testid="stVegaLiteChart"]').first
        chart.scroll_into_view_if_needed()
        ready(page)
        bars = chart.locator(".mark-rect path")
        labels = [bars.nth(i).get_attribute("aria-label") or "" for i in range(bars.count())]
        pick = next(i for i, label in enumerate(labels) if "writer" in label)
        bars.nth(pick).click()
        page.wait_for_function(
            """() => [...document.querySelectorAll('[data-testid="stMultiSelect"]')]
                .some(m => m.querySelector('input[aria-label="Agent"]') && m.querySelector('[data-tag]'))""",
            timeout=60_000)
        want = expected(docs, ("writer",))
        wait_tile(page, "Runs", f"{want['runs']:,}")
        assert 0 < want["runs"] < len(docs)
        assert re.search(r"writer", page.locator('[data-testid="stSidebar"]').inner_text())
        assert tiles(page)["Runs"] == f"{want['runs']:,}"
        page.close()


def test_dragging_across_a_time_chart_sets_the_range_and_logs_no_warning(seeded: tuple[Path, Docs], chromium: Any,
                                                                         tmp_path: Path) -> None:
    db, docs = seeded
    with serving(db, tmp_path) as url:
        page = chromium.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(url)
        ready(page)
        chart = page.locator('[data-testid="stVegaLiteChart"]').first  # Health: runs by status over time
        chart.scroll_into_view_if_needed()
        box = chart.locator("canvas, svg").first.bounding_box()
        y = box["y"] + box["height"] * 0.5
        page.mouse.move(box["x"] + box["width"] * 0.15, y)
        page.mouse.down()
        for step in range(1, 11):  # Vega follows the pointer's moves
            page.mouse.move(box["x"] + box["width"] * (0.15 + 0.05 * step), y)
        page.mouse.up()
        page.wait_for_function(
            """() => document.querySelector('[data-testid="stSidebar"]')?.innerText.includes('From the chart:')""",
            timeout=60_000)
        ready(page)
        assert problems(page) == []
        sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
        assert re.search(r"From the chart: \d{4}-\d\d-\d\d \d\d:\d\d to \d{4}-\d\d-\d\d \d\d:\d\d UTC", sidebar)
        assert "From - to (UTC)" in sidebar  # the range is Custom now: its date input is shown
        want = expected(docs)
        assert 0 < int(tiles(page)["Runs"].replace(",", "")) <= want["runs"]
        page.close()
    logs = "".join(p.read_text() for p in tmp_path.glob("streamlit-*.log"))
    assert "Session State API" not in logs and "WARNING" not in logs, logs
