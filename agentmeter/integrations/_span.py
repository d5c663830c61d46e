"""One API call recorded with the public ``track_call`` API, opened and closed at different moments.

A streamed response outlives the function that started it, so the call cannot be a plain ``with`` block.
:class:`CallSpan` opens ``track_call`` inside a private copy of the caller's context: the call nests under
the caller's current run and step, yet the caller's own context is never changed (no "current call" left
behind while a stream is being read, no implicit run leaking into later code), and the span can be closed
later from wherever the stream ends.
"""

from __future__ import annotations

import contextvars
from typing import Any

from .. import _guard
from .._model import Call
from .._tracking import track_call

__all__ = ["CallSpan"]


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
