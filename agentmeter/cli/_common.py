"""Argument helpers shared by commands."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

__all__ = ["parse_since", "since_iso"]

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str | None) -> timedelta | None:
    """``24h``, ``30m``, ``7d``, ``2w``, ``90s`` -> timedelta; ``all`` or None -> None."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if not match:
        raise ValueError(f"--since must look like 30m, 24h, 7d, 2w or 'all'; got {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def since_iso(text: str | None, now: datetime | None = None) -> str | None:
    """The ISO timestamp ``--since`` points at (same format as the store's ``started_at``)."""
    delta = parse_since(text)
    if delta is None:
        return None
    start = (now or datetime.now(timezone.utc)) - delta
    return start.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
