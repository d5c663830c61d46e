"""The fault matrix: every fault a sink can have, for sync, async and threaded agents.

For each case the agent runs while one sink (a real SQLite store behind a fault injector) misbehaves and a
second, healthy sink runs beside it. Must hold: no exception reaches the agent, the healthy sink gets every
run while the other one is failing (isolation), and once the faulty sink recovers the store holds exactly
the runs produced: none lost, none twice.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import agentmeter
from agentmeter import current_run, track_call, track_run, track_step
from agentmeter.sinks import SQLiteSink

from .conftest import FAULTS, CountingSink, FaultSink, store_ids

N = 30
AGENTS = ("sync", "async", "threaded")


def produce(kind: str) -> tuple[list[str], int]:
    """Run N agent runs of ``kind``; return the run ids produced and how many exceptions the caller saw."""
    produced: list[str] = []
    errors = 0

    @track_run(agent=f"{kind}-agent")
    def sync_agent(i: int) -> int:
        with track_step("plan", kind="plan"):
            pass
        with track_step("search", kind="tool"), track_call("stub", "search", model="m") as call:
            call.record_usage(input_tokens=10 + i, output_tokens=2)
        run = current_run()
        assert run is not None
        produced.append(run.run_id)
        return i

    @track_run(agent=f"{kind}-agent")
    async def async_agent(i: int) -> int:
        async with track_step("plan", kind="plan"):
            await asyncio.sleep(0)
        async with track_step("search", kind="tool"):
            with track_call("stub", "search", model="m") as call:
                call.record_usage(input_tokens=10 + i, output_tokens=2)
        run = current_run()
        assert run is not None
        produced.append(run.run_id)
        return i

    if kind == "sync":
        for i in range(N):
            try:
                assert sync_agent(i) == i
            except Exception:
                errors += 1
    elif kind == "async":

        async def main() -> list[Any]:
            return await asyncio.gather(*(async_agent(i) for i in range(N)), return_exceptions=True)

        results = asyncio.run(main())
        errors += sum(1 for r in results if isinstance(r, BaseException))
        assert [r for r in results if not isinstance(r, BaseException)] == list(range(N))
    else:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(sync_agent, i) for i in range(N)]
            for i, fut in enumerate(futures):
                try:
                    assert fut.result() == i
                except Exception:
                    errors += 1
    return produced, errors


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("fault", FAULTS)
def test_fault_loses_nothing_and_never_reaches_the_agent(fault: str, agent: str, tmp_path: Path,
                                                         record_fault: Any) -> None:
    db = tmp_path / "store.db"
    faulty = FaultSink(SQLiteSink(db, name="store"), fault)
    control = CountingSink("control", target=N)
    agentmeter.configure(sinks=[faulty, control], spool_dir=str(tmp_path / "spool"), batch_size=5,
                         flush_interval=0.05, max_attempts=3, retry_initial=0.01, retry_max=0.05,
                         write_timeout=0.3)

    produced, user_errors = produce(agent)

    # isolation: the healthy sink has every run while the faulty one is still failing or hung
    assert control.reached.wait(30), "the healthy sink was held up by the faulty one"
    during = agentmeter.flush(timeout=1 if fault == "hang" else 30)
    if fault == "hang":  # flush waits for a hung sink only within its timeout; the batch is on disk
        assert during.timed_out and faulty.entered.is_set() and not faulty.release.is_set()
    # the backend recovers
    faulty.active.clear()
    faulty.release.set()
    after = agentmeter.flush(timeout=30)
    stats = agentmeter.stats().sinks["store"]

    ids, steps, distinct_steps = store_ids(db)
    lost = len(set(produced) - set(ids))
    unknown = len(set(ids) - set(produced))
    duplicates = (len(ids) - len(set(ids))) + (steps - distinct_steps)
    redeliveries = sum(faulty.deliveries.values()) - len(faulty.deliveries)
    ok = (user_errors == 0 and lost == 0 and unknown == 0 and duplicates == 0 and len(produced) == N
          and steps == 2 * N and after.sinks["store"].pending == 0 and stats.dropped == 0)
    record_fault(case=fault, agent=agent, runs=len(produced), user_exceptions=user_errors, lost=lost,
                 duplicates=duplicates, redeliveries=redeliveries, spooled=stats.spooled,
                 dropped=stats.dropped, result="pass" if ok else "FAIL")

    assert user_errors == 0 and len(produced) == N
    assert set(control.deliveries) == set(produced)
    assert (lost, unknown, duplicates) == (0, 0, 0), (during, after, stats)
    assert steps == 2 * N
    assert after.sinks["store"].pending == 0, after
    assert stats.dropped == 0
    if fault in ("raise", "hang", "die_mid_batch"):
        assert stats.spooled > 0  # the fault really went through the spool
    if fault == "raise":
        assert during.sinks["store"].delivered == 0 and during.sinks["store"].pending > 0
