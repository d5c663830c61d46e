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

__all__ = ["Frame", "add_outer_context", "close_open_runs", "forget_open_runs", "has_open_runs", "load_model",
           "remove_outer_context", "safe_begin", "safe_end"]

H = TypeVar("H", "Run", "Step", "Call")

#: Runs started and not yet finished, so exit and SIGTERM handlers can record them as cancelled.
_open_runs: dict[str, Run] = {}


#: Framework integrations (OpenTelemetry, OpenAI Agents, LangChain) register here a function that finds the
#: framework run current in this context, as ``(run, parent_step)``: a step or call opened while no agentmeter
#: run is current (or while only the run that started the framework run is) nests there, so decorated code
#: inside a framework run joins that run's tree.
_outer_contexts: list[Callable[[], tuple[Run, Step | None] | None]] = []


def add_outer_context(finder: Callable[[], tuple[Run, Step | None] | None]) -> None:
    if finder not in _outer_contexts:
        _outer_contexts.append(finder)


def remove_outer_context(finder: Callable[[], tuple[Run, Step | None] | None]) -> None:
    if finder in _outer_contexts:
        _outer_contexts.remove(finder)


def _outer(current: Run | None) -> tuple[Run, Step | None] | None:
    for finder in _outer_contexts:
        found = finder()
        if found is not None and (current is None or found[0].parent_run_id == current.run_id):
            return found
    return None


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
    if parent is None and not implicit and _outer_contexts:  # a run started inside a framework's run
        found = _outer(None)
        parent = found[0] if found is not None else None
    run = Run(
        _ids.new_id(), name, agent, wall, mono,
        parent_run_id=parent.run_id if parent is not None and not implicit else None,
        implicit=implicit,
    )
    _open_runs[run.run_id] = run
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
    outer = _outer(run_or_none) if _outer_contexts else None
    if outer is not None:  # inside a framework's run: nest there (and make that run current for what nests)
        run, parent_step = outer
        parent_id = parent_step.step_id if parent_step is not None else None
    elif run_or_none is None:
        run = _new_run(name, None, implicit=True)
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
    if run_or_none is None or outer is not None:
        frame = Frame(handle, run, outer is None, ((run_var, run), (var, handle)))
    else:
        frame = Frame(handle, run, False, ((var, handle),))
    frame.enter()
    return frame


def _end(frame: Frame, exc: BaseException | None) -> None:
    handle, run = frame.handle, frame.run
    if handle is run and run.ended:  # already closed as cancelled at exit or on SIGTERM, and sent then
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


def forget_open_runs() -> None:
    """Forget every open run without recording it (a forked child: the parent owns them)."""
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
