"""Context propagation: one ContextVar per concern (current run, current step, current call).

asyncio tasks (and ``gather``) copy the context when they are created, so nesting follows them for free.
Threads do not: :func:`wrap` carries agentmeter's context (and only agentmeter's) into a callable for
another thread, and ``concurrent.futures.ThreadPoolExecutor.submit`` is wrapped to do that by default
(``configure(propagate_threads=False)`` turns it off).

The ContextVars never hold a run, step or call directly: they hold a small :class:`Ref` whose ``handle``
is cleared when the span ends. A context copied while a run was open (a ``loop.call_later`` timer, a
long-lived task, an HTTP client's keep-alive timer) therefore keeps only that small object alive, never
the finished run with its steps and captured values.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import concurrent.futures  # ~5 ms: loaded when thread propagation is switched on

    from ._model import Call, Run, Step

__all__ = ["Ref", "current_call", "current_run", "current_step", "wrap"]


class Ref:
    """What agentmeter's ContextVars hold: a span's ``handle`` while it is open, None once it ended.

    ``ident`` (the span's id) and ``run_id`` outlive the handle, so a span started later in a context
    copied from this one still knows where it came from.
    """

    __slots__ = ("handle", "ident", "run_id")

    def __init__(self, handle: Any, ident: str, run_id: str) -> None:
        self.handle = handle
        self.ident = ident
        self.run_id = run_id


run_var: ContextVar[Ref | None] = ContextVar("agentmeter_run", default=None)
step_var: ContextVar[Ref | None] = ContextVar("agentmeter_step", default=None)
call_var: ContextVar[Ref | None] = ContextVar("agentmeter_call", default=None)

R = TypeVar("R")


def current_run() -> Run | None:
    """The run active in this context, or None. Never raises."""
    ref = run_var.get()
    return None if ref is None else ref.handle


def current_step() -> Step | None:
    """The innermost step active in this context, or None. Never raises."""
    ref = step_var.get()
    return None if ref is None else ref.handle


def current_call() -> Call | None:
    """The API call being recorded in this context, or None. Never raises."""
    ref = call_var.get()
    return None if ref is None else ref.handle


def wrap(fn: Callable[..., R]) -> Callable[..., R]:
    """Return ``fn`` bound to the current run and step, to be called on another thread.

    Use it for threads that are not a ``ThreadPoolExecutor`` (``threading.Thread(target=wrap(work))``).
    Only agentmeter's context travels; the user's own context variables are untouched.
    """
    run, step = run_var.get(), step_var.get()
    if run is None or run.handle is None:
        return fn

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> R:
        t_run = run_var.set(run)
        t_step = step_var.set(step)
        try:
            return fn(*args, **kwargs)
        finally:
            step_var.reset(t_step)
            run_var.reset(t_run)

    return bound


# concurrent.futures (and the logging it imports) is loaded when the settings are first applied (the first
# tracked call or configure()), not by ``import agentmeter``.
_original_submit: Callable[..., Any] | None = None


def _submit(self: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any,
            **kwargs: Any) -> concurrent.futures.Future[Any]:
    ref = run_var.get()
    if ref is not None and ref.handle is not None:
        fn = wrap(fn)
    assert _original_submit is not None  # set before _submit is installed
    return _original_submit(self, fn, *args, **kwargs)  # type: ignore[no-any-return]


def _executor() -> type[concurrent.futures.ThreadPoolExecutor]:
    global _original_submit
    import concurrent.futures  # ~5 ms: loaded when thread propagation is switched on

    cls = concurrent.futures.ThreadPoolExecutor
    if _original_submit is None:
        _original_submit = cls.submit
        _submit.__doc__ = cls.submit.__doc__
        _submit.__wrapped__ = cls.submit  # type: ignore[attr-defined]
    return cls


def set_thread_propagation(on: bool) -> None:
    """Install or remove the ThreadPoolExecutor.submit wrapper."""
    if not on and _original_submit is None:
        return  # never installed: nothing to remove (and no reason to import concurrent.futures)
    try:
        cls = _executor()
    except RuntimeError:  # settings first read at interpreter exit: no new atexit hooks allowed then
        return
    cls.submit = _submit if on else _original_submit  # type: ignore[method-assign,assignment]


def thread_propagation_enabled() -> bool:
    cf = sys.modules.get("concurrent.futures")
    return cf is not None and _original_submit is not None and cf.ThreadPoolExecutor.submit is _submit
