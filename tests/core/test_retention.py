"""No retention: contexts copied while a run was open (timers, long-lived tasks, thread wrappers) keep
nothing of it alive once it ended and was exported."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import agentmeter
from agentmeter import current_run, track_call, track_run, track_step
from agentmeter.testing import capture_runs


def test_a_thousand_runs_with_timers_and_long_lived_tasks_are_freed_after_flush() -> None:
    refs: list[weakref.ref[Any]] = []
    keep: list[Any] = []  # the timers, tasks and thread wrappers outlive their runs

    async def one(i: int) -> None:
        loop = asyncio.get_running_loop()
        async with track_run("r", metadata={"i": i}) as run:
            run.set_metadata(payload="x" * 1000)
            with track_step("s", kind="tool"), track_call("http", "get"):
                if i % 2:
                    keep.append(loop.call_later(3600, lambda: None))  # a keep-alive timer
                else:
                    keep.append(asyncio.ensure_future(asyncio.sleep(3600)))  # a long-lived task
                keep.append(agentmeter.wrap_context(lambda: None))
            refs.append(weakref.ref(run))

    async def main() -> int:
        for i in range(1000):
            await one(i)
        assert agentmeter.flush(timeout=30).ok
        gc.collect()
        alive = sum(ref() is not None for ref in refs)
        for item in keep:
            if hasattr(item, "cancel"):
                item.cancel()
        return alive

    with capture_runs(flush_interval=3600) as cap:
        alive = asyncio.run(main())
        assert len(cap.runs) == 1000
    assert alive == 0
    assert len(refs) == 1000


def test_a_context_copied_during_a_run_sees_no_run_once_it_ended_and_records_its_origin() -> None:
    import contextvars

    with capture_runs() as cap:
        with track_run("origin") as run:
            copied = contextvars.copy_context()
        assert copied.run(current_run) is None  # the run ended: the copy holds only a cleared reference
        copied.run(lambda: track_step("late")(lambda: None)())
    origin, late = cap.runs
    assert origin["name"] == "origin" and late["implicit"] and late["parent_run_id"] == run.run_id
