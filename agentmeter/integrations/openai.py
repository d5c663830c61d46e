"""Record every OpenAI API request as an agentmeter call: ``instrument()`` / ``uninstrument()``.

>>> import agentmeter.integrations.openai as am_openai
>>> am_openai.instrument()          # every OpenAI / AsyncOpenAI / AzureOpenAI client, sync and async
>>> am_openai.instrument(client)    # or one client instance only

Each request (chat completions, responses, embeddings and any other endpoint) becomes one call record
nested under the current step: provider ``openai``, the operation (``chat.completions``, ``responses``,
``embeddings``...), the model the API reported, latency, HTTP status, error type, request and response
sizes, and the token usage the API returned (input, output, cached input, reasoning). Nothing is
estimated: tokens the API did not report stay unknown (``None``).

How it hooks in: ``openai`` 3.x sends every request through ``SyncAPIClient.request`` /
``AsyncAPIClient.request``, whose retry loop calls ``_send_request`` once per attempt. The first is
wrapped to open and close the call, the second to count attempts, so ``retries`` is exactly the number of
times the client re-sent the request (after a 429, a 5xx, a timeout or a connection error), and
``http_status`` is the status of the final attempt.

Streaming (``stream=True``): the call lasts until the stream is exhausted or closed; the time to first
token is when the first chunk carrying content arrived. Chat completions report usage only in a final
chunk, and only when the request asked ``stream_options={"include_usage": True}``; without it the tokens
are recorded as unknown. ``instrument(include_usage=True)`` adds that option to streamed chat requests
that did not set it (opt-in: your code then sees one extra chunk with an empty ``choices`` list). The
responses API always reports usage in its ``response.completed`` event.

Never raises into your code: the client's own exceptions propagate unchanged; an agentmeter failure is
logged and counted. Cost is not computed here (the exporter prices calls off your thread). Importing this
module imports ``openai``; ``import agentmeter`` does not.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from contextvars import ContextVar
from typing import Any

from openai import AsyncStream, Stream
from openai._base_client import AsyncAPIClient, SyncAPIClient

from .. import _guard
from ..pricing import load_library
from ._span import CallSpan, Patches, as_int, attr, body_pending, record_calls, watch_body

__all__ = ["instrument", "instrumented", "uninstrument"]

PROVIDER = "openai"
_MARK = "__agentmeter_openai__"
_PATCHED = ("request", "_send_request")

#: The request being recorded in this context (so nested wrappers, e.g. a client instrumented both on
#: its own and through its class, record it once).
_active: ContextVar[_Request | None] = ContextVar("agentmeter_openai_request", default=None)

_patches = Patches(_MARK, _PATCHED, SyncAPIClient, AsyncAPIClient, "an openai client (OpenAI, AsyncOpenAI...)")

_KNOWN_OPERATIONS = {
    "chat/completions": "chat.completions",
    "responses": "responses",
    "embeddings": "embeddings",
    "completions": "completions",
    "moderations": "moderations",
    "images/generations": "images.generations",
    "images/edits": "images.edits",
    "audio/transcriptions": "audio.transcriptions",
    "audio/translations": "audio.translations",
    "audio/speech": "audio.speech",
}
#: the responses API's last streamed events: they carry the usage
_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")
#: an object id ("file-abc123", "vs_68ab12Cd", "ftjob-X1"); resource names are lowercase words joined by "_"
_ID_LIKE = re.compile(r"[0-9A-Z-]")


# -- public API -----------------------------------------------------------------------------------------


def instrument(client: Any = None, *, include_usage: bool | None = None) -> None:
    """Record the requests of ``client`` (an ``OpenAI``/``AsyncOpenAI`` instance), or of every client,
    sync and async, when ``client`` is None. Idempotent: instrumenting again never double-records.

    ``include_usage=True`` adds ``stream_options={"include_usage": True}`` to streamed chat completion
    requests that did not ask for it, so their tokens are known (applies to every instrumented client).
    Raises ``TypeError`` for an object that is not an openai client; never raises afterwards. The clients
    an instrumented client derives with ``with_options()`` / ``copy()`` are instrumented too.
    """
    _patches.instrument(client, include_usage, _make_wrapper)
    load_library()  # the price table, here on your thread (never imported on the exporter's)
    if client is not None:
        for name in _DERIVE:
            if hasattr(type(client), name):
                object.__setattr__(client, name, functools.partial(_derive, name, client))


def uninstrument(client: Any = None) -> None:
    """Restore the original methods: of ``client`` only, or of every class and client when None.
    Never raises."""
    for inst in [client] if client is not None else list(_patches.instances):
        attrs = getattr(inst, "__dict__", {})
        if attrs.get(_MARK):
            for name in _DERIVE:
                attrs.pop(name, None)
    _patches.uninstrument(client)


def instrumented(client: Any = None) -> bool:
    """True when ``client`` (or, with None, every client through the classes) is instrumented."""
    return _patches.instrumented(client)


# -- patching ------------------------------------------------------------------------------------------

#: the methods that build a new client from an instrumented one (``with_options`` is ``copy``)
_DERIVE = ("copy", "with_options")


def _derive(name: str, client: Any, *args: Any, **kwargs: Any) -> Any:
    """``client.copy(...)`` / ``client.with_options(...)``, the new client instrumented like ``client``."""
    derived = getattr(type(client), name)(client, *args, **kwargs)
    try:
        if getattr(client, _MARK, False):
            instrument(derived)
    except Exception as exc:
        _guard.internal_error("openai_derive", exc)
    return derived



def _make_wrapper(name: str, is_async: bool, original: Callable[..., Any]) -> Callable[..., Any]:
    if name == "request":
        return record_calls(original, is_async, _active, _begin_request, _MARK)
    return _async_send(original) if is_async else _sync_send(original)


def _begin_request(_client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Request | None:
    return _Request.begin(_options_arg(*args, **kwargs), bool(kwargs.get("stream")))


def _options_arg(cast_to: Any, options: Any, *_args: Any, **_kwargs: Any) -> Any:
    """The ``options`` of ``request(cast_to, options, ...)``; a TypeError when missing, as the method's."""
    return options


def _sync_send(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        rec = _active.get()
        if rec is None or rec.sending:
            return original(self, request, *args, **kwargs)
        rec.before_attempt(request)
        try:
            response = original(self, request, *args, **kwargs)
        finally:
            rec.sending = False
        rec.after_attempt(response)
        return response

    setattr(send, _MARK, True)
    return send


def _async_send(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        rec = _active.get()
        if rec is None or rec.sending:
            return await original(self, request, *args, **kwargs)
        rec.before_attempt(request)
        try:
            response = await original(self, request, *args, **kwargs)
        finally:
            rec.sending = False
        rec.after_attempt(response)
        return response

    setattr(send, _MARK, True)
    return send


# -- one request ---------------------------------------------------------------------------------------


def operation_of(url: str) -> str:
    """``/chat/completions`` -> ``chat.completions``; unknown paths keep their leading non-id segments."""
    path = url.split("?", 1)[0].strip("/")
    if path.startswith("v1/"):
        path = path[3:]
    known = _KNOWN_OPERATIONS.get(path)
    if known is not None:
        return known
    parts: list[str] = []
    for segment in path.split("/"):
        if not segment or _ID_LIKE.search(segment):
            break
        parts.append(segment)
    return ".".join(parts[:2]) or "request"


class _Request:
    """Bookkeeping for one ``client.request(...)``: its call span, attempts and last response."""

    __slots__ = ("attempts", "body_ref", "last_response", "operation", "sending", "span", "stream")

    def __init__(self, span: CallSpan, operation: str, stream: bool) -> None:
        self.span = span
        self.operation = operation
        self.stream = stream
        self.attempts = 0
        self.sending = False
        self.last_response: Any = None
        self.body_ref: weakref.ref[Any] | None = None  # a response whose body the caller reads later

    @classmethod
    def begin(cls, options: Any, stream: bool) -> _Request | None:
        try:
            body = getattr(options, "json_data", None)
            model = body.get("model") if isinstance(body, dict) else None
            operation = operation_of(str(getattr(options, "url", "")))
            if (stream and operation == "chat.completions" and _patches.include_usage
                    and isinstance(body, dict) and not (body.get("stream_options") or {}).get("include_usage")):
                options.json_data = {**body, "stream_options": {**(body.get("stream_options") or {}),
                                                                "include_usage": True}}
            span = CallSpan(PROVIDER, operation, model if isinstance(model, str) else None)
            rec = cls(span, operation, stream)
            if stream:
                span.call.set_metadata(stream=True)
            return rec
        except Exception as exc:
            _guard.internal_error("openai_begin", exc)
            return None

    def before_attempt(self, request: Any) -> None:
        self.sending = True
        try:
            self.attempts += 1
            self.last_response = None
            if self.attempts == 1:
                content = getattr(request, "content", None)
                if isinstance(content, (bytes, bytearray)):
                    self.span.call.record_sizes(request_bytes=len(content))
        except Exception as exc:
            _guard.internal_error("openai_attempt", exc)

    def after_attempt(self, response: Any) -> None:
        self.last_response = response

    def _settle(self) -> None:
        call = self.span.call
        if self.attempts > 1:
            call.record_retry(self.attempts - 1)
        response = self.last_response
        call.http_status = None
        if response is not None:
            call.set_http_status(response.status_code)

    def fail(self, exc: BaseException) -> None:
        try:
            self._settle()
            self._record_response_bytes()
        except Exception as err:
            _guard.internal_error("openai_fail", err)
        self.span.end(exc)

    def succeed(self, result: Any) -> Any:
        try:
            self._settle()
            if isinstance(result, Stream):
                return _observe_sync_stream(self, result)
            if isinstance(result, AsyncStream):
                return _observe_async_stream(self, result)
            if body_pending(self.last_response):  # with_streaming_response, or with_raw_response of a stream
                self._watch_body()
                return result
            self._record_response_bytes()
            self._record_result(result)
        except Exception as exc:
            _guard.internal_error("openai_result", exc)
        self.span.end(None)
        return result

    def _watch_body(self) -> None:
        """The call ends when the body the caller reads later does (see ``_span.watch_body``)."""
        response, self.last_response = self.last_response, None  # collectable: its finalizer ends the call
        self.body_ref = weakref.ref(response)
        watch_body(response, self._body_item, self._body_end)

    def _body_item(self, item: Any) -> bool:
        self.observe(item)
        return attr(item, "type") in _FINAL_EVENTS

    def _body_end(self, body: Any, exc: BaseException | None, closed_early: bool) -> None:
        if body is not None:
            try:
                self._record_result(body)
            except Exception as err:
                _guard.internal_error("openai_result", err)
        self.end_stream(exc, closed_early)

    def _record_response_bytes(self) -> None:
        response = self.last_response
        if response is None and self.body_ref is not None:
            response = self.body_ref()
        if response is not None:
            downloaded = getattr(response, "num_bytes_downloaded", None)
            if isinstance(downloaded, int) and downloaded > 0:
                self.span.call.record_sizes(response_bytes=downloaded)

    def _record_result(self, result: Any) -> None:
        usage = attr(result, "usage")
        if usage is None and not hasattr(result, "usage") and self.last_response is not None:
            # a raw response (with_raw_response): read usage from the JSON body, already in memory
            try:
                body = self.last_response.json()
            except Exception:
                body = None
            if isinstance(body, dict):
                result, usage = body, body.get("usage")
        record_usage(self.span.call, usage, attr(result, "model"))
        choices = attr(result, "choices")
        if isinstance(choices, list) and choices:
            self.span.call.set_metadata(finish_reason=attr(choices[0], "finish_reason"))
        data = attr(result, "data")
        if self.operation == "embeddings" and isinstance(data, list):
            self.span.call.set_metadata(embeddings=len(data))
        status = attr(result, "status")
        if self.operation == "responses" and isinstance(status, str):
            self.span.call.set_metadata(response_status=status)

    # -- streams --------------------------------------------------------------------------------------
    def observe(self, item: Any) -> None:
        """Look at one streamed chunk or event: first token, usage, model, finish reason."""
        try:
            call = self.span.call
            kind = attr(item, "type")
            if isinstance(kind, str):  # responses API event
                if call.first_token_ns is None and kind.endswith(".delta"):
                    call.mark_first_token()
                if kind in _FINAL_EVENTS:
                    response = attr(item, "response")
                    record_usage(call, attr(response, "usage"), attr(response, "model"))
                    call.set_metadata(response_status=attr(response, "status"))
                return
            choices = attr(item, "choices")
            if isinstance(choices, list) and choices:
                choice = choices[0]
                delta = attr(choice, "delta")
                if call.first_token_ns is None and (
                    attr(delta, "content") or attr(delta, "tool_calls") or attr(delta, "refusal")
                    or attr(delta, "function_call")
                ):
                    call.mark_first_token()
                finish = attr(choice, "finish_reason")
                if finish is not None:
                    call.set_metadata(finish_reason=finish)
            usage = attr(item, "usage")
            if usage is not None:
                record_usage(call, usage, attr(item, "model"))
            elif call.metadata.get("reported_model") is None:
                model = attr(item, "model")
                if isinstance(model, str) and model:
                    call.record_usage(model=model)
                    call.metadata["reported_model"] = True
        except Exception as exc:
            _guard.internal_error("openai_chunk", exc)

    def end_stream(self, exc: BaseException | None, closed_early: bool = False) -> None:
        if self.span.closed:
            return
        try:
            call = self.span.call
            call.metadata.pop("reported_model", None)
            if closed_early:
                call.set_metadata(stream_closed_early=True)
            self._record_response_bytes()
        except Exception as err:
            _guard.internal_error("openai_stream_end", err)
        self.span.end(exc)


def record_usage(call: Any, usage: Any, model: Any = None) -> None:
    """Copy an OpenAI ``usage`` object (chat, responses or embeddings form) onto ``call``."""
    if usage is not None:
        input_tokens = as_int(attr(usage, "input_tokens"))
        if input_tokens is None:
            input_tokens = as_int(attr(usage, "prompt_tokens"))
        output_tokens = as_int(attr(usage, "output_tokens"))
        if output_tokens is None:
            output_tokens = as_int(attr(usage, "completion_tokens"))
        if output_tokens is None:  # embeddings report only prompt and total tokens
            total = as_int(attr(usage, "total_tokens"))
            if total is not None and input_tokens is not None and total >= input_tokens:
                output_tokens = total - input_tokens
        in_details = attr(usage, "input_tokens_details") or attr(usage, "prompt_tokens_details")
        out_details = attr(usage, "output_tokens_details") or attr(usage, "completion_tokens_details")
        call.record_usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=as_int(attr(in_details, "cached_tokens")),
            reasoning_tokens=as_int(attr(out_details, "reasoning_tokens")),
        )
    if isinstance(model, str) and model:
        if call.model is not None and call.model != model:
            call.set_metadata(request_model=call.model)
        call.record_usage(model=model)


def _observe_sync_stream(rec: _Request, stream: Stream[Any]) -> Stream[Any]:
    inner: Iterator[Any] = stream._iterator

    def observed() -> Generator[Any, None, None]:
        try:
            for item in inner:
                rec.observe(item)
                yield item
        except GeneratorExit:
            close = getattr(inner, "close", None)
            if close is not None:
                close()
            rec.end_stream(None, closed_early=True)
            raise
        except BaseException as exc:
            rec.end_stream(exc)
            raise
        rec.end_stream(None)

    generator = observed()
    original_close = stream.close

    def close() -> None:
        try:
            original_close()
        finally:
            generator.close()
            rec.end_stream(None, closed_early=True)  # when iteration never started

    stream._iterator = generator
    weakref.finalize(stream, rec.end_stream, None, True).atexit = False
    object.__setattr__(stream, "close", close)
    return stream


def _observe_async_stream(rec: _Request, stream: AsyncStream[Any]) -> AsyncStream[Any]:
    inner: AsyncIterator[Any] = stream._iterator

    async def observed() -> AsyncGenerator[Any, None]:
        try:
            async for item in inner:
                rec.observe(item)
                yield item
        except GeneratorExit:
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()
            rec.end_stream(None, closed_early=True)
            raise
        except BaseException as exc:
            rec.end_stream(exc)
            raise
        rec.end_stream(None)

    generator = observed()
    original_close = stream.close

    async def close() -> None:
        try:
            await original_close()
        finally:
            await generator.aclose()
            rec.end_stream(None, closed_early=True)  # when iteration never started

    stream._iterator = generator
    weakref.finalize(stream, rec.end_stream, None, True).atexit = False
    object.__setattr__(stream, "close", close)
    return stream

