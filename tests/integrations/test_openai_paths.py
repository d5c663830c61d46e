"""Every way of reading an OpenAI response records the whole call (issue 17), with the real ``openai``
client (2.x or 3.x: CI runs this file on both) against the loopback stub server.

The stub paces its streamed events (``chunk_ms``) and reports, per request, when it wrote the first
content event and the last byte of its answer (``StubRequest.first_content_ms`` / ``answer_ms``, measured
from the request's arrival). A client cannot have read either sooner, so a call that ended before the body
(the bug: closed when the headers arrived) fails ``duration_ms >= answer_ms``, and tokens must equal the
usage the stub sent.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest

import agentmeter
import agentmeter.integrations.openai as am_openai
from agentmeter.stubs import StubRequest, StubServer, cut_stream
from agentmeter.testing import CapturedRuns

MESSAGES = [{"role": "user", "content": "Summarize what Acme Corp does."}]
USAGE = {"stream_options": {"include_usage": True}}
CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES}
RESP = {"model": "gpt-4.1-mini", "input": "Plan three searches about Acme."}
CHUNK_MS = 12


@pytest.fixture
def paced() -> Any:
    with StubServer(seed=11, chunk_ms=CHUNK_MS, chunks=(6, 6)) as server:
        yield server


def _drain(iterable: Any) -> None:
    for _ in iterable:
        pass


async def _adrain(iterable: Any) -> None:
    async for _ in iterable:
        pass


# name -> (operation, streamed, how the caller reads it)
SYNC_PATHS: dict[str, tuple[str, bool, Callable[[openai.OpenAI], Any]]] = {
    "chat create": ("chat.completions", False, lambda c: c.chat.completions.create(**CHAT)),
    "chat stream=True": ("chat.completions", True, lambda c: _drain(c.chat.completions.create(
        **CHAT, stream=True, **USAGE))),
    "chat .stream() helper": ("chat.completions", True, lambda c: _stream_helper(c.chat.completions.stream(
        **CHAT, **USAGE))),
    "chat .parse()": ("chat.completions", False, lambda c: c.chat.completions.parse(**CHAT)),
    "chat with_raw_response .parse()": ("chat.completions", False, lambda c: c.chat.completions
                                        .with_raw_response.create(**CHAT).parse()),
    "chat with_raw_response stream .parse()": ("chat.completions", True, lambda c: _drain(
        c.chat.completions.with_raw_response.create(**CHAT, stream=True, **USAGE).parse())),
    "chat with_streaming_response .parse()": ("chat.completions", False, lambda c: _streaming(
        c.chat.completions.with_streaming_response.create(**CHAT), lambda r: r.parse())),
    "chat with_streaming_response .json()": ("chat.completions", False, lambda c: _streaming(
        c.chat.completions.with_streaming_response.create(**CHAT), lambda r: r.json())),
    "chat with_streaming_response stream .parse()": ("chat.completions", True, lambda c: _streaming(
        c.chat.completions.with_streaming_response.create(**CHAT, stream=True, **USAGE),
        lambda r: _drain(r.parse()))),
    "chat with_streaming_response stream .iter_lines()": ("chat.completions", True, lambda c: _streaming(
        c.chat.completions.with_streaming_response.create(**CHAT, stream=True, **USAGE),
        lambda r: _drain(r.iter_lines()))),
    "responses create": ("responses", False, lambda c: c.responses.create(**RESP)),
    "responses stream=True": ("responses", True, lambda c: _drain(c.responses.create(**RESP, stream=True))),
    "responses .stream() helper": ("responses", True, lambda c: _stream_helper(c.responses.stream(**RESP))),
    "responses .parse()": ("responses", False, lambda c: c.responses.parse(**RESP)),
    "responses with_raw_response .parse()": ("responses", False, lambda c: c.responses.with_raw_response
                                             .create(**RESP).parse()),
    "responses with_raw_response stream .parse()": ("responses", True, lambda c: _drain(
        c.responses.with_raw_response.create(**RESP, stream=True).parse())),
    "responses with_streaming_response .parse()": ("responses", False, lambda c: _streaming(
        c.responses.with_streaming_response.create(**RESP), lambda r: r.parse())),
    # what openai-agents' Runner.run_streamed does
    "responses with_streaming_response stream .parse()": ("responses", True, lambda c: _streaming(
        c.responses.with_streaming_response.create(**RESP, stream=True), lambda r: _drain(r.parse()))),
    "responses with_streaming_response stream .iter_text()": ("responses", True, lambda c: _streaming(
        c.responses.with_streaming_response.create(**RESP, stream=True), lambda r: _drain(r.iter_text()))),
    "embeddings with_streaming_response .parse()": ("embeddings", False, lambda c: _streaming(
        c.embeddings.with_streaming_response.create(model="text-embedding-3-small", input=["a", "b c"]),
        lambda r: r.parse())),
}


def _stream_helper(manager: Any) -> None:
    with manager as stream:
        _drain(stream)


def _streaming(manager: Any, read: Callable[[Any], Any]) -> None:
    with manager as response:
        read(response)


async def _astream_helper(manager: Any) -> None:
    async with manager as stream:
        await _adrain(stream)


async def _astreaming(manager: Any, read: Callable[[Any], Awaitable[Any]]) -> None:
    async with manager as response:
        await read(response)


async def _aparse_drain(response: Any) -> None:
    await _adrain(await response.parse())


ASYNC_PATHS: dict[str, tuple[str, bool, Callable[[openai.AsyncOpenAI], Awaitable[Any]]]] = {
    "chat create": ("chat.completions", False, lambda c: c.chat.completions.create(**CHAT)),
    "chat stream=True": ("chat.completions", True, lambda c: _aparse_drain_stream(
        c.chat.completions.create(**CHAT, stream=True, **USAGE))),
    "chat .stream() helper": ("chat.completions", True, lambda c: _astream_helper(c.chat.completions.stream(
        **CHAT, **USAGE))),
    "chat with_raw_response .parse()": ("chat.completions", False, lambda c: _araw(
        c.chat.completions.with_raw_response.create(**CHAT))),
    "chat with_raw_response stream .parse()": ("chat.completions", True, lambda c: _araw_stream(
        c.chat.completions.with_raw_response.create(**CHAT, stream=True, **USAGE))),
    "chat with_streaming_response .parse()": ("chat.completions", False, lambda c: _astreaming(
        c.chat.completions.with_streaming_response.create(**CHAT), lambda r: r.parse())),
    "chat with_streaming_response stream .parse()": ("chat.completions", True, lambda c: _astreaming(
        c.chat.completions.with_streaming_response.create(**CHAT, stream=True, **USAGE), _aparse_drain)),
    "chat with_streaming_response stream .iter_lines()": ("chat.completions", True, lambda c: _astreaming(
        c.chat.completions.with_streaming_response.create(**CHAT, stream=True, **USAGE),
        lambda r: _adrain(r.iter_lines()))),
    "responses create": ("responses", False, lambda c: c.responses.create(**RESP)),
    "responses stream=True": ("responses", True, lambda c: _aparse_drain_stream(
        c.responses.create(**RESP, stream=True))),
    "responses .stream() helper": ("responses", True, lambda c: _astream_helper(c.responses.stream(**RESP))),
    "responses with_raw_response stream .parse()": ("responses", True, lambda c: _araw_stream(
        c.responses.with_raw_response.create(**RESP, stream=True))),
    "responses with_streaming_response .read()": ("responses", False, lambda c: _astreaming(
        c.responses.with_streaming_response.create(**RESP), lambda r: r.read())),
    # what openai-agents' Runner.run_streamed does
    "responses with_streaming_response stream .parse()": ("responses", True, lambda c: _astreaming(
        c.responses.with_streaming_response.create(**RESP, stream=True), _aparse_drain)),
}


async def _aparse_drain_stream(created: Awaitable[Any]) -> None:
    await _adrain(await created)


async def _araw(created: Awaitable[Any]) -> None:
    (await created).parse()


async def _araw_stream(created: Awaitable[Any]) -> None:
    await _adrain((await created).parse())


def assert_whole_call(call: dict[str, Any], req: StubRequest, operation: str, streamed: bool) -> None:
    assert req.status == 200 and req.usage is not None and req.answer_ms is not None
    assert (call["operation"], call["status"], call["http_status"]) == (operation, "success", 200)
    usage = req.usage
    if "prompt_tokens" in usage and operation == "embeddings":
        assert (call["input_tokens"], call["output_tokens"]) == (usage["prompt_tokens"], 0)
    elif "prompt_tokens" in usage:
        assert call["input_tokens"] == usage["prompt_tokens"]
        assert call["output_tokens"] == usage["completion_tokens"]
        assert call["cached_input_tokens"] == usage["prompt_tokens_details"]["cached_tokens"]
    else:
        assert call["input_tokens"] == usage["input_tokens"]
        assert call["output_tokens"] == usage["output_tokens"]
        assert call["reasoning_tokens"] == usage["output_tokens_details"]["reasoning_tokens"]
    assert call["model"] == req.model
    # the call lasted at least as long as the server took to send the whole answer
    assert call["duration_ms"] >= req.answer_ms
    assert "stream_closed_early" not in call["metadata"]
    assert call["priced"] is True and call["cost_usd"] > 0
    if streamed:
        assert req.streamed and req.first_content_ms is not None
        assert call["metadata"]["stream"] is True
        # time to first token: the first content event, not the headers
        assert req.first_content_ms <= call["time_to_first_token_ms"] <= call["duration_ms"]
        assert req.answer_ms >= 6 * CHUNK_MS  # six paced content chunks: the stream took real time
    else:
        assert call["time_to_first_token_ms"] is None


@pytest.mark.parametrize("path", sorted(SYNC_PATHS))
def test_sync_path_records_the_whole_call(path: str, paced: StubServer, captured: CapturedRuns) -> None:
    operation, streamed, read = SYNC_PATHS[path]
    am_openai.instrument()
    client = openai.OpenAI(base_url=paced.openai_base_url, api_key="sk-stub")
    with agentmeter.track_run("r"):
        read(client)
        # the call is finished once the caller has read its body, before the run ends
        assert agentmeter.current_call() is None
    (call,) = captured.calls
    (req,) = paced.requests
    assert_whole_call(call, req, operation, streamed)
    assert call["status"] != "cancelled"


@pytest.mark.parametrize("path", sorted(ASYNC_PATHS))
def test_async_path_records_the_whole_call(path: str, paced: StubServer, captured: CapturedRuns) -> None:
    operation, streamed, read = ASYNC_PATHS[path]
    am_openai.instrument()

    async def main() -> None:
        client = openai.AsyncOpenAI(base_url=paced.openai_base_url, api_key="sk-stub")
        async with agentmeter.track_run("r"):
            await read(client)
        await client.close()

    asyncio.run(main())
    (call,) = captured.calls
    (req,) = paced.requests
    assert_whole_call(call, req, operation, streamed)


def test_a_streaming_response_closed_after_one_line_ends_there(paced: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = openai.OpenAI(base_url=paced.openai_base_url, api_key="sk-stub")
    with agentmeter.track_run("r"):
        with c.chat.completions.with_streaming_response.create(**CHAT, stream=True, **USAGE) as response:
            next(iter(response.iter_lines()))
        with c.responses.with_streaming_response.create(**RESP) as unread:
            assert unread.http_request is not None  # headers only: the body is never read
    early, unread_call = captured.calls
    for call in (early, unread_call):
        assert call["status"] == "success" and call["http_status"] == 200
        assert call["metadata"]["stream_closed_early"] is True
        assert call["input_tokens"] is None and call["priced"] is False  # the usage was never read
    assert early["metadata"]["stream"] is True


def test_a_raw_stream_never_read_ends_when_dropped(paced: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = openai.OpenAI(base_url=paced.openai_base_url, api_key="sk-stub")
    with agentmeter.track_run("r"):
        raw = c.chat.completions.with_raw_response.create(**CHAT, stream=True)
        assert raw.http_response.status_code == 200
        del raw
        gc.collect()  # the response is garbage: the call ends now, not with the run
    (call,) = captured.calls
    assert call["status"] == "success"
    assert call["metadata"]["stream_closed_early"] is True


def test_a_streaming_response_cut_mid_way_is_an_error(paced: StubServer, captured: CapturedRuns) -> None:
    am_openai.instrument()
    c = openai.OpenAI(base_url=paced.openai_base_url, api_key="sk-stub")
    paced.script("chat/completions", [cut_stream(3)])
    # iter_lines reads the transport directly: its own error reaches the reader
    transport = importlib.import_module("httpx2" if int(openai.__version__.split(".")[0]) >= 3 else "httpx")
    with (pytest.raises(transport.RemoteProtocolError), agentmeter.track_run("r"),
          c.chat.completions.with_streaming_response.create(**CHAT, stream=True) as response):
        _drain(response.iter_lines())
    (call,) = captured.calls
    assert call["status"] == "error" and call["http_status"] == 200
    assert call["error_type"] == "RemoteProtocolError"
