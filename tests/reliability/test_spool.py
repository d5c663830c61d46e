"""The durable spool: size limit and policy, corrupt and unwritable files, and kill -9 of the process."""

from __future__ import annotations

import enum
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog

import agentmeter
from agentmeter import _guard, track_run, track_step
from agentmeter._capture import Snapshot
from agentmeter._record import FinishedRun
from agentmeter.export import BatchProcessor, Spool
from agentmeter.export._documents import Documents, Entry, decode_record, record_text
from agentmeter.sinks import MemorySink

from .conftest import ROOT, FaultSink, child_env, run_python, spool_rows, store_ids


def _doc(i: int, pad: int = 900) -> dict[str, Any]:
    return {"run_id": f"run-{i:05d}", "pad": "x" * pad}


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_spool_at_its_limit_applies_the_policy_and_counts_drops(tmp_path: Path, policy: str) -> None:
    spool = Spool(tmp_path, max_bytes=10_000, policy=policy)
    kept = sum(spool.put("lane", [_doc(i)]) for i in range(30))
    assert spool.size_bytes() <= 10_000
    left = sorted(d["run_id"] for d in spool.take("lane", 100))
    assert len(left) == spool.count("lane") > 0
    assert kept == (30 if policy == "drop_oldest" else len(left))  # drop_oldest evicts earlier ones
    assert spool.dropped == 30 - len(left) > 0
    assert spool.dropped_by_lane["lane"] == spool.dropped
    expected = [f"run-{i:05d}" for i in range(30)]
    # drop_oldest keeps the newest documents, drop_newest keeps the oldest
    assert left == (expected[-len(left):] if policy == "drop_oldest" else expected[:len(left)])
    # the running size (kept by triggers) equals the real size of the rows
    with sqlite3.connect(spool.path) as conn:
        assert conn.execute("SELECT sum(bytes) FROM spool").fetchone()[0] == spool.size_bytes()


def test_spool_limit_through_the_exporter_is_counted_and_logged(tmp_path: Path) -> None:
    sink = FaultSink(MemorySink("store"), "raise")
    agentmeter.configure(sinks=[sink], spool_dir=str(tmp_path / "spool"), spool_max_bytes=20_000,
                         max_attempts=1, retry_initial=0, flush_interval=0.05, spool_full_policy="drop_oldest")
    with structlog.testing.capture_logs() as logs:
        for i in range(60):
            with track_run("r", metadata={"pad": "y" * 500, "i": i}), track_step("s"):
                pass
        result = agentmeter.flush(timeout=30)
    store = result.sinks["store"]
    assert store.dropped > 0 and store.spooled + store.dropped == 60 and store.pending == store.spooled
    assert agentmeter.stats().spool_dropped == store.dropped
    assert agentmeter.stats().spool_bytes <= 20_000
    assert any(e.get("key") == "spool.full" and e["log_level"] == "warning" for e in logs)
    # the newest runs survived and are delivered once the sink is back
    sink.active.clear()
    assert agentmeter.flush(timeout=30).sinks["store"].pending == 0
    kept = sorted(d["metadata"]["i"] for d in sink.inner.documents)  # type: ignore[attr-defined]
    assert kept == list(range(60 - len(kept), 60))


def test_a_corrupt_spool_file_is_moved_aside_with_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / "spool.db").write_bytes(b"this is not a database, it is garbage" * 100)
    sink = FaultSink(MemorySink("store"), "raise")
    agentmeter.configure(sinks=[sink], spool_dir=str(folder), max_attempts=1, retry_initial=0)
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            with track_run("r"):
                pass
        result = agentmeter.flush(timeout=30)
    assert result.sinks["store"].spooled == 5 and result.sinks["store"].dropped == 0
    assert any(e.get("key") == "spool.corrupt" for e in logs)
    assert list(folder.glob("spool.db.corrupt-*"))
    assert len(spool_rows(folder, "store")) == 5


@pytest.mark.parametrize("how", ["folder_is_a_file", "database_is_a_folder"])
def test_an_unusable_spool_degrades_to_a_warning_and_counts_drops(tmp_path: Path, how: str) -> None:
    if how == "folder_is_a_file":
        (tmp_path / "file").write_text("x")
        folder = tmp_path / "file" / "spool"
    else:
        folder = tmp_path / "spool"
        (folder / "spool.db").mkdir(parents=True)
    down = FaultSink(MemorySink("down"), "raise")
    healthy = MemorySink("healthy")
    agentmeter.configure(sinks=[down, healthy], spool_dir=str(folder), max_attempts=1, retry_initial=0)
    with structlog.testing.capture_logs() as logs:
        for _ in range(4):
            with track_run("r"):
                pass
        result = agentmeter.flush(timeout=30)
    assert result.sinks["healthy"].delivered == 4  # a broken spool never affects a healthy sink
    assert result.sinks["down"].dropped == 4 and result.sinks["down"].spooled == 0
    assert agentmeter.stats().spool_broken is True
    assert any(e.get("key") == "spool.unavailable" and e["log_level"] == "warning" for e in logs)
    assert _guard.counters["exporter.dropped"] == 4


_PRODUCER = r"""
import json, sys
import agentmeter
from agentmeter import track_run, track_step
from agentmeter.sinks import Sink

class Down(Sink):
    name = "store"
    def write(self, documents):
        raise ConnectionError("backend down")

agentmeter.configure(sinks=[Down()], spool_dir=sys.argv[1], max_attempts=1, retry_initial=0,
                     flush_interval=0.02, batch_size=5)
ids = []
for i in range(40):
    with track_run("before-flush") as run:
        with track_step("s"):
            pass
    ids.append(run.run_id)
result = agentmeter.flush(timeout=30)
print("IDS", json.dumps({"ids": ids, "spooled": result.sinks["store"].spooled}), flush=True)
while True:  # keep tracking (and spooling) until killed
    with track_run("after-flush") as run:
        with track_step("s"):
            pass
    print("RUN", run.run_id, flush=True)
"""

_CONSUMER = r"""
import collections, json, sys
import agentmeter
from agentmeter.sinks import SQLiteSink, WriteResult

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


def _next_line(stream: Any, prefix: str) -> str:
    """The next line starting with ``prefix`` (log lines in between are skipped), without the prefix."""
    for line in stream:
        if line.startswith(prefix + " "):
            return str(line[len(prefix) + 1:].strip())
    raise AssertionError(f"the child exited before printing {prefix}")


def test_runs_spooled_before_kill_9_are_delivered_exactly_once_by_the_next_process(tmp_path: Path) -> None:
    spool_dir, db = tmp_path / "spool", tmp_path / "store.db"
    proc = subprocess.Popen([sys.executable, "-c", _PRODUCER, str(spool_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)
    assert proc.stdout is not None
    first = json.loads(_next_line(proc.stdout, "IDS"))
    extra = [_next_line(proc.stdout, "RUN") for _ in range(60)]  # it is busy spooling more runs now
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    # the runs it printed before the kill that the loop above did not read yet (still in the pipe)
    extra += [ln[4:].strip() for ln in proc.stdout.read().splitlines() if ln.startswith("RUN ")]
    assert first["spooled"] == 40
    on_disk = spool_rows(spool_dir, "store")
    assert set(first["ids"]) <= set(on_disk)  # everything flushed survived the kill
    assert len(on_disk) == len(set(on_disk))
    produced = set(first["ids"]) | set(extra)

    out = run_python(_CONSUMER, str(spool_dir), str(db))
    assert out.returncode == 0, out.stderr
    report = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("REPORT "))[7:])
    assert report["pending"] == 0
    stored, _, _ = store_ids(db)
    assert sorted(stored) == sorted(on_disk)  # every spooled run, once
    assert set(report["deliveries"]) == set(on_disk) and max(report["deliveries"].values()) == 1
    # nothing unknown: at most the one run that finished between its last print and the kill
    assert len(set(stored) - produced) <= 1
    assert spool_rows(spool_dir, "store") == []


def test_a_failed_move_releases_the_write_lock_for_other_processes(tmp_path: Path) -> None:
    """A move to the dead-letter lane that fails half-way (here: the disk fills up) must roll back: a
    transaction left open keeps SQLite's write lock, and every other process sharing the spool would then
    be locked out (and give up on its spool) until this one exits."""
    mine = Spool(tmp_path, max_bytes=50_000_000)
    big = {"run_id": "r1", "payload": "x" * 200_000}
    assert mine.put("lane", [big]) == 1
    conn = mine._conn()
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # a full disk: the copy needs new pages
    mine.move("lane", "lane:rejected", ["r1"])
    assert not conn.in_transaction

    other = Spool(tmp_path, max_bytes=50_000_000)  # another process on the same spool
    other_conn = other._conn()
    assert other_conn is not None
    other_conn.execute("PRAGMA busy_timeout = 200")  # don't wait the full 10 s to see the lock
    assert other.put("lane", [{"run_id": "r2"}]) == 1
    assert not other.broken
    other.close()
    mine.close()



class _Label(str):
    pass


class _Size(enum.IntEnum):
    BIG = 7


def test_a_spilled_record_reads_back_as_the_standard_encoder_wrote_it(tmp_path: Path, monkeypatch: Any) -> None:
    # records are encoded with orjson (a quarter of the standard library's time, which the manager spends
    # holding the GIL while it spills); what orjson refuses or would write otherwise goes to the standard
    # library's encoder as before: subclasses of str and int, an integer past 64 bits, a non-string key,
    # an unknown type (its repr), an unpaired surrogate (kept as the repaired document)
    runs: list[FinishedRun] = []
    real_submit = BatchProcessor.submit

    def submit(self: BatchProcessor, finished: Any) -> None:
        runs.append(finished)
        real_submit(self, finished)

    monkeypatch.setattr(BatchProcessor, "submit", submit)
    agentmeter.configure(sinks=[MemorySink("m")], spool_dir=str(tmp_path / "spool"))
    with track_run("template", tags=["a"]), track_step("s"):
        pass
    agentmeter.flush(timeout=10)
    template = runs[0]
    documents = Documents(agentmeter._state.settings())
    odd = [{"label": _Label("x"), "size": _Size.BIG}, {"n": 2**70}, {1: "int key"}, {"o": _Size},
           {"s": "caf\u00e9 \U0001f600"}]
    for meta in odd:
        run = template._replace(metadata=Snapshot(meta, False, 10))
        text = record_text(Entry(run), documents)
        want = json.dumps([1, os.getpid(), socket.gethostname(), run], separators=(",", ":"), ensure_ascii=False,
                          default=repr)
        assert json.loads(text) == json.loads(want), meta
        back, pid, _ = decode_record(json.loads(text))
        assert back == decode_record(json.loads(want))[0] and pid == os.getpid()
    plain = record_text(Entry(template), documents)
    assert decode_record(json.loads(plain))[0] == template  # the usual case: the record itself, exactly
    lone = template._replace(name="half \ud800 pair")
    text = record_text(Entry(lone), documents)
    text.encode("utf-8")  # no lone surrogate in the spool's text: the repaired document
    assert json.loads(text)["run_id"] == lone.run_id
