"""The OpenAI Agents SDK, instrumented with one line, against the loopback stub (Responses and Chat
Completions models, plain and streamed)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import agentmeter
from agentmeter.stubs import StubServer
from agentmeter.testing import CapturedRuns

from .conftest import need, served_by_run, served_tokens

agents = need("agents")
from agents import (  # noqa: E402
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_trace_processors,
    trace,
)
from openai import AsyncOpenAI  # noqa: E402

import agentmeter.integrations.openai_agents as am_agents  # noqa: E402


@pytest.fixture
def instrumented() -> Iterator[am_agents.AgentmeterTracingProcessor]:
    set_trace_processors([])  # never the SDK's default exporter (it would post traces to OpenAI)
    processor = am_agents.instrument()
    yield processor
    am_agents.uninstrument()
    set_trace_processors([])
    am_agents._processor = None


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def _agent(stub: StubServer, chat: bool, name: str = "forecaster", **kwargs: Any) -> Agent[Any]:
    client = AsyncOpenAI(base_url=stub.openai_base_url, api_key="stub")
    model: Any = (OpenAIChatCompletionsModel("gpt-4o-mini", openai_client=client) if chat
                  else OpenAIResponsesModel("gpt-4o-mini", openai_client=client))
    return Agent(name=name, instructions="Answer briefly.", model=model, tools=[get_weather],
                 model_settings=ModelSettings(include_usage=True), **kwargs)


def test_20_concurrent_runs_responses_and_chat_plain_and_streamed(stub: StubServer, captured: CapturedRuns,
                                                                  instrumented: Any) -> None:
    async def one(i: int) -> None:
        agent = _agent(stub, chat=i >= 10)
        if i % 2:
            result = Runner.run_streamed(agent, f"weather in city{i}?")
            async for _ in result.stream_events():
                pass
        else:
            await Runner.run(agent, f"weather in city{i}?")

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(20)))

    asyncio.run(main())
    runs = captured.runs
    assert len(runs) == 20 and {r["status"] for r in runs} == {"success"}
    assert {r["name"] for r in runs} == {"Agent workflow"} and {r["agent"] for r in runs} == {"forecaster"}
    for run in runs:
        assert run["metadata"]["agents"] == ["forecaster"] and run["metadata"]["source"] == "openai-agents"
        agent_step = next(s for s in run["steps"] if s["kind"] == "agent")
        tool = next(s for s in run["steps"] if s["kind"] == "tool")
        assert run["step_count"] == 2 and tool["name"] == "get_weather"
        assert tool["parent_step_id"] == agent_step["step_id"]
        assert run["call_count"] == 2
        for call in run["calls"]:
            assert call["step_id"] == agent_step["step_id"] and call["model"] == "gpt-4o-mini"
            assert call["input_tokens"] > 0 and call["priced"]
    operations = Counter(c["operation"] for r in runs for c in r["calls"])
    assert operations == {"responses": 20, "chat.completions": 20}
    assert {q.streamed for q in stub.requests} == {True, False}
    ours = Counter((r["call_count"], r["input_tokens"], r["output_tokens"]) for r in runs)
    assert ours == served_by_run(stub, "city")
    assert sum(r["total_tokens"] for r in runs) == served_tokens(stub)


def test_one_trace_block_is_one_run_with_handoffs_session_and_nested_decorated_steps(
        stub: StubServer, captured: CapturedRuns, instrumented: Any) -> None:
    @agentmeter.track_step(kind="retrieval")
    def lookup(city: str) -> str:
        return f"rain in {city}"

    @function_tool
    def get_forecast(city: str) -> str:
        """The forecast for a city."""
        return lookup(city)

    client = AsyncOpenAI(base_url=stub.openai_base_url, api_key="stub")
    specialist = Agent(name="specialist", model=OpenAIResponsesModel("gpt-4o-mini", openai_client=client),
                       tools=[get_forecast])
    triage = Agent(name="triage", model=OpenAIResponsesModel("gpt-4o-mini", openai_client=client),
                   handoffs=[specialist])

    async def main() -> None:
        with trace("weather desk", group_id="conv-42"):
            await Runner.run(triage, "forecast for Lima?")
            await Runner.run(specialist, "forecast for Quito?")

    asyncio.run(main())
    (run,) = captured.runs
    assert (run["name"], run["agent"], run["session_id"]) == ("weather desk", "triage", "conv-42")
    assert "session_id" not in run["metadata"]  # a first-class field now, not metadata
    assert run["metadata"]["agents"][0] == "triage" and "specialist" in run["metadata"]["agents"]
    assert run["metadata"]["handoffs"] == [{"from": "triage", "to": "specialist"}]
    steps = {s["step_id"]: s for s in run["steps"]}
    # the stub calls the first tool offered: triage hands off (the specialist then sees a tool result and
    # answers), the second Runner.run calls get_forecast, whose decorated helper nests under it
    (looked,) = [s for s in run["steps"] if s["name"].endswith("lookup")]
    parent = steps[looked["parent_step_id"]]
    assert parent["name"] == "get_forecast" and looked["run_id"] == run["run_id"] and looked["kind"] == "retrieval"
    assert steps[parent["parent_step_id"]]["name"] == "specialist"
    assert run["call_count"] == len(stub.requests) and run["total_tokens"] == served_tokens(stub)


def test_a_failing_tool_is_an_error_step_and_a_user_run_is_the_parent(stub: StubServer, captured: CapturedRuns,
                                                                      instrumented: Any) -> None:
    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        raise RuntimeError("weather service down")

    client = AsyncOpenAI(base_url=stub.openai_base_url, api_key="stub")
    agent = Agent(name="forecaster", model=OpenAIResponsesModel("gpt-4o-mini", openai_client=client),
                  tools=[get_weather])

    @agentmeter.track_run
    async def desk() -> None:
        await Runner.run(agent, "weather in Bern?")

    asyncio.run(desk())
    outer = next(r for r in captured.runs if r["metadata"].get("source") is None)
    inner = next(r for r in captured.runs if r["metadata"].get("source") == "openai-agents")
    assert inner["parent_run_id"] == outer["run_id"]
    (tool,) = [s for s in inner["steps"] if s["kind"] == "tool"]
    assert (tool["status"], tool["error_type"]) == ("error", "AgentsSpanError")
    assert tool["error_message"].startswith("Error running tool")
    assert inner["error_step_count"] == 1 and inner["status"] == "success"  # the SDK recovered
