"""Streams: decorated generator and async generator functions.

Calling a decorated generator function opens its span at once (:func:`agentmeter._spans.open_stream`),
bound to the run and step current at the call, and returns a generator whose body runs with that span
current; the run stays open until the stream ends. A stream ends when it is exhausted (``success``), when
its body raises (``error``, or ``cancelled`` for a cancellation), when its consumer stops early (``break``,
``close()``/``aclose()``, a disconnect: ``cancelled`` with error type ``GeneratorExit``, after its cleanup
ran with the span current), or when it is garbage-collected unfinished (``cancelled``/``Abandoned``). With
capture on, its output is what it yielded, size-capped like any captured value.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any

from . import _guard, _state
from ._spans import (
    CLOSED_EARLY,
    Frame,
    StreamGuard,
    capture_inputs,
    capture_output,
    open_stream,
    pause,
    resume,
    safe_end,
    snapshot,
)

__all__ = ["StreamFunction", "agen_body", "gen_body"]


class StreamFunction:
    """A decorated generator (or async generator) function. Calling it opens its span, bound to the run and
    step current at the call, and returns the generator.

    It looks like the function it wraps: ``inspect.isgeneratorfunction`` / ``isasyncgenfunction`` stay
    true, and the signature, name, docstring and ``__wrapped__`` are the function's, so frameworks that
    inspect it (FastAPI dependencies, pytest fixtures, LangChain runnables) treat it as before. It binds
    as a method, and pickles by reference like a function.
    """

    def __init__(self, func: Callable[..., Any], body: Callable[..., Any], kind: type[Any], name: str,
                 capture: bool | None, options: Mapping[str, Any], sig: inspect.Signature | None) -> None:
        functools.update_wrapper(self, func)
        for attr in ("__code__", "__defaults__", "__kwdefaults__"):  # what makes inspect see a function
            if hasattr(func, attr):
                setattr(self, attr, getattr(func, attr))
        if sig is not None:
            self.__signature__ = sig
        self._am = (func, body, kind, name, capture, options, sig)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        func, body, kind, name, capture, options, sig = self._am
        frame = open_stream(kind, name, options)
        if frame is not None and sig is not None and (capture or (capture is None and _state.capture_default)):
            capture_inputs(frame, sig, args, kwargs)
            collect_items(frame)
        try:
            gen = func(*args, **kwargs)
        except BaseException as exc:  # wrong arguments: raised at the call, as without the decorator
            safe_end(frame, exc)
            raise
        return body(frame, gen, StreamGuard(frame))

    def __get__(self, instance: Any, owner: type[Any] | None = None) -> Any:
        return self if instance is None else types.MethodType(self, instance)

    def __reduce__(self) -> str:
        return str(self.__dict__.get("__qualname__") or self.__dict__["_am"][3])

    def __repr__(self) -> str:
        return f"<agentmeter tracked {self.__dict__.get('__qualname__')}>"


def gen_body(frame: Frame | None, gen: Generator[Any, Any, Any], guard: StreamGuard) -> Generator[Any, Any, Any]:
    # ``guard`` lives in this generator's frame only: freed with it, it ends a span nobody ended
    method = send = gen.send
    value: Any = None
    while True:
        resume(frame)
        try:
            item = method(value)
        except StopIteration as stop:
            pause(frame)
            capture_items(frame, stop.value)
            safe_end(frame, None)
            return stop.value
        except BaseException as exc:
            pause(frame)
            capture_items(frame)  # what it yielded before failing
            safe_end(frame, exc)
            raise
        pause(frame)
        if frame is not None and frame.items is not None:
            collect(frame, item)
        method = send
        try:
            value = yield item
        except GeneratorExit:  # close(), a break, the generator dropped: its cleanup runs in the span
            resume(frame)
            try:
                gen.close()
            except BaseException as exc:
                pause(frame)
                safe_end(frame, exc)
                raise
            pause(frame)
            capture_items(frame)
            safe_end(frame, None, CLOSED_EARLY)
            raise
        except BaseException as thrown:  # thrown in by the consumer: forward it
            method, value = gen.throw, thrown


async def agen_body(frame: Frame | None, agen: AsyncGenerator[Any, Any],
                     guard: StreamGuard) -> AsyncGenerator[Any, Any]:
    method = asend = agen.asend
    value: Any = None
    while True:
        resume(frame)
        try:
            item = await method(value)
        except StopAsyncIteration:
            pause(frame)
            capture_items(frame)
            safe_end(frame, None)
            return
        except BaseException as exc:  # a failure, or the consumer's task cancelled while the body awaits
            pause(frame)
            capture_items(frame)
            safe_end(frame, exc)
            raise
        pause(frame)
        if frame is not None and frame.items is not None:
            collect(frame, item)
        method = asend
        try:
            value = yield item
        except GeneratorExit:  # aclose(), an ``async for`` left early, a disconnect
            resume(frame)
            try:
                await agen.aclose()
            except BaseException as exc:
                pause(frame)
                safe_end(frame, exc)
                raise
            pause(frame)
            capture_items(frame)
            safe_end(frame, None, CLOSED_EARLY)
            raise
        except BaseException as thrown:
            method, value = agen.athrow, thrown



# -- what a stream yielded ------------------------------------------------------------------------------


def collect_items(frame: Frame | None) -> None:
    """Start collecting a stream's yielded values when its inputs were captured. Never raises."""
    if frame is not None and getattr(frame.handle, "captured", False):
        frame.items = []
        frame.room = _state.settings().capture_max_chars


def collect(frame: Frame, item: Any) -> None:
    """Keep a captured copy of one yielded value, within the size cap. Never raises."""
    try:
        items = frame.items
        if items is None or frame.room < 0:
            return
        if frame.room == 0:
            frame.room = -1  # the cap is reached: the output is marked truncated
            return
        snap = snapshot(item)
        items.append(snap)
        frame.room = max(frame.room - max(snap.size, 1), 0)
    except Exception as exc:
        _guard.internal_error("capture_item", exc)


def capture_items(frame: Frame | None, returned: Any = None) -> None:
    """A stream's output: what it yielded (one string when every item was a string), or, when it yielded
    nothing, what it returned. The user's ``set_output`` wins. Never raises."""
    if frame is None or frame.items is None:
        return
    try:
        items, frame.items = frame.items, None
        handle = frame.handle
        if handle is None or handle.output_set:
            return
        if not items:
            capture_output(frame, returned)
            return
        from ._capture import Snapshot  # re, dataclasses: with the first captured value

        values = [s.value for s in items]
        truncated = frame.room < 0 or any(s.truncated for s in items)
        value: Any = "".join(values) if all(isinstance(v, str) for v in values) else values
        handle.output = Snapshot(value, truncated, sum(s.size for s in items))
    except Exception as exc:
        _guard.internal_error("capture_output", exc)
