"""One API call recorded with the public ``track_call`` API, opened and closed at different moments.

A streamed response outlives the function that started it, so the call cannot be a plain ``with`` block.
:class:`CallSpan` opens ``track_call`` inside a private copy of the caller's context: the call nests under
the caller's current run and step, yet the caller's own context is never changed (no "current call" left
behind while a stream is being read, no implicit run leaking into later code), and the span can be closed
later from wherever the stream ends.

:func:`record_calls` is the method wrapper both integrations use: it records the outermost call of an
instrumented method once (nested instrumented calls pass through) with a :class:`Recording`.
:class:`Patches` keeps what an integration's ``instrument()`` patched, on classes and on instances, so
that instrumenting is idempotent and ``uninstrument()`` restores every original.

The OpenAI and Anthropic clients are generated from the same template (Stainless): ``request()`` runs a
retry loop whose every attempt goes through one method (``_send_request`` / ``_attempt_request``), and
returns a parsed result, a ``Stream`` / ``AsyncStream``, or a raw response whose body the caller reads
later. :class:`Request` is what both integrations record per ``request()``: :func:`attempt_wrapper` counts
the attempts, :func:`observe_sync_stream` / :func:`observe_async_stream` keep the call open until a stream
ends, and :func:`watch_body` until a body read later (``with_streaming_response``, ``with_raw_response`` of
a stream) ends. The provider modules read their own usage and events.
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from typing import Any, Protocol, TypeVar

from .. import _guard
from .._model import Call
from .._tracking import track_call

__all__ = ["CallSpan", "Patches", "Recording", "Request", "attempt_wrapper", "body_pending", "observe_async_stream",
           "observe_sync_stream", "operation_from_path", "record_calls", "watch_body"]


class CallSpan:
    """An open call: ``span.call`` is the :class:`agentmeter.Call` handle; :meth:`end` closes it once."""

    __slots__ = ("_ctx", "_tracker", "call", "closed")

    def __init__(self, provider: str, operation: str, model: str | None) -> None:
        self._ctx = contextvars.copy_context()
        self._tracker = track_call(provider, operation, model=model)
        self.call: Call = self._ctx.run(self._tracker.__enter__)
        self.closed = False

    def end(self, exc: BaseException | None = None) -> None:
        """Finish the call (status from ``exc``: None = success). Idempotent; never raises."""
        if self.closed:
            return
        self.closed = True
        try:
            self._ctx.run(self._tracker.__exit__, type(exc) if exc is not None else None, exc, None)
        except Exception as err:  # the context is in use on another thread: close it from a fresh copy
            _guard.internal_error("integration_end_call", err)


def attr(obj: Any, name: str) -> Any:
    """``obj.name`` or ``obj[name]`` (pydantic models and plain dicts alike), else None."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Recording(Protocol):
    """One call being recorded: told how the wrapped method ended."""

    def fail(self, exc: BaseException) -> None:
        """The method raised ``exc`` (re-raised afterwards). Never raises."""

    def succeed(self, result: Any) -> Any:
        """The method returned ``result``; returns what the caller gets (``result`` or a wrapper of it).
        Never raises."""


R = TypeVar("R", bound=Recording)


def record_calls(
    original: Callable[..., Any],
    is_async: bool,
    active: contextvars.ContextVar[R | None],
    begin: Callable[[Any, tuple[Any, ...], dict[str, Any]], R | None],
    mark: str,
) -> Callable[..., Any]:
    """``original`` (a method: ``self`` first) wrapped so that each outermost call is recorded.

    ``begin(self, args, kwargs)`` opens the recording (it may change ``kwargs`` before the call) or
    returns None to let the call pass unrecorded; while the call runs the recording is ``active``, and a
    call made while one is active passes straight through. The method's exceptions propagate unchanged.
    The wrapper is async when ``is_async`` and carries the attribute ``mark``.
    """
    if is_async:

        @functools.wraps(original)
        async def async_method(self: Any, *args: Any, **kwargs: Any) -> Any:
            rec = None if active.get() is not None else begin(self, args, kwargs)
            if rec is None:
                return await original(self, *args, **kwargs)
            token = active.set(rec)
            try:
                result = await original(self, *args, **kwargs)
            except BaseException as exc:
                rec.fail(exc)
                raise
            finally:
                active.reset(token)
            return rec.succeed(result)

        setattr(async_method, mark, True)
        return async_method

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        rec = None if active.get() is not None else begin(self, args, kwargs)
        if rec is None:
            return original(self, *args, **kwargs)
        token = active.set(rec)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            rec.fail(exc)
            raise
        finally:
            active.reset(token)
        return rec.succeed(result)

    setattr(method, mark, True)
    return method


#: ``wrap(name, is_async, original)`` -> the instrumented method
Wrap = Callable[[str, bool, Callable[..., Any]], Callable[..., Any]]


def _class_method(name: str, self: Any, *args: Any, **kwargs: Any) -> Any:
    return getattr(type(self), name)(self, *args, **kwargs)


class Patches:
    """What one integration patched: the methods ``names`` of its client classes ``sync_cls`` and
    ``async_cls`` (originals kept) or of single clients (marked with the attribute ``mark``), and its
    ``include_usage`` option. Behind the integration's ``instrument()``, ``uninstrument()`` and
    ``instrumented()``."""

    def __init__(self, mark: str, names: tuple[str, ...], sync_cls: type[Any], async_cls: type[Any],
                 expects: str) -> None:
        self.mark = mark
        self.names = names
        self.sync_cls = sync_cls
        self.async_cls = async_cls
        self.expects = expects  # the clients instrument() accepts, for its TypeError
        self.include_usage = False
        self.lock = threading.Lock()
        self.class_originals: dict[tuple[type[Any], str], Any] = {}
        self.instances: weakref.WeakSet[Any] = weakref.WeakSet()

    def instrument(self, client: Any, include_usage: bool | None, wrap: Wrap) -> None:
        """Patch ``client``, or both classes when None, with ``wrap``; idempotent. Raises ``TypeError``
        for an object that is not one of the clients."""
        if include_usage is not None:
            self.include_usage = bool(include_usage)
        with self.lock:
            if client is None:
                for cls in (self.sync_cls, self.async_cls):
                    self._patch_class(cls, cls is self.async_cls, wrap)
                return
            if not isinstance(client, (self.sync_cls, self.async_cls)):
                raise TypeError(f"instrument() expects {self.expects}, got {type(client).__name__}")
            self._patch_instance(client, isinstance(client, self.async_cls), wrap)

    def uninstrument(self, client: Any) -> None:
        """Restore ``client``'s own methods, or, with None, every patched instance's and class's (and
        turn ``include_usage`` off). Never raises."""
        with self.lock:
            for inst in [client] if client is not None else list(self.instances):
                if inst.__dict__.get(self.mark):
                    for name in (*self.names, self.mark):
                        inst.__dict__.pop(name, None)
                self.instances.discard(inst)
            if client is None:
                for (cls, name), original in list(self.class_originals.items()):
                    setattr(cls, name, original)
                    del self.class_originals[(cls, name)]
                self.include_usage = False

    def instrumented(self, client: Any) -> bool:
        """True when ``client`` is patched itself, or its class (with None: the sync class) is."""
        if client is not None and getattr(client, self.mark, False):
            return True
        cls = self.async_cls if isinstance(client, self.async_cls) else self.sync_cls
        return (cls, self.names[0]) in self.class_originals

    def _patch_class(self, cls: type[Any], is_async: bool, wrap: Wrap) -> None:
        for name in self.names:
            if (cls, name) in self.class_originals or name not in cls.__dict__:
                continue
            original = cls.__dict__[name]
            self.class_originals[(cls, name)] = original
            setattr(cls, name, wrap(name, is_async, original))

    def _patch_instance(self, client: Any, is_async: bool, wrap: Wrap) -> None:
        if getattr(client, self.mark, False):
            return
        for name in self.names:
            if hasattr(type(client), name):
                # the wrapper calls the class's method as it is at call time, so a class-level patch and
                # this one compose (record_calls' active-call guard makes the inner one pass through)
                wrapper = wrap(name, is_async, functools.partial(_class_method, name))
                object.__setattr__(client, name, functools.partial(wrapper, client))
        object.__setattr__(client, self.mark, True)
        self.instances.add(client)


# -- response bodies read after the call returned --------------------------------------------------------

#: a JSON body larger than this is not kept for its usage (the call is still timed to the body's end)
MAX_JSON_BODY = 32 * 1024 * 1024


def body_pending(response: Any) -> bool:
    """True when the body of ``response`` (an httpx / httpx2 response) has not been read yet."""
    return (response is not None and not getattr(response, "is_closed", True)
            and not getattr(response, "is_stream_consumed", True) and not hasattr(response, "_content"))


class _SSE:
    """Incremental server-sent-events parser: bytes in, the ``data`` of each complete event out."""

    __slots__ = ("data", "pending")

    def __init__(self) -> None:
        self.pending = b""
        self.data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        events: list[bytes] = []
        lines = (self.pending + chunk).split(b"\n")
        self.pending = lines.pop()
        for line in lines:
            line = line.rstrip(b"\r")
            if not line:
                if self.data:
                    events.append(b"\n".join(self.data))
                    self.data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self.data.append(value[1:] if value.startswith(b" ") else value)
        return events


class _Body:
    """Follows one response body: SSE events (or the JSON body) and its end."""

    __slots__ = ("buffer", "done", "in_read", "on_end", "on_item", "sse", "terminal", "too_big")

    def __init__(self, response: Any, on_item: Callable[[Any], bool],
                 on_end: Callable[[Any, BaseException | None, bool], None]) -> None:
        content_type = str(response.headers.get("content-type", ""))
        self.sse: _SSE | None = _SSE() if "text/event-stream" in content_type else None
        self.buffer = bytearray()
        self.too_big = False
        self.on_item = on_item
        self.on_end = on_end
        self.terminal = False  # the stream's last event was seen (a close after it is not an early close)
        self.done = False
        self.in_read = False

    def feed(self, chunk: bytes) -> None:
        try:
            if self.sse is None:
                if len(self.buffer) + len(chunk) <= MAX_JSON_BODY:
                    self.buffer += chunk
                else:
                    self.too_big = True
                    self.buffer = bytearray()
                return
            for data in self.sse.feed(chunk):
                if data.startswith(b"[DONE]"):
                    self.terminal = True
                    continue
                try:
                    item = json.loads(data)
                except ValueError:
                    continue
                if self.on_item(item):
                    self.terminal = True
        except Exception as exc:
            _guard.internal_error("integration_body", exc)

    def finish(self, exc: BaseException | None, closed: bool = False) -> None:
        """The body ended (``closed``: the caller closed it; else it was read to the end, or failed)."""
        if self.done:
            return
        self.done = True
        try:
            body = None
            if self.sse is None and self.buffer and not self.too_big:
                try:
                    body = json.loads(bytes(self.buffer))
                except ValueError:
                    body = None
            complete = not closed or self.terminal or body is not None
            self.buffer = bytearray()
            self.on_end(body, exc, not complete)
        except Exception as err:
            _guard.internal_error("integration_body_end", err)

    def gone(self) -> None:
        self.finish(None, closed=True)


def watch_body(response: Any, on_item: Callable[[Any], bool],
               on_end: Callable[[Any, BaseException | None, bool], None]) -> None:
    """Follow the body of ``response`` (an httpx / httpx2 response not read yet) however the caller reads
    it: ``iter_bytes``/``aiter_bytes`` (which ``read``, ``iter_lines``, ``json`` and openai's ``Stream`` use)
    and ``close``/``aclose`` are wrapped on this one response. ``on_item(event)`` gets each server-sent
    event's JSON and returns True for the stream's last one; ``on_end(json_body, exc, closed_early)`` is
    called once, when the body was read to the end, failed, was closed or was garbage-collected.
    ``json_body`` is the parsed body of a non-streamed (JSON) response, else None. Never raises."""
    body = _Body(response, on_item, on_end)
    iter_bytes, aiter_bytes = response.iter_bytes, response.aiter_bytes
    close, aclose = response.close, response.aclose

    def watched_iter_bytes(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        inner = iter_bytes(*args, **kwargs)
        try:
            while True:
                body.in_read = True
                try:
                    chunk = next(inner)
                except StopIteration:
                    break
                except BaseException as exc:
                    body.finish(exc)
                    raise
                finally:
                    body.in_read = False
                body.feed(chunk)
                yield chunk
        finally:
            inner.close()  # the reader stopped early: httpx closes the response (we see that close)
        body.finish(None)

    async def watched_aiter_bytes(*args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        inner = aiter_bytes(*args, **kwargs)
        try:
            while True:
                body.in_read = True
                try:
                    chunk = await inner.__anext__()
                except StopAsyncIteration:
                    break
                except BaseException as exc:
                    body.finish(exc)
                    raise
                finally:
                    body.in_read = False
                body.feed(chunk)
                yield chunk
        finally:
            await inner.aclose()
        body.finish(None)

    def watched_close() -> None:
        try:
            close()
        finally:
            if not body.in_read:  # the client closing at the end of its own read: the read's end decides
                body.finish(None, closed=True)

    async def watched_aclose() -> None:
        try:
            await aclose()
        finally:
            if not body.in_read:
                body.finish(None, closed=True)

    response.iter_bytes = watched_iter_bytes
    response.aiter_bytes = watched_aiter_bytes
    response.close = watched_close
    response.aclose = watched_aclose
    weakref.finalize(response, body.gone).atexit = False


# -- one request of a Stainless-generated client (openai, anthropic) ------------------------------------

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
