"""Response bodies read after the call returned (``with_streaming_response``, ``with_raw_response`` of a
stream): :func:`watch_body` keeps the call open until the body is read, closed or dropped."""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from .. import _guard

__all__ = ["body_pending", "watch_body"]

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
