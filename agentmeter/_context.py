"""Context propagation: one ContextVar per concern (current run, current step, current call).

asyncio tasks (and ``gather``) copy the context when they are created, so nesting follows them for free.
Threads do not: :func:`wrap` carries agentmeter's context (and only agentmeter's) into a callable for
another thread, and ``concurrent.futures.ThreadPoolExecutor.submit`` is wrapped to do that by default
(``configure(propagate_threads=False)`` turns it off).
"""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from ._model import Call, Run, Step

__all__ = ["current_call", "current_run", "current_step", "wrap"]

run_var: ContextVar[Run | None] = ContextVar("agentmeter_run", default=None)
step_var: ContextVar[Step | None] = ContextVar("agentmeter_step", default=None)
call_var: ContextVar[Call | None] = ContextVar("agentmeter_call", default=None)

R = TypeVar("R")


def current_run() -> Run | None:
    """The run active in this context, or None. Never raises."""
    return run_var.get()


def current_step() -> Step | None:
    """The innermost step active in this context, or None. Never raises."""
    return step_var.get()


def current_call() -> Call | None:
    """The API call being recorded in this context, or None. Never raises."""
    return call_var.get()


def wrap(fn: Callable[..., R]) -> Callable[..., R]:
    """Return ``fn`` bound to the current run and step, to be called on another thread.

    Use it for threads that are not a ``ThreadPoolExecutor`` (``threading.Thread(target=wrap(work))``).
    Only agentmeter's context travels; the user's own context variables are untouched.
    """
    run, step = run_var.get(), step_var.get()
    if run is None:
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


_original_submit = concurrent.futures.ThreadPoolExecutor.submit


def _submit(self: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any,
            **kwargs: Any) -> concurrent.futures.Future[Any]:
    if run_var.get() is not None:
        fn = wrap(fn)
    return _original_submit(self, fn, *args, **kwargs)


_submit.__doc__ = _original_submit.__doc__
_submit.__wrapped__ = _original_submit  # type: ignore[attr-defined]


def set_thread_propagation(on: bool) -> None:
    """Install or remove the ThreadPoolExecutor.submit wrapper."""
    concurrent.futures.ThreadPoolExecutor.submit = _submit if on else _original_submit  # type: ignore[method-assign,assignment]


def thread_propagation_enabled() -> bool:
    return concurrent.futures.ThreadPoolExecutor.submit is _submit
