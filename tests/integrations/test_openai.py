"""The real ``openai`` client, instrumented, against the loopback stub server: every request must be
recorded exactly (model, tokens, status, HTTP status, retries, step), streams included."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from openai._base_client import AsyncAPIClient, SyncAPIClient

import agentmeter
import agentmeter.integrations.openai as am_openai
from agentmeter.stubs import OK, StubRequest, StubServer, cut_stream, rate_limited, server_error, timeout
from agentmeter.testing import CapturedRuns

MESSAGES = [{"role": "user", "content": "Summarize what Acme Corp does."}]
OPENAI_MAJOR = int(openai.__version__.split(".")[0])
if OPENAI_MAJOR >= 3:  # a connection dropped mid-stream, as the caller sees it
    CUT_ERROR: type[Exception] = openai.APIConnectionError
else:  # openai 2.x lets httpx's error through
    import httpx

    CUT_ERROR = httpx.RemoteProtocolError


def client(stub: StubServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=stub.openai_base_url, api_key="sk-stub", **kwargs)


def aclient(stub: StubServer, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stub.openai_base_url, api_key="sk-stub", **kwargs)


def answered(stub: StubServer) -> list[StubRequest]:
    return [r for r in stub.requests if r.status == 200]


def assert_usage_matches(call: dict[str, Any], usage: dict[str, Any]) -> None:
    """The call's tokens are exactly what the server reported (chat or responses form)."""
    if "prompt_tokens" in usage:
        assert call["input_tokens"] == usage["prompt_tokens"]
        assert call["output_tokens"] == usage["completion_tokens"]
        assert call["total_tokens"] == usage["total_tokens"]
        assert call["cached_input_tokens"] == usage["prompt_tokens_details"]["cached_tokens"]
        assert call["reasoning_tokens"] == usage["completion_tokens_details"]["reasoning_tokens"]
    else:
        assert call["input_tokens"] == usage["input_tokens"]
        assert call["output_tokens"] == usage["output_tokens"]
        assert call["total_tokens"] == usage["total_tokens"]
        assert call["cached_input_tokens"] == usage["input_tokens_details"]["cached_tokens"]
        assert call["reasoning_tokens"] == usage["output_tokens_details"]["reasoning_tokens"]


def test_chat_completion_is_recorded_exactly_under_its_step(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub)
    with agentmeter.track_run("research"), agentmeter.track_step("summarize", kind="llm"):
        result = c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    (run,) = captured.runs
    (step,) = run["steps"]
    (call,) = run["calls"]
    (req,) = stub.requests
    assert req.usage is not None
    assert call["provider"] == "openai"
    assert call["operation"] == "chat.completions"
    assert call["model"] == result.model == "gpt-4o-mini"
    assert call["status"] == "success"
    assert call["http_status"] == 200
    assert call["retries"] == 0
    assert call["step_id"] == step["step_id"]
    assert call["run_id"] == run["run_id"]
    assert_usage_matches(call, req.usage)
    assert call["metadata"]["finish_reason"] == "stop"
    assert call["time_to_first_token_ms"] is None
    assert call["request_bytes"] and call["response_bytes"]
    assert call["duration_ms"] > 0
    assert step["call_count"] == 1
    assert step["input_tokens"] == req.usage["prompt_tokens"]
    # priced by genai-prices in the exporter: gpt-4o-mini is $0.15 / $0.60 per million tokens
    expected = (req.usage["prompt_tokens"] * 0.15 + req.usage["completion_tokens"] * 0.60) / 1e6
    assert call["priced"] is True and call["price_source"] == "genai-prices"
    assert call["cost_usd"] == pytest.approx(expected, rel=1e-9)


def test_calls_nest_under_the_step_that_made_them(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub)
    with agentmeter.track_run("agent"):
        with agentmeter.track_step("plan", kind="plan"):
            c.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
            with agentmeter.track_step("inner", kind="llm"):
                c.responses.create(model="gpt-4.1", input="deeper")
        c.embeddings.create(model="text-embedding-3-small", input="outside any step")

    (run,) = captured.runs
    steps = {s["name"]: s["step_id"] for s in run["steps"]}
    by_op = {c["operation"]: c for c in run["calls"]}
    assert by_op["chat.completions"]["step_id"] == steps["plan"]
    assert by_op["responses"]["step_id"] == steps["inner"]
    assert by_op["embeddings"]["step_id"] is None
    assert run["call_count"] == 3


def test_stream_with_usage_chunk(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub)
    with agentmeter.track_run("r"):
        stream = c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                           stream_options={"include_usage": True})
        text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        # the call stays open while the stream is read, and ends with it
        assert agentmeter.current_call() is None

    (call,) = captured.calls
    (req,) = stub.requests
    assert text and req.streamed and req.usage is not None
    assert call["status"] == "success" and call["http_status"] == 200
    assert call["model"] == "gpt-4o"
    assert_usage_matches(call, req.usage)
    assert call["metadata"]["stream"] is True
    assert call["time_to_first_token_ms"] is not None
    assert 0 < call["time_to_first_token_ms"] <= call["duration_ms"]


def test_stream_without_usage_records_unknown_tokens(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub)
    with agentmeter.track_run("r"):
        for _ in c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
            pass

    (call,) = captured.calls
    (run,) = captured.runs
    assert call["status"] == "success"
    assert call["input_tokens"] is None and call["output_tokens"] is None and call["total_tokens"] is None
    assert call["time_to_first_token_ms"] is not None
    assert call["priced"] is False and call["cost_usd"] is None  # known model, unknown tokens: not $0
    assert run["unpriced_call_count"] == 1


def test_include_usage_opt_in_adds_stream_options(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument(include_usage=True)
    c = client(stub)
    with agentmeter.track_run("r"):
        chunks = list(c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))

    (req,) = stub.requests
    assert req.body["stream_options"] == {"include_usage": True}
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert req.usage is not None
    assert_usage_matches(captured.calls[0], req.usage)


def test_stream_closed_early_ends_the_call(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub)
    with agentmeter.track_run("r"):
        with c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                       stream_options={"include_usage": True}) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break
        unopened = c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        unopened.close()

    first, second = captured.calls
    assert first["status"] == second["status"] == "success"
    assert first["metadata"]["stream_closed_early"] is True
    assert second["metadata"]["stream_closed_early"] is True
    assert first["time_to_first_token_ms"] is not None
    assert first["input_tokens"] is None  # the usage chunk was never read


def test_stream_cut_mid_way_is_an_error(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub)
    stub.script("chat/completions", [cut_stream(3)])
    with pytest.raises(CUT_ERROR), agentmeter.track_run("r"):
        for _ in c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
            pass
    (call,) = captured.calls
    assert call["status"] == "error"
    assert call["error_type"] == CUT_ERROR.__name__  # the exception the caller saw
    assert call["http_status"] == 200


def test_responses_api_plain_and_streamed(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub)
    with agentmeter.track_run("r"):
        c.responses.create(model="o4-mini", input="Plan three searches about Acme.")
        with c.responses.stream(model="gpt-4.1", input="Write it up.") as stream:
            for _ in stream:
                pass
        raw = c.responses.create(model="gpt-4.1-mini", input="again", stream=True)
        for _ in raw:
            pass

    plain, helper, raw_stream = captured.calls
    reqs = stub.requests
    for call, req in zip((plain, helper, raw_stream), reqs, strict=True):
        assert call["operation"] == "responses"
        assert call["model"] == req.model
        assert req.usage is not None
        assert_usage_matches(call, req.usage)
        assert call["metadata"]["response_status"] == "completed"
    assert plain["reasoning_tokens"] and plain["reasoning_tokens"] > 0  # o4-mini reasons
    assert plain["time_to_first_token_ms"] is None
    assert helper["time_to_first_token_ms"] is not None and raw_stream["time_to_first_token_ms"] is not None


def test_embeddings(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub)
    with agentmeter.track_run("r"):
        result = c.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])

    (call,) = captured.calls
    (req,) = stub.requests
    assert req.usage is not None
    assert len(result.data) == 2 and len(result.data[0].embedding) == 1536
    assert call["operation"] == "embeddings"
    assert call["input_tokens"] == req.usage["prompt_tokens"]
    assert call["output_tokens"] == 0  # total_tokens == prompt_tokens: nothing generated
    assert call["metadata"]["embeddings"] == 2
    assert call["cost_usd"] == pytest.approx(req.usage["prompt_tokens"] * 0.02 / 1e6)


def test_429_then_success_counts_one_retry(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub)
    stub.script("chat/completions", [rate_limited(), OK])
    with agentmeter.track_run("r"):
        c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    (call,) = captured.calls
    assert [r.status for r in stub.requests] == [429, 200]
    assert [r.headers.get("x-stainless-retry-count") for r in stub.requests] == ["0", "1"]
    assert call["status"] == "success"
    assert call["http_status"] == 200
    assert call["retries"] == 1
    usage = answered(stub)[0].usage
    assert usage is not None
    assert_usage_matches(call, usage)


def test_500_until_retries_run_out(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub, max_retries=2)
    stub.script("chat/completions", [server_error(500)] * 3)
    with pytest.raises(openai.InternalServerError), agentmeter.track_run("r"):
        c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    (call,) = captured.calls
    (run,) = captured.runs
    assert len(stub.requests) == 3
    assert call["status"] == "error"
    assert call["error_type"] == "InternalServerError"
    assert call["http_status"] == 500
    assert call["retries"] == 2
    assert call["input_tokens"] is None
    assert call["cost_usd"] == 0.0 and call["price_source"] == "not_billed"
    assert run["error_call_count"] == 1 and run["status"] == "error"


def test_429_without_retries_is_recorded(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub, max_retries=0)
    stub.script("chat/completions", [429])
    with pytest.raises(openai.RateLimitError), agentmeter.track_run("r"):
        c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (call,) = captured.calls
    assert (call["status"], call["http_status"], call["retries"], call["error_type"]) == (
        "error", 429, 0, "RateLimitError")


def test_timeout_then_success_and_timeout_for_good(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub, timeout=0.3, max_retries=1)
    stub.script("chat/completions", [timeout(3), OK])
    with agentmeter.track_run("r"):
        c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stub.script("chat/completions", [timeout(3)])
        with pytest.raises(openai.APITimeoutError):
            c.with_options(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    recovered, failed = captured.calls
    assert (recovered["status"], recovered["http_status"], recovered["retries"]) == ("success", 200, 1)
    assert (failed["status"], failed["http_status"], failed["retries"]) == ("error", None, 0)
    assert failed["error_type"] == "APITimeoutError"
    assert failed["priced"] is False  # a timed-out request may still have been billed: unknown


def test_raw_response_usage_is_read_from_the_body(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub)
    with agentmeter.track_run("r"):
        raw = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
        assert raw.http_request is not None
    (call,) = captured.calls
    (req,) = stub.requests
    assert req.usage is not None
    assert_usage_matches(call, req.usage)


def test_async_client_plain_stream_and_retry(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()

    async def agent() -> None:
        c = aclient(stub)
        async with agentmeter.track_run("async-agent"):
            async with agentmeter.track_step("a", kind="llm"):
                await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            async with agentmeter.track_step("b", kind="llm"):
                stream = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                                         stream_options={"include_usage": True})
                async for _ in stream:
                    pass
            stub.script("responses", [rate_limited(), OK])
            await c.responses.create(model="gpt-4.1", input="x")
            early = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
            await early.close()

    asyncio.run(agent())
    (run,) = captured.runs
    steps = {s["name"]: s["step_id"] for s in run["steps"]}
    plain, streamed, retried, early = sorted(run["calls"], key=lambda c: c["started_at"])
    reqs = answered(stub)
    assert plain["step_id"] == steps["a"] and streamed["step_id"] == steps["b"] and retried["step_id"] is None
    for call, req in zip((plain, streamed, retried), reqs[:3], strict=True):
        assert req.usage is not None
        assert_usage_matches(call, req.usage)
    assert streamed["time_to_first_token_ms"] is not None
    assert retried["retries"] == 1 and retried["http_status"] == 200
    assert early["metadata"]["stream_closed_early"] is True and early["status"] == "success"


def test_instrumenting_twice_records_once(stub: StubServer, captured: CapturedRuns) -> None:
    c = client(stub)
    am_openai.instrument()
    am_openai.instrument()
    am_openai.instrument(c)
    am_openai.instrument(c)
    with agentmeter.track_run("r"):
        c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stub.script("chat/completions", [rate_limited(), OK])
        c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(captured.calls) == 2
    assert [c["retries"] for c in captured.calls] == [0, 1]


def test_instrument_one_client_only(stub: StubServer, captured: CapturedRuns) -> None:
    mine, other = client(stub), client(stub)
    am_openai.instrument(mine)
    assert am_openai.instrumented(mine) and not am_openai.instrumented(other)
    with agentmeter.track_run("r"):
        mine.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        other.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(captured.calls) == 1
    am_openai.uninstrument(mine)
    with agentmeter.track_run("r2"):
        mine.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(captured.calls) == 1
    assert "request" not in vars(mine) and "_send_request" not in vars(mine)


def test_uninstrument_restores_the_original_methods(stub: StubServer, captured: CapturedRuns) -> None:
    originals = {(cls, name): cls.__dict__[name] for cls in (SyncAPIClient, AsyncAPIClient)
                 for name in ("request", "_send_request")}
    c = client(stub)
    am_openai.instrument()
    assert all(cls.__dict__[name] is not fn for (cls, name), fn in originals.items())
    am_openai.instrument(c)
    am_openai.uninstrument()
    assert all(cls.__dict__[name] is fn for (cls, name), fn in originals.items())
    assert "request" not in vars(c)
    with agentmeter.track_run("r"):
        c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert captured.calls == []


def test_outside_any_run_the_call_gets_an_implicit_run(stub: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = client(stub)
    stream = c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    # while the stream is open, the caller's context is untouched: no run leaks into later code
    assert agentmeter.current_run() is None and agentmeter.current_call() is None
    for _ in stream:
        pass
    (run,) = captured.runs
    assert run["implicit"] is True and run["call_count"] == 1


def test_instrument_rejects_other_objects() -> None:
    with pytest.raises(TypeError):
        am_openai.instrument(object())


@pytest.mark.parametrize(("url", "operation"), [
    ("/chat/completions", "chat.completions"),
    ("/responses", "responses"),
    ("/embeddings", "embeddings"),
    ("/images/generations", "images.generations"),
    ("/files/file-abc123/content", "files"),
    ("/responses/resp_123", "responses"),
    ("/models", "models"),
])
def test_operation_names(url: str, operation: str) -> None:
    assert am_openai.operation_of(url) == operation
