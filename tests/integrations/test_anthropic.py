"""The real ``anthropic`` client, instrumented, against the loopback stub server: messages (sync, async,
``stream=True``, ``messages.stream()``, raw and streaming responses), tool use, prompt caching, retries;
tokens exactly as the stub reported them, and cost from Anthropic's published prices."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import pytest

import agentmeter
import agentmeter.integrations.anthropic as am_anthropic
from agentmeter.stubs import OK, StubRequest, StubServer, rate_limited, server_error
from agentmeter.testing import CapturedRuns

MESSAGES = [{"role": "user", "content": "Summarize what Acme Corp does."}]
SONNET, HAIKU = "claude-sonnet-4-5", "claude-haiku-4-5"
TOOLS = [{"name": "web_search", "description": "Search the web",
          "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}]
#: a system prompt long enough to be cached (Anthropic caches prefixes of 1,024 tokens or more)
LONG_SYSTEM = "You are Acme's research analyst. Cite sources and keep a neutral tone. " * 80
CHUNK_MS = 10

# Anthropic's published prices, US dollars per million tokens: (input, output, cache read, cache write
# 5 minutes, cache write 1 hour). https://www.anthropic.com/pricing#api (cache writes: 1.25x and 2x input,
# cache reads 0.1x input), as genai-prices ships them.
PUBLISHED = {SONNET: (3.00, 15.00, 0.30, 3.75, 6.00), HAIKU: (1.00, 5.00, 0.10, 1.25, 2.00)}


def by_hand(model: str, usage: dict[str, Any]) -> float:
    """The cost of one call from Anthropic's own usage fields and the published prices."""
    per_in, per_out, per_read, per_write, per_write_1h = PUBLISHED[model]
    hour = (usage.get("cache_creation") or {}).get("ephemeral_1h_input_tokens", 0)
    written = usage["cache_creation_input_tokens"]
    return (usage["input_tokens"] * per_in + usage["output_tokens"] * per_out
            + usage["cache_read_input_tokens"] * per_read + (written - hour) * per_write
            + hour * per_write_1h) / 1e6


def client(stub: StubServer, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stub.anthropic_base_url, api_key="sk-ant-stub", **kwargs)


def aclient(stub: StubServer, **kwargs: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=stub.anthropic_base_url, api_key="sk-ant-stub", **kwargs)


def assert_usage_matches(call: dict[str, Any], usage: dict[str, Any]) -> None:
    """Anthropic counts input in three parts; agentmeter's input_tokens is their sum."""
    read, written = usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]
    assert call["input_tokens"] == usage["input_tokens"] + read + written
    assert call["cached_input_tokens"] == read
    assert call["cache_write_tokens"] == written
    assert call["output_tokens"] == usage["output_tokens"]
    assert call["total_tokens"] == call["input_tokens"] + usage["output_tokens"]


def assert_priced(call: dict[str, Any], req: StubRequest) -> None:
    assert req.usage is not None
    assert call["priced"] is True and call["price_source"] == "genai-prices"
    assert call["cost_usd"] == pytest.approx(by_hand(req.model or "", req.usage), rel=1e-9)


@pytest.fixture
def paced() -> Any:
    with StubServer(seed=5, chunk_ms=CHUNK_MS, chunks=(6, 6)) as server:
        yield server


def test_message_is_recorded_exactly_under_its_step(stub: StubServer, captured: CapturedRuns) -> None:
    am_anthropic.instrument()
    c = client(stub)
    with agentmeter.track_run("research"), agentmeter.track_step("summarize", kind="llm"):
        message = c.messages.create(model=SONNET, max_tokens=300, messages=MESSAGES)

    (run,) = captured.runs
    (step,) = run["steps"]
    (call,) = run["calls"]
    (req,) = stub.requests
    assert req.usage is not None and message.usage.output_tokens == req.usage["output_tokens"]
    assert (call["provider"], call["operation"], call["model"]) == ("anthropic", "messages", SONNET)
    assert (call["status"], call["http_status"], call["retries"]) == ("success", 200, 0)
    assert call["step_id"] == step["step_id"]
    assert_usage_matches(call, req.usage)
    assert call["metadata"]["stop_reason"] == "end_turn"
    assert call["time_to_first_token_ms"] is None
    assert call["request_bytes"] and call["response_bytes"]
    assert_priced(call, req)
    assert step["cache_write_tokens"] == run["cache_write_tokens"] == 0


def test_prompt_caching_writes_then_reads_and_is_priced_at_each_rate(
        stub: StubServer, captured: CapturedRuns) -> None:
    am_anthropic.instrument()
    c = client(stub)
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    hour = [{"type": "text", "text": LONG_SYSTEM + " (1h)", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    with agentmeter.track_run("cached"):
        for blocks in (system, system, hour):
            c.messages.create(model=SONNET, max_tokens=200, system=blocks, messages=MESSAGES)

    write, read, write_1h = captured.calls
    reqs = stub.requests
    for call, req in zip((write, read, write_1h), reqs, strict=True):
        assert req.usage is not None
        assert_usage_matches(call, req.usage)
        assert_priced(call, req)
    assert write["cache_write_tokens"] > 1024 and write["cached_input_tokens"] == 0
    assert read["cached_input_tokens"] == write["cache_write_tokens"] and read["cache_write_tokens"] == 0
    assert write_1h["metadata"]["cache_write_1h_tokens"] == write_1h["cache_write_tokens"] > 1024
    # the same prompt costs less read from the cache than written to it
    assert read["cost_usd"] < write["cost_usd"] < write_1h["cost_usd"]
    (run,) = captured.runs
    assert run["cache_write_tokens"] == write["cache_write_tokens"] + write_1h["cache_write_tokens"]
    assert run["cached_input_tokens"] == read["cached_input_tokens"]


@pytest.mark.parametrize("path", ["stream=True", "messages.stream()", "with_streaming_response",
                                  "with_raw_response stream"])
def test_streams_record_the_whole_call(path: str, paced: StubServer, captured: CapturedRuns) -> None:
    am_anthropic.instrument()
    c = client(paced)
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    kwargs: dict[str, Any] = {"model": HAIKU, "max_tokens": 200, "system": system, "messages": MESSAGES}
    with agentmeter.track_run("r"):
        if path == "stream=True":
            events = [e.type for e in c.messages.create(**kwargs, stream=True)]
            assert events[-1] == "message_stop"
        elif path == "messages.stream()":
            with c.messages.stream(**kwargs) as stream:
                text = "".join(stream.text_stream)
                final = stream.get_final_message()
            assert text and final.usage.output_tokens > 0
        elif path == "with_streaming_response":
            with c.messages.with_streaming_response.create(**kwargs, stream=True) as response:
                lines = list(response.iter_lines())
            assert any("message_stop" in line for line in lines)
        else:
            raw = c.messages.with_raw_response.create(**kwargs, stream=True)
            assert [e.type for e in raw.parse()][-1] == "message_stop"

    (call,) = captured.calls
    (req,) = paced.requests
    assert req.streamed and req.usage is not None and req.answer_ms and req.first_content_ms
    assert call["status"] == "success" and call["metadata"]["stream"] is True
    assert_usage_matches(call, req.usage)
    assert call["cache_write_tokens"] > 1024  # from message_start
    assert_priced(call, req)
    assert call["duration_ms"] >= req.answer_ms >= 6 * CHUNK_MS
    assert req.first_content_ms <= call["time_to_first_token_ms"] <= call["duration_ms"]
    assert call["metadata"]["stop_reason"] == "end_turn"


def test_async_create_stream_and_helper(paced: StubServer, captured: CapturedRuns) -> None:
    am_anthropic.instrument()

    async def agent() -> None:
        c = aclient(paced)
        async with agentmeter.track_run("async-agent"):
            async with agentmeter.track_step("a", kind="llm"):
                await c.messages.create(model=SONNET, max_tokens=100, messages=MESSAGES)
            async with agentmeter.track_step("b", kind="llm"):
                async for _ in await c.messages.create(model=SONNET, max_tokens=100, messages=MESSAGES,
                                                       stream=True):
                    pass
            async with c.messages.stream(model=HAIKU, max_tokens=100, messages=MESSAGES) as stream:
                async for _ in stream.text_stream:
                    pass
        await c.close()

    asyncio.run(agent())
    (run,) = captured.runs
    steps = {s["name"]: s["step_id"] for s in run["steps"]}
    plain, streamed, helper = sorted(run["calls"], key=lambda c: c["started_at"])
    assert plain["step_id"] == steps["a"] and streamed["step_id"] == steps["b"] and helper["step_id"] is None
    for call, req in zip((plain, streamed, helper), paced.requests, strict=True):
        assert req.usage is not None and req.answer_ms is not None
        assert_usage_matches(call, req.usage)
        assert_priced(call, req)
        assert call["duration_ms"] >= req.answer_ms
    assert plain["time_to_first_token_ms"] is None
    assert streamed["time_to_first_token_ms"] is not None and helper["time_to_first_token_ms"] is not None


def test_tool_use_plain_and_streamed(paced: StubServer, captured: CapturedRuns) -> None:
    am_anthropic.instrument()
    c = client(paced)
    with agentmeter.track_run("tools"):
        message = c.messages.create(model=SONNET, max_tokens=300, tools=TOOLS, messages=MESSAGES)
        assert [b.type for b in message.content] == ["text", "tool_use"]
        with c.messages.stream(model=SONNET, max_tokens=300, tools=TOOLS, messages=MESSAGES) as stream:
            final = stream.get_final_message()
        assert final.stop_reason == "tool_use"

    plain, streamed = captured.calls
    for call, req in zip((plain, streamed), paced.requests, strict=True):
        assert req.usage is not None
        assert_usage_matches(call, req.usage)
        assert call["metadata"]["stop_reason"] == "tool_use"
        assert call["metadata"]["tool_uses"] == 1
        assert_priced(call, req)
    assert streamed["time_to_first_token_ms"] is not None


def test_count_tokens_is_not_recorded(stub: StubServer, captured: CapturedRuns) -> None:
    am_anthropic.instrument()
    c = client(stub)
    with agentmeter.track_run("r"):
        counted = c.messages.count_tokens(model=SONNET, messages=MESSAGES)
        c.messages.create(model=SONNET, max_tokens=50, messages=MESSAGES)
    assert counted.input_tokens > 0
    assert [r.endpoint for r in stub.requests] == ["messages/count_tokens", "messages"]
    assert [call["operation"] for call in captured.calls] == ["messages"]


def test_overloaded_then_success_counts_one_retry(stub: StubServer, captured: CapturedRuns) -> None:
    am_anthropic.instrument()
    c = client(stub)
    stub.script("messages", [server_error(529), OK])
    with agentmeter.track_run("r"):
        c.messages.create(model=SONNET, max_tokens=50, messages=MESSAGES)
    (call,) = captured.calls
    assert [r.status for r in stub.requests] == [529, 200]
    assert (call["status"], call["http_status"], call["retries"]) == ("success", 200, 1)
    usage = stub.requests[-1].usage
    assert usage is not None
    assert_usage_matches(call, usage)


def test_a_rejected_request_is_recorded_and_not_billed(stub: StubServer, captured: CapturedRuns) -> None:
    am_anthropic.instrument()
    c = client(stub, max_retries=0)
    stub.script("messages", [rate_limited()])
    with pytest.raises(anthropic.RateLimitError), agentmeter.track_run("r"):
        c.messages.create(model=SONNET, max_tokens=50, messages=MESSAGES)
    (call,) = captured.calls
    assert (call["status"], call["http_status"], call["error_type"]) == ("error", 429, "RateLimitError")
    assert call["input_tokens"] is None
    assert (call["cost_usd"], call["price_source"]) == (0.0, "not_billed")


def test_a_stream_closed_early_keeps_its_input_tokens_and_is_unpriced(
        paced: StubServer, captured: CapturedRuns) -> None:
    am_anthropic.instrument()
    c = client(paced)
    with agentmeter.track_run("r"):
        stream = c.messages.create(model=SONNET, max_tokens=200, messages=MESSAGES, stream=True)
        for event in stream:
            if event.type == "content_block_delta":
                break
        stream.close()
    (call,) = captured.calls
    (req,) = paced.requests
    assert req.usage is not None
    assert call["metadata"]["stream_closed_early"] is True
    assert call["input_tokens"] == req.usage["input_tokens"]  # from message_start: billed already
    assert call["output_tokens"] is None  # message_delta never read: unknown, not 1
    assert call["priced"] is False and call["cost_usd"] is None  # an input-only cost would understate


def test_instrument_one_client_then_uninstrument(stub: StubServer, captured: CapturedRuns) -> None:
    mine, other = client(stub), client(stub)
    am_anthropic.instrument(mine)
    am_anthropic.instrument(mine)
    assert am_anthropic.instrumented(mine) and not am_anthropic.instrumented(other)
    with agentmeter.track_run("r"):
        mine.messages.create(model=HAIKU, max_tokens=20, messages=MESSAGES)
        other.messages.create(model=HAIKU, max_tokens=20, messages=MESSAGES)
        mine.with_options(timeout=5).messages.create(model=HAIKU, max_tokens=20, messages=MESSAGES)
    assert len(captured.calls) == 2
    am_anthropic.uninstrument(mine)
    with agentmeter.track_run("r2"):
        mine.messages.create(model=HAIKU, max_tokens=20, messages=MESSAGES)
    assert len(captured.calls) == 2
    with pytest.raises(TypeError):
        am_anthropic.instrument(object())


@pytest.mark.parametrize(("url", "operation"), [
    ("/v1/messages", "messages"),
    ("/v1/messages?beta=true", "messages"),
    ("/v1/messages/count_tokens", "messages.count_tokens"),
    ("/v1/messages/batches", "messages.batches"),
    ("/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF", "messages.batches"),
    ("/v1/models", "models"),
])
def test_operation_names(url: str, operation: str) -> None:
    assert am_anthropic.operation_of(url) == operation
