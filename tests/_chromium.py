"""The real dashboard in a real browser, shared by the Chromium tests (tests/dashboard/test_browser*.py), the
page benchmark (benchmarks/bench_dashboard.py --browser) and the screenshots (docs/screenshots.py).

Here rather than in the package: it drives Streamlit from outside as a user does (a subprocess, Debian's
/usr/bin/chromium through Playwright), which only a checkout of the repository needs; the scripts put the
repository's root on ``sys.path`` to import it. It imports neither pytest nor agentmeter, and Playwright
only when a browser is launched. Never ``playwright install``: Playwright drives Debian's chromium.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ARGS", "CHROMIUM", "Server", "chromium", "dashboard_command", "free_port", "serve", "streamlit_command"]

CHROMIUM = "/usr/bin/chromium"
#: no sandbox (containers), no GPU, nothing fetched from the internet by the browser itself
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    """A loopback port nobody listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dashboard_command(db: Path, port: int) -> list[str]:
    """``agentmeter dashboard`` on the local store ``db``, as a user types it."""
    return [sys.executable, "-m", "agentmeter", "dashboard", "--db", str(db), "--port", str(port), "--headless"]


def streamlit_command(script: Path, port: int | str = "{port}") -> list[str]:
    """``streamlit run script`` with the server options ``agentmeter dashboard`` gives its own app (for a bare
    app measured in the same harness: the floor a page cannot go below). The default port is the
    placeholder :func:`serve` fills in."""
    return [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
            "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--theme.base", "light", "--client.toolbarMode", "minimal", "--server.fileWatcherType", "none"]


@dataclass(frozen=True)
class Server:
    url: str
    #: seconds from starting the process until its health endpoint answered
    started_s: float
    log: Path


@contextmanager
def serve(command: Sequence[str] | None = None, *, db: Path | None = None, logs: Path | None = None,
          env: dict[str, str] | None = None, timeout_s: float = 120) -> Iterator[Server]:
    """Run a dashboard server until the block ends: ``agentmeter dashboard --db DB`` by default, or
    ``command`` (``{port}`` in it is replaced by a free port). Yields once ``/_stcore/health`` answers.

    The process gets a fresh ``HOME`` (no user's Streamlit settings), logs into ``logs`` (a temporary
    folder by default), is stopped at the end, and its port must be free afterwards: the command becomes
    the server (exec), so stopping it leaves no orphaned Streamlit behind (RuntimeError otherwise).
    """
    import shutil

    port = free_port()
    cmd = [c.replace("{port}", str(port)) for c in command] if command else dashboard_command(db or Path(), port)
    home = Path(tempfile.mkdtemp(prefix="agentmeter-dash-home-"))
    folder = logs or home
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"streamlit-{port}.log"
    log = log_path.open("w")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "HOME": str(home), **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        while True:  # a separate process: poll its health endpoint until it serves
            if proc.poll() is not None:
                raise RuntimeError(f"the dashboard exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.read() == b"ok":
                        break
            except OSError:
                pass
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"the dashboard did not answer in {timeout_s:g} s: see {log_path}")
            time.sleep(0.05)
        yield Server(url, time.perf_counter() - started, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)  # with the log, unless it went to ``logs``
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(f"a Streamlit server outlived its command on port {port}")


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless Debian chromium through Playwright (a playwright ``Browser``)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError("install Debian's chromium: apt-get install -y chromium (never playwright install)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
