"""``track_run``, ``track_step`` and ``track_call``: decorators and context managers.

The wrapper for a function is chosen once, when the decorator is applied (:mod:`agentmeter._wrappers`:
sync, coroutine, generator or async generator, a ``contextlib`` context manager, a callable object).
Arguments are validated here, when the tracker is made: a wrong one is a ``ValueError`` (or, for something
that cannot be decorated, a ``TypeError``) naming it, at the decorator, never later in the agent. Opening
and closing a span (:mod:`agentmeter._spans`) touches only in-memory objects and ContextVars; a finished
run is frozen and handed to the processor without blocking. Every piece of bookkeeping is guarded: an
internal failure is logged and counted, and the user's function runs (and raises) exactly as it would
without us.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from . import _spans
from ._context import call_var, run_var, step_var
from ._spans import Frame, safe_begin, safe_end
from ._status import STEP_KINDS
from ._wrappers import clean_name, framework_hint, wrap

if TYPE_CHECKING:
    from ._model import Call, Run, Step  # loaded by the first track_* call
else:
    Run = Step = Call = None  # loaded with the first tracker (see _spans.load_model)

__all__ = ["track_call", "track_run", "track_step"]

F = TypeVar("F", bound=Callable[..., Any])
H = TypeVar("H", "Run", "Step", "Call")


def _load_model() -> None:
    global Run, Step, Call, _VARS
    _spans.load_model()
    from ._model import Call, Run, Step  # loaded by the first track_* call

    _VARS = {Run: run_var, Step: step_var, Call: call_var}


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
        handle: H = frame.handle  # (not typing.cast: a function call, for every span)
        return handle

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        frames = self._frames
        safe_end(frames.pop() if len(frames) == 1 else self._pop_frame(), exc)
        # returns None: the user's exception (if any) propagates unchanged

    async def __aenter__(self) -> H:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def _pop_frame(self) -> Frame | None:
        frames = self._frames
        if len(frames) < 2:
            return frames.pop() if frames else None
        # The same tracker may be entered from several tasks or threads: close the one current here.
        current = _VARS[self._kind].get()
        for i in range(len(frames) - 1, -1, -1):
            frame = frames[i]
            if frame is not None and (frame is current or frame.rref is current):
                return frames.pop(i)
        return frames.pop()

    # decorator ---------------------------------------------------------------------------------------
    def __call__(self, func: F) -> F:
        if isinstance(func, (classmethod, staticmethod)):
            return type(func)(self(func.__func__))
        what = f"track_{self._kind.__name__.lower()}"
        _check_target(what, func)
        return cast(F, wrap(func, self._kind, self._name or clean_name(func), self._capture, self._options))


def _check_target(what: str, func: Any) -> None:
    """A ``TypeError`` for what cannot be decorated, saying where the decorator goes."""
    if isinstance(func, type):
        raise TypeError(f"{what} cannot decorate a class ({func.__qualname__}); decorate its methods instead")
    hint = framework_hint(what, func)
    if hint is not None:
        raise TypeError(hint)
    if isinstance(func, property):
        raise TypeError(f"{what} cannot decorate a property; put it below @property, on the getter")
    if not callable(func):
        raise TypeError(f"{what} must decorate a function, got a {type(func).__name__} object")


class _Detached:
    """Handle returned when tracking is disabled or failed to start: accepts every call, records nothing."""

    def __getattr__(self, name: str) -> Any:
        return _noop

    def __repr__(self) -> str:
        return "<agentmeter detached handle>"


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


# -- public constructors ------------------------------------------------------------------------------


def _is_target(obj: Any) -> bool:
    return callable(obj) or isinstance(obj, (classmethod, staticmethod))


def _check_name(what: str, name: Any) -> None:
    if name is None or isinstance(name, str):
        return
    if isinstance(name, property) or framework_hint(what, name) is not None:
        _check_target(what, name)  # raises the TypeError saying where the decorator goes
    raise ValueError(f"{what} name must be a string (or the function to decorate), got {type(name).__name__}")


def _check_str(setting: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{setting} must be a string, got {type(value).__name__}")


def _check_capture(what: str, capture: Any) -> None:
    if capture is not None and not isinstance(capture, bool):
        raise ValueError(f"{what} capture must be True, False or None, got {type(capture).__name__}")


def _tags(tags: Any) -> tuple[str, ...]:
    """The tags as a tuple of strings (read once: a generator of tags serves every run)."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        tags = (tags,)
    if isinstance(tags, Mapping) or not isinstance(tags, Iterable):
        raise ValueError(f"track_run tags must be a string or an iterable of strings, got {type(tags).__name__}")
    out = tuple(tags)
    for tag in out:
        if not isinstance(tag, str):
            raise ValueError(f"track_run tags must be strings, got a {type(tag).__name__} in tags")
    from ._scrub import scrub  # its patterns take ~3 ms to compile: loaded with the first tags

    return tuple(dict.fromkeys(scrub(tag) for tag in out))  # stored as is: a secret in a tag must not be


def _metadata(metadata: Any) -> dict[Any, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise ValueError(f"track_run metadata must be a mapping, got {type(metadata).__name__}")
    return dict(metadata)  # a copy: changing the caller's dict later does not change the runs


@overload
def track_run(name: F, /) -> F: ...
@overload
def track_run(
    name: str | None = None, *, agent: str | None = None, tags: Iterable[str] | None = None,
    metadata: Mapping[str, Any] | None = None, capture: bool | None = None, session: str | None = None,
    user: str | None = None, version: str | None = None,
) -> _Tracker[Run]: ...
def track_run(
    name: Any = None, *, agent: str | None = None, tags: Iterable[str] | None = None,
    metadata: Mapping[str, Any] | None = None, capture: bool | None = None, session: str | None = None,
    user: str | None = None, version: str | None = None,
) -> Any:
    """Track an agent run: one document with its steps and calls.

    ``@track_run``, ``@track_run(name=..., agent=..., tags=[...], metadata={...})``,
    ``with track_run("research", agent="researcher") as run:`` or ``async with``. A run started inside
    another run is recorded as its own run with ``parent_run_id`` set. A run lasts while its function (or
    ``with`` block) runs and while the streams created in it (decorated generators) are still open.
    ``session``, ``user`` and ``version`` (strings) set the run's ``session_id``, ``user_id`` and
    ``version``; a run started inside another inherits those it is not given, and ``version`` defaults to
    the ``version`` setting (``AGENTMETER_VERSION``). Bad
    arguments raise ``ValueError`` here, at the decorator. Never raises into the decorated code; its
    exceptions propagate unchanged and are recorded with status ``error`` (or ``cancelled``).
    """
    if Run is None:
        _load_model()
    if _is_target(name):
        return _Tracker(Run, None, None, {})(name)
    _check_name("track_run", name)
    _check_str("track_run agent", agent)
    _check_capture("track_run", capture)
    options = {"agent": agent, "tags": _tags(tags), "metadata": _metadata(metadata)}
    for arg, field, value in (("session", "session_id", session), ("user", "user_id", user),
                              ("version", "version", version)):
        if value is not None:
            options[field] = _label(arg, field, value)
    return _Tracker(Run, name, capture, options)


def _label(arg: str, field: str, value: Any) -> str | None:
    from ._model import clean_label  # the model is loaded with the first tracker, not at import

    if not isinstance(value, str) or not value:
        raise ValueError(f"track_run {arg} must be a non-empty string (the run's {field}), "
                         f"got {value!r} ({type(value).__name__})")
    return clean_label(field, value)


@overload
def track_step(name: F, /) -> F: ...
@overload
def track_step(name: str | None = None, *, kind: str = "other", capture: bool | None = None) -> _Tracker[Step]: ...
def track_step(name: Any = None, *, kind: str = "other", capture: bool | None = None) -> Any:
    """Track a step of the current run (``kind``: tool, llm, retrieval, plan, agent or other).

    Steps nest: a step opened inside another records it as ``parent_step_id``. A step used outside any run
    is recorded in an implicit run of its own (``implicit = true``) named after the step. A generator step
    belongs to the run and step current when the generator is called, keeps that run open until it ends,
    and is current only while its body runs. Bad arguments raise ``ValueError`` here. Never raises into
    the decorated code.
    """
    if Step is None:
        _load_model()
    if type(name) is not str:  # a name is the usual argument (``with track_step("search"):``)
        if _is_target(name):
            return _Tracker(Step, None, None, _DEFAULT_STEP)(name)
        if name is not None:
            _check_name("track_step", name)
    try:
        options = _STEP_OPTIONS.get(kind)
    except TypeError:  # an unhashable kind
        options = None
    if options is None:
        raise ValueError(f"track_step kind must be one of {', '.join(STEP_KINDS)}; got {kind!r}")
    if capture is not None:
        _check_capture("track_step", capture)
    return _Tracker(Step, name, capture, options)


_STEP_OPTIONS = {kind: {"kind": kind} for kind in STEP_KINDS}  # shared: a tracker never changes its options
_DEFAULT_STEP = _STEP_OPTIONS["other"]


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
    in an implicit run of its own. Bad arguments raise ``ValueError`` here. Never raises into the
    decorated code.
    """
    if Call is None:
        _load_model()
    key = (provider, operation, model)
    try:
        options = _CALL_OPTIONS.get(key)
    except TypeError:  # an unhashable argument: checked below
        options = None
    if options is not None:  # these arguments were checked before: their options are shared
        return _Tracker(Call, operation or provider, False, options)
    if _is_target(provider):
        target = getattr(provider, "__func__", provider)
        options = {"provider": "custom", "operation": clean_name(target), "model": None}
        return _Tracker(Call, None, False, options)(provider)
    if provider is not None and not isinstance(provider, str):
        _check_name("track_call", provider)
    _check_str("track_call operation", operation)
    _check_str("track_call model", model)
    options = {"provider": provider or "custom", "operation": operation, "model": model}
    if type(provider) in _NAME_TYPES and type(operation) in _NAME_TYPES and type(model) in _NAME_TYPES:
        if len(_CALL_OPTIONS) >= 1024:  # a program calls a few APIs
            _CALL_OPTIONS.clear()
        _CALL_OPTIONS[key] = options  # shared: a tracker never changes its options
    return _Tracker(Call, operation or provider, False, options)


#: (provider, operation, model) -> the options of its trackers, for arguments checked once already
_CALL_OPTIONS: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
_NAME_TYPES = (str, type(None))
