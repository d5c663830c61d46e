"""Record Tavily searches and extracts as agentmeter calls: ``instrument()`` / ``uninstrument()``.

>>> import agentmeter.integrations.tavily as am_tavily
>>> am_tavily.instrument()          # every TavilyClient and AsyncTavilyClient
>>> am_tavily.instrument(client)    # or one client instance only

Each ``search``, ``extract``, ``crawl`` and ``map`` becomes one call record nested under the current step:
provider ``tavily``, operation (``search``...), latency, the HTTP status of the response, the error type
(``UsageLimitExceededError`` for a 429, ``TimeoutError``...), request and response sizes, the number of
results (``metadata.result_count``; ``metadata.failed_count`` for extract) and, when the response reports
it, the credits used (``units``). Tavily reports credits only when the request asks ``include_usage=True``;
``instrument(include_usage=True)`` adds it to requests that did not set it (opt-in: your code then sees a
``usage`` key in the response). Price the calls with ``configure(prices={"tavily:search":
{"per_credit": ...}})`` or ``{"per_request": ...}`` (see :mod:`agentmeter.pricing`).

The HTTP status comes from a response hook added to the client's own ``requests.Session`` (sync) or
``httpx.AsyncClient`` (async) the first time an instrumented method runs; the hook does nothing outside
an instrumented call. tavily-python does not retry, so ``retries`` is 0. Never raises into your code;
importing this module imports ``tavily``, ``import agentmeter`` does not.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from tavily import AsyncTavilyClient, TavilyClient

from .. import _guard
from ._span import CallSpan, Patches, attr, record_calls

__all__ = ["OPERATIONS", "instrument", "instrumented", "uninstrument"]

PROVIDER = "tavily"
OPERATIONS = ("search", "extract", "crawl", "map")
_MARK = "__agentmeter_tavily__"

_active: ContextVar[_Request | None] = ContextVar("agentmeter_tavily_request", default=None)
_patches = Patches(_MARK, OPERATIONS, TavilyClient, AsyncTavilyClient, "a TavilyClient or AsyncTavilyClient")
_hooked: weakref.WeakSet[Any] = weakref.WeakSet()  # sessions / httpx clients carrying our hook


def instrument(client: Any = None, *, include_usage: bool | None = None) -> None:
    """Record the calls of ``client`` (a ``TavilyClient`` or ``AsyncTavilyClient``), or of every client
    when None. Idempotent: instrumenting again never double-records. ``include_usage=True`` asks Tavily
    to report credits on requests that did not say. Raises ``TypeError`` for another object; never raises
    afterwards."""
    _patches.instrument(client, include_usage, _wrap)


def uninstrument(client: Any = None) -> None:
    """Restore the original methods: of ``client`` only, or of every class and client when None.
    Hooks left on sessions stay inert. Never raises."""
    _patches.uninstrument(client)


def instrumented(client: Any = None) -> bool:
    """True when ``client`` (or, with None, every client through the classes) is instrumented."""
    return _patches.instrumented(client)


# -- response hooks ------------------------------------------------------------------------------------


def _requests_hook(response: Any, *_args: Any, **_kwargs: Any) -> None:
    rec = _active.get()
    if rec is not None:
        rec.response = response


async def _httpx_hook(response: Any) -> None:
    rec = _active.get()
    if rec is not None:
        rec.response = response


def _ensure_hook(client: Any, is_async: bool) -> None:
    try:
        if is_async:
            http = client._client
            if http not in _hooked:
                http.event_hooks["response"].append(_httpx_hook)
                _hooked.add(http)
        else:
            session = client.session
            if session not in _hooked:
                hooks = session.hooks.setdefault("response", [])
                hooks.append(_requests_hook)
                _hooked.add(session)
    except Exception as exc:
        _guard.internal_error("tavily_hook", exc)


# -- one call ------------------------------------------------------------------------------------------


class _Request:
    __slots__ = ("response", "span")

    def __init__(self, span: CallSpan) -> None:
        self.span = span
        self.response: Any = None

    @classmethod
    def begin(cls, operation: str, kwargs: dict[str, Any]) -> _Request | None:
        try:
            if _patches.include_usage and kwargs.get("include_usage") is None:
                kwargs["include_usage"] = True
            rec = cls(CallSpan(PROVIDER, operation, None))
            for key in ("search_depth", "extract_depth", "topic"):
                if isinstance(kwargs.get(key), str):
                    rec.span.call.set_metadata({key: kwargs[key]})
            return rec
        except Exception as exc:
            _guard.internal_error("tavily_begin", exc)
            return None

    def _settle(self) -> None:
        response, call = self.response, self.span.call
        if response is None:
            return
        call.set_http_status(response.status_code)
        request = getattr(response, "request", None)
        body = getattr(request, "body", None)  # requests
        if body is None:
            try:
                body = getattr(request, "content", None)  # httpx
            except Exception:
                body = None
        if isinstance(body, (bytes, bytearray, str)):
            call.record_sizes(request_bytes=len(body.encode() if isinstance(body, str) else body))
        downloaded = getattr(response, "num_bytes_downloaded", None)  # httpx
        if not isinstance(downloaded, int):
            content = getattr(response, "_content", None)  # requests: only once read, never forcing a read
            downloaded = len(content) if isinstance(content, (bytes, bytearray)) else None
        if downloaded:
            call.record_sizes(response_bytes=downloaded)

    def fail(self, exc: BaseException) -> None:
        try:
            self._settle()
        except Exception as err:
            _guard.internal_error("tavily_fail", err)
        self.span.end(exc)

    def succeed(self, result: Any) -> Any:
        try:
            self._settle()
            call = self.span.call
            results = attr(result, "results")
            if isinstance(results, list):
                call.set_metadata(result_count=len(results))
            failed = attr(result, "failed_results")
            if isinstance(failed, list):
                call.set_metadata(failed_count=len(failed))
            credits = attr(attr(result, "usage"), "credits")
            if isinstance(credits, (int, float)) and not isinstance(credits, bool):
                call.record_usage(units=credits)
            elapsed = attr(result, "response_time")
            if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool):
                call.set_metadata(server_response_time_s=elapsed)
        except Exception as exc:
            _guard.internal_error("tavily_result", exc)
        self.span.end(None)
        return result


def _wrap(operation: str, is_async: bool, original: Callable[..., Any]) -> Callable[..., Any]:
    def begin(client: Any, _args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Request | None:
        _ensure_hook(client, is_async)
        return _Request.begin(operation, kwargs)

    return record_calls(original, is_async, _active, begin, _MARK)
