"""Mistakes users make fail loudly at the decorator, or work; bad values at run time never raise.

Also what a wrapper shows of the function it wraps (names, ``__signature__``) and what it captures
(bound arguments with defaults, ``set_output`` over the return value)."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import agentmeter
from agentmeter import _guard, current_step, track_call, track_run, track_step
from agentmeter.testing import capture_runs


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("str exploded")

    def __int__(self) -> int:
        raise RuntimeError("int exploded")


@pytest.mark.parametrize(("make", "argument"), [
    (lambda: track_run("x", tags=42), "tags"),
    (lambda: track_run("x", tags=["a", 3]), "tags"),
    (lambda: track_run("x", tags={"a": 1}), "tags"),
    (lambda: track_run("x", metadata=["k"]), "metadata"),
    (lambda: track_run("x", agent=5), "agent"),
    (lambda: track_run("x", capture="yes"), "capture"),
    (lambda: track_run(42), "name"),
    (lambda: track_step("s", kind="tools"), "kind"),
    (lambda: track_step("s", capture=1), "capture"),
    (lambda: track_step(3.5), "name"),
    (lambda: track_call("p", 7), "operation"),
    (lambda: track_call("p", "op", model=1), "model"),
])
def test_bad_arguments_fail_at_the_decorator_naming_the_argument(make: Any, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        make()
    assert not agentmeter._spans.has_open_runs()


def test_a_bad_tags_argument_leaks_no_run_to_be_cancelled_at_exit() -> None:
    with capture_runs() as cap:
        for _ in range(1000):
            with pytest.raises(ValueError, match="tags"):
                track_run("x", tags=42)
            with track_run("ok", tags=("a", "b")):
                pass
        assert agentmeter._spans.close_open_runs() == 0  # what exit would do: nothing is left open
    assert len(cap.runs) == 1000 and {r["status"] for r in cap.runs} == {"success"}
    assert cap.runs[0]["tags"] == ["a", "b"]


def test_tags_from_a_generator_serve_every_run() -> None:
    @track_run(tags=(t for t in ["a", "b"]))
    def agent() -> None:
        pass

    with capture_runs() as cap:
        agent()
        agent()
    assert [r["tags"] for r in cap.runs] == [["a", "b"], ["a", "b"]]


def test_handle_methods_never_raise_bad_values_are_dropped_counted_and_the_run_is_recorded() -> None:
    with capture_runs() as cap, track_run("r") as run:
        run.add_tags(5)  # type: ignore[arg-type]
        run.add_tags(None)  # type: ignore[arg-type]
        run.add_tags("ok", ["also", 7])  # type: ignore[list-item]
        run.set_metadata({Unprintable(): 1, 2: "two"}, fine=True)
        run.set_metadata("not a mapping")  # type: ignore[arg-type]
        with track_step("s") as step:
            step.set_metadata({object(): 1})
        with track_call("p", "op") as call:
            call.record_sizes("abc")  # type: ignore[arg-type]
            call.record_sizes(object(), 12)  # type: ignore[arg-type]
            call.record_sizes(request_bytes=-1)
            call.record_usage(input_tokens=3, model=Unprintable())  # type: ignore[arg-type]
            call.set_http_status(Unprintable())  # type: ignore[arg-type]
            call.set_http_status("200")
            call.record_retry("twice")  # type: ignore[arg-type]
            call.set_metadata(None, n=1)
    (doc,) = cap.runs
    assert doc["status"] == "success" and doc["tags"] == ["ok", "also"]
    assert doc["metadata"] == {"2": "two", "fine": True}
    (c,) = doc["calls"]
    assert (c["request_bytes"], c["response_bytes"], c["input_tokens"], c["model"]) == (None, 12, 3, None)
    assert (c["http_status"], c["retries"], c["metadata"]) == (200, 0, {"n": 1})
    assert doc["steps"][0]["metadata"] == {}
    for key in ("tags.type", "metadata.key", "metadata.type", "call.request_bytes", "usage.model",
                "call.http_status", "call.retries"):
        assert _guard.counters[f"warnings.{key}"] >= 1, key
    assert _guard.counters["internal_errors"] == 0


def test_set_output_wins_over_the_return_value_and_is_the_only_value_stored_with_capture_off() -> None:
    @track_step
    def sanitised(secret: str) -> str:
        step = current_step()
        assert step is not None
        step.set_output({"answer": "[sanitised]"})
        return f"raw {secret}"

    @track_step(capture=True)
    def captured(x: int) -> int:
        current_step().set_output("chosen")  # type: ignore[union-attr]
        return x * 2

    @track_run
    def agent() -> str:
        agentmeter.current_run().set_output("report")  # type: ignore[union-attr]
        captured(2)
        return sanitised("s3cr3t")

    with capture_runs() as cap:
        assert agent() == "raw s3cr3t"
    (run,) = cap.runs
    steps = {s["name"].rsplit(".", 1)[-1]: s for s in run["steps"]}
    assert run["output"] == "report" and run["inputs"] is None
    assert steps["sanitised"]["output"] == {"answer": "[sanitised]"} and steps["sanitised"]["inputs"] is None
    assert steps["captured"]["output"] == "chosen" and steps["captured"]["inputs"] == {"x": 2}
    assert "s3cr3t" not in repr(run)


def test_inputs_are_the_bound_arguments_with_defaults_applied() -> None:
    @track_step(capture=True)
    def search(query: str, limit: int = 10, *tags: str, exact: bool = False, **extra: Any) -> None:
        pass

    class Tool:
        @track_step(capture=True)
        def run(self, q: str, depth: int = 2) -> None:
            pass

    with capture_runs() as cap, track_run("r"):
        search("acme")
        search("acme", 3, "t", exact=True, lang="en")
        Tool().run("x")
    first, second, method = (s["inputs"] for s in sorted(cap.runs[0]["steps"], key=lambda s: s["started_at"]))
    assert first == {"query": "acme", "limit": 10, "tags": [], "exact": False, "extra": {}}
    assert second == {"query": "acme", "limit": 3, "tags": ["t"], "exact": True, "extra": {"lang": "en"}}
    assert method == {"q": "x", "depth": 2}


def test_callable_objects_are_tracked_under_their_class_name_with_their_signature() -> None:
    class Retriever:
        def __call__(self, query: str, k: int = 3) -> list[str]:
            return [query] * k

    class AsyncRetriever:
        async def __call__(self, query: str) -> str:
            return query

    retrieve = track_step(kind="retrieval")(Retriever())
    aretrieve = track_step(AsyncRetriever())
    assert list(inspect.signature(retrieve).parameters) == ["query", "k"]
    assert inspect.iscoroutinefunction(aretrieve)

    import asyncio

    with capture_runs() as cap, track_run("r"):
        assert retrieve("q", k=2) == ["q", "q"]
        assert asyncio.run(aretrieve("z")) == "z"
    names = sorted(s["name"] for s in cap.runs[0]["steps"])
    assert names == ["test_callable_objects_are_tracked_under_their_class_name_with_their_signature.AsyncRetriever",
                     "test_callable_objects_are_tracked_under_their_class_name_with_their_signature.Retriever"]


def test_wrappers_expose_signature_and_keep_generator_introspection() -> None:
    def plain(a: int, b: str = "x", *, c: float = 1.0) -> None:
        pass

    def gen(a: int) -> Iterator[int]:
        yield a

    async def agen(a: int) -> AsyncIterator[int]:
        yield a

    async def coro(a: int) -> int:
        return a

    for deco in (track_run, track_step, track_call, track_step(kind="tool")):
        for func in (plain, gen, agen, coro):
            wrapped = deco(func)
            assert wrapped.__signature__ == inspect.signature(func)  # type: ignore[attr-defined]
            assert inspect.signature(wrapped) == inspect.signature(func)
            assert wrapped.__wrapped__ is func and wrapped.__name__ == func.__name__
        assert inspect.isgeneratorfunction(deco(gen)) and inspect.isasyncgenfunction(deco(agen))
        assert inspect.iscoroutinefunction(deco(coro))
        assert inspect.getcallargs(deco(plain), 1, c=2.0) == inspect.getcallargs(plain, 1, c=2.0)

    class Holder:
        @track_step
        def items(self, n: int) -> Iterator[int]:
            yield from range(n)

    with capture_runs() as cap, track_run("r"):
        assert list(Holder().items(2)) == [0, 1]
        assert list(inspect.signature(Holder().items).parameters) == ["n"]
    assert cap.runs[0]["steps"][0]["name"].endswith("Holder.items")


def test_track_step_above_contextmanager_covers_the_with_block() -> None:
    @track_step(kind="tool")
    @contextlib.contextmanager
    def session(name: str) -> Iterator[str]:
        assert current_step() is not None
        yield name.upper()

    @track_step
    @contextlib.asynccontextmanager
    async def asession() -> AsyncIterator[int]:
        yield 1

    async def use_async() -> None:
        async with asession() as one:
            assert one == 1 and current_step() is not None

    import asyncio

    with capture_runs() as cap, track_run("r"):
        with session("db") as value:
            assert value == "DB"
            inner_parent = current_step()
            with track_call("db", "query"):
                pass
        asyncio.run(use_async())
        with pytest.raises(KeyError), session("x"):
            raise KeyError("in the block")
    run = cap.runs[0]
    ok, async_step, failed = sorted(run["steps"], key=lambda s: s["started_at"])
    assert inner_parent is not None and ok["step_id"] == inner_parent.step_id
    assert ok["status"] == "success" and run["calls"][0]["step_id"] == ok["step_id"]
    assert async_step["status"] == "success"
    assert (failed["status"], failed["error_type"]) == ("error", "KeyError")


def test_what_cannot_be_decorated_raises_a_type_error_saying_where_the_decorator_goes() -> None:
    class Agent:
        @property
        def name(self) -> str:
            return "a"

    with pytest.raises(TypeError, match="decorate its methods"):
        track_step(Agent)
    with pytest.raises(TypeError, match="below @property"):
        track_step(Agent.__dict__["name"])
    with pytest.raises(TypeError, match="below @property"):
        track_run(Agent.__dict__["name"])


def test_everything_still_works_after_many_mistakes() -> None:
    with capture_runs() as cap, track_run("r"), track_step("s"):
        pass
    assert cap.runs[0]["status"] == "success" and cap.runs[0]["steps"][0]["status"] == "success"
