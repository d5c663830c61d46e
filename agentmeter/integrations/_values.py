"""Reading the values client and framework objects carry, whatever their shape."""

from __future__ import annotations

from typing import Any

__all__ = ["as_count", "attr"]


def attr(obj: Any, name: str) -> Any:
    """``obj.name`` or ``obj[name]`` (pydantic models and plain dicts alike), else None."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def as_count(value: Any) -> int | None:
    """A token count: a non-negative int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
