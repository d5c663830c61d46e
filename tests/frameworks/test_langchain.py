"""LangGraph + langchain-openai with the callback handler, against the loopback stub (plain and streamed)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import agentmeter
from agentmeter.stubs import StubServer
from agentmeter.testing import CapturedRuns

from .conftest import need, served_by_run, served_tokens

need("langgraph")
need("langchain_openai")
from langchain_core.tools import tool  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from langgraph.graph import START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import ToolNode, tools_condition  # noqa: E402

import agentmeter.integrations.langchain as am_langchain  # noqa: E402


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def _graph(stub: StubServer, streaming: bool, tools: list[Any] | None = None) -> Any:
    """A ReAct graph as users write it: a model node, a tool node, and the edge that loops between them."""
    tools = tools or [get_weather]
    model = ChatOpenAI(model="gpt-4o-mini", base_url=stub.openai_base_url, api_key="stub",  # type: ignore[arg-type]
                       streaming=streaming, stream_usage=True).bind_tools(tools)

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile()


@pytest.fixture
def handler() -> am_langchain.CallbackHandler:
    return am_langchain.CallbackHandler()


def test_20_concurrent_graph_runs_plain_and_streamed(stub: StubServer, captured: CapturedRuns,
                                                     handler: Any) -> None:
    plain, streamed = _graph(stub, False), _graph(stub, True)

    async def one(i: int) -> None:
        config: Any = {"callbacks": [handler], "configurable": {"thread_id": f"t{i}"}}
        state = {"messages": [("user", f"weather in city{i}?")]}
        if i % 2:
            async for _ in streamed.astream(state, config=config):
                pass
        else:
            await plain.ainvoke(state, config=config)

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(20)))

    asyncio.run(main())
    runs = captured.runs
    assert len(runs) == 20 and {r["status"] for r in runs} == {"success"}
    assert {r["name"] for r in runs} == {"LangGraph"}
    assert sorted(r["session_id"] for r in runs) == sorted(f"t{i}" for i in range(20))
    for run in runs:
        names = Counter(s["name"] for s in run["steps"])
        assert names == {"agent": 2, "tools": 1, "get_weather": 1}, names
        by_id = {s["step_id"]: s for s in run["steps"]}
        (tool_step,) = [s for s in run["steps"] if s["kind"] == "tool"]
        assert by_id[tool_step["parent_step_id"]]["name"] == "tools"
        assert run["call_count"] == 2
        for call in run["calls"]:
            assert by_id[call["step_id"]]["name"] == "agent"
            assert (call["provider"], call["operation"], call["model"]) == ("openai", "chat", "gpt-4o-mini")
            assert call["priced"] and call["input_tokens"] > 0
    first_token = [c for r in runs for c in r["calls"] if c["time_to_first_token_ms"] is not None]
    assert len(first_token) == 20  # the streamed half: 10 runs x 2 requests
    ours = Counter((r["call_count"], r["input_tokens"], r["output_tokens"]) for r in runs)
    assert ours == served_by_run(stub, "city")
    assert sum(r["total_tokens"] for r in runs) == served_tokens(stub)


def test_enable_globally_decorated_steps_nest_and_errors_are_recorded(stub: StubServer,
                                                                      captured: CapturedRuns) -> None:
    @agentmeter.track_step(kind="retrieval")
    def lookup(city: str) -> str:
        if city == "nowhere":
            raise LookupError("no such city")
        return f"cloudy in {city}"

    @tool
    def get_forecast(city: str) -> str:
        """The forecast for a city."""
        return lookup(city)

    import openai

    handler = am_langchain.enable()
    assert am_langchain.enable() is handler and am_langchain.enabled()
    graph = _graph(stub, False, [get_forecast])  # one event loop below: the model's HTTP client is bound to it

    @agentmeter.track_run
    async def desk() -> Any:
        return await graph.ainvoke({"messages": [("user", "forecast for Riga?")]})

    async def main() -> None:
        await desk()
        stub.script("chat/completions", [400])
        with pytest.raises(openai.BadRequestError):  # the model's error reaches the caller unchanged
            await graph.ainvoke({"messages": [("user", "forecast for Oslo?")]})
        am_langchain.disable()
        await graph.ainvoke({"messages": [("user", "forecast for Kyiv?")]})  # not recorded

    try:
        asyncio.run(main())
    finally:
        am_langchain.disable()
    assert not am_langchain.enabled()
    outer = next(r for r in captured.runs if r["name"].endswith("desk"))
    ok = next(r for r in captured.runs if r["parent_run_id"] == outer["run_id"])
    failed = next(r for r in captured.runs if r["status"] == "error")
    # with the handler disabled, the decorated step is an implicit run of its own, as outside any framework
    (alone,) = [r for r in captured.runs if r["implicit"]]
    assert alone["name"].endswith("lookup") and len(captured.runs) == 4
    steps = {s["step_id"]: s for s in ok["steps"]}
    (looked,) = [s for s in ok["steps"] if s["name"].endswith("lookup")]
    assert steps[looked["parent_step_id"]]["name"] == "get_forecast"
    assert steps[steps[looked["parent_step_id"]]["parent_step_id"]]["name"] == "tools"
    assert failed["error_type"] == "OpenAIInvalidRequestError" and failed["error_call_count"] == 1
    (call,) = failed["calls"]
    assert (call["status"], call["error_type"]) == ("error", "OpenAIInvalidRequestError")


def test_a_failing_tool_is_an_error_step(stub: StubServer, captured: CapturedRuns, handler: Any) -> None:
    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        raise RuntimeError("weather service down")

    graph = _graph(stub, False, [get_weather])
    with pytest.raises(RuntimeError, match="weather service down"):  # unchanged, through the graph
        asyncio.run(graph.ainvoke({"messages": [("user", "weather in Bern?")]}, config={"callbacks": [handler]}))
    (run,) = captured.runs
    (tool_step,) = [s for s in run["steps"] if s["kind"] == "tool"]
    assert (tool_step["status"], tool_step["error_type"]) == ("error", "RuntimeError")
    assert tool_step["error_message"] == "weather service down"
    node = next(s for s in run["steps"] if s["step_id"] == tool_step["parent_step_id"])
    assert (node["name"], node["status"]) == ("tools", "error")
    assert (run["status"], run["error_type"], run["call_count"]) == ("error", "RuntimeError", 1)


def test_an_invocation_that_never_ends_is_exported_at_its_deadline_and_forgotten(captured: CapturedRuns) -> None:
    import time
    import uuid

    handler = am_langchain.CallbackHandler(trace_timeout=30)
    root, node = uuid.uuid4(), uuid.uuid4()
    handler.on_chain_start({"name": "LangGraph"}, {}, run_id=root, metadata={"thread_id": "t-stuck"})
    handler.on_chain_start({}, {}, run_id=node, parent_run_id=root, name="agent",
                           metadata={"langgraph_node": "agent"})
    assert handler.forest.sweep(now=time.monotonic() + 29) == 0 and captured.runs == []
    assert handler.forest.sweep(now=time.monotonic() + 31) == 1
    (run,) = captured.runs
    assert (run["status"], run["error_type"], run["session_id"]) == ("cancelled", "Unfinished", "t-stuck")
    assert [(s["name"], s["status"], s["error_type"]) for s in run["steps"]] == [("agent", "cancelled", "Unfinished")]
    assert handler._open == {}  # nothing kept for the exported invocation
    handler.on_chain_end({}, run_id=node)  # a late end changes nothing
    assert len(captured.runs) == 1
