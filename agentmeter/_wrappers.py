"""The wrapper a decorator puts around a function, chosen once, when the decorator is applied.

* a function or method, sync or ``async``: the span lasts for the call;
* a generator or async generator function: a **stream**. Calling it opens the span, bound to the run and
  step current at the call (not at the first ``next()``), and keeps that run open until the stream ends:
  exhausted, closed early (``break``, ``close()``/``aclose()``, a disconnect: ``cancelled`` with error
  type ``GeneratorExit``), failed, or garbage-collected unfinished (``cancelled``/``Abandoned``). Its span
  is current only while the generator's body runs, its ``finally`` blocks included;
* a function made by ``@contextlib.contextmanager`` / ``@asynccontextmanager``: the span covers the
  ``with`` block, and is current in it;
* a callable object: its calls are tracked under its class's name; a framework's tool object (whose calls
  do not go through ``__call__``) is refused with a ``TypeError`` saying where the decorator goes.

Every wrapper exposes the wrapped function's ``__signature__``, name and docstring.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

from . import _state
from ._spans import Frame, capture_inputs, capture_output, safe_begin, safe_end
from ._streams import StreamFunction, agen_body, gen_body

__all__ = ["clean_name", "framework_hint", "wrap"]


def clean_name(func: Any) -> str:
    """The name a span gets from what it decorates: the qualified name without ``<locals>``; for a callable
    object, its class's qualified name."""
    target = func
    while isinstance(target, functools.partial):
        target = target.func
    try:
        name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    except Exception:  # an object whose __getattr__ raises
        name = None
    if not isinstance(name, str):
        name = type(target).__qualname__
    return name.replace("<locals>.", "")


# -- framework tool objects ---------------------------------------------------------------------------

#: top-level package of a framework -> how its tools are declared, with the decorator in the right place
_FRAMEWORKS: dict[str, str] = {
    "langchain_core": "@tool\n    @track_step(kind=\"tool\")\n    def search(query: str) -> str: ...",
    "smolagents": "@tool\n    @track_step(kind=\"tool\")\n    def search(query: str) -> str: ...",
    "crewai": "@tool(\"search\")\n    @track_step(kind=\"tool\")\n    def search(query: str) -> str: ...",
    "agents": "@function_tool\n    @track_step(kind=\"tool\")\n    def search(query: str) -> str: ...",
    "pydantic_ai": "@agent.tool_plain\n    @track_step(kind=\"tool\")\n    def search(query: str) -> str: ...",
    "llama_index": "FunctionTool.from_defaults(fn=track_step(kind=\"tool\")(search))",
    "autogen_core": "FunctionTool(track_step(kind=\"tool\")(search), description=...)",
    "dspy": "dspy.Tool(track_step(kind=\"tool\")(search))",
    "haystack": "@tool\n    @track_step(kind=\"tool\")\n    def search(query: str) -> str: ...",
    "mcp": "@mcp.tool()\n    @track_step(kind=\"tool\")\n    def search(query: str) -> str: ...",
}
_ALIASES = {"langchain": "langchain_core", "langchain_community": "langchain_core", "langgraph": "langchain_core",
            "crewai_tools": "crewai", "autogen_agentchat": "autogen_core", "autogen": "autogen_core",
            "fastmcp": "mcp"}


def framework_hint(decorator: str, obj: Any) -> str | None:
    """The ``TypeError`` message for ``obj`` when it is an agent framework's object (a tool), else None."""
    for klass in type(obj).__mro__:
        root = (getattr(klass, "__module__", "") or "").split(".")[0]
        root = _ALIASES.get(root, root)
        if root in _FRAMEWORKS and (root != "agents" or klass.__name__.endswith("Tool")):
            return (f"{decorator} cannot decorate a {type(obj).__qualname__} object: it is {root}'s tool object, "
                    f"and the framework does not call it through __call__, so nothing would be recorded. "
                    f"Put {decorator} on the function itself, below the framework's decorator:\n    "
                    f"{_FRAMEWORKS[root].replace('track_step', decorator)}\n(see docs/frameworks.md)")
    return None


# -- choosing the wrapper -----------------------------------------------------------------------------


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


_helper_code_cache: dict[str, types.CodeType] = {}


def _helper_codes(name: str) -> types.CodeType | None:
    """The code object shared by every function ``contextlib.<name>`` makes (None if contextlib was never
    imported: then nothing was made by it)."""
    code = _helper_code_cache.get(name)
    if code is None:
        contextlib = sys.modules.get("contextlib")
        if contextlib is None:
            return None

        def gen() -> Any:
            yield

        code = _helper_code_cache[name] = getattr(contextlib, name)(gen).__code__
    return code


def wrap(func: Callable[..., Any], kind: type[Any], name: str, capture: bool | None,
         options: Mapping[str, Any]) -> Callable[..., Any]:
    """``func`` tracked as ``kind`` (Run, Step or Call) named ``name``. Chosen once, here."""
    sig = _signature(func)
    target: Any = func
    if not (inspect.isroutine(func) or isinstance(func, functools.partial) or hasattr(func, "__code__")):
        target = type(func).__call__.__get__(func)  # a callable object: what its calls run
    code = getattr(func, "__code__", None)
    if code is not None and code is _helper_codes("contextmanager"):
        return _context_manager(func, kind, name, capture, options, sig, is_async=False)
    if code is not None and code is _helper_codes("asynccontextmanager"):
        return _context_manager(func, kind, name, capture, options, sig, is_async=True)
    if inspect.isasyncgenfunction(target):
        return StreamFunction(func, agen_body, kind, name, capture, options, sig)
    if inspect.isgeneratorfunction(target):
        return StreamFunction(func, gen_body, kind, name, capture, options, sig)

    def capturing() -> bool:
        return capture or (capture is None and _state.capture_default)

    if inspect.iscoroutinefunction(target):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            frame = safe_begin(kind, name, options)
            captured = frame is not None and sig is not None and capturing()
            if captured:
                capture_inputs(frame, sig, args, kwargs)
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                safe_end(frame, exc)
                raise
            if captured:  # only a span whose inputs were captured records its return value
                capture_output(frame, result)
            safe_end(frame, None)
            return result

        return _signed(async_wrapper, sig)

    if sig is None or capture is False:  # capture can never apply: the leanest wrapper

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

        return _signed(lean_wrapper, sig)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        frame = safe_begin(kind, name, options)
        captured = frame is not None and (capture or (capture is None and _state.capture_default))
        if captured:
            capture_inputs(frame, sig, args, kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            safe_end(frame, exc)
            raise
        if captured:  # only a span whose inputs were captured records its return value (capture_output)
            capture_output(frame, result)
        safe_end(frame, None)
        return result

    return _signed(wrapper, sig)


def _signed(wrapper: Callable[..., Any], sig: inspect.Signature | None) -> Callable[..., Any]:
    # inspect.getcallargs and other tools that do not follow __wrapped__ see the real parameters
    if sig is not None:
        wrapper.__signature__ = sig  # type: ignore[attr-defined]
    return wrapper


# -- context managers made by contextlib --------------------------------------------------------------


def _context_manager(func: Callable[..., Any], kind: type[Any], name: str, capture: bool | None,
                     options: Mapping[str, Any], sig: inspect.Signature | None,
                     is_async: bool) -> Callable[..., Any]:
    """``@track_step`` above ``@contextmanager``: the span covers the ``with`` block and is current in it
    (without this, it would end when the context manager is made, before the block runs)."""
    cls = _AsyncTrackedContext if is_async else _TrackedContext

    @functools.wraps(func)
    def make(*args: Any, **kwargs: Any) -> Any:
        return cls(func(*args, **kwargs), kind, name, capture, options, sig, args, kwargs)

    return _signed(make, sig)


class _TrackedContext:
    __slots__ = ("_args", "_cm", "_frame", "_spec")

    def __init__(self, cm: Any, kind: type[Any], name: str, capture: bool | None, options: Mapping[str, Any],
                 sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._cm = cm
        self._spec = (kind, name, capture, options, sig)
        self._args = (args, kwargs)
        self._frame: Frame | None = None

    def _begin(self) -> Frame | None:
        kind, name, capture, options, sig = self._spec
        frame = self._frame = safe_begin(kind, name, options)
        if frame is not None and sig is not None and (capture or (capture is None and _state.capture_default)):
            capture_inputs(frame, sig, *self._args)
        self._args = ((), {})
        return frame

    def _end(self, suppressed: bool, exc: BaseException | None) -> None:
        safe_end(self._frame, None if suppressed else exc)
        self._frame = None

    def __enter__(self) -> Any:
        frame = self._begin()
        try:
            value = self._cm.__enter__()
        except BaseException as exc:
            safe_end(frame, exc)
            raise
        capture_output(frame, value)
        return value

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        try:
            suppressed = bool(self._cm.__exit__(exc_type, exc, tb))
        except BaseException as err:
            safe_end(self._frame, err)
            raise
        self._end(suppressed, exc)
        return suppressed


class _AsyncTrackedContext(_TrackedContext):
    __slots__ = ()

    async def __aenter__(self) -> Any:
        frame = self._begin()
        try:
            value = await self._cm.__aenter__()
        except BaseException as exc:
            safe_end(frame, exc)
            raise
        capture_output(frame, value)
        return value

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        try:
            suppressed = bool(await self._cm.__aexit__(exc_type, exc, tb))
        except BaseException as err:
            safe_end(self._frame, err)
            raise
        self._end(suppressed, exc)
        return suppressed
