"""Context propagation: one ContextVar per concern (current run, current step, current call).

asyncio tasks (and ``gather``) copy the context when they are created, so nesting follows them for free.
Threads do not: :func:`wrap` carries agentmeter's context (and only agentmeter's) into a callable for
another thread, and ``concurrent.futures.ThreadPoolExecutor.submit`` is wrapped to do that by default
(``configure(propagate_threads=False)`` turns it off).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import concurrent.futures

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


# concurrent.futures (and the logging it imports) is loaded when the settings are first applied (the first
# tracked call or configure()), not by ``import agentmeter``.
_original_submit: Callable[..., Any] | None = None


def _submit(self: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any,
            **kwargs: Any) -> concurrent.futures.Future[Any]:
    if run_var.get() is not None:
        fn = wrap(fn)
    assert _original_submit is not None  # set before _submit is installed
    return _original_submit(self, fn, *args, **kwargs)  # type: ignore[no-any-return]


def _executor() -> type[concurrent.futures.ThreadPoolExecutor]:
    global _original_submit
    import concurrent.futures

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
