"""One ``request()`` of a Stainless-generated client (openai, anthropic): :class:`Request` records it,
:func:`attempt_wrapper` counts its attempts, :func:`observe_sync_stream` / :func:`observe_async_stream` keep
the call open until a stream ends."""

from __future__ import annotations

import contextvars
import functools
import re
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from typing import Any

from .. import _guard
from ._bodies import body_pending, watch_body
from ._span import CallSpan

__all__ = ["Request", "attempt_wrapper", "observe_async_stream", "observe_sync_stream", "operation_from_path"]

#: an object id ("file-abc123", "vs_68ab12Cd", "msgbatch_01X"); resource names are lowercase words and "_"
_ID_LIKE = re.compile(r"[0-9A-Z-]")


def operation_from_path(url: str, known: Mapping[str, str]) -> str:
    """The operation of a request path: ``known[path]`` (``v1/`` and the query removed), else its leading
    segments that are not object ids, joined by ``.`` (at most two), else ``request``."""
    path = url.split("?", 1)[0].strip("/")
    if path.startswith("v1/"):
        path = path[3:]
    found = known.get(path)
    if found is not None:
        return found
    parts: list[str] = []
    for segment in path.split("/"):
        if not segment or _ID_LIKE.search(segment):
            break
        parts.append(segment)
    return ".".join(parts[:2]) or "request"


class Request:
    """Bookkeeping for one ``client.request(...)``: its call span, attempts and last HTTP response.

    Subclasses read the provider's data: :meth:`observe` (one streamed event), :meth:`is_final` (the
    stream's last event, which carries the usage), :meth:`record_result` (a parsed result or JSON body).
    ``stream_types`` are the client's ``Stream`` and ``AsyncStream`` classes. Never raises.
    """

    __slots__ = ("attempts", "body_ref", "last_response", "operation", "sending", "span", "stream")

    stream_types: tuple[type[Any], type[Any]]
    provider = "?"

    def __init__(self, span: CallSpan, operation: str, stream: bool) -> None:
        self.span = span
        self.operation = operation
        self.stream = stream
        self.attempts = 0
        self.sending = False
        self.last_response: Any = None
        self.body_ref: weakref.ref[Any] | None = None  # a response whose body the caller reads later
        if stream:
            span.call.set_metadata(stream=True)

    # -- provider hooks ---------------------------------------------------------------------------------
    def observe(self, item: Any) -> None:
        """One streamed event or chunk (a parsed object, or the JSON of an event read from a raw body)."""

    def is_final(self, item: Any) -> bool:
        return False

    def record_result(self, result: Any) -> None:
        """A parsed result, or the JSON body of a raw response."""

    # -- attempts ----------------------------------------------------------------------------------------
    def before_attempt(self, request: Any) -> None:
        self.sending = True
        try:
            self.attempts += 1
            self.last_response = None
            if self.attempts == 1 and request is not None:
                self._record_request_bytes(request)
        except Exception as exc:
            _guard.internal_error(f"{self.provider}_attempt", exc)

    def after_attempt(self, response: Any) -> None:
        self.last_response = response
        if self.attempts == 1 and self.span.call.request_bytes is None and response is not None:
            try:
                self._record_request_bytes(getattr(response, "request", None))
            except Exception as exc:
                _guard.internal_error(f"{self.provider}_attempt", exc)

    def _record_request_bytes(self, request: Any) -> None:
        content = getattr(request, "content", None)
        if isinstance(content, (bytes, bytearray)):
            self.span.call.record_sizes(request_bytes=len(content))

    def _settle(self) -> None:
        call = self.span.call
        if self.attempts > 1:
            call.record_retry(self.attempts - 1)
        response = self.last_response
        call.http_status = None
        if response is not None:
            call.set_http_status(response.status_code)

    # -- Recording ---------------------------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        try:
            self._settle()
            self._record_response_bytes()
        except Exception as err:
            _guard.internal_error(f"{self.provider}_fail", err)
        self.span.end(exc)

    def succeed(self, result: Any) -> Any:
        try:
            self._settle()
            sync_stream, async_stream = self.stream_types
            if isinstance(result, sync_stream):
                return observe_sync_stream(self, result)
            if isinstance(result, async_stream):
                return observe_async_stream(self, result)
            if body_pending(self.last_response):  # with_streaming_response, or with_raw_response of a stream
                self._watch_body()
                return result
            self._record_response_bytes()
            self.record_result(result)
        except Exception as exc:
            _guard.internal_error(f"{self.provider}_result", exc)
        self.span.end(None)
        return result

    def _watch_body(self) -> None:
        """The call ends when the body the caller reads later does (see :func:`watch_body`)."""
        response, self.last_response = self.last_response, None  # collectable: its finalizer ends the call
        self.body_ref = weakref.ref(response)
        watch_body(response, self._body_item, self._body_end)

    def _body_item(self, item: Any) -> bool:
        self.observe(item)
        return self.is_final(item)

    def _body_end(self, body: Any, exc: BaseException | None, closed_early: bool) -> None:
        if body is not None:
            try:
                self.record_result(body)
            except Exception as err:
                _guard.internal_error(f"{self.provider}_result", err)
        self.end_stream(exc, closed_early)

    def _record_response_bytes(self) -> None:
        response = self.last_response
        if response is None and self.body_ref is not None:
            response = self.body_ref()
        if response is not None:
            downloaded = getattr(response, "num_bytes_downloaded", None)
            if isinstance(downloaded, int) and downloaded > 0:
                self.span.call.record_sizes(response_bytes=downloaded)

    def raw_body(self) -> Any:
        """The JSON body of the last response when it is already in memory (``with_raw_response``)."""
        response = self.last_response
        if response is None or not hasattr(response, "_content"):
            return None
        try:
            return response.json()
        except Exception:
            return None

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
            _guard.internal_error(f"{self.provider}_stream_end", err)
        self.span.end(exc)


def attempt_wrapper(original: Callable[..., Any], is_async: bool, active: contextvars.ContextVar[Any],
                    mark: str, request_of: Callable[[tuple[Any, ...]], Any],
                    response_of: Callable[[Any], Any]) -> Callable[..., Any]:
    """``original``, the client's one-attempt method, wrapped to count the attempts of the active
    :class:`Request`: ``request_of(args)`` is the HTTP request it sends (or None), ``response_of(result)``
    the HTTP response it got. Exceptions propagate unchanged."""
    if is_async:

        @functools.wraps(original)
        async def async_attempt(self: Any, *args: Any, **kwargs: Any) -> Any:
            rec = active.get()
            if rec is None or rec.sending:
                return await original(self, *args, **kwargs)
            rec.before_attempt(request_of(args))
            try:
                result = await original(self, *args, **kwargs)
            finally:
                rec.sending = False
            rec.after_attempt(response_of(result))
            return result

        setattr(async_attempt, mark, True)
        return async_attempt

    @functools.wraps(original)
    def attempt(self: Any, *args: Any, **kwargs: Any) -> Any:
        rec = active.get()
        if rec is None or rec.sending:
            return original(self, *args, **kwargs)
        rec.before_attempt(request_of(args))
        try:
            result = original(self, *args, **kwargs)
        finally:
            rec.sending = False
        rec.after_attempt(response_of(result))
        return result

    setattr(attempt, mark, True)
    return attempt


def observe_sync_stream(rec: Request, stream: Any) -> Any:
    """``stream`` (the client's ``Stream``) with every item shown to ``rec``; the call ends with it."""
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


def observe_async_stream(rec: Request, stream: Any) -> Any:
    """``stream`` (the client's ``AsyncStream``) with every item shown to ``rec``; the call ends with it."""
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
