"""``track_run``, ``track_step`` and ``track_call``: decorators and context managers.

The wrapper for a function is chosen once, when the decorator is applied (sync, coroutine, generator or
async generator). Opening and closing a span (:mod:`agentmeter._spans`) touches only in-memory objects and
ContextVars; a finished run is frozen and handed to the processor without blocking. Every piece of
bookkeeping is guarded: an internal failure is logged and counted, and the user's function runs (and
raises) exactly as it would without us.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from . import _spans, _state
from ._context import call_var, run_var, step_var
from ._spans import Frame, capture_inputs, capture_output, pause, resume, safe_begin, safe_end
from ._status import STEP_KINDS

if TYPE_CHECKING:
    from ._model import Call, Run, Step
else:
    Run = Step = Call = None  # loaded with the first tracker (see _spans.load_model)

__all__ = ["track_call", "track_run", "track_step"]

F = TypeVar("F", bound=Callable[..., Any])
H = TypeVar("H", "Run", "Step", "Call")


def _load_model() -> None:
    global Run, Step, Call, _VARS
    _spans.load_model()
    from ._model import Call, Run, Step

    _VARS = {Run: run_var, Step: step_var, Call: call_var}


def _clean_name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", getattr(func, "__name__", "anonymous")).replace("<locals>.", "")


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
        self._frames: list[Frame | None] = []

    # context manager ---------------------------------------------------------------------------------
    def __enter__(self) -> H:
        frame = safe_begin(self._kind, self._name or self._kind.__name__.lower(), self._options)
        self._frames.append(frame)
        if frame is None:
            return cast(H, _Detached())
        return cast(H, frame.handle)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        frame = self._pop_frame()
        safe_end(frame, exc)
        # returns None: the user's exception (if any) propagates unchanged

    async def __aenter__(self) -> H:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def _pop_frame(self) -> Frame | None:
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

    def begin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Frame | None:
        frame = safe_begin(kind, name, options)
        if frame is not None and sig is not None and (capture or (capture is None and _state.capture_default)):
            capture_inputs(frame, sig, args, kwargs)
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
                    resume(frame)
                    try:
                        item = await method(to_send)
                    finally:
                        pause(frame)
                    method = agen.asend
                    try:
                        to_send = yield item
                    except GeneratorExit:
                        raise
                    except BaseException as thrown:  # thrown in by the consumer: forward it
                        method, to_send = agen.athrow, thrown
            except StopAsyncIteration:
                safe_end(frame, None)
            except GeneratorExit:
                await agen.aclose()
                safe_end(frame, None)
                raise
            except BaseException as exc:
                safe_end(frame, exc)
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
                    resume(frame)
                    try:
                        item = method(to_send)
                    finally:
                        pause(frame)
                    method = gen.send
                    try:
                        to_send = yield item
                    except GeneratorExit:
                        raise
                    except BaseException as thrown:
                        method, to_send = gen.throw, thrown
            except StopIteration as stop:
                capture_output(frame, stop.value)
                safe_end(frame, None)
                return stop.value
            except GeneratorExit:
                gen.close()
                safe_end(frame, None)
                raise
            except BaseException as exc:
                safe_end(frame, exc)
                raise

        return gen_wrapper

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            frame = begin(args, kwargs)
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                safe_end(frame, exc)
                raise
            capture_output(frame, result)
            safe_end(frame, None)
            return result

        return async_wrapper

    if sig is None:  # capture can never apply: the leanest wrapper

        @functools.wraps(func)
        def lean_wrapper(*args: Any, **kwargs: Any) -> Any:
            frame = safe_begin(kind, name, options)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                safe_end(frame, exc)
                raise
            safe_end(frame, None)
            return result

        return lean_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        frame = safe_begin(kind, name, options)
        if frame is not None and (capture or (capture is None and _state.capture_default)):
            capture_inputs(frame, sig, args, kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            safe_end(frame, exc)
            raise
        capture_output(frame, result)
        safe_end(frame, None)
        return result

    return wrapper


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

