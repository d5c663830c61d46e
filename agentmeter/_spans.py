"""Spans at run time: opening and closing runs, steps and calls, and the frozen records they become.

Opening a span makes a handle (:mod:`agentmeter._model`) and binds it in the ContextVars; closing it freezes
the handle (:mod:`agentmeter._record`) into its run, and a finished run is frozen and handed to the processor
without blocking. Every piece of bookkeeping here is guarded by the callers (:func:`safe_begin`,
:func:`safe_end`): an internal failure is logged and counted, never raised into the user's code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, TypeVar

from . import _clock, _guard, _ids, _state
from ._context import call_var, run_var, step_var
from ._status import CANCELLED, RUNNING, SUCCESS, error_fields

if TYPE_CHECKING:
    from ._model import Call, Run, Step
    from ._record import freeze_call, freeze_run, freeze_step
else:
    # The model (attrs classes) and the frozen records are loaded when the first tracker is made, not by
    # ``import agentmeter``: attrs alone takes longer to import than the rest of agentmeter.
    Run = Step = Call = freeze_call = freeze_run = freeze_step = None

__all__ = ["Frame", "close_open_runs", "forget_open_runs", "has_open_runs", "load_model", "safe_begin", "safe_end"]

H = TypeVar("H", "Run", "Step", "Call")

#: Runs started and not yet finished, so exit and SIGTERM handlers can record them as cancelled.
_open_runs: dict[str, Run] = {}
#: ids of runs that were open in the parent when this process was forked: the parent owns them. Here they
#: are never exported; steps and calls begun in them become runs of this process (see _begin).
_inherited: set[str] = set()


def load_model() -> None:
    """Import the model and the records (done by the first ``track_*`` call)."""
    global Run, Step, Call, freeze_call, freeze_run, freeze_step
    from ._model import Call, Run, Step
    from ._record import freeze_call, freeze_run, freeze_step


def _now() -> tuple[int, int]:
    return _clock.wall_us(), _clock.monotonic_ns()


def _reset(var: ContextVar[Any], token: Token[Any], previous: Any) -> None:
    try:
        var.reset(token)
    except ValueError:  # closed in another context (e.g. an async generator finalized elsewhere)
        var.set(previous)


# -- runs ---------------------------------------------------------------------------------------------


class Frame:
    """What one open span needs to close itself: the handle, and the ContextVar bindings it made current."""

    __slots__ = ("bindings", "handle", "implicit", "run", "tokens")

    def __init__(self, handle: Run | Step | Call, run: Run, implicit: bool,
                 bindings: tuple[tuple[ContextVar[Any], Any], ...]) -> None:
        self.handle = handle
        self.run = run
        self.implicit = implicit
        self.bindings = bindings
        self.tokens: list[tuple[ContextVar[Any], Token[Any], Any]] = []

    def enter(self) -> None:
        """Make this span current in the running context."""
        tokens = self.tokens
        for var, value in self.bindings:
            previous = var.get()
            tokens.append((var, var.set(value), previous))

    def leave(self) -> None:
        tokens = self.tokens
        while tokens:
            var, token, previous = tokens.pop()
            _reset(var, token, previous)


def _new_run(name: str, agent: str | None, implicit: bool) -> Run:
    wall, mono = _now()
    parent = run_var.get()
    run = Run(
        _ids.new_id(), name, agent, wall, mono,
        parent_run_id=parent.run_id if parent is not None and not implicit else None,
        implicit=implicit,
    )
    _open_runs[run.run_id] = run
    if _state.current_processor() is None:
        # start the exporter with the first run, not when it ends: Python 3.12+ refuses new threads at
        # exit, so a run still open then could otherwise only be spooled, not delivered
        _state.processor()
    return run


def _seal_and_submit(run: Run) -> None:
    """End the run, freeze it and hand the frozen record to the processor (which never blocks)."""
    run.end_ns = end_ns = _clock.monotonic_ns()
    run.end_us = run.start_us + (end_ns - run.start_ns) // 1000
    run.ended = True
    _open_runs.pop(run.run_id, None)
    finished = freeze_run(run, _state.settings().capture_max_chars)
    _state.processor().submit(finished)


def _finish(handle: Run | Step | Call, exc: BaseException | None) -> None:
    if exc is None:
        if handle.status == RUNNING:
            handle.status = SUCCESS
    else:
        handle.status, handle.error_type, handle.error_message = error_fields(exc)


def _begin(kind: type[H], name: str, options: Mapping[str, Any]) -> Frame:
    if kind is Run:
        run = _new_run(name, options.get("agent"), implicit=False)
        tags, metadata = options.get("tags"), options.get("metadata")
        if tags:
            run.add_tags(tags)
        if metadata:
            run.set_metadata(metadata)
        frame = Frame(run, run, False, ((run_var, run), (step_var, None), (call_var, None)))
        frame.enter()
        return frame
    run_or_none = run_var.get()
    inherited = run_or_none is not None and run_or_none.run_id in _inherited
    if run_or_none is None or inherited:
        run = _new_run(name, None, implicit=True)
        if inherited:  # a forked child's work in the parent's run: its own run, pointing at the parent's
            run.parent_run_id = run_or_none.run_id  # type: ignore[union-attr]
        run_or_none = None
        parent_id = None
    else:
        run = run_or_none
        parent = step_var.get()
        parent_id = parent.step_id if parent is not None and parent.run_id is run.run_id else None
    mono = _clock.monotonic_ns()
    # wall time derived from the run's start and the monotonic clock: one clock read, consistent durations
    wall = run.start_us + (mono - run.start_ns) // 1000
    handle: Step | Call
    if kind is Step:
        handle = Step(_ids.new_id(), run.run_id, parent_id, name, options["kind"], wall, mono)
        run.open_steps[handle.step_id] = handle
        var: ContextVar[Any] = step_var
    else:
        handle = Call(_ids.new_id(), run.run_id, parent_id, options["provider"], options["operation"] or name,
                      options["model"], wall, mono)
        run.open_calls[handle.call_id] = handle
        var = call_var
    if run_or_none is None:
        frame = Frame(handle, run, True, ((run_var, run), (var, handle)))
    else:
        frame = Frame(handle, run, False, ((var, handle),))
    frame.enter()
    return frame


def _end(frame: Frame, exc: BaseException | None) -> None:
    handle, run = frame.handle, frame.run
    if (handle is run and run.ended) or run.run_id in _inherited:
        # closed as cancelled at exit or on SIGTERM (and sent then), or the parent's (forked child)
        frame.leave()
        return
    if exc is None:
        if handle.status == RUNNING:
            handle.status = SUCCESS
    else:
        handle.status, handle.error_type, handle.error_message = error_fields(exc)
    frame.leave()
    kind = type(handle)
    if kind is Run:
        _seal_and_submit(run)
        return
    handle.end_ns = end_ns = _clock.monotonic_ns()
    handle.end_us = handle.start_us + (end_ns - handle.start_ns) // 1000
    handle.ended = True
    if run.ended:
        if run.status != CANCELLED:  # a run closed at exit or on SIGTERM expects its open spans to stop
            _guard.warn("late_span", "a step or call finished after its run ended; recorded as unfinished",
                        run=run.name, span=getattr(handle, "name", getattr(handle, "operation", "")))
        return
    max_chars = _state.settings().capture_max_chars
    if kind is Step:
        run.steps.append(freeze_step(handle, max_chars))
        run.open_steps.pop(handle.step_id, None)  # type: ignore[union-attr,arg-type]
    else:
        run.calls.append(freeze_call(handle, max_chars))
        run.open_calls.pop(handle.call_id, None)  # type: ignore[union-attr]
    if frame.implicit:
        _finish(run, exc)
        _seal_and_submit(run)


def safe_begin(kind: type[H], name: str, options: Mapping[str, Any]) -> Frame | None:
    if not _state.enabled():
        return None
    try:
        return _begin(kind, name, options)
    except Exception as exc:
        _guard.internal_error(f"begin_{kind.__name__.lower()}", exc)
        return None


def safe_end(frame: Frame | None, exc: BaseException | None) -> None:
    if frame is None:
        return
    try:
        _end(frame, exc)
    except Exception as err:
        _guard.internal_error("end_span", err)


def has_open_runs() -> bool:
    return bool(_open_runs)


def forget_open_runs(inherited: bool = False) -> None:
    """Forget every open run without recording it. ``inherited`` (a forked child): the parent owns them,
    and work begun in them here is recorded as this process's own runs."""
    if inherited:
        _inherited.update(_open_runs)
    _open_runs.clear()


def close_open_runs(reason: str = "InterpreterExit", message: str = "process exited before the run ended") -> int:
    """Record every run still open as ``cancelled`` with its partial steps (at exit, on SIGTERM)."""
    closed = 0
    for run in list(_open_runs.values()):
        if run.ended:
            continue
        run.status, run.error_type, run.error_message = CANCELLED, reason, message
        _seal_and_submit(run)
        closed += 1
    return closed


# -- capture ------------------------------------------------------------------------------------------


_snapshot: Callable[[Any], Any] | None = None


def _load_snapshot() -> Callable[[Any], Any]:
    # _capture (and dataclasses with it) loads with the first captured value, not with agentmeter
    global _snapshot
    from ._capture import snapshot

    _snapshot = snapshot
    return snapshot


def capture_inputs(frame: Frame | None, sig: inspect.Signature | None, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> None:
    if frame is None or sig is None:
        return
    try:
        bound = sig.bind_partial(*args, **kwargs)
        values = {k: v for k, v in bound.arguments.items() if k not in ("self", "cls")}
        handle = frame.handle
        handle.inputs = (_snapshot or _load_snapshot())(values)  # type: ignore[union-attr]
        handle.captured = True  # type: ignore[union-attr]
    except Exception as exc:
        _guard.internal_error("capture_inputs", exc)


def capture_output(frame: Frame | None, value: Any) -> None:
    if frame is None:
        return
    try:
        handle = frame.handle
        if getattr(handle, "captured", False):
            handle.output = (_snapshot or _load_snapshot())(value)  # type: ignore[union-attr]
    except Exception as exc:
        _guard.internal_error("capture_output", exc)


def resume(frame: Frame | None) -> None:
    """Make a generator's span current again while its body runs. Never raises."""
    if frame is not None:
        _guarded(frame.enter, "resume_generator")


def pause(frame: Frame | None) -> None:
    """Un-bind a generator's span while its consumer runs. Never raises."""
    if frame is not None:
        _guarded(frame.leave, "pause_generator")


def _guarded(step: Callable[[], None], where: str) -> None:
    try:
        step()
    except Exception as exc:
        _guard.internal_error(where, exc)
