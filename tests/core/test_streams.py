"""Streams belong to the run that created them: a decorated generator binds to the run and step current when
it is called, keeps that run open until it ends, runs its cleanup inside its step, and every way of ending
it is recorded honestly (exhausted, failed, stopped early, abandoned)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import agentmeter
from agentmeter import current_run, current_step, track_call, track_run, track_step
from agentmeter.testing import capture_runs


class Boom(Exception):
    pass


@track_step(kind="llm")
async def tokens(n: int, delay: float = 0.0) -> AsyncIterator[str]:
    """A streamed LLM answer: one call per token, usage recorded on each."""
    for i in range(n):
        assert current_run() is not None and current_run().name == "chat"  # type: ignore[union-attr]
        with track_call("openai", "chat.completions", model="m") as call:
            call.record_usage(input_tokens=2, output_tokens=1)
        await asyncio.sleep(delay)
        yield f"t{i} "


def _app(stream: Any) -> Starlette:
    @track_run(name="chat", agent="api")
    async def endpoint(request: Request) -> StreamingResponse:
        return StreamingResponse(stream(), media_type="text/plain")

    return Starlette(routes=[Route("/chat", endpoint)])


def test_streaming_endpoint_run_covers_the_stream_with_its_steps_calls_and_tokens() -> None:
    # The FastAPI/Starlette StreamingResponse pattern: the stream is consumed after the endpoint returned.
    app = _app(lambda: tokens(5))
    with capture_runs() as cap, TestClient(app) as client:
        assert client.get("/chat").text == "t0 t1 t2 t3 t4 "
    (run,) = cap.runs
    assert (run["name"], run["status"], run["implicit"]) == ("chat", "success", False)
    assert run["step_count"] == 1 and run["call_count"] == 5
    assert (run["input_tokens"], run["output_tokens"]) == (10, 5)
    (step,) = run["steps"]
    assert step["name"] == "tokens" and step["status"] == "success"
    assert all(c["step_id"] == step["step_id"] for c in run["calls"])
    # the run's duration covers the whole stream
    assert run["ended_at"] >= step["ended_at"] and run["duration_ms"] >= step["duration_ms"]


async def _disconnect_after_first_chunk(app: Starlette) -> list[bytes]:
    """Serve one GET /chat as an ASGI server does, the client disconnecting once the first chunk arrived.

    Driven directly rather than through TestClient: how TestClient reports a closed response differs between
    Starlette releases (1.7, the newest for Python 3.10, reads the whole stream), an ``http.disconnect``
    message does not."""
    body: list[bytes] = []
    first_chunk = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await first_chunk.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            body.append(message["body"])
            first_chunk.set()

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/chat", "raw_path": b"/chat", "root_path": "", "query_string": b"", "headers": [],
             "server": ("testserver", 80), "client": ("testclient", 50000)}
    await app(scope, receive, send)
    return body


def test_disconnected_client_cancels_the_stream_and_its_run_and_cleanup_runs_in_the_step() -> None:
    @track_step(kind="llm")
    async def slow() -> AsyncIterator[str]:
        try:
            for i in range(10_000):
                await asyncio.sleep(0.001)
                yield f"t{i} "
        finally:
            with track_call("upstream", "close"):  # cleanup: recorded in the stream's step
                pass

    with capture_runs() as cap:
        body = asyncio.run(_disconnect_after_first_chunk(_app(slow)))
    assert body[0].startswith(b"t0") and len(body) < 10_000  # the server stopped streaming
    (run,) = cap.runs
    (step,) = run["steps"]
    assert step["status"] == "cancelled" and run["status"] == "cancelled"
    assert run["error_type"] == step["error_type"]
    (call,) = run["calls"]
    assert call["operation"] == "close" and call["step_id"] == step["step_id"]


def test_a_stream_left_open_by_a_with_block_keeps_its_run_open_until_it_ends() -> None:
    @track_step(kind="retrieval")
    def pages(n: int) -> Iterator[int]:
        yield from range(n)

    with capture_runs() as cap:
        with track_run("search") as run:
            stream = pages(3)  # bound here, read after the block
        assert cap.runs == [] and not run.ended
        assert current_run() is None
        assert list(stream) == [0, 1, 2]
    (doc,) = cap.runs
    assert doc["name"] == "search" and doc["step_count"] == 1 and doc["steps"][0]["status"] == "success"


def test_a_stream_binds_to_the_run_and_step_current_when_called_not_when_first_read() -> None:
    seen: list[tuple[str | None, str | None]] = []

    @track_step
    def stream() -> Iterator[int]:
        run, step = current_run(), current_step()
        seen.append((run.name if run else None, step.name if step else None))
        yield 1

    @track_run
    def agent() -> Iterator[int]:
        with track_step("plan"):
            return stream()

    with capture_runs() as cap:
        gen = agent()
        with track_run("other"):  # read inside another run: still the creator's
            assert list(gen) == [1]
    assert seen == [("test_a_stream_binds_to_the_run_and_step_current_when_called_not_when_first_read.agent",
                     "test_a_stream_binds_to_the_run_and_step_current_when_called_not_when_first_read.stream")]
    by_name = {r["name"].rsplit(".", 1)[-1]: r for r in cap.runs}
    assert by_name["other"]["step_count"] == 0
    steps = {s["name"].rsplit(".", 1)[-1]: s for s in by_name["agent"]["steps"]}
    assert steps["stream"]["parent_step_id"] == steps["plan"]["step_id"]


def test_async_for_break_records_the_stream_cancelled_after_its_cleanup_ran_in_the_step() -> None:
    cleanup_steps: list[str | None] = []

    @track_step
    async def numbers() -> AsyncIterator[int]:
        try:
            for i in range(100):
                yield i
        finally:
            step = current_step()
            cleanup_steps.append(step.name if step else None)

    async def main() -> None:
        async with track_run("r"):
            async for i in numbers():
                if i == 2:
                    break
        for _ in range(20):  # the event loop's finalizer closes the dropped generator a few turns later
            if cap.runs:
                break
            await asyncio.sleep(0)

    with capture_runs() as cap:
        asyncio.run(main())
    (run,) = cap.runs
    (step,) = run["steps"]
    assert (step["status"], step["error_type"]) == ("cancelled", "GeneratorExit")
    assert cleanup_steps == [step["name"]]
    assert agentmeter._guard.counters["warnings.late_span"] == 0


def test_sync_break_close_and_aclose_give_the_same_status() -> None:
    @track_step
    def sync_stream() -> Iterator[int]:
        yield from range(10)

    @track_step
    async def async_stream() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    async def consume() -> None:
        gen = async_stream()
        await gen.__anext__()
        await gen.aclose()

    with capture_runs() as cap, track_run("r"):
        for _ in sync_stream():
            break
        gen = sync_stream()
        next(gen)
        gen.close()
        asyncio.run(consume())
    statuses = {(s["status"], s["error_type"]) for s in cap.runs[0]["steps"]}
    assert statuses == {("cancelled", "GeneratorExit")} and cap.runs[0]["step_count"] == 3
    assert cap.runs[0]["status"] == "success"  # the run's own body ended well, after the streams ended


@pytest.mark.parametrize("how", ["close", "aclose"])
def test_an_exception_raised_by_cleanup_on_close_ends_the_step_with_error_and_propagates_unchanged(
        how: str) -> None:
    err = Boom("cleanup failed")
    inside: list[str | None] = []

    @track_step
    def sync_stream() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            inside.append(getattr(current_step(), "name", None))
            raise err

    @track_step
    async def async_stream() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            inside.append(getattr(current_step(), "name", None))
            raise err

    async def aclose() -> None:
        gen = async_stream()
        await gen.__anext__()
        await gen.aclose()

    def close() -> None:
        gen = sync_stream()
        next(gen)
        gen.close()

    with capture_runs() as cap:
        with pytest.raises(Boom) as info:
            close() if how == "close" else asyncio.run(aclose())
        assert info.value is err
        agentmeter.flush()
    (run,) = cap.runs  # outside any run: an implicit run, exported at once, nothing left for exit
    assert run["implicit"] and (run["status"], run["error_type"]) == ("error", "Boom")
    (step,) = run["steps"]
    assert (step["status"], step["error_type"], step["error_message"]) == ("error", "Boom", "cleanup failed")
    assert inside == [step["name"]]
    assert not agentmeter._spans.has_open_runs()


def test_a_stream_that_fails_after_the_run_returned_makes_the_run_fail() -> None:
    @track_step
    def failing() -> Iterator[int]:
        yield 1
        raise Boom("late failure")

    @track_run
    def agent() -> Iterator[int]:
        return failing()

    with capture_runs() as cap:
        gen = agent()
        assert next(gen) == 1
        with pytest.raises(Boom):
            next(gen)
    (run,) = cap.runs
    assert (run["status"], run["error_type"], run["error_message"]) == ("error", "Boom", "late failure")
    assert run["error_step_count"] == 1


def test_an_abandoned_stream_is_recorded_cancelled_abandoned_never_unfinished() -> None:
    @track_step
    def never_read() -> Iterator[int]:
        yield 1

    @track_step
    async def dropped_started() -> AsyncIterator[int]:
        yield 1
        yield 2

    with capture_runs() as cap:
        with track_run("created-and-dropped"):
            stream = never_read()
        del stream
        gc.collect()
        agentmeter.flush()  # ended at the next safe point: a span, flush() or exit

        async def first(gen: AsyncIterator[int]) -> int:
            return await gen.__anext__()  # read inside the loop: the loop's finalizer would aclose() it

        loop = asyncio.new_event_loop()
        with track_run("loop-closed"):
            agen = dropped_started()
            assert loop.run_until_complete(first(agen)) == 1
        loop.close()  # and now nobody can aclose() it
        del agen
        gc.collect()
        agentmeter.flush()
    by_name = {r["name"]: r for r in cap.runs}
    for name in ("created-and-dropped", "loop-closed"):
        run = by_name[name]
        (step,) = run["steps"]
        assert (step["status"], step["error_type"]) == ("cancelled", "Abandoned"), name
        assert (run["status"], run["error_type"]) == ("cancelled", "Abandoned"), name
    assert not agentmeter._spans.has_open_runs()


def test_stream_output_is_what_it_yielded_size_capped() -> None:
    @track_step(capture=True)
    def words(n: int, sep: str = " ") -> Iterator[str]:
        for i in range(n):
            yield f"w{i}{sep}"

    @track_step(capture=True)
    async def records() -> AsyncIterator[dict[str, int]]:
        for i in range(3):
            yield {"i": i}

    async def read() -> list[dict[str, int]]:
        return [r async for r in records()]

    with capture_runs(capture_max_chars=200) as cap, track_run("r"):
        assert "".join(words(3)) == "w0 w1 w2 "
        assert len(list(words(1000))) == 1000
        assert asyncio.run(read()) == [{"i": 0}, {"i": 1}, {"i": 2}]
    small, big, recs = sorted(cap.runs[0]["steps"], key=lambda s: s["started_at"])
    assert small["inputs"] == {"n": 3, "sep": " "} and small["output"] == "w0 w1 w2 "
    assert big["truncated"] is True and len(big["output"]) < 400
    assert recs["output"] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_nested_streams_and_a_generator_run_hold_their_parent_run_open() -> None:
    @track_step
    def inner() -> Iterator[int]:
        yield from range(2)

    @track_step
    def outer() -> Iterator[Iterator[int]]:
        yield inner()  # created inside the outer stream's body: bound to the same run and to outer

    @track_run
    def child_run() -> Iterator[int]:
        yield 1

    with capture_runs() as cap:
        with track_run("parent"):
            streams = list(outer())
            child = child_run()
        assert cap.runs == []  # the inner stream and the generator run are still open
        assert list(streams[0]) == [0, 1]
        assert list(child) == [1]
    child_doc, parent = sorted(cap.runs, key=lambda r: r["name"] != "test_nested_streams_and_a_generator_run_hold"
                                                       "_their_parent_run_open.child_run")
    assert parent["name"] == "parent" and child_doc["parent_run_id"] == parent["run_id"]
    steps = {s["name"].rsplit(".", 1)[-1]: s for s in parent["steps"]}
    assert steps["inner"]["parent_step_id"] == steps["outer"]["step_id"]
    assert parent["ended_at"] >= child_doc["ended_at"]


def test_a_stream_dropped_by_the_function_that_made_it_does_not_hold_its_run_open() -> None:
    @track_step
    def stream() -> Iterator[int]:
        yield 1

    @track_run
    def agent() -> int:
        stream()  # made and dropped: never read
        return 1

    with capture_runs() as cap:
        assert agent() == 1
        (run,) = cap.runs  # recorded when the function returned, not at the next flush
    # dropped while the function ran: like a break, the function's own outcome is the run's
    assert (run["status"], run["steps"][0]["status"], run["steps"][0]["error_type"]) == (
        "success", "cancelled", "Abandoned")
