"""OpenTelemetry in: GenAI spans (pydantic-ai's own, and hand-made ones in every naming style) -> runs."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import agentmeter
from agentmeter import _guard
from agentmeter.stubs import StubServer
from agentmeter.testing import CapturedRuns

from .conftest import need, served_by_run, served_tokens

need("opentelemetry.sdk")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.trace import Status, StatusCode  # noqa: E402

from agentmeter.integrations.opentelemetry import AgentmeterSpanProcessor, normalize_provider  # noqa: E402


@pytest.fixture
def otel() -> Iterator[tuple[TracerProvider, AgentmeterSpanProcessor]]:
    provider = TracerProvider()
    processor = AgentmeterSpanProcessor()
    provider.add_span_processor(processor)
    yield provider, processor
    provider.shutdown()


def test_pydantic_ai_20_concurrent_runs_plain_and_streamed(stub: StubServer, captured: CapturedRuns,
                                                            otel: tuple[TracerProvider, Any]) -> None:
    need("pydantic_ai")
    from pydantic_ai import Agent, InstrumentationSettings
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider, processor = otel
    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=stub.openai_base_url, api_key="stub"))
    agent = Agent(model, name="weather")
    agent.instrument = InstrumentationSettings(tracer_provider=provider)

    @agent.tool_plain
    def get_weather(city: str) -> str:
        return f"sunny in {city}"

    async def one(i: int) -> None:
        if i % 2:
            async with agent.run_stream(f"weather in city{i}?") as result:
                await result.get_output()
        else:
            await agent.run(f"weather in city{i}?")

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(20)))

    asyncio.run(main())
    assert processor.open_traces == 0
    runs = captured.runs
    assert len(runs) == 20
    assert {r["agent"] for r in runs} == {"weather"} and {r["status"] for r in runs} == {"success"}
    assert len({r["session_id"] for r in runs}) == 20
    for run in runs:
        assert run["step_count"] == 1 and run["call_count"] == 2
        (step,) = run["steps"]
        assert (step["name"], step["kind"], step["status"]) == ("get_weather", "tool", "success")
        for call in run["calls"]:
            assert (call["provider"], call["operation"], call["model"]) == ("openai", "chat", "gpt-4o-mini")
            assert call["step_id"] is None and call["priced"] and call["cost_usd"] > 0
        assert run["input_tokens"] == sum(c["input_tokens"] for c in run["calls"])
    streamed = [c for r in runs for c in r["calls"] if c["time_to_first_token_ms"] is not None]
    assert len(streamed) == 20  # 10 streamed runs x 2 requests
    ours = Counter((r["call_count"], r["input_tokens"], r["output_tokens"]) for r in runs)
    assert ours == served_by_run(stub, "city")
    assert sum(r["total_tokens"] for r in runs) == served_tokens(stub)


def _chat(tracer: Any, name: str = "chat gpt-4o-mini", **attrs: Any) -> None:
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18"}
    with tracer.start_as_current_span(name, attributes={**base, **attrs}):
        pass


def test_agent_span_usage_totals_are_never_added_again(captured: CapturedRuns, otel: Any) -> None:
    provider, _ = otel
    tracer = provider.get_tracer("t")
    totals = {"gen_ai.usage.input_tokens": 300, "gen_ai.usage.output_tokens": 30}  # what older SDKs put on agents
    with tracer.start_as_current_span("invoke_agent a", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a", **totals}):
        _chat(tracer, **{"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10})
        # a framework chat span around the client library's own chat span: one request, reported twice
        with tracer.start_as_current_span("chat", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.usage.input_tokens": 200, "gen_ai.usage.output_tokens": 20}):
            _chat(tracer, **{"gen_ai.usage.input_tokens": 200, "gen_ai.usage.output_tokens": 20})
    (run,) = captured.runs
    assert (run["call_count"], run["input_tokens"], run["output_tokens"]) == (2, 300, 30)
    (wrapper,) = run["steps"]
    assert wrapper["kind"] == "llm" and wrapper["call_count"] == 1 and wrapper["input_tokens"] == 200
    one = sum(c["cost_usd"] for c in run["calls"])
    assert run["cost_usd"] == pytest.approx(one) and run["unpriced_call_count"] == 0
    assert {c["model"] for c in run["calls"]} == {"gpt-4o-mini-2024-07-18"}


def test_older_names_openinference_and_provider_normalisation(captured: CapturedRuns, otel: Any) -> None:
    provider, _ = otel
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("openai.chat", attributes={  # OpenLLMetry before the rename
            "gen_ai.system": "openai", "llm.request.type": "chat", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.prompt_tokens": 1000, "gen_ai.usage.completion_tokens": 100}):
        pass
    with tracer.start_as_current_span("agent", attributes={  # noqa: SIM117 (the nesting is the point)
            "openinference.span.kind": "AGENT", "session.id": "s-1"}):
        with tracer.start_as_current_span("llm", attributes={
                "openinference.span.kind": "LLM", "llm.provider": "google", "llm.model_name": "gemini-2.5-flash",
                "llm.token_count.prompt": 2000, "llm.token_count.completion": 50,
                "llm.token_count.prompt_details.cache_read": 1000}):
            pass
    with tracer.start_as_current_span("generate_content gemini-2.5-flash", attributes={
            "gen_ai.operation.name": "generate_content", "gen_ai.provider.name": "gcp.vertex_ai",
            "gen_ai.response.model": "gemini-2.5-flash", "gen_ai.usage.input_tokens": 2000,
            "gen_ai.usage.output_tokens": 50, "gen_ai.usage.cache_read.input_tokens": 1000}):
        pass
    bare, agent, vertex = sorted(captured.runs, key=lambda r: r["started_at"])
    (call,) = bare["calls"]
    assert bare["implicit"] and (call["provider"], call["input_tokens"], call["output_tokens"]) == ("openai", 1000, 100)
    assert call["priced"] and call["cost_usd"] > 0
    assert agent["session_id"] == "s-1" and not agent["implicit"]
    (oi,) = agent["calls"]
    (vx,) = vertex["calls"]
    assert (oi["provider"], vx["provider"]) == ("google", "google")
    assert vx["metadata"]["provider_name"] == "gcp.vertex_ai"
    assert oi["cached_input_tokens"] == vx["cached_input_tokens"] == 1000
    assert oi["priced"] and vx["priced"] and oi["cost_usd"] == pytest.approx(vx["cost_usd"]) and vx["cost_usd"] > 0
    assert normalize_provider("AWS.Bedrock") == "aws" and normalize_provider(None) == "unknown"


def test_steps_nest_by_parent_through_other_spans_with_errors_and_first_chunk(captured: CapturedRuns,
                                                                              otel: Any) -> None:
    provider, _ = otel
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("invoke_agent planner", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
            "gen_ai.conversation.id": "conv-9"}):
        with tracer.start_as_current_span("plan", attributes={"gen_ai.operation.name": "plan"}):  # noqa: SIM117
            with tracer.start_as_current_span("GET /search"):  # not GenAI: skipped over
                with tracer.start_as_current_span("execute_tool search", attributes={
                        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
                        "gen_ai.tool.call.id": "call_1"}):
                    _chat(tracer, **{"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5,
                                     "gen_ai.response.time_to_first_chunk": 0.25, "http.response.status_code": 200})
        with pytest.raises(TimeoutError), tracer.start_as_current_span("execute_tool fetch", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "fetch"}):
            raise TimeoutError("upstream slow")
        with tracer.start_as_current_span("chat", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "error.type": "RateLimitError",
                "http.response.status_code": 429}) as span:
            span.set_status(Status(StatusCode.ERROR, "rate limited"))
    (run,) = captured.runs
    assert (run["name"], run["agent"], run["session_id"]) == ("planner", "planner", "conv-9")
    steps = {s["name"]: s for s in run["steps"]}
    assert set(steps) == {"plan", "search", "fetch"}
    assert steps["search"]["parent_step_id"] == steps["plan"]["step_id"] and steps["plan"]["kind"] == "plan"
    assert steps["search"]["metadata"]["tool_call_id"] == "call_1"
    assert (steps["fetch"]["status"], steps["fetch"]["error_type"]) == ("error", "TimeoutError")
    assert steps["fetch"]["error_message"] == "upstream slow"
    ok, failed = sorted(run["calls"], key=lambda c: c["status"], reverse=True)
    assert ok["step_id"] == steps["search"]["step_id"] and ok["time_to_first_token_ms"] == 250.0
    assert (failed["status"], failed["error_type"], failed["http_status"]) == ("error", "RateLimitError", 429)
    assert failed["error_message"] == "rate limited" and failed["step_id"] is None
    assert run["error_call_count"] == 1 and run["error_step_count"] == 1


def test_a_framework_run_inside_a_tracked_run_inherits_its_session_user_and_version(captured: CapturedRuns,
                                                                                     otel: Any) -> None:
    provider, _ = otel
    tracer = provider.get_tracer("t")
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"}
    with agentmeter.track_run("request", session="sess-1", user="u-7", version="1.4"):
        with tracer.start_as_current_span("invoke_agent a", attributes=agent):
            _chat(tracer)
        # the framework's own conversation id wins over the one inherited
        with tracer.start_as_current_span("invoke_agent a", attributes={**agent, "gen_ai.conversation.id": "conv"}):
            _chat(tracer)
    with tracer.start_as_current_span("invoke_agent a", attributes=agent):  # outside: nothing to inherit
        _chat(tracer)
    request = next(r for r in captured.runs if r["name"] == "request")
    inner, own, outside = (r for r in captured.runs if r["name"] == "a")
    assert (inner["parent_run_id"], inner["session_id"], inner["user_id"], inner["version"]) == (
        request["run_id"], "sess-1", "u-7", "1.4")
    assert (own["session_id"], own["user_id"]) == ("conv", "u-7")
    assert (outside["parent_run_id"], outside["session_id"], outside["user_id"], outside["version"]) == (
        None, None, None, None)


def test_concurrent_traces_from_threads_never_mix(captured: CapturedRuns, otel: Any) -> None:
    provider, _ = otel
    tracer = provider.get_tracer("t")
    gate = threading.Barrier(20)

    def agent(i: int) -> None:
        with tracer.start_as_current_span(f"invoke_agent a{i}", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": f"a{i}"}):
            gate.wait()
            with tracer.start_as_current_span("execute_tool", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": f"t{i}"}):
                gate.wait()
                _chat(tracer, **{"gen_ai.usage.input_tokens": i + 1, "gen_ai.usage.output_tokens": 1})

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = captured.runs
    assert len(runs) == 20
    for run in runs:
        i = int(run["agent"][1:])
        (step,) = run["steps"]
        (call,) = run["calls"]
        assert step["name"] == f"t{i}" and call["step_id"] == step["step_id"] and call["input_tokens"] == i + 1


def test_a_trace_whose_root_never_ends_is_exported_at_its_deadline(captured: CapturedRuns) -> None:
    import time

    provider = TracerProvider()
    processor = AgentmeterSpanProcessor(trace_timeout=30)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    root = tracer.start_span("invoke_agent stuck", attributes={"gen_ai.operation.name": "invoke_agent",
                                                               "gen_ai.agent.name": "stuck"})
    from opentelemetry import trace as otel_trace

    with otel_trace.use_span(root, end_on_exit=False):
        _chat(tracer, **{"gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3})
    assert captured.runs == [] and processor.open_traces == 1
    assert processor._forest.sweep(now=time.monotonic() + 29) == 0
    assert processor._forest.sweep(now=time.monotonic() + 31) == 1
    (run,) = captured.runs
    assert (run["status"], run["error_type"], run["input_tokens"]) == ("cancelled", "Unfinished", 7)
    assert "30 s" in run["error_message"]
    root.end()  # too late: counted, not a second run
    assert len(captured.runs) == 1
    assert agentmeter.stats().warnings == 1 and _guard.counters["warnings.opentelemetry.late_span"] == 1
    provider.shutdown()


def test_decorated_step_and_instrumented_client_inside_pydantic_ai_join_its_run(
        stub: StubServer, captured: CapturedRuns, otel: Any) -> None:
    need("pydantic_ai")
    from pydantic_ai import Agent, InstrumentationSettings
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    import agentmeter.integrations.openai as am_openai

    am_openai.instrument()  # every request is also recorded by agentmeter's own OpenAI integration
    provider, _ = otel
    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=stub.openai_base_url, api_key="stub"))
    agent = Agent(model, name="weather")
    agent.instrument = InstrumentationSettings(tracer_provider=provider)

    @agentmeter.track_step(kind="retrieval")
    def lookup(city: str) -> str:
        return f"sunny in {city}"

    @agent.tool_plain
    def get_weather(city: str) -> str:
        return lookup(city)

    asyncio.run(agent.run("weather in Oslo?"))
    (run,) = captured.runs  # one tree, not two
    steps = {s["name"].rpartition(".")[2]: s for s in run["steps"]}
    assert steps["lookup"]["parent_step_id"] == steps["get_weather"]["step_id"]
    assert steps["lookup"]["kind"] == "retrieval" and steps["lookup"]["run_id"] == run["run_id"]
    assert steps["lookup"]["started_at"] >= steps["get_weather"]["started_at"]
    assert steps["lookup"]["ended_at"] <= steps["get_weather"]["ended_at"]
    # each request counted once: the client's exact call, under the framework's chat span (now an llm step)
    assert run["call_count"] == 2 and {c["operation"] for c in run["calls"]} == {"chat.completions"}
    llm_steps = {s["step_id"] for s in run["steps"] if s["kind"] == "llm"}
    assert len(llm_steps) == 2 and {c["step_id"] for c in run["calls"]} == llm_steps
    assert run["total_tokens"] == served_tokens(stub)


def test_a_forked_child_records_its_own_traces_even_if_a_thread_held_the_assembler_at_fork(
        tmp_path: Any, otel: Any) -> None:
    import os
    import sqlite3
    import time

    from agentmeter.sinks import SQLiteSink

    provider, processor = otel
    tracer = provider.get_tracer("t")
    parent_root = tracer.start_span("invoke_agent parent", attributes={"gen_ai.operation.name": "invoke_agent",
                                                                       "gen_ai.agent.name": "parent-open"})
    assert processor.open_traces == 1
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with processor._forest._lock:  # a thread of the parent is inside the assembler when it forks
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    db = tmp_path / "child.db"
    pid = os.fork()
    if pid == 0:  # the child: records a trace of its own, and never the parent's open one
        code = 1
        try:
            agentmeter.configure(sinks=[SQLiteSink(db)], spool_dir=str(tmp_path / "spool"))
            with tracer.start_as_current_span("invoke_agent child", attributes={
                    "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "child"}):
                _chat(tracer, **{"gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 1})
            result = agentmeter.flush(timeout=20)
            code = 0 if result.sinks["sqlite"].delivered == 1 and processor.open_traces == 0 else 2
        finally:
            os._exit(code)
    release.set()
    holder.join()
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        threading.Event().wait(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        status = None  # hung
    assert status is not None and os.waitstatus_to_exitcode(status) == 0  # not hung on the parent's lock
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT agent FROM agent_runs")] == ["child"]
    assert processor.open_traces == 1  # the parent's trace is still the parent's
    parent_root.end()
