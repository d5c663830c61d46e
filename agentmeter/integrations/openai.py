"""Record every OpenAI API request as an agentmeter call: ``instrument()`` / ``uninstrument()``.

>>> import agentmeter.integrations.openai as am_openai
>>> am_openai.instrument()          # every OpenAI / AsyncOpenAI / AzureOpenAI client, sync and async
>>> am_openai.instrument(client)    # or one client instance only

Each request (chat completions, responses, embeddings and any other endpoint) becomes one call record
nested under the current step: provider ``openai``, the operation (``chat.completions``, ``responses``,
``embeddings``...), the model the API reported, latency, HTTP status, error type, request and response
sizes, and the token usage the API returned (input, output, cached input, reasoning). Nothing is
estimated: tokens the API did not report stay unknown (``None``).

How it hooks in (``openai`` 2.31 and later, 3.x included): every request goes through
``SyncAPIClient.request`` / ``AsyncAPIClient.request``, whose retry loop calls ``_send_request`` once per
attempt. The first is wrapped to open and close the call, the second to count attempts, so ``retries`` is
exactly the number of times the client re-sent the request (after a 429, a 5xx, a timeout or a
connection error), and ``http_status`` is the status of the final attempt.

Every way of reading a response records the whole call: a parsed result (``create``, ``parse``), a stream
(``stream=True``, the ``.stream()`` helpers), ``with_raw_response`` (its ``.parse()`` too, streams
included) and ``with_streaming_response`` (``.parse()``, ``.read()``, ``.json()``, ``.iter_lines()``...).
A call whose body is read after ``create`` returns lasts until that body is read to the end, closed or
garbage-collected; its tokens come from the body (or the stream's final event), its time to first token
from the first event carrying content.

Streaming (``stream=True``): the call lasts until the stream is exhausted or closed; the time to first
token is when the first chunk carrying content arrived. Chat completions report usage only in a final
chunk, and only when the request asked ``stream_options={"include_usage": True}``; without it the tokens
are recorded as unknown. ``instrument(include_usage=True)`` adds that option to streamed chat requests
that did not set it (opt-in: your code then sees one extra chunk with an empty ``choices`` list). The
responses API always reports usage in its ``response.completed`` event.

Never raises into your code: the client's own exceptions propagate unchanged; an agentmeter failure is
logged and counted. Cost is not computed here (the exporter prices calls off your thread); ``instrument()``
loads the price table on your thread. Importing this module imports ``openai``; ``import agentmeter`` does
not.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from openai import AsyncStream, Stream
from openai._base_client import AsyncAPIClient, SyncAPIClient

from .. import _guard
from ..pricing import load_library
from ._request import Request, attempt_wrapper, operation_from_path
from ._span import CallSpan, Patches, as_int, attr, record_calls

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


def uninstrument(client: Any = None) -> None:
    """Restore the original methods: of ``client`` only, or of every class and client when None.
    Never raises."""
    _patches.uninstrument(client)


def instrumented(client: Any = None) -> bool:
    """True when ``client`` (or, with None, every client through the classes) is instrumented."""
    return _patches.instrumented(client)


# -- patching ------------------------------------------------------------------------------------------

#: the methods that build a new client from an instrumented one (``with_options`` is ``copy``)




def _make_wrapper(name: str, is_async: bool, original: Callable[..., Any]) -> Callable[..., Any]:
    if name == "request":
        return record_calls(original, is_async, _active, _begin_request, _MARK)
    # _send_request(request, *, stream, **kwargs) -> the HTTP response
    return attempt_wrapper(original, is_async, _active, _MARK, _first_arg, _same)


def _first_arg(args: tuple[Any, ...]) -> Any:
    return args[0] if args else None


def _same(response: Any) -> Any:
    return response


def _begin_request(_client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Request | None:
    return _Request.begin(_options_arg(*args, **kwargs), bool(kwargs.get("stream")))


def _options_arg(cast_to: Any, options: Any, *_args: Any, **_kwargs: Any) -> Any:
    """The ``options`` of ``request(cast_to, options, ...)``; a TypeError when missing, as the method's."""
    return options


# -- one request ---------------------------------------------------------------------------------------


def operation_of(url: str) -> str:
    """``/chat/completions`` -> ``chat.completions``; unknown paths keep their leading non-id segments."""
    return operation_from_path(url, _KNOWN_OPERATIONS)


class _Request(Request):
    """One ``client.request(...)`` of an OpenAI client."""

    __slots__ = ()
    stream_types = (Stream, AsyncStream)
    provider = PROVIDER

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
            return cls(CallSpan(PROVIDER, operation, model if isinstance(model, str) else None), operation, stream)
        except Exception as exc:
            _guard.internal_error("openai_begin", exc)
            return None

    def record_result(self, result: Any) -> None:
        usage = attr(result, "usage")
        if usage is None and not hasattr(result, "usage") and not isinstance(result, dict):
            body = self.raw_body()  # a raw response (with_raw_response): usage from the JSON body in memory
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

    def is_final(self, item: Any) -> bool:
        return attr(item, "type") in _FINAL_EVENTS

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
