"""Fixtures of the reliability suite: fault-injecting sinks, stores to check, and the results table.

Every fault case records a row (what was injected, what the agent saw, what reached the store); at the end
of the session the rows are written as JSON (``AGENTMETER_TEST_RELIABILITY_JSON``, default
``.pytest_cache/reliability-results.json``) and, with ``AGENTMETER_TEST_UPDATE_DOCS=1``, rendered into the
table of ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentmeter import _guard
from agentmeter.sinks import Sink, WriteResult
from agentmeter.sinks._base import Document

from .report import update_doc

ROOT = Path(__file__).resolve().parents[2]
_ROWS: list[dict[str, Any]] = []
_ATTACKS: list[dict[str, Any]] = []

FAULTS = ("raise", "hang", "slow", "partial", "die_mid_batch")


class FaultSink(Sink):
    """Wraps a real sink and injects one fault while ``active`` is set.

    raise: every write raises ConnectionError. hang: the first write blocks until ``release`` is set, then
    completes (a backend that stalls and comes back). slow: each write waits ``slow_s`` on an Event that is
    never set, then completes. partial: even positions are stored, odd ones reported failed.
    die_mid_batch: the first half is stored, then the write raises. Every document the inner sink stored is
    counted in ``deliveries`` (so redeliveries are visible even though the stores dedupe by id).
    """

    def __init__(self, inner: Sink, fault: str, slow_s: float = 0.02) -> None:
        assert fault in FAULTS or fault == "none"
        self.inner = inner
        self.name = inner.name
        self.fault = fault
        self.slow_s = slow_s
        self.active = threading.Event()
        self.active.set()
        self.release = threading.Event()
        self.entered = threading.Event()
        self._never = threading.Event()
        self._lock = threading.Lock()
        self.attempts = 0
        self.deliveries: Counter[str] = Counter()

    def _store(self, docs: Sequence[Document]) -> None:
        result = self.inner.write(docs)
        assert result.ok
        with self._lock:
            self.deliveries.update(d["run_id"] for d in docs)

    def write(self, documents: Sequence[Document]) -> WriteResult:
        with self._lock:
            self.attempts += 1
        fault = self.fault if self.active.is_set() else "none"
        if fault == "raise":
            raise ConnectionError("injected: backend down")
        if fault == "hang":
            self.entered.set()
            assert self.release.wait(60), "test never released the hung sink"
        elif fault == "slow":
            self._never.wait(self.slow_s)
        elif fault == "partial":
            keep = [d for i, d in enumerate(documents) if i % 2 == 0]
            if keep:
                self._store(keep)
            return WriteResult(failed={i: "injected: throttled" for i in range(len(documents)) if i % 2})
        elif fault == "die_mid_batch":
            half = len(documents) // 2
            if half:
                self._store(documents[:half])
            raise RuntimeError("injected: connection reset mid-batch")
        self._store(documents)
        return WriteResult()

    def close(self, timeout: float | None = None) -> bool:
        return self.inner.close(timeout)


class CountingSink(Sink):
    """A healthy in-memory sink that sets ``reached`` once it holds ``target`` distinct runs."""

    def __init__(self, name: str = "control", target: int = 0) -> None:
        self.name = name
        self.target = target
        self.reached = threading.Event()
        self.deliveries: Counter[str] = Counter()
        self._lock = threading.Lock()

    def write(self, documents: Sequence[Document]) -> WriteResult:
        with self._lock:
            self.deliveries.update(d["run_id"] for d in documents)
            if self.target and len(self.deliveries) >= self.target:
                self.reached.set()
        return WriteResult()


def store_ids(db: Path) -> tuple[list[str], int, int]:
    """(run ids in agent_runs, number of step rows, number of distinct step ids) of a SQLite store."""
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("SELECT run_id FROM agent_runs")]
        steps, distinct = conn.execute("SELECT count(*), count(DISTINCT step_id) FROM run_steps").fetchone()
    return ids, int(steps), int(distinct)


def spool_rows(spool_dir: Path, lane: str | None = None) -> list[str]:
    path = spool_dir / "spool.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        if lane is None:
            return [r[0] for r in conn.execute("SELECT run_id FROM spool")]
        return [r[0] for r in conn.execute("SELECT run_id FROM spool WHERE lane = ?", (lane,))]


def run_python(code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60,
               ) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (agentmeter importable, internal errors re-raised)."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=child_env(env), cwd=ROOT)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMETER_")}
    env["AGENTMETER_RAISE_INTERNAL"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


@pytest.fixture
def record_fault() -> Any:
    """Call with a row dict; the row lands in the results table."""

    def record(**row: Any) -> None:
        _ROWS.append(row)

    return record


@pytest.fixture
def record_attack(request: pytest.FixtureRequest) -> Any:
    """Call with ``attack`` (its number in issue 14), ``attack_text``, ``expected``, ``outcome`` and
    ``passed``; the row lands in the attack table of docs/reliability.md. Record before asserting, so a
    failing run still shows what happened."""

    def record(**row: Any) -> None:
        row.setdefault("test", request.node.nodeid.split("::", 1)[-1])
        row.setdefault("file", request.node.nodeid.split("::", 1)[0])
        _ATTACKS.append(row)

    return record


@pytest.fixture(autouse=True)
def _no_internal_errors() -> Iterator[None]:
    """An SDK bug on a worker thread does not fail the test by itself: check the guard's count."""
    yield
    assert _guard.counters["internal_errors"] == 0, {k: v for k, v in _guard.counters.items()
                                                      if k.startswith("internal_errors")}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _ROWS and not _ATTACKS:
        return
    out = os.environ.get("AGENTMETER_TEST_RELIABILITY_JSON") or str(
        ROOT / ".pytest_cache" / "reliability-results.json")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"faults": _ROWS, "attacks": _ATTACKS}, indent=1, sort_keys=True))
    if os.environ.get("AGENTMETER_TEST_UPDATE_DOCS") == "1":
        update_doc(ROOT / "docs" / "reliability.md", _ROWS, _ATTACKS)
