"""Issue 14, attacks 2, 5 and 12: the spool under kill -9 while a sink is down, a transient full disk, and
two processes replaying one shared spool."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import agentmeter
from agentmeter import _guard, track_run, track_step
from agentmeter.export import Spool, _spool
from agentmeter.sinks import MemorySink

from .conftest import ROOT, FaultSink, child_env, run_python, spool_rows, store_ids

# -- attack 2: kill -9 while the sink is down -------------------------------------------------------------

_DOWN_PRODUCER = r"""
import json, sys, threading
import agentmeter
from agentmeter import track_run, track_step
from agentmeter.sinks import Sink

class Down(Sink):
    name = "store"
    def write(self, documents):
        raise ConnectionError("backend down")

# retries that take far longer than the test: the first batch stays in its retry loop the whole time
agentmeter.configure(sinks=[Down()], spool_dir=sys.argv[1], max_attempts=10, retry_initial=30, retry_max=60,
                     flush_interval=0.05)
pace = threading.Event()
ids = []
for i in range(int(sys.argv[2])):
    with track_run("while-down") as run:
        with track_step("s"):
            pass
    ids.append(run.run_id)
    pace.wait(0.002)  # about 500 runs a second
print("IDS", json.dumps(ids), flush=True)
sys.stdin.readline()  # killed here
"""

_CONSUMER = r"""
import collections, json, sys
import agentmeter
from agentmeter.sinks import SQLiteSink

class Counting(SQLiteSink):
    deliveries = collections.Counter()
    def write(self, documents):
        result = super().write(documents)
        self.deliveries.update(d["run_id"] for d in documents)
        return result

sink = Counting(sys.argv[2], name="store")
agentmeter.configure(sinks=[sink], spool_dir=sys.argv[1])
result = agentmeter.flush(timeout=60)
print("REPORT", json.dumps({"pending": result.sinks["store"].pending, "deliveries": sink.deliveries}))
"""


def _poll(condition: Any, timeout: float) -> bool:
    """Wait until ``condition()`` holds, checking every 20 ms, at most ``timeout`` seconds."""
    gate = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return True
        gate.wait(0.02)
    return bool(condition())


def test_runs_arriving_while_a_sink_is_failing_reach_the_spool_and_survive_kill_9(tmp_path: Path,
                                                                                  record_attack: Any) -> None:
    spool_dir, db = tmp_path / "spool", tmp_path / "store.db"
    proc = subprocess.Popen([sys.executable, "-c", _DOWN_PRODUCER, str(spool_dir), "1200"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(), cwd=ROOT)
    assert proc.stdout is not None
    line = next(ln for ln in proc.stdout if ln.startswith("IDS "))
    produced = set(json.loads(line[4:]))
    # within a few flush intervals (0.05 s) everything is on disk, although the first batch is still being
    # retried (its retries would take minutes)
    _poll(lambda: produced <= set(spool_rows(spool_dir, "store")), timeout=10)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    out = run_python(_CONSUMER, str(spool_dir), str(db))
    assert out.returncode == 0, out.stderr
    report = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("REPORT "))[7:])
    stored, _, _ = store_ids(db)
    lost = len(produced - set(stored))
    record_attack(attack=2, attack_text="1,200 runs at ~500/s with the sink down (first batch in a long retry), "
                  "then kill -9 and a restart", expected="every run delivered by the next process, once",
                  outcome=f"{len(produced) - lost}/{len(produced)} delivered, "
                  f"{max(report['deliveries'].values(), default=0)} delivery per run at most", passed=lost == 0)
    assert lost == 0, f"{lost} of {len(produced)} runs lost"
    assert report["pending"] == 0 and max(report["deliveries"].values()) == 1


# -- attack 5: a transient full disk ----------------------------------------------------------------------


class _Disk:
    """A disk that fills up and frees again: SQLite's ``max_page_count`` on every spool connection (the
    spool then sees SQLITE_FULL, "database or disk is full", exactly as on a full disk)."""

    def __init__(self) -> None:
        self.conns: list[sqlite3.Connection] = []
        self.full = False

    def fill(self) -> None:
        self.full = True
        for conn in self.conns:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

    def free(self) -> None:
        self.full = False
        for conn in self.conns:
            conn.execute("PRAGMA max_page_count = 1073741823")


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> _Disk:
    state = _Disk()
    real_open = _spool.Spool._open

    def open_(self: Spool) -> sqlite3.Connection:
        conn = real_open(self)
        state.conns.append(conn)
        if state.full:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(_spool.Spool, "_open", open_)
    return state


def _track(n: int, name: str) -> None:
    for i in range(n):
        with track_run(name, metadata={"i": i, "pad": "p" * 2000}), track_step("s"):
            pass


def test_the_spool_recovers_from_a_full_disk_in_the_same_process(tmp_path: Path, disk: _Disk,
                                                                 record_attack: Any) -> None:
    sink = FaultSink(MemorySink("store"), "raise")
    agentmeter.configure(sinks=[sink], spool_dir=str(tmp_path / "spool"), max_attempts=1, retry_initial=0,
                         flush_interval=0.05, batch_size=10)
    _track(50, "before-full")
    first = agentmeter.flush(timeout=30).sinks["store"]
    assert (agentmeter.stats().sinks["store"].spooled, first.pending) == (50, 50)
    disk.fill()
    _track(50, "while-full")
    during = agentmeter.flush(timeout=30).sinks["store"]
    disk.free()
    _track(50, "after-full")
    sink.active.clear()  # the sink is back too
    after = agentmeter.flush(timeout=30).sinks["store"]
    stats = agentmeter.stats().sinks["store"]
    names = [d["name"] for d in sink.inner.documents]  # type: ignore[attr-defined]
    delivered = {n: names.count(n) for n in ("before-full", "while-full", "after-full")}
    ok = (during.pending >= 50 and delivered["before-full"] == 50 and delivered["after-full"] == 50
          and after.pending == 0 and delivered["while-full"] + stats.dropped == 50)
    record_attack(attack=5, attack_text="the spool's disk fills up (SQLITE_FULL), then frees again",
                  expected="what the spool holds stays pending and is replayed in the same process; "
                  "runs the full disk could not take are counted as dropped",
                  outcome=f"pending while full {during.pending}; delivered {delivered}; dropped {stats.dropped}",
                  passed=ok)
    assert during.pending >= 50  # what the spool holds is still counted while the disk is full
    assert delivered["before-full"] == 50 and delivered["after-full"] == 50
    assert delivered["while-full"] + stats.dropped == 50  # nothing vanishes uncounted
    assert after.pending == 0 and not agentmeter.stats().spool_broken
    assert _guard.counters["warnings.spool.unavailable"] >= 1


# -- attack 12: two processes replaying one spool ----------------------------------------------------------

_REPLAYER = r"""
import collections, json, sys, threading
import agentmeter
from agentmeter.sinks import Sink, WriteResult

class Counting(Sink):
    name = "store"
    deliveries = collections.Counter()
    def write(self, documents):
        threading.Event().wait(0.002)  # a real back end takes a moment per batch
        self.deliveries.update(d["run_id"] for d in documents)
        return WriteResult()

print("READY", flush=True)
sys.stdin.readline()
agentmeter.configure(sinks=[Counting()], spool_dir=sys.argv[1], batch_size=50)
result = agentmeter.flush(timeout=120)
while result.sinks["store"].pending:
    result = agentmeter.flush(timeout=120)
print("REPORT", json.dumps({"delivered": agentmeter.stats().sinks["store"].delivered,
                           "ids": Counting.deliveries}))
"""


def test_two_processes_replaying_one_spool_deliver_each_run_once(tmp_path: Path, record_attack: Any) -> None:
    folder = tmp_path / "spool"
    spool = Spool(folder, max_bytes=1 << 30)
    ids = [f"run-{i:05d}" for i in range(5000)]
    for start in range(0, len(ids), 500):
        assert spool.put("store", [{"run_id": r, "pad": "x" * 100} for r in ids[start:start + 500]]) == 500
    spool.close()
    procs = [subprocess.Popen([sys.executable, "-c", _REPLAYER, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)
             for _ in range(2)]
    for proc in procs:
        assert proc.stdout is not None and next(ln for ln in proc.stdout if ln.startswith("READY"))
    for proc in procs:  # both start replaying at the same moment
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        reports.append(json.loads(next(ln for ln in out.splitlines() if ln.startswith("REPORT "))[7:]))
    total = sum(sum(r["ids"].values()) for r in reports)
    union = set().union(*(r["ids"] for r in reports))
    twice = total - len(union)
    record_attack(attack=12, attack_text="two processes replay one shared spool of 5,000 runs at once",
                  expected="every run delivered once, by one of them; flush() counts each once",
                  outcome=f"{len(union)}/5000 delivered, {twice} twice; delivered counted "
                  f"{sum(r['delivered'] for r in reports)}", passed=twice == 0 and len(union) == 5000)
    assert union == set(ids)
    assert twice == 0
    assert sum(r["delivered"] for r in reports) == 5000
    assert spool_rows(folder, "store") == []
