"""The tracking API: decorators and context managers on every kind of callable, nesting, propagation."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from typing import Any

import pytest

import agentmeter
from agentmeter import current_run, current_step, track_call, track_run, track_step
from agentmeter.testing import capture_runs


class Boom(Exception):
    pass


def test_bare_decorators_record_a_run_with_steps_and_calls() -> None:
    @track_call
    def fetch(x: int) -> int:
        return x + 1

    @track_step
    def step(x: int) -> int:
        return fetch(x) * 2

    @track_run
    def agent(n: int) -> list[int]:
        return [step(i) for i in range(n)]

    with capture_runs() as cap:
        assert agent(3) == [2, 4, 6]
    (run,) = cap.runs
    assert run["name"] == "test_bare_decorators_record_a_run_with_steps_and_calls.agent"
    assert run["status"] == "success"
    assert run["step_count"] == 3 and run["call_count"] == 3
    step_ids = {s["step_id"] for s in run["steps"]}
    assert all(c["step_id"] in step_ids for c in run["calls"])
    assert all(c["provider"] == "custom" for c in run["calls"])


def test_decorator_options_and_handles() -> None:
    @track_run(name="research", agent="researcher", tags=["a"], metadata={"k": 1})
    def agent() -> None:
        run = current_run()
        assert run is not None
        run.set_metadata(company="acme")
        run.add_tags("b", "a")
        with track_step("search", kind="tool") as step:
            assert current_step() is step
            step.set_metadata({"q": "x"})
            with track_call("openai", "chat.completions", model="gpt-4o-mini") as call:
                call.record_usage(input_tokens=10, output_tokens=3, cached_input_tokens=4)
                call.set_http_status(200)

    with capture_runs() as cap:
        agent()
    (run,) = cap.runs
    assert (run["name"], run["agent"], run["tags"]) == ("research", "researcher", ["a", "b"])
    assert run["metadata"] == {"k": 1, "company": "acme"}
    (step,) = run["steps"]
    assert (step["name"], step["kind"], step["metadata"]) == ("search", "tool", {"q": "x"})
    (call,) = run["calls"]
    assert (call["provider"], call["operation"], call["model"]) == ("openai", "chat.completions", "gpt-4o-mini")
    assert (call["input_tokens"], call["output_tokens"], call["cached_input_tokens"]) == (10, 3, 4)
    assert call["total_tokens"] == 13 and call["http_status"] == 200 and call["step_id"] == step["step_id"]
    assert run["input_tokens"] == 10 and run["total_tokens"] == 13


def test_wrappers_preserve_name_signature_docstring_and_return_value() -> None:
    def f(a: int, b: str = "x", *, c: float = 1.0) -> tuple[int, str, float]:
        """Docs."""
        return a, b, c

    for deco in (track_run, track_step, track_call, track_step(kind="tool"), track_run(agent="a")):
        g = deco(f)
        assert g.__name__ == "f" and g.__doc__ == "Docs." and inspect.signature(g) == inspect.signature(f)
        with capture_runs():
            assert g(1, c=2.0) == (1, "x", 2.0)


def test_user_exception_propagates_as_the_same_object_and_is_recorded() -> None:
    err = Boom("bad thing")

    @track_step(kind="tool")
    def inner() -> None:
        raise err

    @track_run
    def agent() -> None:
        inner()

    with capture_runs() as cap, pytest.raises(Boom) as info:
        agent()
    assert info.value is err
    # the traceback still reaches the user's raise statement
    assert any(frame.name == "inner" for frame in info.traceback)
    (run,) = cap.runs
    assert (run["status"], run["error_type"], run["error_message"]) == ("error", "Boom", "bad thing")
    assert run["steps"][0]["status"] == "error" and run["error_step_count"] == 1


def test_cancellation_is_recorded_as_cancelled() -> None:
    @track_run
    async def agent() -> None:
        async with track_step("wait"):
            await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(agent())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture_runs() as cap:
        asyncio.run(main())
    (run,) = cap.runs
    assert run["status"] == "cancelled" and run["steps"][0]["status"] == "cancelled"

    @track_run
    def interrupted() -> None:
        raise KeyboardInterrupt

    with capture_runs() as cap, pytest.raises(KeyboardInterrupt):
        interrupted()
    assert cap.runs[0]["status"] == "cancelled"


def test_context_managers_sync_and_async() -> None:
    async def main() -> None:
        async with track_run("a", agent="x") as run:
            async with track_step("s1") as s1:
                with track_step("s2") as s2:
                    assert s2.parent_step_id == s1.step_id
            assert run.run_id == s1.run_id

    with capture_runs() as cap:
        asyncio.run(main())
        with track_run("sync"), track_step("only"):
            pass
    assert [r["name"] for r in cap.runs] == ["a", "sync"]
    steps = {s["name"]: s for s in cap.runs[0]["steps"]}
    assert steps["s2"]["parent_step_id"] == steps["s1"]["step_id"]
    assert steps["s1"]["parent_step_id"] is None


def test_generators_last_until_exhausted_or_closed_and_do_not_leak_context() -> None:
    @track_step(kind="retrieval")
    def pages(n: int) -> Any:
        for i in range(n):
            assert current_step() is not None and current_step().name.endswith("pages")  # type: ignore[union-attr]
            yield i
        return "done"

    @track_run
    def agent() -> list[int]:
        out = []
        for item in pages(3):
            # between items, the consumer is not inside the generator's step
            assert current_step() is None
            out.append(item)
        gen = pages(10)
        next(gen)
        gen.close()  # closed early: still recorded
        return out

    with capture_runs() as cap:
        assert agent() == [0, 1, 2]
    steps = sorted(cap.runs[0]["steps"], key=lambda s: s["started_at"])
    assert len(steps) == 2 and steps[0]["status"] == "success"
    # closed early by its consumer: one status for every early stop (break, close(), aclose(), disconnect)
    assert (steps[1]["status"], steps[1]["error_type"]) == ("cancelled", "GeneratorExit")


def test_generator_send_and_throw_are_forwarded() -> None:
    @track_step
    def echo() -> Any:
        received = []
        try:
            while True:
                received.append((yield len(received)))
        except Boom:
            yield received

    with capture_runs() as cap, track_run("r"):
        gen = echo()
        assert next(gen) == 0
        assert gen.send("a") == 1
        assert gen.throw(Boom()) == ["a"]
        gen.close()
    # the thrown exception was handled inside; the consumer then closed it before the end
    assert (cap.runs[0]["steps"][0]["status"], cap.runs[0]["steps"][0]["error_type"]) == ("cancelled", "GeneratorExit")


def test_async_generators() -> None:
    @track_step(kind="llm")
    async def stream(n: int) -> Any:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @track_run
    async def agent() -> list[int]:
        return [i async for i in stream(4)]

    with capture_runs() as cap:
        assert asyncio.run(agent()) == [0, 1, 2, 3]
    (step,) = cap.runs[0]["steps"]
    assert step["kind"] == "llm" and step["status"] == "success"

    @track_step
    async def failing() -> Any:
        yield 1
        raise Boom("late")

    async def consume() -> None:
        async with track_run("r2"):
            async for _ in failing():
                pass

    with capture_runs() as cap, pytest.raises(Boom):
        asyncio.run(consume())
    assert cap.runs[0]["steps"][0]["status"] == "error"


def test_methods_classmethods_staticmethods() -> None:
    class Agent:
        factor = 3

        @track_step
        def method(self, x: int) -> int:
            return x * self.factor

        @track_step
        @classmethod
        def cm(cls, x: int) -> int:
            return x * cls.factor

        @track_step(kind="tool")
        @staticmethod
        def sm(x: int) -> int:
            return x + 1

        @track_run
        def run(self) -> int:
            return self.method(1) + self.cm(1) + self.sm(1) + Agent.sm(1)

    with capture_runs() as cap:
        assert Agent().run() == 3 + 3 + 2 + 2
    names = sorted(s["name"] for s in cap.runs[0]["steps"])
    assert names == ["test_methods_classmethods_staticmethods.Agent.cm",
                     "test_methods_classmethods_staticmethods.Agent.method",
                     "test_methods_classmethods_staticmethods.Agent.sm",
                     "test_methods_classmethods_staticmethods.Agent.sm"]


def test_step_and_call_outside_a_run_get_an_implicit_run() -> None:
    with capture_runs() as cap:
        with track_step("lonely", kind="tool"), track_call("tavily", "search"):
            pass
        with track_call("openai", "embeddings"):
            pass
    first, second = cap.runs
    assert first["implicit"] and first["name"] == "lonely" and first["step_count"] == 1
    assert first["call_count"] == 1
    assert second["implicit"] and second["call_count"] == 1 and second["step_count"] == 0


def test_nested_run_is_its_own_run_with_a_parent() -> None:
    with capture_runs() as cap, track_run("outer") as outer:
        with track_step("delegate"), track_run("inner"), track_step("sub"):
            pass
        with track_step("after") as after:
            assert after.parent_step_id is None
    inner, outer_doc = sorted(cap.runs, key=lambda r: r["name"])
    assert inner["parent_run_id"] == outer.run_id
    assert {s["name"] for s in outer_doc["steps"]} == {"delegate", "after"}
    assert [s["name"] for s in inner["steps"]] == ["sub"]


def test_propagation_across_gather_and_thread_pool() -> None:
    @track_step(kind="tool")
    async def fetch(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @track_step(kind="tool")
    def work(i: int) -> int:
        return i

    @track_run
    async def agent() -> None:
        await asyncio.gather(*(fetch(i) for i in range(5)))
        with concurrent.futures.ThreadPoolExecutor(4) as pool, track_step("fan-out"):
            assert sum(pool.map(work, range(6))) == 15

    with capture_runs() as cap:
        asyncio.run(agent())
    (run,) = cap.runs
    assert run["step_count"] == 5 + 6 + 1
    fan_out = next(s for s in run["steps"] if s["name"] == "fan-out")
    workers = [s for s in run["steps"] if s["name"].endswith("work")]
    assert len(workers) == 6 and all(s["parent_step_id"] == fan_out["step_id"] for s in workers)


def test_thread_propagation_switch_off_and_wrap_context_helper() -> None:
    @track_step
    def work() -> None:
        pass

    with capture_runs(propagate_threads=False) as cap:
        assert not agentmeter.stats().thread_propagation
        with track_run("r"), concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(work).result()
            t = threading.Thread(target=agentmeter.wrap_context(work))
            t.start()
            t.join()
    by_name = {r["name"]: r for r in cap.runs}
    assert by_name["r"]["step_count"] == 1  # only the wrap_context thread joined the run
    assert by_name["test_thread_propagation_switch_off_and_wrap_context_helper.work"]["implicit"]
    assert agentmeter.stats().thread_propagation


def test_capture_is_off_by_default_and_opt_in_scrubs_secrets() -> None:
    @track_step
    def plain(x: int) -> int:
        return x

    @track_step(capture=True)
    def captured(query: str, api_key: str, options: dict[str, Any]) -> dict[str, Any]:
        return {"answer": query.upper(), "token": "abc"}

    with capture_runs() as cap, track_run("r"):
        plain(1)
        captured("hi", "sk-secret", {"Authorization": "Bearer x", "depth": 2})
    steps = {s["name"].rsplit(".", 1)[-1]: s for s in cap.runs[0]["steps"]}
    assert steps["plain"]["inputs"] is None and steps["plain"]["output"] is None
    assert steps["captured"]["inputs"] == {
        "query": "hi", "api_key": "[REDACTED]", "options": {"Authorization": "[REDACTED]", "depth": 2},
    }
    assert steps["captured"]["output"] == {"answer": "HI", "token": "[REDACTED]"}


def test_global_capture_with_redact_hook_and_size_cap() -> None:
    def redact(value: Any) -> Any:
        return {k: ("***" if k == "email" else v) for k, v in value.items()} if isinstance(value, dict) else value

    @track_step
    def step(email: str, text: str) -> None:
        return None

    with capture_runs(capture=True, redact=redact, capture_max_chars=100) as cap, track_run("r"):
        step("a@b.c", "x" * 1000)
    (s,) = cap.runs[0]["steps"]
    assert s["inputs"]["email"] == "***"
    assert len(s["inputs"]["text"]) < 200 and s["truncated"] is True


def test_disabled_makes_everything_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMETER_DISABLED", "1")
    sink = agentmeter.sinks.MemorySink()
    agentmeter.configure(sinks=[sink])

    @track_run
    def agent() -> int:
        with track_step("s") as s:
            s.set_metadata(a=1)  # a detached handle accepts every call
        with track_call("p", "op") as c:
            c.record_usage(input_tokens=1)
        return 7

    assert agent() == 7
    assert agentmeter.flush().sinks == {}
    assert sink.documents == []


def test_bad_usage_values_are_warned_and_recorded_as_unknown() -> None:
    with capture_runs() as cap, track_run("r"), track_call("p", "op") as call:
        call.record_usage(input_tokens=-1, output_tokens="3", cached_input_tokens=True)  # type: ignore[arg-type]
        call.record_usage(output_tokens=5)
    (c,) = cap.calls
    assert (c["input_tokens"], c["output_tokens"], c["cached_input_tokens"]) == (None, 5, None)
    assert agentmeter.stats().warnings == 3


def test_unfinished_step_at_run_end_is_recorded_cancelled() -> None:
    with capture_runs() as cap, track_run("r"):
        gen_step = track_step("left-open")
        gen_step.__enter__()
        # the run ends while the step is still open (a leaked generator, a thread still running)
        leaked = agentmeter._context.step_var.get()
        assert leaked is not None
        agentmeter._context.step_var.set(None)
    (step,) = cap.runs[0]["steps"]
    assert step["status"] == "cancelled" and step["error_type"] == "Unfinished"
    assert step["ended_at"] == cap.runs[0]["ended_at"]


def test_a_run_closed_at_exit_is_not_sent_again_when_it_ends() -> None:
    from agentmeter._spans import close_open_runs

    with capture_runs() as cap, track_run("long"):
        assert close_open_runs("SIGTERM", "terminated") == 1
    (run,) = cap.runs
    assert (run["status"], run["error_type"]) == ("cancelled", "SIGTERM")
