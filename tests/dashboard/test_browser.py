"""`agentmeter dashboard` as a user runs it, driven by Playwright with Debian's chromium: the key numbers,
every control clicked through in every view (time ranges with typed custom dates, agent and status filters,
time buckets, the run list's sort, id search and run picker), and hostile user strings shown as text with no
request to the beacon they point at.

Needs /usr/bin/chromium (`apt-get install -y chromium`); never `playwright install`. The screenshots in
docs/img/ come from docs/screenshots.py.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentmeter.sinks import SQLiteSink

from .._chromium import chromium, serve
from .conftest import NASTY_AGENT, aged_docs, expected, in_range, payload, seed_hostile

VIEWS = ("Health", "Performance", "Usage", "Cost", "Run explorer")
RANGES: dict[str, timedelta | None] = {
    "Last hour": timedelta(hours=1), "Last 24 hours": timedelta(hours=24), "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30), "All time": None,
}
#: the page is drawn: the script is not running (as the frontend sees it), tiles shown, no skeleton, no
#: element left from an earlier run, no running indicator, every chart drawn
READY = """() => document.querySelector('[data-testid="stApp"]')?.dataset.testScriptState === 'notRunning'
    && !document.querySelector('[data-testid="stSkeleton"], [data-stale="true"]')
    && !document.querySelector('[data-testid="stStatusWidget"]')
    && document.querySelectorAll('[data-testid="stMetricValue"]').length > 0
    && [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].every(c => c.querySelector('canvas, svg'))"""
pytestmark = pytest.mark.browser
Docs = list[dict[str, Any]]


@contextmanager
def serving(db: Path, tmp_path: Path) -> Iterator[str]:
    """The real command on ``db``, as a user runs it; yields the page URL once Streamlit answers (and checks
    that stopping it leaves no server behind, see :func:`tests._chromium.serve`)."""
    with serve(db=db, logs=tmp_path) as server:
        yield server.url


@pytest.fixture
def dashboard(seeded: tuple[Path, Docs], tmp_path: Path) -> Iterator[str]:
    with serving(seeded[0], tmp_path) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def ready(page: Any) -> None:
    page.wait_for_function(READY, timeout=120_000)


def problems(page: Any) -> list[str]:
    """Tracebacks and error panels on the page (a run's own error in the Run explorer is not one)."""
    shown = page.locator('[data-testid="stException"]').all_inner_texts()
    for text in page.locator('[data-testid="stAlert"]').all_inner_texts():
        if text.startswith("Cannot reach") or any(text.startswith(f"{v} failed:") for v in VIEWS):
            shown.append(text)
    return shown


def tiles(page: Any) -> dict[str, str]:
    return {m.locator('[data-testid="stMetricLabel"]').inner_text().strip():
            m.locator('[data-testid="stMetricValue"]').inner_text().strip()
            for m in page.locator('[data-testid="stMetric"]').all()}


def wait_tile(page: Any, label: str, value: str) -> None:
    """Until the tile ``label`` reads ``value`` (the rerun the last click started has drawn)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            """([label, value]) => [...document.querySelectorAll('[data-testid="stMetric"]')].some(m =>
                m.querySelector('[data-testid="stMetricLabel"]')?.innerText.trim() === label
                && m.querySelector('[data-testid="stMetricValue"]')?.innerText.trim() === value)""",
            arg=[label, value], timeout=120_000)
    except PlaywrightTimeout as exc:
        chosen = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stMultiSelect"] [data-tag]')]
            .map(t => t.getAttribute('aria-label'))""")
        raise AssertionError(f"tile {label!r} never read {value!r}: tiles {tiles(page)}, chosen {chosen}") from exc
    ready(page)
    assert problems(page) == []


class Reruns:
    """``after(action)`` does what starts one rerun and returns once Streamlit has finished that run (the
    ``script_finished`` message on the page's websocket) and the page shows it: drawn, and with the tile
    reading what the run must show when one is named. The next click never lands on a page that is being
    redrawn, and nothing waits a fixed time. (The frontend's own script state, ``stApp``'s
    ``data-test-script-state``, may skip from ``notRunning`` to ``notRunning`` when a short run's messages are
    drawn in one go, so it is only part of :data:`READY`.)"""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.ws: Any = None
        page.on("websocket", self._opened)

    def _opened(self, ws: Any) -> None:
        if ws.url.endswith("/_stcore/stream"):
            self.ws = ws

    @staticmethod
    def _finished(payload: str | bytes) -> bool:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if isinstance(payload, str):
            return False
        msg = ForwardMsg.FromString(payload)
        return msg.WhichOneof("type") == "script_finished" and \
            msg.script_finished == ForwardMsg.ScriptFinishedStatus.FINISHED_SUCCESSFULLY

    def after(self, action: Callable[[], Any], what: Any, tile: tuple[str, str] | None = None) -> None:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        assert self.ws is not None, "the page has no Streamlit websocket"
        try:
            with self.ws.expect_event("framereceived", predicate=self._finished, timeout=120_000):
                action()
        except PlaywrightTimeout as exc:
            raise AssertionError(f"no run finished after {what}") from exc
        if tile is not None:
            wait_tile(self.page, *tile)
        ready(self.page)
        assert problems(self.page) == [], what


def choose(page: Any, label: str, option: str) -> None:
    """Open the select box ``label`` from the keyboard and click ``option``. A rerun that was still on its
    way (a click whose result looked like the last one) redraws the box and closes its list: then open it
    again.

    Not opened by clicking the box: its list opens on the press, and on a loaded machine it can be under
    the pointer when the button is released, which chooses the entry there. A DOM event log of a run that
    failed under load (two CPU hogs beside it) showed pointerdown on the "Run status" box, pointerup on
    the list's "Select all" at the same point, and all three statuses chosen. Focus and ArrowDown open the
    list with no release to land on it; the option is then clicked once the list stands still."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(3):
        page.get_by_role("combobox", name=label, exact=True).focus()
        page.keyboard.press("ArrowDown")
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=10_000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
            ready(page)
            if _tag_chosen(page, label, option):  # the click landed as the list was redrawn
                return
            if attempt == 2:
                raise


def _tag_chosen(page: Any, label: str, option: str) -> bool:
    """Whether the multiselect ``label`` shows ``option`` as chosen (chosen options leave its list)."""
    return bool(page.evaluate(
        """([label, option]) => [...document.querySelectorAll('[data-testid="stMultiSelect"]')]
            .filter(m => m.querySelector(`input[aria-label="${label}"]`))
            .some(m => [...m.querySelectorAll('[data-tag]')].some(t => t.getAttribute('aria-label') === option))""",
        [label, option]))


def open_view(page: Any, view: str) -> None:
    page.locator('[data-testid="stSidebar"] [data-testid="stRadio"] label').filter(has_text=view).first.click()
    page.wait_for_function("v => [...document.querySelectorAll('h2')].some(h => h.innerText.trim() === v)",
                           arg=view, timeout=120_000)
    ready(page)
    assert problems(page) == [], view


#: the open tab ``label`` has its section drawn: only an open lazy tab has a panel, filled by the rerun its
#: click starts
TAB_DRAWN = """label => {
    const tab = [...document.querySelectorAll('[data-testid="stMain"] [role="tab"]')]
        .find(t => t.innerText.trim() === label);
    if (!tab || tab.getAttribute('aria-selected') !== 'true') return false;
    const panel = document.getElementById(tab.getAttribute('aria-controls'));
    return !!panel && !!panel.querySelector('[data-testid="stElementContainer"]');
}"""


def tab_labels(page: Any) -> list[str]:
    """The labels of the view's tabs (its sections below the headline)."""
    return [t.strip() for t in page.locator('[data-testid="stMain"] [role="tab"]').all_inner_texts()]


def open_tab(page: Any, label: str) -> None:
    """Click the tab ``label`` and wait until its section is drawn."""
    page.locator('[data-testid="stMain"]').get_by_role("tab", name=label, exact=True).click()
    page.wait_for_function(TAB_DRAWN, arg=label, timeout=120_000)
    ready(page)
    assert problems(page) == [], label


def panel(page: Any) -> Any:
    """The open tab's panel."""
    return page.locator('[data-testid="stMain"] [role="tabpanel"]').first


def wait_picked(page: Any, run_id: str) -> None:
    """Until the Run explorer's run picker shows ``run_id`` and the page is drawn."""
    page.wait_for_function("id => document.querySelector('input[aria-label=\"Run\"]')?.value.startsWith(id)",
                           arg=run_id, timeout=120_000)
    ready(page)


def pick_run(page: Any, run_id: str) -> None:
    """Open a run with the run picker: type its id to narrow the list (it is long), click it."""
    picker = page.get_by_role("combobox", name="Run", exact=True)
    picker.click()
    picker.fill(run_id)
    page.get_by_role("option").filter(has_text=run_id).first.click()
    wait_picked(page, run_id)


def type_dates(page: Any, first: date, last: date) -> None:
    """Type a custom range into the date range input, as a keyboard user does, and leave the field."""
    for end, day in (("start", first), ("end", last)):
        page.get_by_role("spinbutton", name=f"year, From - to (UTC) {end} date").click()
        page.keyboard.type(f"{day:%Y%m%d}")
    page.keyboard.press("Tab")
    page.locator("h1").first.click()


def test_dashboard_renders_key_numbers_in_chromium(
    dashboard: str, browser: Any, seeded: tuple[Path, Docs], tmp_path: Path
) -> None:
    want = expected(seeded[1])
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(dashboard)
    ready(page)
    metrics = tiles(page)
    assert metrics["Runs"] == f"{want['runs']:,}"
    assert metrics["Success rate"] == f"{want['success_rate'] * 100:.2f}%"
    assert metrics["Tokens"] == f"{want['total_tokens']:,}"
    digits = 3 - math.floor(math.log10(want["cost_usd"]))
    assert metrics["Cost"] == f"${want['cost_usd']:.{digits}f}"
    # the sections below the headline are tabs; the first is drawn, the others when clicked
    assert tab_labels(page) == ["Recent failures", "Errors by step", "Errors by provider and model"]
    page.wait_for_function(TAB_DRAWN, arg="Recent failures", timeout=120_000)
    assert panel(page).locator('[data-testid="stDataFrame"]').count() == 1
    for label in ("Errors by step", "Errors by provider and model"):
        open_tab(page, label)
        assert panel(page).locator('[data-testid="stDataFrame"]').count() == 1, label
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


@pytest.fixture
def aged_store(seeded: tuple[Path, Docs], tmp_path: Path) -> tuple[Path, Docs]:
    docs = aged_docs(seeded[1])
    db = tmp_path / "aged.db"
    sink = SQLiteSink(db)
    sink.write(docs)
    sink.close()
    return db, docs


def count(kept: Docs, agents: tuple[str, ...] = (), statuses: tuple[str, ...] = ()) -> str:
    """How many of ``kept`` the agent and status filters keep, as a tile shows it."""
    n = sum(1 for d in kept if (not agents or d["agent"] in agents) and (not statuses or d["status"] in statuses))
    return f"{n:,}"


def test_every_control_in_every_view_in_chromium(aged_store: tuple[Path, Docs], browser: Any,
                                                  tmp_path: Path) -> None:
    db, docs = aged_store
    today = datetime.now(timezone.utc).date()
    first, last = today - timedelta(days=3), today
    custom = in_range(docs, datetime.combine(first, datetime.min.time(), timezone.utc),
                      datetime.combine(last, datetime.min.time(), timezone.utc) + timedelta(days=1))
    agents, statuses = ("researcher", NASTY_AGENT), ("error",)
    with serving(db, tmp_path) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        runs = Reruns(page)
        for view in VIEWS:
            page.goto(f"{url}/?view={view.replace(' ', '+')}")  # fresh filters; a link opens the view
            page.wait_for_function("v => [...document.querySelectorAll('h2')].some(h => h.innerText.trim() === v)",
                                   arg=view, timeout=120_000)
            ready(page)
            assert problems(page) == [], view
            tile = "Matching runs" if view == "Run explorer" else "Runs"
            wait_tile(page, tile, count(docs))  # the page opens on All time
            for label, delta in RANGES.items():
                kept = in_range(docs, datetime.now(timezone.utc) - delta if delta else None)
                runs.after(lambda label=label: choose(page, "Time range", label), (view, label), (tile, count(kept)))
            runs.after(lambda: choose(page, "Time range", "Custom"), (view, "Custom"))
            runs.after(lambda: type_dates(page, first, last), (view, first, last), (tile, count(custom)))
            for i, agent in enumerate(agents):
                runs.after(lambda agent=agent: choose(page, "Agent", agent), (view, agent),
                           (tile, count(custom, agents[:i + 1])))
                page.keyboard.press("Escape")
            runs.after(lambda: choose(page, "Run status", statuses[0]), (view, statuses),
                       (tile, count(custom, agents, statuses)))
            page.keyboard.press("Escape")
            if view != "Run explorer":
                for bucket in ("minute", "hour", "day"):
                    runs.after(lambda bucket=bucket: choose(page, "Time bucket", bucket), (view, bucket))
                    assert page.locator('input[aria-label="Time bucket"]').input_value() == bucket, (view, bucket)
                    assert page.locator('[data-testid="stVegaLiteChart"]').count() > 0, (view, bucket)
        page.close()


def test_run_explorer_sort_search_and_pick_in_chromium(aged_store: tuple[Path, Docs], browser: Any,
                                                       tmp_path: Path) -> None:
    db, docs = aged_store
    rank = {"error": 0, "cancelled": 1, "success": 2}

    def first(key: Callable[[dict[str, Any]], Any], ascending: bool) -> dict[str, Any]:
        # ties broken by run_id descending, as the store sorts: stable sorts, the last key first
        by_id = sorted(docs, key=lambda d: d["run_id"], reverse=True)
        return sorted(by_id, key=key, reverse=not ascending)[0]

    firsts = {
        "Newest first": first(lambda d: d["started_at"], False),
        "Oldest first": min(docs, key=lambda d: (d["started_at"], d["run_id"])),
        "Slowest first": first(lambda d: d["duration_ms"], False),
        "Fastest first": first(lambda d: d["duration_ms"], True),
        "Most expensive first": first(lambda d: d["cost_usd"] or 0, False),
        "Errors first": first(lambda d: (rank[d["status"]], [-ord(c) for c in d["started_at"]]), True),
    }
    with serving(db, tmp_path) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(url)
        ready(page)
        open_view(page, "Run explorer")
        picker = page.get_by_role("combobox", name="Run", exact=True)
        for sort, run in firsts.items():
            choose(page, "Sort", sort)
            wait_picked(page, run["run_id"])
            wait_tile(page, "Status", run["status"])  # the picked run's own tiles are drawn
        target = docs[7]
        page.get_by_label("Run id starts with").fill(target["run_id"][:-2])
        page.keyboard.press("Enter")
        wait_tile(page, "Matching runs", "1")
        assert picker.input_value().startswith(target["run_id"])
        page.get_by_label("Run id starts with").fill("")
        page.keyboard.press("Enter")
        wait_tile(page, "Matching runs", f"{len(docs):,}")
        other = docs[11]
        pick_run(page, other["run_id"])
        wait_tile(page, "Status", other["status"])
        page.wait_for_function(TAB_DRAWN, arg="About this run", timeout=120_000)
        open_tab(page, "Steps")
        assert panel(page).locator('[data-testid="stDataFrame"]').count() == 1
        page.close()


class _Beacon(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def beacon() -> Iterator[tuple[int, list[str]]]:
    """A loopback HTTP server standing for an outside host; yields its port and the paths it was asked for."""
    hits: list[str] = []
    handler = type("Beacon", (_Beacon,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], hits
    finally:
        server.shutdown()
        server.server_close()


def _hover_charts(page: Any) -> None:
    """Move the mouse over every chart, so Vega draws the tooltips of the bars and points under it."""
    from playwright.sync_api import Error

    charts = page.locator('[data-testid="stVegaLiteChart"]')
    for i in range(charts.count()):
        for _ in range(3):  # a chart Streamlit redraws (a resize) is a new element: find it again
            try:
                chart = charts.nth(i)
                chart.scroll_into_view_if_needed()
                box = chart.bounding_box()
                break
            except Error:
                ready(page)
        else:
            raise AssertionError(f"chart {i} of {charts.count()} never settled", page.locator("h2").all_inner_texts())
        if not box:
            continue
        for fx in (0.15, 0.3, 0.45, 0.6, 0.75, 0.9):
            for fy in (0.2, 0.4, 0.6, 0.8):
                page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)


def test_hostile_user_strings_are_text_and_fetch_nothing_in_chromium(browser: Any, tmp_path: Path) -> None:
    with beacon() as (port, hits):
        db = tmp_path / "hostile.db"
        docs = seed_hostile(db, port)
        fetched: list[str] = []
        with serving(db, tmp_path) as url:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.on("request", lambda r: fetched.append(r.url) if f":{port}" in r.url else None)
            page.goto(url)
            ready(page)
            texts = []
            shown = nav_views(page)  # every view, Sessions, Versions and Scores included; the explorer last
            assert set(VIEWS) <= set(shown) and shown[-1] == "Run explorer", shown
            for view in shown[:-1]:
                open_view(page, view)
                for label in tab_labels(page):  # every section: a closed tab draws nothing
                    open_tab(page, label)
                    _hover_charts(page)
                    texts.append(page.locator("body").inner_text())
            open_view(page, "Run explorer")
            picker = page.get_by_role("combobox", name="Run", exact=True)
            labels = []
            for doc in docs:
                pick_run(page, doc["run_id"])
                ready(page)
                assert problems(page) == []
                labels.append(picker.input_value())
                for label in tab_labels(page):
                    open_tab(page, label)
                    _hover_charts(page)
                    texts.append(page.locator("body").inner_text())
            beacons = page.locator(f"img[src*='{port}'], a[href*='{port}'], strong:has-text('bold-')").evaluate_all(
                "els => els.map(e => e.outerHTML)")
            page.close()
    assert hits == [] and fetched == [], (hits, fetched)
    assert beacons == []
    text = "\n".join(texts)
    # the strings shown outside tables (tables are drawn on a canvas) read exactly as written (inside a
    # captured JSON value, as JSON writes them)
    for where in ("error", "errortype", "output", "input"):
        assert payload(where, port) in text or json.dumps(payload(where, port)) in text, where
    assert all(payload("agent", port) in label for label in labels), labels


#: what is cut off or sticks out at the page's width: the page scrolling sideways, an element reaching past
#: the viewport that no scrolling box of its own holds (a wide table scrolls inside its frame: that is not
#: cut off), and a tile's label or value wider than its box (Streamlit cuts it with an ellipsis)
OVERFLOW = """() => {
    const vw = document.documentElement.clientWidth;
    const out = [];
    const page = document.scrollingElement;
    if (page.scrollWidth > vw + 1) out.push(`the page scrolls sideways: ${page.scrollWidth} px wide in ${vw} px`);
    const held = el => {
        for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
            if (a.matches('[data-testid="stSidebar"]')) return true;  // the sidebar (a drawer at 390 px)
            if (getComputedStyle(a).overflowX !== 'visible') return a.getBoundingClientRect().right <= vw + 1;
        }
        return false;
    };
    const name = el => (el.getAttribute('data-testid') || el.tagName.toLowerCase()) + ' '
        + JSON.stringify((el.innerText || '').trim().slice(0, 40));
    for (const el of document.querySelectorAll('[data-testid="stMain"] *')) {
        const r = el.getBoundingClientRect();
        if (r.width && (r.right > vw + 1 || r.left < -1) && !held(el))
            out.push(`${name(el)} spans ${Math.round(r.left)}..${Math.round(r.right)} px in ${vw} px`);
    }
    for (const tile of document.querySelectorAll('[data-testid="stMetricValue"], [data-testid="stMetricLabel"]'))
        for (const el of [tile, ...tile.querySelectorAll('*')])
            if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible')
                out.push(`${name(el)} is cut: ${el.scrollWidth} px of text in ${el.clientWidth} px`);
    return out;
}"""


def nav_views(page: Any) -> list[str]:
    """The views the page's navigation offers (the sidebar's View radio), views added later included."""
    options = page.locator('[data-testid="stSidebar"] [role="radiogroup"][aria-label="View"] '
                           '[data-testid="stRadioOption"]')
    options.first.wait_for(timeout=120_000)
    return [t.strip() for t in options.all_inner_texts()]


@pytest.fixture
def big_store(seeded: tuple[Path, Docs], tmp_path: Path) -> tuple[Path, Docs]:
    """The seeded runs with the figures of a big store: tokens in the billions, costs in the thousands of
    dollars, durations in minutes (every count, cost and duration of a run, its steps and calls scaled)."""
    scale = {"input_tokens": 200_000, "output_tokens": 200_000, "total_tokens": 200_000, "cost_usd": 60_000.0,
             "duration_ms": 2_000.0}
    docs = []
    for doc in seeded[1]:
        doc = json.loads(json.dumps(doc))
        for item in (doc, *doc["steps"], *doc["calls"]):
            for key, factor in scale.items():
                if isinstance(item.get(key), (int, float)) and not isinstance(item.get(key), bool):
                    item[key] = type(item[key])(item[key] * factor)
        docs.append(doc)
    db = tmp_path / "big.db"
    sink = SQLiteSink(db)
    sink.write(docs)
    sink.close()
    return db, docs


@pytest.mark.parametrize("width", [1440, 390])
def test_every_view_fits_the_width_in_chromium(big_store: tuple[Path, Docs], browser: Any, tmp_path: Path,
                                               width: int) -> None:
    db, docs = big_store
    want = expected(docs)
    assert want["total_tokens"] > 1e9 and want["cost_usd"] > 1000  # tiles as wide as a big store's
    with serving(db, tmp_path) as url:
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(url)
        ready(page)
        views = nav_views(page)
        assert set(VIEWS) <= set(views), views
        found = {}
        for view in views:
            page.goto(f"{url}/?view={view.replace(' ', '+')}")  # a link opens the view it names
            page.wait_for_function("v => [...document.querySelectorAll('h2')].some(h => h.innerText.trim() === v)",
                                   arg=view, timeout=120_000)
            ready(page)
            assert problems(page) == [], view
            if view == "Health":
                assert tiles(page)["Tokens"] == f"{want['total_tokens']:,}"  # the whole number, on the page
            found[view] = page.evaluate(OVERFLOW)
            for label in tab_labels(page)[1:]:  # every section (the first is open)
                open_tab(page, label)
                found[view] += page.evaluate(OVERFLOW)
        page.close()
    assert found == {view: [] for view in views}

