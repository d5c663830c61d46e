"""OpenTelemetry in: GenAI spans (pydantic-ai's own, and hand-made ones in every naming style) -> runs."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import agentmeter
from agentmeter.stubs import StubServer
from agentmeter.testing import CapturedRuns

from .conftest import need

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


def _stub_usage_by_prompt(stub: StubServer, marker: str) -> Counter[tuple[int, int, int]]:
    """Per run (the prompt's city), the number of model requests and the tokens the stub served."""
    totals: dict[str, list[int]] = {}
    for req in stub.requests:
        text = json.dumps(req.body)
        city = next(w for w in text.replace('"', " ").replace("?", " ").split() if w.startswith(marker))
        t = totals.setdefault(city, [0, 0, 0])
        assert req.usage is not None
        t[0] += 1
        t[1] += req.usage["prompt_tokens"]
        t[2] += req.usage["completion_tokens"]
    return Counter(tuple(v) for v in totals.values())  # type: ignore[misc]


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
    assert len({r["metadata"]["session_id"] for r in runs}) == 20
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
    assert ours == _stub_usage_by_prompt(stub, "city")
    served = sum(q.usage["prompt_tokens"] + q.usage["completion_tokens"] for q in stub.requests if q.usage)
    assert sum(r["total_tokens"] for r in runs) == served
