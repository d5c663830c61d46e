"""Record every Anthropic API request as an agentmeter call: ``instrument()`` / ``uninstrument()``.

>>> import agentmeter.integrations.anthropic as am_anthropic
>>> am_anthropic.instrument()          # every Anthropic / AsyncAnthropic client, sync and async
>>> am_anthropic.instrument(client)    # or one client instance only

Each request (``messages.create``, ``messages.stream``, batches, any other endpoint) becomes one call
record nested under the current step: provider ``anthropic``, the operation (``messages``...), the model
the API reported, latency, HTTP status, error type, retries, request and response sizes, the stop reason
and the number of tool-use blocks (``metadata.stop_reason``, ``metadata.tool_uses``), and the token usage
the API returned. ``messages.count_tokens`` is not an API call worth a record (it generates nothing and is
free): it is not recorded.

Tokens: Anthropic counts its input in three parts billed at three rates: ``input_tokens`` (not cached),
``cache_read_input_tokens`` and ``cache_creation_input_tokens``. agentmeter's ``input_tokens`` is every
input token (as OpenAI reports it), so a call records ``input_tokens`` = the three added up,
``cached_input_tokens`` = the cache reads, ``cache_write_tokens`` = the cache writes (the part written with
a one-hour lifetime, billed higher, in ``metadata.cache_write_1h_tokens``). Nothing is estimated.

Streams (``stream=True`` and ``messages.stream()``): the call lasts until the stream ends or is closed;
the time to first token is the first content event (text, thinking or a tool call's input); input and
cache tokens come from ``message_start``, output tokens from the final ``message_delta``, so a stream
closed before its end has unknown output tokens. ``with_raw_response`` and ``with_streaming_response``
are recorded up to the end of the body, as for OpenAI.

How it hooks in (``anthropic`` 1.0 and later): ``SyncAPIClient.request`` / ``AsyncAPIClient.request`` open
and close the call; ``_attempt_request``, called once per attempt by the client's retry loop, counts the
attempts. Never raises into your code: the client's own exceptions propagate unchanged. Cost is computed
in the exporter; ``instrument()`` loads the price table on your thread. Importing this module imports
``anthropic``; ``import agentmeter`` does not.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from anthropic import AsyncStream, Stream
from anthropic._base_client import AsyncAPIClient, SyncAPIClient

from .. import _guard
from ..pricing import load_library
from ._request import Request, attempt_wrapper, operation_from_path
from ._span import CallSpan, Patches, as_int, attr, record_calls

__all__ = ["instrument", "instrumented", "operation_of", "record_usage", "uninstrument"]

PROVIDER = "anthropic"
_MARK = "__agentmeter_anthropic__"
_PATCHED = ("request", "_attempt_request")

_active: ContextVar[_Request | None] = ContextVar("agentmeter_anthropic_request", default=None)

_patches = Patches(_MARK, _PATCHED, SyncAPIClient, AsyncAPIClient,
                   "an anthropic client (Anthropic, AsyncAnthropic...)")

_KNOWN_OPERATIONS = {"messages": "messages", "complete": "completions", "messages/batches": "messages.batches"}
#: requests that are not recorded
_IGNORED = ("messages.count_tokens",)
#: the methods that build a new client from an instrumented one
#: content blocks that are the model's output
_CONTENT_DELTAS = ("text_delta", "input_json_delta", "thinking_delta", "citations_delta")
_TOOL_BLOCKS = ("tool_use", "server_tool_use", "mcp_tool_use")


# -- public API -----------------------------------------------------------------------------------------


def instrument(client: Any = None) -> None:
    """Record the requests of ``client`` (an ``Anthropic``/``AsyncAnthropic`` instance), or of every
    client, sync and async, when ``client`` is None. Idempotent: instrumenting again never double-records.
    Loads the price table on this thread. Raises ``TypeError`` for an object that is not an anthropic
    client; never raises afterwards. Clients derived with ``with_options()`` / ``copy()`` from an
    instrumented client are instrumented too."""
    _patches.instrument(client, None, _make_wrapper)
    load_library()  # the price table, here on your thread (never imported on the exporter's)


def uninstrument(client: Any = None) -> None:
    """Restore the original methods: of ``client`` only, or of every class and client when None.
    Never raises."""
    _patches.uninstrument(client)


def instrumented(client: Any = None) -> bool:
    """True when ``client`` (or, with None, every client through the classes) is instrumented."""
    return _patches.instrumented(client)


def operation_of(url: str) -> str:
    """``/v1/messages`` -> ``messages``; ``/v1/messages/batches/msgbatch_01X`` -> ``messages.batches``."""
    return operation_from_path(url, _KNOWN_OPERATIONS)


def record_usage(call: Any, usage: Any, model: Any = None) -> None:
    """Copy an Anthropic ``usage`` (a ``Usage`` object or its dict) onto ``call``: ``input_tokens`` becomes
    the sum of Anthropic's uncached, cache-read and cache-write input tokens, ``cached_input_tokens`` the
    cache reads and ``cache_write_tokens`` the cache writes. Counts the usage does not carry stay as they
    were (unknown unless reported). Never raises."""
    try:
        if usage is not None:
            uncached = as_int(attr(usage, "input_tokens"))
            read = as_int(attr(usage, "cache_read_input_tokens"))
            written = as_int(attr(usage, "cache_creation_input_tokens"))
            if uncached is not None:
                call.record_usage(input_tokens=uncached + (read or 0) + (written or 0),
                                  cached_input_tokens=read if read is not None else 0,
                                  cache_write_tokens=written if written is not None else 0)
            output = as_int(attr(usage, "output_tokens"))
            if output is not None:
                call.record_usage(output_tokens=output)
            hour = as_int(attr(attr(usage, "cache_creation"), "ephemeral_1h_input_tokens"))
            if hour:
                call.set_metadata(cache_write_1h_tokens=hour)
        if isinstance(model, str) and model:
            if call.model is not None and call.model != model:
                call.set_metadata(request_model=call.model)
            call.record_usage(model=model)
    except Exception as exc:
        _guard.internal_error("anthropic_usage", exc)


# -- patching ------------------------------------------------------------------------------------------



def _make_wrapper(name: str, is_async: bool, original: Callable[..., Any]) -> Callable[..., Any]:
    if name == "request":
        return record_calls(original, is_async, _active, _begin_request, _MARK)
    # _attempt_request(options, *, stream, retries_taken, ...) -> (HTTP response, prepared options)
    return attempt_wrapper(original, is_async, _active, _MARK, _no_request, _response_of_attempt)


def _no_request(_args: tuple[Any, ...]) -> Any:
    return None  # the HTTP request is built inside the attempt: its size is read from the response


def _response_of_attempt(result: Any) -> Any:
    return result[0] if isinstance(result, tuple) and result else None


def _begin_request(_client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Request | None:
    return _Request.begin(_options_arg(*args, **kwargs), bool(kwargs.get("stream")))


def _options_arg(cast_to: Any, options: Any, *_args: Any, **_kwargs: Any) -> Any:
    return options


# -- one request ---------------------------------------------------------------------------------------


class _Request(Request):
    """One ``client.request(...)`` of an Anthropic client."""

    __slots__ = ()
    stream_types = (Stream, AsyncStream)
    provider = PROVIDER

    @classmethod
    def begin(cls, options: Any, stream: bool) -> _Request | None:
        try:
            operation = operation_of(str(getattr(options, "url", "")))
            if operation in _IGNORED:
                return None
            body = getattr(options, "json_data", None)
            model = body.get("model") if isinstance(body, dict) else None
            return cls(CallSpan(PROVIDER, operation, model if isinstance(model, str) else None), operation, stream)
        except Exception as exc:
            _guard.internal_error("anthropic_begin", exc)
            return None

    def record_result(self, result: Any) -> None:
        if attr(result, "usage") is None and not hasattr(result, "usage") and not isinstance(result, dict):
            body = self.raw_body()  # a raw response (with_raw_response): the JSON body in memory
            if isinstance(body, dict):
                result = body
        record_usage(self.span.call, attr(result, "usage"), attr(result, "model"))
        stop = attr(result, "stop_reason")
        if isinstance(stop, str):
            self.span.call.set_metadata(stop_reason=stop)
        content = attr(result, "content")
        if isinstance(content, list):
            tools = sum(1 for block in content if attr(block, "type") in _TOOL_BLOCKS)
            if tools:
                self.span.call.set_metadata(tool_uses=tools)

    def is_final(self, item: Any) -> bool:
        return bool(attr(item, "type") == "message_stop")

    def observe(self, item: Any) -> None:
        """Look at one streamed event: first token, usage, model, stop reason, tool uses."""
        try:
            call = self.span.call
            kind = attr(item, "type")
            if kind == "message_start":
                message = attr(item, "message")
                usage = attr(message, "usage")
                # input and cache tokens are final here; output_tokens is a placeholder until message_delta
                record_usage(call, {k: attr(usage, k) for k in ("input_tokens", "cache_read_input_tokens",
                                                               "cache_creation_input_tokens", "cache_creation")},
                             attr(message, "model"))
            elif kind == "content_block_delta":
                if call.first_token_ns is None and attr(attr(item, "delta"), "type") in _CONTENT_DELTAS:
                    call.mark_first_token()
            elif kind == "content_block_start":
                if attr(attr(item, "content_block"), "type") in _TOOL_BLOCKS:
                    call.mark_first_token()
                    call.set_metadata(tool_uses=int(call.metadata.get("tool_uses") or 0) + 1)
            elif kind == "message_delta":
                usage = attr(item, "usage")
                # the final counts; newer API versions repeat input and cache tokens here, maybe in part
                if as_int(attr(usage, "input_tokens")) is None:
                    record_usage(call, {"output_tokens": attr(usage, "output_tokens")})
                else:
                    read, written = call.cached_input_tokens or 0, call.cache_write_tokens or 0
                    record_usage(call, {
                        "input_tokens": attr(usage, "input_tokens"),
                        "cache_read_input_tokens": _known(attr(usage, "cache_read_input_tokens"), read),
                        "cache_creation_input_tokens": _known(attr(usage, "cache_creation_input_tokens"), written),
                        "output_tokens": attr(usage, "output_tokens"),
                    })
                stop = attr(attr(item, "delta"), "stop_reason")
                if isinstance(stop, str):
                    call.set_metadata(stop_reason=stop)
        except Exception as exc:
            _guard.internal_error("anthropic_event", exc)


def _known(value: Any, default: int) -> int:
    number = as_int(value)
    return number if number is not None else default
