"""agentmeter never prints on stdout, and a test process that used ``capture_runs()`` never writes its
leftover runs into the user's real store at exit."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_NOISY = r"""
import asyncio, gc, structlog
import agentmeter
from agentmeter import track_call, track_run, track_step
# the application's own structlog setup, printing JSON to stdout: its lines stay there, agentmeter's do not
structlog.configure(processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
                    logger_factory=structlog.PrintLoggerFactory())
structlog.get_logger().info("app line")

@track_step
def stream():
    yield 1
    yield 2

with track_run("r", metadata={object(): 1}) as run:
    with track_call("p", "op") as call:
        call.record_usage(input_tokens=-1, model=object())
        call.record_sizes("abc")
    run.add_tags(5)
    s = stream()
    next(s)
    s.close()
    dropped = stream()  # keeps the run open until it is collected
del dropped
gc.collect()
agentmeter.flush()
run.set_metadata(late=True)  # after the end
print("END", flush=True)
"""


def test_warnings_go_to_stderr_and_stdout_holds_only_what_the_program_printed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMETER_")}
    env.update(PYTHONPATH=str(ROOT), AGENTMETER_DB=str(tmp_path / "a.db"), HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _NOISY], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == '{"event": "app line", "level": "info"}\nEND\n'
    for key in ("usage.input_tokens", "usage.model", "call.request_bytes", "tags.type", "metadata.key",
                "handle.after_end"):
        assert f'"key": "{key}"' in out.stderr, key  # through the application's renderer, on stderr
    with sqlite3.connect(tmp_path / "a.db") as conn:
        assert conn.execute("SELECT status FROM agent_runs").fetchall() == [("cancelled",)]


_LEAKY_TEST = r"""
import agentmeter
from agentmeter import track_run, track_step
from agentmeter.testing import capture_runs

@track_step
def stream():
    yield 1

with capture_runs() as cap:
    with track_run("finished"):
        pass
    track_run("left-open").__enter__()  # a test that never closes its run
    with track_run("with-an-open-stream"):
        s = stream()
assert [r["name"] for r in cap.runs] == ["finished"]
with track_run("after-the-capture"):  # tracked for real, into the configured store
    pass
"""


def test_runs_left_open_under_capture_runs_never_reach_the_real_store_at_exit(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMETER_")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp_path))  # the default store: ~/.agentmeter/agentmeter.db
    out = subprocess.run([sys.executable, "-c", _LEAKY_TEST], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    db = tmp_path / ".agentmeter" / "agentmeter.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name FROM agent_runs").fetchall() == [("after-the-capture",)]
    assert out.stdout == ""
