"""`agentmeter dashboard` as a user runs it: a busy port is reported before anything starts."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .._servers import free_port


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_busy_port_says_so_and_suggests_another(host: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "agentmeter", "dashboard", "--db", str(tmp_path / "x.db"), "--port", str(port),
             "--host", host, "--headless"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)},
        )
    assert proc.returncode == 1
    assert proc.stdout == ""  # no "on http://..." banner for a server that never started
    assert f"port {port}" in proc.stderr and "in use" in proc.stderr, proc.stderr
    suggested = re.search(r"--port (\d+)", proc.stderr)
    assert suggested and int(suggested.group(1)) != port, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr


def test_an_address_this_machine_does_not_have_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentmeter", "dashboard", "--db", str(tmp_path / "x.db"), "--port", str(free_port()),
         "--host", "192.0.2.1", "--headless"],  # TEST-NET-1: never assigned to a local interface
        capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert "192.0.2.1" in proc.stderr and "--host" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
