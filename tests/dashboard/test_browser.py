"""`agentmeter dashboard` on a seeded local store, driven by Playwright with Debian's chromium.

Needs /usr/bin/chromium (`apt-get install -y chromium`); never `playwright install`. Set
AGENTMETER_TEST_DOCS_SCREENSHOT=1 to also refresh docs/img/dashboard.png.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .._servers import free_port
from .conftest import expected

CHROMIUM = "/usr/bin/chromium"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
pytestmark = pytest.mark.browser


@pytest.fixture
def dashboard(seeded: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> Iterator[str]:
    """The real command, as a user runs it; yields the page URL once Streamlit answers its health check."""
    port = free_port()
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentmeter", "dashboard", "--db", str(seeded[0]), "--port", str(port), "--headless"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(tmp_path)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # a separate process: poll its health endpoint until it serves
            assert proc.poll() is None, (tmp_path / "streamlit.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.read() == b"ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "streamlit did not start in 60 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        # the command became the server (exec): stopping it leaves no orphaned Streamlit listening
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "a Streamlit server outlived the command"


def test_dashboard_renders_key_numbers_in_chromium(
    dashboard: str, seeded: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install -y chromium"
    want = expected(seeded[1])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(dashboard)
            page.wait_for_selector('[data-testid="stMetricValue"]', timeout=60_000)
            page.wait_for_function(
                "() => !document.querySelector('[data-testid=\"stSkeleton\"]')"
                " && document.querySelectorAll('[data-testid=\"stVegaLiteChart\"] canvas,"
                " [data-testid=\"stVegaLiteChart\"] svg').length > 0",
                timeout=60_000,
            )
            metrics = {
                m.locator('[data-testid="stMetricLabel"]').inner_text().strip():
                m.locator('[data-testid="stMetricValue"]').inner_text().strip()
                for m in page.locator('[data-testid="stMetric"]').all()
            }
            assert metrics["Runs"] == f"{want['runs']:,}"
            assert metrics["Success rate"] == f"{want['success_rate'] * 100:.2f}%"
            assert metrics["Tokens"] == f"{want['total_tokens']:,}"
            digits = 3 - math.floor(math.log10(want["cost_usd"]))
            assert metrics["Cost"] == f"${want['cost_usd']:.{digits}f}"
            assert page.get_by_text("Recent failures").count() == 1
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    if os.environ.get("AGENTMETER_TEST_DOCS_SCREENSHOT") == "1":
        DOCS_IMG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMG)
