"""Screenshots of every dashboard view, taken in Debian's chromium with Playwright.

    python docs/screenshots.py                      # a fresh demo store (agentmeter demo), into docs/img/
    python docs/screenshots.py --db runs.db --out /tmp/shots --width 390

Runs ``agentmeter dashboard`` as a user does, opens each view once the page is ready (no skeleton, charts
drawn) and saves ``dashboard-<view>.png``. Needs ``agentmeter[dashboard]``, ``playwright`` and
``/usr/bin/chromium`` (``apt-get install -y chromium``; never ``playwright install``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the server and browser helpers the Chromium tests use (tests/_chromium.py)

from tests._chromium import chromium, serve  # noqa: E402

VIEWS = ("Health", "Performance", "Usage", "Cost", "Sessions", "Versions", "Scores", "Run explorer")
READY = ("() => !document.querySelector('[data-testid=\"stSkeleton\"]')"
         " && !document.querySelector('[data-testid=\"stStatusWidget\"]')"
         " && document.querySelectorAll('[data-testid=\"stMetricValue\"]').length > 0")


def wait_ready(page: Any, charts: bool = True) -> None:
    """Until the page is drawn: tiles shown, no skeleton, no script running, charts drawn."""
    page.wait_for_function(READY, timeout=60_000)
    if charts:
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]')]"
            ".every(c => c.querySelector('canvas, svg'))", timeout=60_000)
    # the open tab of the view's sections is drawn (a lazy tab's panel is filled by the run)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stMain\"] [role=\"tabpanel\"]')]"
        ".every(p => p.querySelector('[data-testid=\"stElementContainer\"]'))", timeout=60_000)
    page.wait_for_timeout(300)  # Vega's transitions


def open_view(page: Any, view: str) -> None:
    expand = page.locator('[data-testid="stExpandSidebarButton"]')
    narrow = expand.count() > 0 and expand.first.is_visible()
    if narrow:  # a phone-sized window starts with the sidebar closed
        expand.first.click()
    page.locator('[data-testid="stSidebar"] [data-testid="stRadio"] label').filter(has_text=view).first.click()
    if narrow:
        page.locator('[data-testid="stSidebarCollapseButton"] button, [data-testid="stSidebarCollapseButton"]'
                     ).first.click()
    page.wait_for_function(f"() => [...document.querySelectorAll('h2')].some(h => h.innerText.trim() === {view!r})",
                           timeout=60_000)
    wait_ready(page)


def full_page(page: Any, width: int, path: Path) -> None:
    """Streamlit scrolls inside its main block, so a full-page screenshot needs a viewport that tall."""
    height = page.evaluate("() => Math.max(...[...document.querySelectorAll("
                           "'[data-testid=\"stMain\"], [data-testid=\"stMainBlockContainer\"]')]"
                           ".map(e => e.scrollHeight), 800)")
    page.set_viewport_size({"width": width, "height": int(height) + 40})
    page.wait_for_timeout(500)  # charts resize to the new viewport
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": width, "height": 1000})


def shoot(url: str, out: Path, width: int = 1440, prefix: str = "dashboard") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": 1000})
        page.goto(url)
        wait_ready(page)
        for view in VIEWS:
            open_view(page, view)
            path = out / f"{prefix}-{view.lower().replace(' ', '-')}.png"
            full_page(page, width, path)
            shots.append(path)
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=None, help="store to show (default: a fresh demo store)")
    parser.add_argument("--runs", type=int, default=150, help="runs of the fresh demo store (default 150)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder of the screenshots")
    parser.add_argument("--width", type=int, default=1440, help="viewport width in px (default 1440)")
    args = parser.parse_args()
    db = args.db
    if db is None:
        db = Path(tempfile.mkdtemp(prefix="agentmeter-shots-")) / "demo.db"
        subprocess.run([sys.executable, "-m", "agentmeter", "demo", "--runs", str(args.runs), "--db", str(db),
                        "--seed", "3", "--offline"], check=True, stdout=subprocess.DEVNULL)
    with serve(db=db) as server:
        for path in shoot(server.url, args.out, args.width):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
