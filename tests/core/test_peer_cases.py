"""Cases ported from the peers' own decorator test suites, each citing the test it came from.

The peers' assertions are about their spans; here each case asserts the same behaviour on agentmeter's
runs and steps. Where agentmeter decided differently, the comment says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import inspect
import pickle
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import agentmeter
from agentmeter import current_run, current_step, track_call, track_run, track_step
from agentmeter.testing import capture_runs


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _steps(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {_short(s["name"]): s for s in run["steps"]}


# ==== Langfuse: langfuse/langfuse-python =================================================================


def test_lf_set_output_with_capture_off_is_stored() -> None:
    # langfuse/langfuse-python tests/unit/test_observe.py
    #   test_capture_output_false_preserves_type_when_current_span_is_updated
    @track_step(kind="tool", capture=False)
    async def guardrail_check() -> bool:
        current_step().set_output({"verdict": "manually set"})  # type: ignore[union-attr]
        return True

    with capture_runs() as cap:
        assert asyncio.run(guardrail_check()) is True
    (step,) = cap.steps
    assert step["kind"] == "tool" and step["output"] == {"verdict": "manually set"}


def test_lf_sync_generator_returned_by_a_run_keeps_its_children_in_the_run() -> None:
    # langfuse/langfuse-python tests/unit/test_observe.py test_sync_generator_preserves_context_without_output_capture
    # (Langfuse wraps any generator its function returns; agentmeter tracks the decorated generator itself)
    @track_step
    def child_step(index: int) -> str:
        return f"item_{index}"

    @track_step
    def body() -> Iterator[str]:
        for index in range(2):
            yield child_step(index)

    @track_run
    def root() -> Iterator[str]:
        return body()

    with capture_runs() as cap:
        generator = root()
        assert cap.runs == []  # nothing exported before the stream is read
        assert list(generator) == ["item_0", "item_1"]
    (run,) = cap.runs
    children = [s for s in run["steps"] if _short(s["name"]) == "child_step"]
    parent = _steps(run)["body"]
    assert len(children) == 2 and all(c["parent_step_id"] == parent["step_id"] for c in children)
    assert run["output"] is None


def test_lf_streaming_response_body_read_after_the_endpoint_returned() -> None:
    # langfuse/langfuse-python tests/unit/test_observe.py
    #   test_streaming_response_preserves_context_without_output_capture
    class StreamingResponse:
        def __init__(self, body_iterator: AsyncIterator[str]) -> None:
            self.body_iterator = body_iterator

    @track_step
    async def stream_step(index: int) -> str:
        return f"chunk_{index}"

    @track_step  # Langfuse patches StreamingResponse.body_iterator; agentmeter tracks the decorated body
    async def body() -> AsyncIterator[str]:
        for index in range(2):
            yield await stream_step(index)

    @track_run
    async def endpoint() -> StreamingResponse:
        return StreamingResponse(body())

    async def main() -> list[str]:
        response = await endpoint()
        assert cap.runs == []
        return [item async for item in response.body_iterator]

    with capture_runs() as cap:
        assert asyncio.run(main()) == ["chunk_0", "chunk_1"]
    (run,) = cap.runs
    steps = [s for s in run["steps"] if _short(s["name"]) == "stream_step"]
    assert len(steps) == 2 and all(s["parent_step_id"] == _steps(run)["body"]["step_id"] for s in steps)


def test_lf_close_ends_the_step_once_without_exhaustion() -> None:
    # langfuse/langfuse-python tests/unit/test_observe.py test_sync_generator_wrapper_close_ends_span_without_exhaustion
    @track_step
    def generator() -> Iterator[str]:
        yield "item_0"
        yield "item_1"

    with capture_runs() as cap:
        wrapper = generator()
        assert next(wrapper) == "item_0"
        wrapper.close()
        wrapper.close()
    (step,) = cap.steps
    assert step["status"] == "cancelled" and step["ended_at"] is not None


def test_lf_close_runs_cleanup_in_the_context_of_the_step() -> None:
    # langfuse/langfuse-python tests/unit/test_observe.py test_sync_generator_wrapper_close_preserves_context
    seen: list[Any] = []

    @track_step
    def generator() -> Iterator[str]:
        try:
            yield "item_0"
            yield "item_1"
        finally:
            seen.append((current_run(), current_step()))

    with capture_runs() as cap:
        with track_run("r") as run:
            wrapper = generator()
            assert next(wrapper) == "item_0"
        wrapper.close()  # closed outside the run's block: cleanup still sees its run and step
    ((run_seen, step_seen),) = seen
    assert run_seen is run and step_seen is not None and step_seen.step_id == cap.steps[0]["step_id"]


def test_lf_abandoned_sync_generator_ends_its_step() -> None:
    # langfuse/langfuse-python tests/unit/test_observe.py test_sync_generator_wrapper_del_ends_span_when_abandoned
    @track_step
    def generator() -> Iterator[str]:
        yield "item_0"
        yield "item_1"

    with capture_runs() as cap:
        wrapper = generator()
        assert next(wrapper) == "item_0"
        del wrapper
        gc.collect()
    (step,) = cap.steps
    assert (step["status"], step["error_type"]) == ("cancelled", "GeneratorExit")


def test_lf_aclose_ends_the_step_without_exhaustion_and_runs_cleanup_in_it() -> None:
    # langfuse/langfuse-python tests/unit/test_observe.py
    #   test_async_generator_wrapper_aclose_ends_span_without_exhaustion and
    #   test_async_generator_wrapper_aclose_preserves_context
    seen: list[Any] = []

    @track_step
    async def generator() -> AsyncIterator[str]:
        try:
            yield "item_0"
            yield "item_1"
        finally:
            seen.append(current_step())

    async def main() -> None:
        wrapper = generator()
        assert await wrapper.__anext__() == "item_0"
        await wrapper.aclose()
        await wrapper.aclose()

    with capture_runs() as cap:
        asyncio.run(main())
    (step,) = cap.steps
    assert step["status"] == "cancelled" and seen[0].step_id == step["step_id"]


def test_lf_aclose_propagates_a_cleanup_error_and_records_it() -> None:
    # langfuse/langfuse-python tests/unit/test_observe.py
    #   test_async_generator_wrapper_aclose_propagates_cleanup_type_error
    @track_step
    async def generator() -> AsyncIterator[str]:
        try:
            yield "item_0"
        finally:
            raise TypeError("cleanup failed")

    async def main() -> None:
        wrapper = generator()
        assert await wrapper.__anext__() == "item_0"
        with pytest.raises(TypeError, match="cleanup failed"):
            await wrapper.aclose()

    with capture_runs() as cap:
        asyncio.run(main())
    (step,) = cap.steps
    assert (step["status"], step["error_message"]) == ("error", "cleanup failed")


def test_lf_abandoned_async_generator_ends_its_step() -> None:
    # langfuse/langfuse-python tests/unit/test_observe.py test_async_generator_wrapper_del_ends_span_when_abandoned
    @track_step
    async def generator() -> AsyncIterator[str]:
        yield "item_0"
        yield "item_1"

    async def main() -> None:
        wrapper = generator()
        assert await wrapper.__anext__() == "item_0"
        del wrapper
        gc.collect()
        await asyncio.sleep(0)  # the loop's finalizer acloses it
        await asyncio.sleep(0)

    with capture_runs() as cap:
        asyncio.run(main())
        agentmeter.flush()
    (step,) = cap.steps
    assert step["status"] == "cancelled"


def test_lf_consumer_cancelled_between_items_then_aclose_runs_cleanup_in_the_step() -> None:
    # langfuse/langfuse-python tests/unit/test_observe.py
    #   test_async_generator_wrapper_defers_span_end_for_unresumed_cancel
    cleanup: list[Any] = []

    @track_step
    async def generator() -> AsyncIterator[str]:
        try:
            yield "item_0"
            yield "item_1"
        finally:
            cleanup.append(current_step())

    async def main() -> None:
        wrapper = generator()

        async def consume() -> None:
            async for _ in wrapper:
                await asyncio.sleep(3600)

        consumer = asyncio.create_task(consume())
        for _ in range(4):
            await asyncio.sleep(0)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        assert cap.steps == []  # the generator is suspended, not finished: its step stays open
        await wrapper.aclose()

    with capture_runs() as cap:
        asyncio.run(main())
    (step,) = cap.steps
    assert step["status"] == "cancelled" and cleanup[0].step_id == step["step_id"]


def test_lf_nested_observations() -> None:
    # langfuse/langfuse-python tests/e2e/test_decorators.py test_nested_observations
    @track_step(kind="llm")
    def level_3_function() -> str:
        with track_call("openai", "chat", model="gpt-3.5-turbo") as call:
            call.record_usage(input_tokens=150, output_tokens=50)
        return "level_3"

    @track_step
    def level_2_function() -> str:
        level_3_function()
        return "level_2"

    @track_run(name="level_1")
    def level_1_function(*args: Any, **kwargs: Any) -> str:
        level_2_function()
        return "level_1"

    with capture_runs() as cap:
        assert level_1_function("Hello, World!", name="John") == "level_1"
    (run,) = cap.runs
    steps = _steps(run)
    assert steps["level_3_function"]["parent_step_id"] == steps["level_2_function"]["step_id"]
    assert steps["level_2_function"]["parent_step_id"] is None
    assert run["calls"][0]["step_id"] == steps["level_3_function"]["step_id"] and run["total_tokens"] == 200


def test_lf_exception_in_wrapped_function() -> None:
    # langfuse/langfuse-python tests/e2e/test_decorators.py test_exception_in_wrapped_function
    @track_step
    def level_3_function() -> None:
        raise ValueError("Mock exception")

    @track_run
    def level_1_function() -> None:
        level_3_function()

    with capture_runs() as cap, pytest.raises(ValueError, match="Mock exception"):
        level_1_function()
    (run,) = cap.runs
    assert (run["status"], run["error_message"]) == ("error", "Mock exception")
    assert run["steps"][0]["status"] == "error"


def test_lf_concurrent_decorator_executions() -> None:
    # langfuse/langfuse-python tests/e2e/test_decorators.py test_concurrent_decorator_executions
    @track_step
    def level_2_function() -> str:
        return "level_2"

    @track_run(name="concurrent")
    def level_1_function(i: int) -> str:
        level_2_function()
        return "level_1"

    with capture_runs() as cap, concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert list(pool.map(level_1_function, range(2))) == ["level_1", "level_1"]
    assert len(cap.runs) == 2 and len({r["run_id"] for r in cap.runs}) == 2
    assert all(r["step_count"] == 1 and r["parent_run_id"] is None for r in cap.runs)


def test_lf_disabled_io_capture_keeps_only_what_was_set() -> None:
    # langfuse/langfuse-python tests/e2e/test_decorators.py test_disabled_io_capture
    @track_step(capture=False)
    def nested(*args: Any, **kwargs: Any) -> str:
        current_step().set_output("manually set output")  # type: ignore[union-attr]
        return "nested response"

    @track_run
    def main(*args: Any, **kwargs: Any) -> str:
        nested(*args, **kwargs)
        return "function response"

    with capture_runs(capture=True) as cap:
        assert main("Hello, World!", name="John") == "function response"
    (run,) = cap.runs
    assert run["inputs"] == {"args": ["Hello, World!"], "kwargs": {"name": "John"}}
    (step,) = run["steps"]
    assert step["inputs"] is None and step["output"] == "manually set output"


def test_lf_decorated_class_and_instance_methods() -> None:
    # langfuse/langfuse-python tests/e2e/test_decorators.py test_decorated_class_and_instance_methods
    class TestClass:
        @classmethod
        @track_step(name="class-method")
        def class_method(cls, *args: Any, **kwargs: Any) -> str:
            return "class_method"

        @track_step(kind="llm")
        def level_3_function(self) -> str:
            return "level_3"

        @track_step
        def level_2_function(self) -> str:
            TestClass.class_method()
            self.level_3_function()
            return "level_2"

        @track_run
        def level_1_function(self) -> str:
            self.level_2_function()
            return "level_1"

    with capture_runs() as cap:
        assert TestClass().level_1_function() == "level_1"
    steps = _steps(cap.runs[0])
    assert steps["class-method"]["parent_step_id"] == steps["level_2_function"]["step_id"]
    assert steps["level_3_function"]["parent_step_id"] == steps["level_2_function"]["step_id"]


def test_lf_generator_as_function_input_is_not_consumed_by_capture() -> None:
    # langfuse/langfuse-python tests/e2e/test_decorators.py test_generator_as_function_input
    def generator_function() -> Iterator[str]:
        yield "Hello"
        yield ", "
        yield "World!"

    @track_step(capture=True)
    def nested(gen: Iterator[str]) -> str:
        return "".join(gen)

    with capture_runs() as cap, track_run("main"):
        assert nested(generator_function()) == "Hello, World!"
    (step,) = cap.steps
    assert step["output"] == "Hello, World!" and step["inputs"]["gen"].startswith("<generator object")


def test_lf_merge_metadata_and_tags() -> None:
    # langfuse/langfuse-python tests/e2e/test_decorators.py test_merge_metadata_and_tags
    @track_run(tags=["a", "b"], metadata={"key1": "value1"})
    def nested() -> None:
        run = current_run()
        run.add_tags("b", "c")  # type: ignore[union-attr]
        run.set_metadata(key2="value2")  # type: ignore[union-attr]
        run.set_metadata({"key1": "overridden"})  # type: ignore[union-attr]

    with capture_runs() as cap:
        nested()
    (run,) = cap.runs
    assert run["tags"] == ["a", "b", "c"] and run["metadata"] == {"key1": "overridden", "key2": "value2"}


def test_lf_sync_generator_consumed_after_its_root_returned() -> None:
    # langfuse/langfuse-python tests/e2e/test_decorators.py test_sync_generator_context_preservation
    seen: dict[str, Any] = {}

    @track_step(name="sync_generator")
    def create_generator() -> Iterator[str]:
        seen["generator"] = current_step()
        for i in range(3):
            yield f"item_{i}"

    @track_run(name="root")
    def root_function() -> Iterator[str]:
        seen["root"] = current_run()
        return create_generator()

    with capture_runs() as cap:
        generator = root_function()
        assert list(generator) == ["item_0", "item_1", "item_2"]
    (run,) = cap.runs
    assert seen["generator"] is not None and seen["generator"].run_id == seen["root"].run_id == run["run_id"]
    assert run["steps"][0]["name"] == "sync_generator"


def test_lf_async_generator_failing_after_its_root_returned() -> None:
    # langfuse/langfuse-python tests/e2e/test_decorators.py test_async_generator_exception_handling_with_context
    @track_step(name="failing_generator")
    async def failing_generator() -> AsyncIterator[str]:
        assert current_step() is not None
        yield "first_item"
        await asyncio.sleep(0.001)
        raise ValueError("Generator failure test")

    @track_run(name="root")
    async def root_function() -> AsyncIterator[str]:
        return failing_generator()

    items: list[str] = []

    async def read() -> None:
        async for item in await root_function():
            items.append(item)

    async def main() -> list[str]:
        with pytest.raises(ValueError, match="Generator failure test"):
            await read()
        return items

    with capture_runs() as cap:
        assert asyncio.run(main()) == ["first_item"]
    (run,) = cap.runs
    assert run["status"] == "error" and run["steps"][0]["status"] == "error"


def test_lf_empty_sync_generator() -> None:
    # langfuse/langfuse-python tests/e2e/test_decorators.py test_sync_generator_empty_context_preservation
    @track_step(name="empty_generator")
    def empty_generator() -> Iterator[str]:
        assert current_step() is not None
        return
        yield  # unreachable: makes it a generator

    @track_run(name="root")
    def root_function() -> Iterator[str]:
        return empty_generator()

    with capture_runs() as cap:
        assert list(root_function()) == []
    assert cap.runs[0]["steps"][0]["status"] == "success"


# ==== LangSmith: langchain-ai/langsmith-sdk ==============================================================
# python/tests/unit_tests/test_run_helpers.py; the _get_inputs cases check the inputs agentmeter captures.
# agentmeter keeps ``**kwargs`` under its own name (the bound arguments); LangSmith spreads them out.


def _inputs(func: Any, *args: Any, **kwargs: Any) -> Any:
    with capture_runs() as cap, track_run("r"):
        track_step(capture=True)(func)(*args, **kwargs)
    return cap.steps[0]["inputs"]


def test_ls_get_inputs_cases() -> None:
    def no_args() -> None: ...
    def args(a: int, b: int, c: int) -> None: ...
    def defaults(a: int, b: int, c: int = 3) -> None: ...
    def var_args(a: int, b: int, *kwargs: Any) -> None: ...
    def var_kwargs(a: int, b: int, **kwargs: Any) -> None: ...
    def keyword_only(a: int, *, b: int, c: int) -> None: ...
    def keyword_only_defaults(a: int, *, b: int = 2, c: int = 3) -> None: ...

    assert _inputs(no_args) == {}  # test__get_inputs_with_no_args
    assert _inputs(args, 1, 2, 3) == {"a": 1, "b": 2, "c": 3}  # test__get_inputs_with_args
    assert _inputs(defaults, 1, 2) == {"a": 1, "b": 2, "c": 3}  # test__get_inputs_with_defaults
    assert _inputs(var_args, 1, 2, 3, 4) == {"a": 1, "b": 2, "kwargs": [3, 4]}  # test__get_inputs_with_var_args
    # test__get_inputs_with_var_kwargs (kept under their parameter's name)
    assert _inputs(var_kwargs, 1, 2, c=3, d=4) == {"a": 1, "b": 2, "kwargs": {"c": 3, "d": 4}}
    assert _inputs(keyword_only, 1, b=2, c=3) == {"a": 1, "b": 2, "c": 3}  # test__get_inputs_with_keyword_only_args
    # test__get_inputs_with_keyword_only_args_and_defaults
    assert _inputs(keyword_only_defaults, 1) == {"a": 1, "b": 2, "c": 3}


def test_ls_get_inputs_of_methods_leave_out_self_and_cls() -> None:
    # test__get_inputs_with_class_method, test__get_inputs_with_static_method, test__get_inputs_with_self
    class Foo:
        @track_step(capture=True)
        @classmethod
        def cm(cls, a: int, b: int) -> None: ...

        @track_step(capture=True)
        @staticmethod
        def sm(a: int, b: int) -> None: ...

        @track_step(capture=True)
        def method(self, a: int, b: int) -> None: ...

    with capture_runs() as cap, track_run("r"):
        Foo.cm(1, 2)
        Foo.sm(1, 2)
        Foo().method(1, 2)
    assert [s["inputs"] for s in cap.steps] == [{"a": 1, "b": 2}] * 3


@pytest.mark.parametrize("use_next", [True, False])
@pytest.mark.parametrize("return_val", [None, "foo"])
def test_ls_traceable_iterator(use_next: bool, return_val: str | None) -> None:
    # langchain-ai/langsmith-sdk python/tests/unit_tests/test_run_helpers.py test_traceable_iterator
    @track_step(capture=True)
    def my_iterator_fn(a: int, b: int, d: int, **kwargs: Any) -> Iterator[int]:
        assert kwargs == {"e": 5}
        yield from range(a + b + d)
        return return_val  # type: ignore[return-value]

    with capture_runs() as cap, track_run("r"):
        genout = my_iterator_fn(1, 2, 3, e=5)
        if use_next:
            results = []
            stop: StopIteration | None = None
            while stop is None:
                try:
                    results.append(next(genout))
                except StopIteration as e:
                    stop = e
            assert stop.value == return_val
        else:
            results = list(genout)
    assert results == [0, 1, 2, 3, 4, 5]
    assert cap.steps[0]["output"] == [0, 1, 2, 3, 4, 5]  # what it yielded


@pytest.mark.parametrize("use_next", [True, False])
def test_ls_traceable_async_iterator(use_next: bool) -> None:
    # langchain-ai/langsmith-sdk python/tests/unit_tests/test_run_helpers.py test_traceable_async_iterator
    @track_step(capture=True)
    async def my_iterator_fn(a: int, b: int, d: int, **kwargs: Any) -> AsyncIterator[int]:
        assert kwargs == {"e": 5}
        for i in range(a + b + d):
            yield i

    async def main() -> list[int]:
        genout = my_iterator_fn(1, 2, 3, e=5)
        if use_next:
            results = []
            while True:
                try:
                    results.append(await genout.__anext__())
                except StopAsyncIteration:
                    return results
        return [item async for item in genout]

    with capture_runs() as cap, track_run("r"):
        assert asyncio.run(main()) == [0, 1, 2, 3, 4, 5]
    assert cap.steps[0]["inputs"] == {"a": 1, "b": 2, "d": 3, "kwargs": {"e": 5}}
    assert cap.steps[0]["output"] == [0, 1, 2, 3, 4, 5]


def test_ls_decorated_dunder_call() -> None:
    # langchain-ai/langsmith-sdk python/tests/unit_tests/test_run_helpers.py test_is_traceable_class_call
    class Foo:
        @track_step
        def __call__(self, a: int, b: int) -> int:
            return a + b

    with capture_runs() as cap, track_run("r"):
        assert Foo()(1, 2) == 3
    assert cap.steps[0]["name"].endswith("Foo.__call__")


def test_ls_generator_read_in_two_parts_with_nested_streams() -> None:
    # langchain-ai/langsmith-sdk python/tests/unit_tests/test_run_helpers.py test_generator
    @track_step
    def some_sync_func(query: str) -> list[str]:
        return [query, query]

    @track_step
    def some_func(queries: list[str]) -> Iterator[str]:
        yield from queries

    @track_step
    def summarize_answers(query: str, document_context: str) -> Iterator[str]:
        for i in range(3):
            yield f"Answer {i}"

    @track_run(name="expand_and_answer_questions")
    def my_answer(query: str) -> Iterator[str]:
        docs_gen = some_func(queries=some_sync_func(query=query))
        documents = []
        for document in docs_gen:  # read one item, then the rest later
            documents.append(document)
            break
        yield from documents
        for document in docs_gen:
            documents.append(document)
            yield document
        yield from summarize_answers(query=query, document_context="\n".join(documents))

    with capture_runs() as cap:
        assert list(my_answer("some_query")) == ["some_query", "some_query", "Answer 0", "Answer 1", "Answer 2"]
    (run,) = cap.runs
    assert run["name"] == "expand_and_answer_questions" and run["status"] == "success"
    steps = _steps(run)
    assert steps["some_func"]["status"] == "success"  # one break does not end it: it was read to the end
    assert set(steps) == {"some_sync_func", "some_func", "summarize_answers"}


def test_ls_async_generator_read_in_two_parts() -> None:
    # langchain-ai/langsmith-sdk python/tests/unit_tests/test_run_helpers.py test_async_generator
    @track_step
    async def some_async_func(queries: list[str]) -> AsyncIterator[str]:
        await asyncio.sleep(0.001)
        for query in queries:
            yield query

    @track_run(name="expand_and_answer_questions")
    async def my_answer(query: str) -> AsyncIterator[str]:
        docs_gen = some_async_func(queries=[query, query])
        documents = []
        async for document in docs_gen:
            documents.append(document)
            break
        for document in documents:
            yield document
        async for document in docs_gen:
            yield document

    async def main() -> list[str]:
        return [chunk async for chunk in my_answer("q")]

    with capture_runs() as cap:
        assert asyncio.run(main()) == ["q", "q"]
    (run,) = cap.runs
    assert run["steps"][0]["status"] == "success" and run["status"] == "success"


def test_ls_generator_exception_keeps_what_it_yielded() -> None:
    # langchain-ai/langsmith-sdk python/tests/unit_tests/test_run_helpers.py test_traceable_gen_exception
    # and test_traceable_async_gen_exception
    @track_step(capture=True)
    def sync_fn(a: int) -> Iterator[int]:
        yield from range(5)
        raise ValueError("foo")

    @track_step(capture=True)
    async def async_fn(a: int) -> AsyncIterator[int]:
        for i in range(5):
            yield i
        raise ValueError("foo")

    async def read_async() -> None:
        async for _ in async_fn(1):
            pass

    with capture_runs() as cap, track_run("r"):
        with pytest.raises(ValueError, match="foo"):
            list(sync_fn(1))
        with pytest.raises(ValueError, match="foo"):
            asyncio.run(read_async())
    assert [(s["status"], s["output"]) for s in cap.steps] == [("error", [0, 1, 2, 3, 4])] * 2


def test_ls_async_exception() -> None:
    # langchain-ai/langsmith-sdk python/tests/unit_tests/test_run_helpers.py test_traceable_async_exception
    @track_run
    async def my_function(a: int) -> int:
        raise ValueError("foo")

    with capture_runs() as cap, pytest.raises(ValueError, match="foo"):
        asyncio.run(my_function(1))
    assert (cap.runs[0]["status"], cap.runs[0]["error_type"]) == ("error", "ValueError")


def test_ls_yield_from_gets_the_return_value() -> None:
    # langchain-ai/langsmith-sdk python/tests/unit_tests/test_run_helpers.py test_traceable_stop_iteration
    def my_generator() -> Iterator[int]:
        yield from range(5)
        return ("last", "vals")  # type: ignore[return-value]

    def consume(gen: Any) -> Iterator[int]:
        last_vals = yield from gen()
        assert last_vals == ("last", "vals")

    assert list(consume(my_generator)) == list(range(5))
    with capture_runs():
        assert list(consume(track_step(my_generator))) == list(range(5))


def test_ls_other_decorators_around_do_not_change_the_name() -> None:
    # langchain-ai/langsmith-sdk python/tests/unit_tests/test_run_helpers.py test_traceable_triple_decorated
    def some_decorator(func: Any) -> Any:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

        return wrapper

    @some_decorator
    def original_function(a: int) -> str:
        return f"foo {a}"

    wrapped_function = some_decorator(track_step(original_function))
    with capture_runs() as cap, track_run("r"):
        assert wrapped_function(5) == "foo 5"
    assert _short(cap.steps[0]["name"]) == "original_function"
    assert wrapped_function.__wrapped__.__wrapped__ is original_function


# ==== Logfire: pydantic/logfire ==========================================================================
# tests/test_logfire.py


def test_logfire_instrument_other_callable() -> None:
    # pydantic/logfire tests/test_logfire.py test_instrument_other_callable
    class Instrumented:
        def __call__(self, a: int) -> str:
            return f"hello {a}"

        def __repr__(self) -> str:
            return "<Instrumented>"

    inst = track_step(capture=True)(Instrumented())
    with capture_runs() as cap, track_run("r"):
        assert inst(456) == "hello 456"
    (step,) = cap.steps
    assert step["name"].endswith("Instrumented") and step["inputs"] == {"a": 456}


def test_logfire_generators_are_tracked_without_a_warning() -> None:
    # pydantic/logfire tests/test_logfire.py test_instrument_generator_warning, test_instrument_async_generator_warning
    # (Logfire warns because its span would stay current between items; agentmeter's stream step is current
    # only while the generator runs, so there is nothing to warn about)
    def foo() -> Iterator[int]:
        yield 1

    async def afoo() -> AsyncIterator[int]:
        yield 1

    async def read() -> list[int]:
        return [value async for value in track_step(afoo)()]

    with capture_runs() as cap, track_run("r"):
        tracked = track_step(foo)
        assert tracked.__name__ == "foo" and list(tracked()) == [1]
        assert asyncio.run(read()) == [1]
    assert [(_short(s["name"]), s["status"]) for s in cap.steps] == [("foo", "success"), ("afoo", "success")]


def test_logfire_instrument_above_contextmanager() -> None:
    # pydantic/logfire tests/test_logfire.py test_instrument_contextmanager_warning and
    # test_instrument_asynccontextmanager_warning (Logfire warns; agentmeter supports this order: the step
    # covers the with block and is current in it)
    @track_step
    @contextlib.contextmanager
    def foo() -> Iterator[None]:
        yield

    @track_step
    @contextlib.asynccontextmanager
    async def afoo() -> AsyncIterator[None]:
        yield

    async def use() -> None:
        async with afoo():
            with track_step("hello-async"):
                pass

    with capture_runs() as cap, track_run("r"):
        with foo(), track_step("hello"):
            pass
        asyncio.run(use())
    steps = _steps(cap.runs[0])
    assert steps["hello"]["parent_step_id"] == steps["foo"]["step_id"]
    assert steps["hello-async"]["parent_step_id"] == steps["afoo"]["step_id"]


def test_logfire_contextmanager_above_instrument() -> None:
    # pydantic/logfire tests/test_logfire.py test_instrument_contextmanager_prevent_warning
    # (the generator's step times the with block, but is current only while the generator's code runs)
    @contextlib.contextmanager
    @track_step
    def foo() -> Iterator[None]:
        yield

    assert foo.__name__ == "foo"
    with capture_runs() as cap, track_run("r"), foo(), track_step("hello"):
        pass
    steps = _steps(cap.runs[0])
    assert steps["foo"]["status"] == "success" and steps["hello"]["parent_step_id"] is None


def test_logfire_optional_args_are_recorded() -> None:
    # pydantic/logfire tests/test_logfire.py test_instrument_optional_args
    @track_step(capture=True)
    def foo(a: int, b: int, c: int, optional: int = 10, *, optional_kw: int = 5) -> int:
        return a + b + c + optional + optional_kw

    with capture_runs() as cap, track_run("r"):
        assert foo(1, 2, 3) == 21
    assert cap.steps[0]["inputs"] == {"a": 1, "b": 2, "c": 3, "optional": 10, "optional_kw": 5}


def test_logfire_async_record_return() -> None:
    # pydantic/logfire tests/test_logfire.py test_instrument_async, test_instrument_async_record_return
    @track_step(capture=True)
    async def foo() -> int:
        return 456

    assert foo.__name__ == "foo"
    with capture_runs() as cap, track_run("r"):
        assert asyncio.run(foo()) == 456
    assert cap.steps[0]["output"] == 456


def test_logfire_extract_false() -> None:
    # pydantic/logfire tests/test_logfire.py test_instrument_extract_false
    @track_step(capture=False)
    def hello_world(a: int) -> str:
        return f"hello {a}"

    assert hello_world.__name__ == "hello_world"
    with capture_runs(capture=True) as cap, track_run("r"):
        assert hello_world(123) == "hello 123"
    assert (cap.steps[0]["inputs"], cap.steps[0]["output"]) == (None, None)


@track_step
def _module_level(x: int) -> int:
    return x * 2


@track_step
def _module_level_stream(n: int) -> Iterator[int]:
    yield from range(n)


def test_logfire_decorated_functions_pickle_by_reference() -> None:
    # pydantic/logfire tests/test_logfire.py test_instrument_with_no_args (cloudpickle round trip; here pickle)
    foo = pickle.loads(pickle.dumps(_module_level))
    stream = pickle.loads(pickle.dumps(_module_level_stream))
    assert foo is _module_level and stream is _module_level_stream
    with capture_runs() as cap, track_run("r"):
        assert foo(2) == 4 and list(stream(2)) == [0, 1]
    assert cap.runs[0]["step_count"] == 2


# ==== OpenTelemetry: open-telemetry/opentelemetry-python =================================================


def test_otel_start_as_current_span_implicit() -> None:
    # open-telemetry/opentelemetry-python opentelemetry-sdk/tests/trace/test_trace.py
    #   TestSpanCreation.test_start_as_current_span_implicit
    assert current_step() is None
    with capture_runs() as cap, track_run("root"):
        with track_step("root-step") as root:
            assert current_step() is root
            with track_step("child") as child:
                assert current_step() is child and child.parent_step_id == root.step_id
            assert current_step() is root  # the parent is current again
            assert child.ended
        assert current_step() is None
    assert current_run() is None and cap.runs[0]["step_count"] == 2


def test_otel_start_as_current_span_decorator() -> None:
    # open-telemetry/opentelemetry-python opentelemetry-sdk/tests/trace/test_trace.py
    #   TestSpanCreation.test_start_as_current_span_decorator
    @track_run(name="root")
    def func() -> Any:
        root = current_run()
        with track_step("child") as child:
            assert current_step() is child and child.run_id == root.run_id  # type: ignore[union-attr]
        assert current_step() is None
        return root

    with capture_runs() as cap:
        root1 = func()
        assert current_run() is None and root1.ended
        root2 = func()
        assert current_run() is None and root2.ended
    assert root1 is not root2 and len(cap.runs) == 2


def test_otel_decorator_calls_in_order_sync_and_async() -> None:
    # open-telemetry/opentelemetry-python opentelemetry-api/tests/trace/test_tracer.py
    #   TestTracer.test_start_as_current_span_decorator
    @track_step("name")
    def function_sync(data: str) -> int:
        assert current_step() is not None
        return len(data)

    @track_step("name")
    async def function_async(data: str) -> int:
        assert current_step() is not None
        return len(data)

    with capture_runs() as cap:
        assert function_sync("123") == 3
        assert asyncio.run(function_async("123")) == 3
    assert [r["steps"][0]["name"] for r in cap.runs] == ["name", "name"]


def test_otel_error_status() -> None:
    # open-telemetry/opentelemetry-python opentelemetry-sdk/tests/trace/test_trace.py TestSpan.test_error_status
    with capture_runs() as cap:
        with pytest.raises(AssertionError), track_run("root"):
            raise AssertionError("unknown")
        with pytest.raises(AssertionError), track_step("root"):
            raise AssertionError("unknown")
    for doc in cap.runs:
        assert (doc["status"], doc["error_type"], doc["error_message"]) == ("error", "AssertionError", "unknown")


# ==== Sentry: getsentry/sentry-python ====================================================================
# tests/tracing/test_decorator.py


def my_example_function() -> str:
    return "return_of_sync_function"


async def my_async_example_function() -> str:
    return "return_of_async_function"


def test_sentry_trace_decorator() -> None:
    # getsentry/sentry-python tests/tracing/test_decorator.py test_trace_decorator, test_trace_decorator_async
    with capture_runs() as cap, track_run("r"):
        assert track_step(my_example_function)() == "return_of_sync_function"
        assert asyncio.run(track_step(my_async_example_function)()) == "return_of_async_function"
    assert [s["name"] for s in cap.steps] == ["my_example_function", "my_async_example_function"]


def test_sentry_trace_decorator_without_a_transaction() -> None:
    # getsentry/sentry-python tests/tracing/test_decorator.py test_trace_decorator_no_trx,
    # test_trace_decorator_async_no_trx (Sentry logs and records nothing; agentmeter records an implicit run)
    with capture_runs() as cap:
        assert track_step(my_example_function)() == "return_of_sync_function"
        assert asyncio.run(track_step(my_async_example_function)()) == "return_of_async_function"
    assert [(r["implicit"], r["name"]) for r in cap.runs] == [
        (True, "my_example_function"), (True, "my_async_example_function")]


def test_sentry_child_span() -> None:
    # getsentry/sentry-python tests/tracing/test_decorator.py test_trace_decorator_child_span_streaming,
    # test_trace_decorator_async_child_span_streaming
    @track_step
    def _some_function_traced(a: int, b: int, c: int) -> bool:
        return True

    @track_step
    async def _some_async_function_traced(a: int, b: int, c: int) -> bool:
        return True

    with capture_runs() as cap, track_run("segment"), track_step("outer") as segment:
        assert _some_function_traced(1, 2, 3) is True
        assert asyncio.run(_some_async_function_traced(1, 2, 3)) is True
    children = [s for s in cap.steps if s["name"] != "outer"]
    assert len(children) == 2 and all(s["parent_step_id"] == segment.step_id for s in children)


def test_sentry_functions_to_trace_signature_unchanged() -> None:
    # getsentry/sentry-python tests/tracing/test_decorator.py test_functions_to_trace_signature_unchanged_sync,
    # test_functions_to_trace_signature_unchanged_async
    def _some_function(a: Any, b: Any, c: Any) -> None:
        pass

    async def _some_async_function(a: Any, b: Any, c: Any) -> None:
        pass

    for func in (_some_function, _some_async_function):
        for deco in (track_run, track_step, track_call):
            assert inspect.getcallargs(func, 1, 2, 3) == inspect.getcallargs(deco(func), 1, 2, 3)


def test_sentry_pii_inputs_and_outputs_only_when_capture_is_on() -> None:
    # getsentry/sentry-python tests/tracing/test_decorator.py test_span_templates_ai_pii (send_default_pii
    # plays the part of agentmeter's capture setting)
    @track_step(kind="tool")
    def my_tool(arg1: int, arg2: int, **kwargs: Any) -> str:
        return "tool_output"

    for capture in (False, True):
        with capture_runs(capture=capture) as cap, track_run("agent"):
            my_tool(1, 2, tool_arg1="3", tool_arg2="4")
        (step,) = cap.steps
        if capture:
            assert step["inputs"] == {"arg1": 1, "arg2": 2, "kwargs": {"tool_arg1": "3", "tool_arg2": "4"}}
            assert step["output"] == "tool_output"
        else:
            assert (step["inputs"], step["output"]) == (None, None)
