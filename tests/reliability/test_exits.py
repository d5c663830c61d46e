"""Clean exits: open runs at exit and on SIGTERM become ``cancelled``, a hung sink cannot hold up exit,
and forked children get their own exporter without sending the parent's runs again."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import agentmeter
from agentmeter import track_run, track_step
from agentmeter.sinks import SQLiteSink

from .conftest import ROOT, child_env, run_python, spool_rows, store_ids


def _runs(db: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        runs = {r["name"]: dict(r) for r in conn.execute("SELECT * FROM agent_runs")}
        for run in runs.values():
            run["steps"] = {s["name"]: dict(s) for s in conn.execute(
                "SELECT * FROM run_steps WHERE run_id = ?", (run["run_id"],))}
    return runs


_OPEN_AT_EXIT = r"""
import sys, threading
import agentmeter
from agentmeter import track_run, track_step
from agentmeter.sinks import SQLiteSink
agentmeter.configure(sinks=[SQLiteSink(sys.argv[1])], spool_dir=sys.argv[2])
with track_run("finished"):
    pass
run = track_run("left-open", agent="a").__enter__()
with track_step("done-step"):
    pass
track_step("open-step").__enter__()
sys.exit(0)   # atexit: the open run is recorded as cancelled with its partial steps
"""


def test_runs_open_at_exit_are_recorded_as_cancelled_with_partial_steps(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    out = run_python(_OPEN_AT_EXIT, str(db), str(tmp_path / "spool"))
    assert out.returncode == 0, out.stderr
    runs = _runs(db)
    assert runs["finished"]["status"] == "success"
    run = runs["left-open"]
    assert (run["status"], run["error_type"]) == ("cancelled", "InterpreterExit")
    assert run["step_count"] == 2 and run["ended_at"] is not None
    assert run["steps"]["done-step"]["status"] == "success"
    assert run["steps"]["open-step"]["status"] == "cancelled"


_HUNG_AT_EXIT = r"""
import atexit, json, sys, threading

def report():  # registered before agentmeter's own exit handler, so it runs after it
    import agentmeter._guard as guard
    print("COUNTERS", json.dumps(dict(guard.counters)), flush=True)

atexit.register(report)
import agentmeter
from agentmeter import track_run
from agentmeter.sinks import Sink, SQLiteSink, WriteResult

class Hung(Sink):
    name = "hung"
    def write(self, documents):
        threading.Event().wait()  # never returns
    def close(self, timeout=None):
        threading.Event().wait()  # neither does close

agentmeter.configure(sinks=[Hung(), SQLiteSink(sys.argv[1])], spool_dir=sys.argv[2], exit_timeout=1.0,
                     flush_interval=0.02, batch_size=5)
for i in range(20):
    with track_run("r"):
        pass
"""


def _counters(stdout: str) -> dict[str, int]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("COUNTERS "))
    return dict(json.loads(line[len("COUNTERS "):]))


def test_exit_with_a_hung_sink_takes_the_deadline_path_and_spools_its_runs(tmp_path: Path,
                                                                           record_fault: Any) -> None:
    # How long the exit takes is measured by benchmarks/bench_exit.py; here: the deadline path is taken
    # (the flush gives up at exit_timeout, the hung write and the hung close() are abandoned, counted) and
    # nothing is lost: the healthy sink has every run, the hung sink's wait in the spool.
    db, spool = tmp_path / "store.db", tmp_path / "spool"
    out = run_python(_HUNG_AT_EXIT, str(db), str(spool))
    assert out.returncode == 0, out.stderr
    counters = _counters(out.stdout)
    ids, _, _ = store_ids(db)
    spooled = spool_rows(spool, "hung")
    close_gave_up = counters.get("exporter.close_abandoned", 0) + counters.get("exporter.close_skipped", 0)
    took_deadline = (counters.get("shutdown.deadline") == 1 and counters.get("shutdown.writes_abandoned") == 1
                     and close_gave_up >= 1)
    record_fault(case="hung sink at interpreter exit (exit_timeout 1 s)", agent="sync", runs=20,
                 user_exceptions=0, lost=20 - len(ids), duplicates=0, redeliveries=0, spooled=len(spooled),
                 dropped=0, result="pass: deadline path taken (counted), hung batch spooled" if took_deadline
                 and len(ids) == 20 and sorted(spooled) == sorted(ids) else "FAIL")
    assert counters.get("shutdown.deadline") == 1, counters  # the flush at exit gave up at exit_timeout
    assert counters.get("shutdown.writes_abandoned") == 1, counters  # the hung write was left behind
    assert close_gave_up >= 1, counters  # and so was the hung close() (3.12+: every close needing a helper)
    assert len(ids) == 20  # the healthy sink got everything
    assert sorted(spooled) == sorted(ids)  # and the hung sink's runs wait on disk


_SIGTERM = r"""
import os, signal, sys
import agentmeter
from agentmeter import track_run, track_step
from agentmeter.sinks import SQLiteSink

if sys.argv[3] == "user-handler":
    def user_handler(signum, frame):
        print("USER-HANDLER", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, user_handler)
agentmeter.configure(sinks=[SQLiteSink(sys.argv[1])], spool_dir=sys.argv[2], handle_sigterm=True,
                     flush_interval=3600)
with track_run("finished-but-queued"):
    pass
run = track_run("in-progress").__enter__()
with track_step("done-step"):
    pass
print("READY", flush=True)
sys.stdin.readline()  # blocked here when SIGTERM arrives
print("NOT-REACHED", flush=True)
"""


def _sigterm_child(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERM, str(tmp_path / "store.db"),
                             str(tmp_path / "spool"), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY"):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc, out + err


def test_sigterm_records_open_runs_flushes_and_then_dies_by_the_default_action(tmp_path: Path) -> None:
    proc, output = _sigterm_child(tmp_path, "default")
    assert proc.returncode == -signal.SIGTERM, output
    assert "NOT-REACHED" not in output
    runs = _runs(tmp_path / "store.db")
    assert runs["finished-but-queued"]["status"] == "success"  # queued with a 1 h interval: flushed
    assert (runs["in-progress"]["status"], runs["in-progress"]["error_type"]) == ("cancelled", "SIGTERM")
    assert runs["in-progress"]["steps"]["done-step"]["status"] == "success"


def test_sigterm_handler_chains_to_the_users_handler(tmp_path: Path) -> None:
    proc, output = _sigterm_child(tmp_path, "user-handler")
    assert proc.returncode == 3, output
    assert "USER-HANDLER" in output
    runs = _runs(tmp_path / "store.db")
    assert runs["in-progress"]["status"] == "cancelled"
    assert set(runs) == {"finished-but-queued", "in-progress"}


def test_fork_child_gets_its_own_exporter_and_never_resends_the_parents_runs(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    agentmeter.configure(sinks=[SQLiteSink(db)], spool_dir=str(tmp_path / "spool"), flush_interval=3600)
    with track_run("parent-early"):
        pass
    assert agentmeter.flush(timeout=30).ok  # the parent's sink has an open connection now
    for _ in range(3):
        with track_run("parent-queued"):
            pass
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what its exporter did, then leave without running pytest's exit
        code = 1
        try:
            os.close(read)
            with track_run("child"):
                pass
            result = agentmeter.flush(timeout=30)
            stats = agentmeter.stats()
            os.write(write, json.dumps({"delivered": result.delivered, "ok": result.ok,
                                        "finished": stats.runs_finished}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child == {"delivered": 1, "ok": True, "finished": 1}  # only its own run
    assert agentmeter.flush(timeout=30).sinks["sqlite"].delivered == 3
    names = sorted(r["name"] for r in _runs_rows(db))
    assert names == ["child", "parent-early", "parent-queued", "parent-queued", "parent-queued"]


def _runs_rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM agent_runs")]


def _mp_child() -> None:
    with track_run("mp-child"), track_step("work"):
        pass
    # returns without flush: multiprocessing ends the child with os._exit, skipping atexit


def test_multiprocessing_child_runs_are_delivered_although_it_skips_atexit(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    agentmeter.configure(sinks=[SQLiteSink(db)], spool_dir=str(tmp_path / "spool"), flush_interval=3600)
    with track_run("parent"):
        pass
    proc = multiprocessing.get_context("fork").Process(target=_mp_child)
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert agentmeter.flush(timeout=30).sinks["sqlite"].delivered == 1
    assert sorted(r["name"] for r in _runs_rows(db)) == ["mp-child", "parent"]
