"""``track_run``, ``track_step`` and ``track_call``: decorators and context managers.

The wrapper for a function is chosen once, when the decorator is applied (sync, coroutine, generator or
async generator). Opening and closing a span touches only in-memory objects and ContextVars; a finished run
is sealed and handed to the exporter without blocking. Every piece of bookkeeping is guarded: an internal
failure is logged and counted, and the user's function runs (and raises) exactly as it would without us.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from . import _clock, _guard, _ids, _state
from ._context import call_var, run_var, step_var
from ._status import CANCELLED, RUNNING, STEP_KINDS, SUCCESS, error_fields

if TYPE_CHECKING:
    from ._model import Call, Run, Step
    from ._record import freeze_call, freeze_run, freeze_step
else:
    # The model (attrs classes) and the frozen records are loaded when the first tracker is made, not by
    # ``import agentmeter``: attrs alone takes longer to import than the rest of agentmeter.
    Run = Step = Call = freeze_call = freeze_run = freeze_step = None


def _load_model() -> None:
    global Run, Step, Call, _VARS, freeze_call, freeze_run, freeze_step
    from ._model import Call, Run, Step
    from ._record import freeze_call, freeze_run, freeze_step

    _VARS = {Run: run_var, Step: step_var, Call: call_var}

__all__ = ["close_open_runs", "forget_open_runs", "track_call", "track_run", "track_step"]

F = TypeVar("F", bound=Callable[..., Any])
H = TypeVar("H", "Run", "Step", "Call")

#: Runs started and not yet finished, so exit and SIGTERM handlers can record them as cancelled.
_open_runs: dict[str, Run] = {}


def _now() -> tuple[int, int]:
    return _clock.wall_us(), _clock.monotonic_ns()


def _reset(var: ContextVar[Any], token: Token[Any], previous: Any) -> None:
    try:
        var.reset(token)
    except ValueError:  # closed in another context (e.g. an async generator finalized elsewhere)
        var.set(previous)


def _clean_name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", getattr(func, "__name__", "anonymous")).replace("<locals>.", "")


# -- runs ---------------------------------------------------------------------------------------------


class _Frame:
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


def _begin(kind: type[H], name: str, options: Mapping[str, Any]) -> _Frame:
    if kind is Run:
        run = _new_run(name, options.get("agent"), implicit=False)
        tags, metadata = options.get("tags"), options.get("metadata")
        if tags:
            run.add_tags(tags)
        if metadata:
            run.set_metadata(metadata)
        frame = _Frame(run, run, False, ((run_var, run), (step_var, None), (call_var, None)))
        frame.enter()
        return frame
    run_or_none = run_var.get()
    if run_or_none is None:
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
    if run_or_none is None:
        frame = _Frame(handle, run, True, ((run_var, run), (var, handle)))
    else:
        frame = _Frame(handle, run, False, ((var, handle),))
    frame.enter()
    return frame


def _end(frame: _Frame, exc: BaseException | None) -> None:
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


def _safe_begin(kind: type[H], name: str, options: Mapping[str, Any]) -> _Frame | None:
    if not _state.enabled():
        return None
    try:
        return _begin(kind, name, options)
    except Exception as exc:
        _guard.internal_error(f"begin_{kind.__name__.lower()}", exc)
        return None


def _safe_end(frame: _Frame | None, exc: BaseException | None) -> None:
    if frame is None:
        return
    try:
        _end(frame, exc)
    except Exception as err:
        _guard.internal_error("end_span", err)


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


def _capture_inputs(frame: _Frame | None, sig: inspect.Signature | None, args: tuple[Any, ...],
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


def _capture_output(frame: _Frame | None, value: Any) -> None:
    if frame is None:
        return
    try:
        handle = frame.handle
        if getattr(handle, "captured", False):
            handle.output = (_snapshot or _load_snapshot())(value)  # type: ignore[union-attr]
    except Exception as exc:
        _guard.internal_error("capture_output", exc)


# -- the tracker: decorator and context manager -------------------------------------------------------


#: handle class -> its ContextVar (filled by _load_model)
_VARS: dict[type[Any], ContextVar[Any]] = {}


class _Tracker(Generic[H]):
    """What ``track_run(...)``, ``track_step(...)`` and ``track_call(...)`` return.

    Apply it to a function (``@track_step(kind="tool")``) or use it as a context manager (``with`` or
    ``async with``); the context manager yields the run, step or call handle.
    """

    __slots__ = ("_capture", "_frames", "_kind", "_name", "_options")

    def __init__(self, kind: type[H], name: str | None, capture: bool | None, options: dict[str, Any]) -> None:
        self._kind: type[H] = kind
        self._name = name
        self._capture = capture
        self._options = options
        self._frames: list[_Frame | None] = []

    # context manager ---------------------------------------------------------------------------------
    def __enter__(self) -> H:
        frame = _safe_begin(self._kind, self._name or self._kind.__name__.lower(), self._options)
        self._frames.append(frame)
        if frame is None:
            return cast(H, _Detached())
        return cast(H, frame.handle)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        frame = self._pop_frame()
        _safe_end(frame, exc)
        # returns None: the user's exception (if any) propagates unchanged

    async def __aenter__(self) -> H:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def _pop_frame(self) -> _Frame | None:
        frames = self._frames
        if not frames:
            return None
        # The same tracker may be entered from several tasks or threads: close the one current here.
        var: ContextVar[Any] = _VARS[self._kind]
        current = var.get()
        for i in range(len(frames) - 1, -1, -1):
            frame = frames[i]
            if frame is not None and frame.handle is current:
                return frames.pop(i)
        return frames.pop()

    # decorator ---------------------------------------------------------------------------------------
    def __call__(self, func: F) -> F:
        if isinstance(func, (classmethod, staticmethod)):
            return type(func)(self(func.__func__))
        if not callable(func):
            raise TypeError(f"track_{self._kind.__name__.lower()} must decorate a callable, got {func!r}")
        return cast(F, _wrap(func, self._kind, self._name or _clean_name(func), self._capture, self._options))


class _Detached:
    """Handle returned when tracking is disabled or failed to start: accepts every call, records nothing."""

    def __getattr__(self, name: str) -> Any:
        return _noop

    def __repr__(self) -> str:
        return "<agentmeter detached handle>"


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


def _wrap(func: Callable[..., Any], kind: type[Any], name: str, capture: bool | None,
          options: dict[str, Any]) -> Callable[..., Any]:
    # Chosen once, at decoration time.
    sig: inspect.Signature | None = None
    if capture or capture is None:
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            sig = None

    def begin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Frame | None:
        frame = _safe_begin(kind, name, options)
        if frame is not None and sig is not None and (capture or (capture is None and _state.capture_default)):
            _capture_inputs(frame, sig, args, kwargs)
        return frame

    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            frame = begin(args, kwargs)
            if frame is not None:
                frame.leave()  # the generator's body sees the span only while it runs
            agen = func(*args, **kwargs)
            to_send: Any = None
            method: Callable[[Any], Any] = agen.asend
            try:
                while True:
                    _resume(frame)
                    try:
                        item = await method(to_send)
                    finally:
                        _pause(frame)
                    method = agen.asend
                    try:
                        to_send = yield item
                    except GeneratorExit:
                        raise
                    except BaseException as thrown:  # thrown in by the consumer: forward it
                        method, to_send = agen.athrow, thrown
            except StopAsyncIteration:
                _safe_end(frame, None)
            except GeneratorExit:
                await agen.aclose()
                _safe_end(frame, None)
                raise
            except BaseException as exc:
                _safe_end(frame, exc)
                raise

        return agen_wrapper

    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            frame = begin(args, kwargs)
            if frame is not None:
                frame.leave()
            gen = func(*args, **kwargs)
            to_send: Any = None
            method: Callable[[Any], Any] = gen.send
            try:
                while True:
                    _resume(frame)
                    try:
                        item = method(to_send)
                    finally:
                        _pause(frame)
                    method = gen.send
                    try:
                        to_send = yield item
                    except GeneratorExit:
                        raise
                    except BaseException as thrown:
                        method, to_send = gen.throw, thrown
            except StopIteration as stop:
                _capture_output(frame, stop.value)
                _safe_end(frame, None)
                return stop.value
            except GeneratorExit:
                gen.close()
                _safe_end(frame, None)
                raise
            except BaseException as exc:
                _safe_end(frame, exc)
                raise

        return gen_wrapper

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            frame = begin(args, kwargs)
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                _safe_end(frame, exc)
                raise
            _capture_output(frame, result)
            _safe_end(frame, None)
            return result

        return async_wrapper

    if sig is None:  # capture can never apply: the leanest wrapper

        @functools.wraps(func)
        def lean_wrapper(*args: Any, **kwargs: Any) -> Any:
            frame = _safe_begin(kind, name, options)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                _safe_end(frame, exc)
                raise
            _safe_end(frame, None)
            return result

        return lean_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        frame = _safe_begin(kind, name, options)
        if frame is not None and (capture or (capture is None and _state.capture_default)):
            _capture_inputs(frame, sig, args, kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            _safe_end(frame, exc)
            raise
        _capture_output(frame, result)
        _safe_end(frame, None)
        return result

    return wrapper


def _resume(frame: _Frame | None) -> None:
    if frame is not None:
        try:
            frame.enter()
        except Exception as exc:
            _guard.internal_error("resume_generator", exc)


def _pause(frame: _Frame | None) -> None:
    if frame is not None:
        try:
            frame.leave()
        except Exception as exc:
            _guard.internal_error("pause_generator", exc)


# -- public constructors ------------------------------------------------------------------------------


def _is_target(obj: Any) -> bool:
    return callable(obj) or isinstance(obj, (classmethod, staticmethod))


def _check_str(setting: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{setting} must be a string, got {type(value).__name__}")


@overload
def track_run(name: F, /) -> F: ...
@overload
def track_run(
    name: str | None = None, *, agent: str | None = None, tags: Iterable[str] | None = None,
    metadata: Mapping[str, Any] | None = None, capture: bool | None = None,
) -> _Tracker[Run]: ...
def track_run(
    name: Any = None, *, agent: str | None = None, tags: Iterable[str] | None = None,
    metadata: Mapping[str, Any] | None = None, capture: bool | None = None,
) -> Any:
    """Track an agent run: one document with its steps and calls.

    ``@track_run``, ``@track_run(name=..., agent=..., tags=[...], metadata={...})``,
    ``with track_run("research", agent="researcher") as run:`` or ``async with``. A run started inside
    another run is recorded as its own run with ``parent_run_id`` set. Never raises into the decorated
    code; its exceptions propagate unchanged and are recorded with status ``error`` (or ``cancelled``).
    """
    if Run is None:
        _load_model()
    if _is_target(name):
        return _Tracker(Run, None, None, {})(name)
    _check_str("track_run name", name)
    _check_str("track_run agent", agent)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(f"track_run metadata must be a mapping, got {type(metadata).__name__}")
    return _Tracker(Run, name, capture, {"agent": agent, "tags": tags, "metadata": metadata})


@overload
def track_step(name: F, /) -> F: ...
@overload
def track_step(name: str | None = None, *, kind: str = "other", capture: bool | None = None) -> _Tracker[Step]: ...
def track_step(name: Any = None, *, kind: str = "other", capture: bool | None = None) -> Any:
    """Track a step of the current run (``kind``: tool, llm, retrieval, plan, agent or other).

    Steps nest: a step opened inside another records it as ``parent_step_id``. A step used outside any run
    is recorded in an implicit run of its own (``implicit = true``) named after the step. A generator step
    lasts until the generator is exhausted or closed. Never raises into the decorated code.
    """
    if Step is None:
        _load_model()
    if _is_target(name):
        return _Tracker(Step, None, None, {"kind": "other"})(name)
    _check_str("track_step name", name)
    if kind not in STEP_KINDS:
        raise ValueError(f"track_step kind must be one of {', '.join(STEP_KINDS)}; got {kind!r}")
    return _Tracker(Step, name, capture, {"kind": kind})


@overload
def track_call(provider: F, /) -> F: ...
@overload
def track_call(
    provider: str | None = None, operation: str | None = None, *, model: str | None = None,
) -> _Tracker[Call]: ...
def track_call(provider: Any = None, operation: str | None = None, *, model: str | None = None) -> Any:
    """Track one API call (``provider``, ``operation``, ``model``) inside the current step or run.

    The handle records usage (``call.record_usage(input_tokens=..., output_tokens=...)``), the HTTP status,
    retries and sizes; cost is computed later, off the caller's thread. A call outside any run is recorded
    in an implicit run of its own. Never raises into the decorated code.
    """
    if Call is None:
        _load_model()
    if _is_target(provider):
        target = getattr(provider, "__func__", provider)
        options = {"provider": "custom", "operation": _clean_name(target), "model": None}
        return _Tracker(Call, None, False, options)(provider)
    _check_str("track_call provider", provider)
    _check_str("track_call operation", operation)
    _check_str("track_call model", model)
    return _Tracker(Call, operation or provider, False,
                    {"provider": provider or "custom", "operation": operation, "model": model})

