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
later. :class:`~agentmeter.integrations._request.Request` is what both integrations record per
``request()`` (``_request.py``); ``_bodies.py`` follows a body the caller reads later. The provider modules
read their own usage and events.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from .. import _guard
from .._model import Call
from .._tracking import track_call
from ._values import attr

__all__ = ["CallSpan", "Patches", "Recording", "as_int", "attr", "record_calls"]


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


#: the methods that make a new client from one (``with_options()``, ``copy()``): patched on an instrumented
#: client so that what they return is instrumented too
_DERIVE = ("copy", "with_options")


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
                    for name in (*self.names, *_DERIVE, self.mark):
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
        for name in _DERIVE:
            if hasattr(type(client), name):
                object.__setattr__(client, name, functools.partial(self._derive, name, client, wrap))
        object.__setattr__(client, self.mark, True)
        self.instances.add(client)

    def _derive(self, name: str, client: Any, wrap: Wrap, *args: Any, **kwargs: Any) -> Any:
        """``client.copy(...)`` / ``client.with_options(...)``: the new client instrumented like ``client``."""
        derived = getattr(type(client), name)(client, *args, **kwargs)
        try:
            if getattr(client, self.mark, False):
                self.instrument(derived, None, wrap)
        except Exception as exc:
            _guard.internal_error(f"{self.mark.strip('_')}.derive", exc)
        return derived
