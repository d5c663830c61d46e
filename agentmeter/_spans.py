"""Spans at run time: opening and closing runs, steps and calls, and the frozen records they become.

Opening a span makes a handle (:mod:`agentmeter._model`) and a :class:`Frame`, which the ContextVars hold
while the span is current; closing it freezes the handle (:mod:`agentmeter._record`) into its run and
clears the frame, so a context copied meanwhile (a timer, a task) keeps nothing of the run alive.

A run stays open while its body runs (the decorated function or ``with`` block) and while streams created
in it (decorated generators) are open; it ends, is frozen and handed to the processor it started with
when the last of them ends. Every piece of bookkeeping here is guarded by the callers (:func:`safe_begin`,
:func:`safe_end`): an internal failure is logged and counted, never raised into the user's code.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, TypeVar

from . import _clock, _guard, _ids, _state
from ._context import Ref, call_var, run_var, step_var
from ._status import CANCELLED, ERROR, RUNNING, SUCCESS, error_fields

if TYPE_CHECKING:
    from ._capture import Snapshot
    from ._model import Call, Run, Step  # loaded by the first track_* call
    from ._record import freeze_call, freeze_run, freeze_step  # with the model, by the first track_* call
else:
    # The model and the frozen records (and _capture with them) are loaded when the first tracker is made, not
    # by ``import agentmeter``, which stays light.
    Run = Step = Call = freeze_call = freeze_run = freeze_step = None

__all__ = ["CLOSED_EARLY", "Frame", "StreamGuard", "add_outer_context", "capture_inputs", "capture_output",
           "close_open_runs", "forget_open_runs", "has_open_runs", "load_model", "open_stream", "pause",
           "remove_outer_context", "resume", "safe_begin", "safe_end", "settle", "snapshot"]

H = TypeVar("H", "Run", "Step", "Call")

#: Runs started and not yet finished, so exit and SIGTERM handlers can record them as cancelled.
_open_runs: dict[str, Run] = {}
#: Guards the counts of a run's open streams (re-entrant: a generator may be closed by the garbage
#: collector while this thread holds it).
_lock = threading.RLock()
#: Streams dropped without being finished or closed (see StreamGuard), ended at the next safe point.
_abandoned: list[Frame] = []

#: (status, error_type, error_message) of a stream its consumer stopped reading before the end.
CLOSED_EARLY = (CANCELLED, "GeneratorExit",
                "the consumer stopped reading before the end (break, close()/aclose() or a disconnect)")
_ABANDONED = (CANCELLED, "Abandoned", "the stream was garbage-collected without being finished or closed")


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

#: ids of runs that were open in the parent when this process was forked: the parent owns them. Here they
#: are never exported; steps and calls begun in them become runs of this process (see _begin).
_inherited: set[str] = set()


def load_model() -> None:
    """Import the model and the records (done by the first ``track_*`` call)."""
    global Run, Step, Call, freeze_call, freeze_run, freeze_step
    from ._model import Call, Run, Step  # loaded by the first track_* call
    from ._record import freeze_call, freeze_run, freeze_step  # with the model, by the first track_* call


# -- frames -------------------------------------------------------------------------------------------

# What a frame binds when it becomes current:
_SELF = 0  # itself, in its own ContextVar (a step or call inside the current run)
_RUN_AND_SELF = 1  # its run, and itself (a step or call of an implicit run; a stream resumed anywhere)
_RUN = 2  # its run, with no current step or call (a run)


class Frame(Ref):
    """One open span: the handle (``handle``, cleared when it ends), the run it belongs to (through the
    run's :class:`Ref`, cleared when the run ends) and the ContextVar bindings it made current."""

    __slots__ = ("implicit", "items", "mode", "owner", "room", "rref", "tokens", "var")
    items: list[Any] | None  # a stream's captured yielded values (capture on), and the characters left for
    room: int  # them: set by open_stream, as only a stream has them

    def __init__(self, handle: Any, ident: str, rref: Ref, implicit: bool, mode: int,
                 var: ContextVar[Any] | None) -> None:
        self.handle = handle
        self.ident = ident
        self.run_id = rref.ident
        self.rref = rref
        self.implicit = implicit
        self.mode = mode
        self.var = var
        self.tokens: tuple[Token[Any], ...] = ()
        self.owner: Ref | None = None  # the run a stream keeps open (its Ref), released when it ends

    def enter(self) -> None:
        """Make this span current in the running context."""
        mode = self.mode
        if mode == _SELF:
            self.tokens = (self.var.set(self),)  # type: ignore[union-attr]
        elif mode == _RUN_AND_SELF:
            self.tokens = (run_var.set(self.rref), self.var.set(self))  # type: ignore[union-attr]
        else:
            self.tokens = (run_var.set(self.rref), step_var.set(None), call_var.set(None))

    def leave(self) -> None:
        tokens = self.tokens
        if tokens:
            self.tokens = ()
            for token in reversed(tokens) if len(tokens) > 1 else tokens:
                try:
                    token.var.reset(token)
                except (ValueError, RuntimeError):  # closed in another context (a generator finalized elsewhere)
                    old = token.old_value
                    token.var.set(None if old is Token.MISSING else old)


def _new_run(name: str, agent: str | None, implicit: bool) -> Run:
    """A run (not yet registered as open), with the processor its record will go to."""
    wall, mono = _clock.wall_us(), _clock.monotonic_ns()
    parent = run_var.get()  # a run started in a context copied from an ended run still records it
    parent_id = parent.ident if parent is not None else None
    found = None
    if parent is None and not implicit and _outer_contexts:  # a run started inside a framework's run
        found = _outer(None)
        parent_id = found[0].run_id if found is not None else None
    run = Run(_ids.new_id(), name, agent, wall, mono, parent_run_id=parent_id, implicit=implicit)
    # a child run (nested, a sub-agent, a forked or pool worker's) inherits its parent's dimensions
    source = parent.handle if parent is not None else (found[0] if found is not None else None)
    if source is not None:
        run.session_id, run.user_id, run.version = source.session_id, source.user_id, source.version
    if run.version is None:
        run.version = _state.settings().version
    run.ref = Ref(run, run.run_id, run.run_id)
    run.processor = _state.processor()  # only into the store configured when the run started
    return run


def _begin_run(name: str, options: Mapping[str, Any]) -> Frame:
    run = _new_run(name, options.get("agent"), implicit=False)
    tags, metadata = options.get("tags"), options.get("metadata")
    if tags:
        run.tags.extend(tags)  # validated when the tracker was made
    if metadata:
        run.set_metadata(metadata)
    for field in ("session_id", "user_id", "version"):
        value = options.get(field)
        if value is not None:  # validated and cleaned when the tracker was made
            setattr(run, field, value)
    frame = Frame(run, run.run_id, run.ref, False, _RUN, None)
    _open_runs[run.run_id] = run
    return frame


def _begin(kind: type[H], name: str, options: Mapping[str, Any]) -> Frame:
    if kind is Run:
        return _begin_run(name, options)
    ref = run_var.get()
    run = None if ref is None else ref.handle
    if run is not None and _inherited and run.run_id in _inherited:  # the parent's (forked child): ours start fresh
        run, ref = None, None
    outer = _outer(run) if _outer_contexts else None
    if outer is not None:  # inside a framework's run: nest there (and make that run current for what nests)
        run, parent_step = outer
        parent_id = parent_step.step_id if parent_step is not None else None
    elif run is None:
        run = _new_run(name, None, implicit=True)  # a forked child's: parent_run_id is the parent's run
        parent_id = None
    else:
        parent = step_var.get()
        parent_id = parent.ident if parent is not None and parent.run_id == run.run_id else None
    mono = _clock.monotonic_ns()
    # wall time derived from the run's start and the monotonic clock: one clock read, consistent durations
    wall = run.start_us + (mono - run.start_ns) // 1000
    ident = _ids._factory()
    handle: Step | Call
    if kind is Step:
        handle = Step(ident, run.run_id, parent_id, name, options["kind"], wall, mono)
        run.open_steps[ident] = handle
        var: ContextVar[Any] = step_var
    else:
        handle = Call(ident, run.run_id, parent_id, options["provider"], options["operation"] or name,
                      options["model"], wall, mono)
        run.open_calls[ident] = handle
        var = call_var
    if outer is None:
        if ref is not None and ref.handle is not None:  # the usual span: a step or call in the current run
            return Frame(handle, ident, ref, False, _SELF, var)
        _open_runs[run.run_id] = run
        return Frame(handle, ident, run.ref, True, _RUN_AND_SELF, var)
    return Frame(handle, ident, run.ref, False, _RUN_AND_SELF, var)


def _release_body(run: Run) -> None:
    """The run's body returned: end the run now, or when the last of its open streams ends."""
    if not run.streams:
        run.body_open = False
        _seal(run)
        return
    with _lock:
        run.body_open = False
        last = not run.streams
    if last:
        _seal(run)


def _release_stream(owner: Ref, stream: Run | Step | Call) -> None:
    """A stream kept open by ``owner``'s run ended. After the run's body returned, the stream is the run's
    remaining work: a stream that failed or was stopped early gives the run its status."""
    run: Run | None = owner.handle
    if run is None:
        return
    with _lock:
        run.streams -= 1
        last = not run.streams and not run.body_open
        if not run.body_open and run.status == SUCCESS and stream.status in (ERROR, CANCELLED):
            run.status, run.error_type, run.error_message = stream.status, stream.error_type, stream.error_message
    if last:
        _seal(run)


def _seal(run: Run) -> None:
    """End the run, freeze it and hand the frozen record to its processor (which never blocks)."""
    if run.ended:
        return
    run.end_ns = end_ns = _clock.monotonic_ns()
    run.end_us = run.start_us + (end_ns - run.start_ns) // 1000
    run.ended = True
    _open_runs.pop(run.run_id, None)
    run.ref.handle = None  # contexts copied during the run keep only the Ref
    processor, run.processor = run.processor, None
    finished = freeze_run(run, _state.settings().capture_max_chars)
    (processor if processor is not None else _state.processor()).submit(finished)


def safe_begin(kind: type[H], name: str, options: Mapping[str, Any]) -> Frame | None:
    """Open a span and make it current. Never raises."""
    if _abandoned:
        settle()
    if not (_state._settings or _state.settings()).enabled:  # _state.enabled() written out: every span
        return None
    try:
        frame = _begin(kind, name, options)
        if frame.mode == _SELF:  # Frame.enter, written out for the usual span
            frame.tokens = (frame.var.set(frame),)  # type: ignore[union-attr]
        else:
            frame.enter()
        return frame
    except Exception as exc:
        _guard.internal_error(f"begin_{kind.__name__.lower()}", exc)
        return None


def safe_end(frame: Frame | None, exc: BaseException | None, fields: tuple[str, str, str] | None = None) -> None:
    """Close a span (status from ``exc``, or ``fields``). Idempotent; never raises."""
    if frame is None:
        return
    if _abandoned:  # a stream dropped by the code that just returned: ended first, so its run can end now
        settle()
    try:
        handle = frame.handle
        is_run = frame.mode == _RUN
        # ended already; the parent's (forked child: not ours); a run closed as cancelled at exit or SIGTERM
        if handle is None or (_inherited and frame.run_id in _inherited) or (is_run and handle.ended):
            frame.leave()
            frame.handle = None
            return
        if fields is not None:
            handle.status, handle.error_type, handle.error_message = fields
        elif exc is None:
            if handle.status == RUNNING:
                handle.status = SUCCESS
        else:
            handle.status, handle.error_type, handle.error_message = error_fields(exc)
        tokens = frame.tokens
        try:  # Frame.leave, written out for the usual span (one token: a step or call in its run)
            tokens[0].var.reset(tokens[0]) if len(tokens) == 1 else frame.leave()
            frame.tokens = ()
        except (ValueError, RuntimeError):  # closed in another context: leave() restores the old value
            frame.leave()
        frame.handle = None
        owner = frame.owner
        if owner is not None:
            frame.owner = None
        if is_run:
            _release_body(handle)
        else:  # a step or call: frozen into its run (and an implicit run ended with it)
            run: Run | None = frame.rref.handle
            handle.end_ns = end_ns = _clock.monotonic_ns()
            handle.end_us = handle.start_us + (end_ns - handle.start_ns) // 1000
            handle.ended = True
            if run is None:  # not after the exit handler closed the open runs (tracking stopped): expected then
                if _state.enabled():
                    _guard.warn("late_span", "a step or call finished after its run ended; recorded as unfinished",
                                span=getattr(handle, "name", getattr(handle, "operation", "")))
            else:
                max_chars = (_state._settings or _state.settings()).capture_max_chars  # a Settings is never falsy
                if type(handle) is Step:
                    run.steps.append(freeze_step(handle, max_chars))
                    run.open_steps.pop(frame.ident, None)
                else:
                    run.calls.append(freeze_call(handle, max_chars))
                    run.open_calls.pop(frame.ident, None)
                if frame.implicit:
                    if run.status == RUNNING:
                        run.status, run.error_type, run.error_message = (handle.status, handle.error_type,
                                                                         handle.error_message)
                    _release_body(run)
        if owner is not None:
            _release_stream(owner, handle)
    except Exception as err:
        _guard.internal_error("end_span", err)


# -- streams ------------------------------------------------------------------------------------------


def open_stream(kind: type[H], name: str, options: Mapping[str, Any]) -> Frame | None:
    """Open the span of a stream (a decorated generator) when it is called, bound to the run and step
    current then, without making it current: it is current only while the generator's body runs
    (:func:`resume`, :func:`pause`). The run current at the call stays open until the stream ends.
    Never raises."""
    if _abandoned:
        settle()
    if not _state.enabled():
        return None
    try:
        ref = run_var.get()
        frame = _begin(kind, name, options)
        frame.items, frame.room = None, 0
        if frame.mode == _SELF:
            frame.mode = _RUN_AND_SELF  # resumed later from anywhere: bind its run too
        if ref is not None and ref.handle is not None:  # the stream keeps the current run open
            with _lock:
                ref.handle.streams += 1
            frame.owner = ref
        return frame
    except Exception as exc:
        _guard.internal_error(f"begin_{kind.__name__.lower()}", exc)
        return None


class StreamGuard:
    """Kept only by a stream's generator frame: when the generator is freed without its span having ended
    (never iterated, or dropped where nobody closes it), the span is ended as ``cancelled``/``Abandoned``
    at the next safe point (a span starting or ending, ``flush()``, exit), never inside the garbage
    collector."""

    __slots__ = ("frame",)

    def __init__(self, frame: Frame | None) -> None:
        self.frame = frame

    def __del__(self) -> None:
        try:
            frame = self.frame
            if frame is not None and frame.handle is not None:
                _abandoned.append(frame)
        except Exception:
            pass  # interpreter shutdown: the run is recorded at exit


def settle() -> None:
    """End the streams dropped without being closed (see :class:`StreamGuard`). Never raises."""
    while _abandoned:
        try:
            frame = _abandoned.pop()
        except IndexError:  # another thread took the last one
            return
        safe_end(frame, None, _ABANDONED)


def resume(frame: Frame | None) -> None:
    """Make a stream's span current again while its body runs. Never raises."""
    if frame is not None and frame.handle is not None:
        _guarded(frame.enter, "resume_generator")


def pause(frame: Frame | None) -> None:
    """Un-bind a stream's span while its consumer runs. Never raises."""
    if frame is not None:
        _guarded(frame.leave, "pause_generator")


def _guarded(step: Callable[[], None], where: str) -> None:
    try:
        step()
    except Exception as exc:
        _guard.internal_error(where, exc)


# -- open runs at exit --------------------------------------------------------------------------------


def has_open_runs() -> bool:
    return bool(_open_runs)


def forget_open_runs(inherited: bool = False) -> None:
    """Forget every open run without recording it. ``inherited`` (a forked child): the parent owns them,
    and work begun in them here is recorded as this process's own runs."""
    if inherited:
        _inherited.update(_open_runs)
    _open_runs.clear()


def close_open_runs(reason: str = "InterpreterExit", message: str = "process exited before the run ended") -> int:
    """Record every run still open as ``cancelled`` (at exit, on SIGTERM), with its finished steps and,
    as cancelled for the same reason, those still open. Streams dropped earlier are ended first, so
    their runs end as they would have. Returns how many runs were closed."""
    settle()
    closed = 0
    for run in list(_open_runs.values()):
        if run.ended:
            continue
        end_ns = _clock.monotonic_ns()
        end_us = run.start_us + (end_ns - run.start_ns) // 1000
        spans: list[Step | Call] = [*run.open_steps.values(), *run.open_calls.values()]
        for span in spans:
            if span.status == RUNNING:
                span.status, span.error_type, span.error_message = CANCELLED, reason, message
                span.end_us, span.end_ns = end_us, end_ns
        run.status, run.error_type, run.error_message = CANCELLED, reason, message
        _seal(run)
        closed += 1
    return closed


# -- capture ------------------------------------------------------------------------------------------


_snapshot: Callable[[Any], Snapshot] | None = None


def snapshot(value: Any) -> Snapshot:
    """``_capture.snapshot(value)``; _capture (and dataclasses with it) loads with the first captured value,
    not with agentmeter. Never raises."""
    global _snapshot
    if _snapshot is None:
        from ._capture import snapshot as take  # re, dataclasses: with the first captured value

        _snapshot = take
    return _snapshot(value)


def capture_inputs(frame: Frame | None, sig: inspect.Signature | None, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> None:
    """Record the bound arguments, defaults applied (``self`` and ``cls`` left out). Never raises."""
    if frame is None or sig is None:
        return
    try:
        try:
            bound = sig.bind_partial(*args, **kwargs)
        except TypeError:  # the call itself is wrong: the function raises it, nothing to capture
            return
        bound.apply_defaults()
        values = {k: v for k, v in bound.arguments.items() if k not in ("self", "cls")}
        handle = frame.handle
        handle.inputs = snapshot(values)
        handle.captured = True
    except Exception as exc:
        _guard.internal_error("capture_inputs", exc)


def capture_output(frame: Frame | None, value: Any) -> None:
    """Record the return value, unless capture is off or the user set the output. Never raises."""
    if frame is None:
        return
    try:
        handle = frame.handle
        if handle is not None and handle.captured and not handle.output_set:
            handle.output = snapshot(value)
    except Exception as exc:
        _guard.internal_error("capture_output", exc)
