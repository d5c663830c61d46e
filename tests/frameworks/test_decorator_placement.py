"""Where the decorator goes in agent frameworks: the right order records the tool's calls, the wrong order
fails loudly where it can (docs/frameworks.md says, per framework, where it goes)."""

from __future__ import annotations

import pytest

from agentmeter import track_run, track_step
from agentmeter.testing import capture_runs

from .conftest import need

lc_tools = need("langchain_core.tools")  # test dependencies (the test extra): a missing one fails
pydantic_ai = need("pydantic_ai")


def test_langchain_tool_above_track_step_records_each_invocation_with_the_real_schema() -> None:
    @lc_tools.tool
    @track_step(kind="tool")
    def search(query: str, limit: int = 3) -> str:
        """Search the web."""
        return f"{query}:{limit}"

    # LangChain built the tool from the wrapper: its signature and docstring are the function's
    assert search.name == "search" and search.description == "Search the web."
    assert set(search.args) == {"query", "limit"}
    with capture_runs() as cap, track_run("agent"):
        assert search.invoke({"query": "acme"}) == "acme:3"
    (step,) = cap.runs[0]["steps"]
    assert step["name"].endswith(".search") and (step["kind"], step["status"]) == ("tool", "success")


def test_track_step_above_a_langchain_tool_raises_saying_where_the_decorator_goes() -> None:
    @lc_tools.tool
    def search(query: str) -> str:
        """Search the web."""
        return query

    with pytest.raises(TypeError, match=r"(?s)StructuredTool.*below the framework's decorator:\s+@tool\s+@track_step"):
        track_step(kind="tool")(search)
    with pytest.raises(TypeError, match="StructuredTool"):
        track_run(search)


def test_pydantic_ai_tool_plain_above_track_step_records_the_tool_calls_of_a_run() -> None:
    from pydantic_ai.models.test import TestModel

    agent = pydantic_ai.Agent(TestModel())

    @agent.tool_plain
    @track_step(kind="tool")
    def lookup(company: str) -> str:
        """Look a company up."""
        return company.upper()

    with capture_runs() as cap, track_run("research"):
        result = agent.run_sync("acme?")
    assert "lookup" in result.output
    (step,) = cap.runs[0]["steps"]
    assert (step["name"], step["kind"], step["status"]) == (
        "test_pydantic_ai_tool_plain_above_track_step_records_the_tool_calls_of_a_run.lookup", "tool", "success")


def test_pydantic_ai_tool_objects_are_refused_with_the_place_of_the_decorator() -> None:
    def lookup(company: str) -> str:
        return company

    with pytest.raises(TypeError, match=r"(?s)pydantic_ai's tool object.*@agent.tool_plain\s+@track_step"):
        track_step(pydantic_ai.Tool(lookup))
