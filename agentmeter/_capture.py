"""Safe snapshots of user values (captured inputs and outputs, metadata).

:func:`jsonable` turns anything into a JSON-safe structure: bounded in depth and size, secrets scrubbed by
key name and in text (:mod:`agentmeter._scrub`), NaN and infinity as strings, bytes as a short description,
invalid Unicode replaced, cycles broken, unknown objects as a truncated ``repr`` when their type's ``repr`` is
the standard library's, else as a placeholder naming the type (a user's ``__repr__`` may block or raise: it is
never called). It never raises. Whether anything was cut is reported so the record can carry a
``truncated`` flag.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from . import _guard
from ._scrub import REDACTED, is_secret_key, scrub

__all__ = ["REDACTED", "Snapshot", "flat", "is_secret_key", "jsonable", "set_limits", "snapshot"]

_MAX_DEPTH = 8
_MAX_ITEMS = 200


class Snapshot(NamedTuple):
    """A JSON-safe value plus whether anything was truncated while making it. A tuple, so a frozen record
    holding snapshots is plain JSON for the spool (encoded at C speed)."""

    value: Any
    truncated: bool
    size: int = 0  # approximate characters, for the exporter's memory budget

    def __repr__(self) -> str:
        return f"Snapshot({self.value!r}, truncated={self.truncated})"


_new = tuple.__new__


class _Walker:
    __slots__ = ("budget", "seen", "truncated")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.truncated = False
        self.seen: set[int] = set()

    def text(self, s: str) -> str:
        if len(s) > self.budget:  # cut first: never copy a 10 MB string to check its encoding
            self.truncated = True
            _count("truncated")
            s = s[: max(self.budget, 0)] + "...[truncated]"
        if not s.isascii():
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                _count("invalid_unicode")
                s = s.encode("utf-8", "replace").decode("utf-8")
        scrubbed = scrub(s)
        if scrubbed != s:
            _count("redacted")
            s = scrubbed
        self.budget -= len(s)
        return s

    def walk(self, value: Any, depth: int) -> Any:
        if self.budget <= 0:
            self.truncated = True
            return "...[truncated]"
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            self.budget -= 8
            if -(2**63) <= value < 2**63:
                return value
            _count("big_int")  # str() of a huge int raises past 4300 digits: describe it instead
            return self.text(f"<int of {value.bit_length()} bits>") if value.bit_length() > 4000 else str(value)
        if isinstance(value, float):
            self.budget -= 8
            if math.isnan(value):
                _count("non_finite")
                return "NaN"
            if math.isinf(value):
                _count("non_finite")
                return "Infinity" if value > 0 else "-Infinity"
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            self.budget -= 24
            _count("bytes")
            return f"<{type(value).__name__} len={len(value)}>"
        if depth >= _MAX_DEPTH:
            self.truncated = True
            return self.text(f"<{type(value).__name__} at depth {depth}>")
        ident = id(value)
        if ident in self.seen:
            _count("recursive")
            return "<recursive>"
        self.seen.add(ident)
        try:
            if isinstance(value, Mapping):
                out: dict[str, Any] = {}
                # list() copies a dict's items in one C call: another thread changing it cannot break this
                pairs = list(value.items()) if type(value) is dict else value.items()
                for i, (key, item) in enumerate(pairs):
                    if i >= _MAX_ITEMS or self.budget <= 0:
                        self.truncated = True
                        break
                    if not isinstance(key, str):
                        _count("non_string_key")
                        key = str(key) if key is None or isinstance(key, (int, float)) else _safe_repr(key)
                    skey = self.text(key)
                    if is_secret_key(skey):
                        _count("redacted")
                        out[skey] = REDACTED
                    else:
                        out[skey] = self.walk(item, depth + 1)
                return out
            if isinstance(value, (list, tuple, set, frozenset)):
                items = list(value) if not isinstance(value, tuple) else value
                result = []
                for i, item in enumerate(items):
                    if i >= _MAX_ITEMS or self.budget <= 0:
                        self.truncated = True
                        break
                    if (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], (str, bytes))
                            and is_secret_key(_key_text(item[0]))):  # a header pair: ("Authorization", ...)
                        _count("redacted")
                        result.append([self.text(_key_text(item[0])), REDACTED])
                        continue
                    result.append(self.walk(item, depth + 1))
                return result
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                return self.walk({f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)},
                                 depth)
            dump = getattr(value, "model_dump", None)  # pydantic models (openai responses among them)
            if callable(dump) and _from_pydantic(type(value)):
                try:
                    return self.walk(dump(), depth)
                except Exception:
                    pass  # fall through to repr
            _count("repr")
            return self.text(_safe_repr(value))
        finally:
            self.seen.discard(ident)


def _count(kind: str) -> None:
    _guard.counters[f"capture.{kind}"] += 1


def _from_pydantic(cls: type) -> bool:
    owner = next((k for k in cls.__mro__ if "model_dump" in k.__dict__), None)
    return owner is not None and (owner.__module__ or "").startswith("pydantic")


def _key_text(key: str | bytes) -> str:
    return key if isinstance(key, str) else key.decode("latin-1")


#: Modules whose ``__repr__`` implementations are known to be cheap and to call no user code of their own.
_READABLE_REPR = frozenset({"builtins", "datetime", "decimal", "uuid", "pathlib", "fractions", "ipaddress",
                            "enum", "collections", "re", "types", "functools", "array", "zoneinfo", "numpy"})


def _safe_repr(value: Any) -> str:
    """``repr(value)`` when the type's ``__repr__`` comes from the standard library (or numpy); else a
    placeholder naming the type. A user's own ``__repr__`` may block, raise or be huge, and it runs on the
    caller's thread here: it is never called."""
    cls = type(value)
    owner = next((k for k in cls.__mro__ if "__repr__" in k.__dict__), object)
    module = (owner.__module__ or "").lstrip("_").split(".")[0]
    if module not in _READABLE_REPR and module not in ("thread", "pydecimal", "collections_abc"):
        _count("opaque")
        return f"<{cls.__module__}.{cls.__qualname__} object>"
    try:
        return repr(value)[:1000]
    except Exception:
        return f"<unrepresentable {cls.__name__}>"


def jsonable(value: Any, max_chars: int = 65536, redact: Callable[[Any], Any] | None = None) -> Snapshot:
    """A JSON-safe copy of ``value`` (see the module docstring). Never raises."""
    try:
        walker = _Walker(max_chars)
        result = walker.walk(value, 0)
        truncated = walker.truncated
        if redact is not None:
            try:
                result = redact(result)
                result = _Walker(max_chars * 2).walk(result, 0)  # the hook may return anything
            except Exception as exc:
                _guard.warn("capture.redact", "the redact hook raised; value dropped", error=repr(exc)[:200])
                result = REDACTED
        return Snapshot(result, truncated, max_chars - walker.budget)
    except Exception as exc:  # a pathological object: never let it escape
        _guard.warn("capture.value", "value could not be captured; stored as its type name",
                    error=type(exc).__name__)
        return Snapshot(f"<uncapturable {type(value).__name__}>", True)


#: Strings seen to need nothing from :meth:`_Walker.text` (valid UTF-8, nothing for the scrubber), and keys
#: that also name no secret: the verdicts of the pure functions ``scrub`` and ``is_secret_key``, cached for
#: the short strings metadata repeats (``finish_reason``, ``stop``). Bounded: emptied when full.
_clean_texts: set[str] = set()
_clean_keys: set[str] = set()
_CLEAN_MAX = 4096
_CLEAN_LEN = 64  # at most 4096 strings of 64 characters: a few hundred KB


def _plain(s: str) -> bool:
    """Whether ``text(s)`` would return ``s`` itself (nothing replaced, nothing scrubbed; size aside)."""
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return scrub(s) == s


def _learn(s: str, names: set[str], key: bool) -> bool:
    ok = _plain(s) and not (key and is_secret_key(s))
    if ok and len(s) <= _CLEAN_LEN:
        if len(names) >= _CLEAN_MAX:
            names.clear()
        names.add(s)
    return ok


_INT64 = 2**63


def flat(value: dict[Any, Any], max_chars: int) -> Snapshot | None:
    """``jsonable(value, max_chars)`` for the usual metadata: a flat dict (string keys; None, bool, int,
    finite float and string values) in which nothing is a secret, cut or replaced, which it returns as it
    is (give it a copy). None when the dict is anything else: :func:`jsonable` then does the work (and
    counts what it redacts, cuts or replaces). Never raises."""
    used = 0
    clean_keys, clean_texts = _clean_keys, _clean_texts
    for key, item in value.items():
        if type(key) is not str or (key not in clean_keys and not _learn(key, clean_keys, True)):
            return None
        used += len(key)
        kind = type(item)
        if kind is str:
            if item not in clean_texts and not _learn(item, clean_texts, False):
                return None
            used += len(item)
        elif kind is int:
            if not -_INT64 <= item < _INT64:
                return None
            used += 8
        elif kind is float:
            if item - item != 0.0:  # NaN or infinity: jsonable writes them as strings
                return None
            used += 8
        elif item is not None and kind is not bool:
            return None
    if used >= max_chars:  # jsonable would cut something (its budget must stay above zero)
        return None
    return _new(Snapshot, (value, False, used))  # a NamedTuple's own __new__ is a Python function


#: (capture_max_chars, redact) of the current settings; agentmeter._state sets them with the settings
_limits: tuple[int, Callable[[Any], Any] | None] = (65536, None)


def set_limits(max_chars: int, redact: Callable[[Any], Any] | None) -> None:
    """Install the size cap and redact hook :func:`snapshot` applies (done when settings change)."""
    global _limits
    _limits = (max_chars, redact)


def snapshot(value: Any) -> Snapshot:
    """Capture ``value`` with the configured size cap and redact hook. Never raises."""
    max_chars, redact = _limits
    return jsonable(value, max_chars, redact)
