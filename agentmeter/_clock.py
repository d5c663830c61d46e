"""Clocks: wall time for timestamps (UTC, microseconds) and a monotonic clock for durations.

Both are module-level functions looked up at call time so ``agentmeter.testing`` can swap in a
deterministic clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

__all__ = ["iso_utc", "monotonic_ns", "ms3", "set_clock", "wall_us"]


def _wall_us() -> int:
    return time.time_ns() // 1000


wall_us: Callable[[], int] = _wall_us
monotonic_ns: Callable[[], int] = time.perf_counter_ns


def set_clock(wall: Callable[[], int] | None = None, monotonic: Callable[[], int] | None = None) -> None:
    """Replace the clocks (wall in epoch microseconds, monotonic in nanoseconds); None restores."""
    global wall_us, monotonic_ns
    wall_us = wall if wall is not None else _wall_us
    monotonic_ns = monotonic if monotonic is not None else time.perf_counter_ns



_second: tuple[int, str] = (-1, "")
#: "000" to "999": six digits of microseconds are two lookups (cheaper than formatting an int)
_DIGITS3 = tuple(f"{i:03d}" for i in range(1000))


def iso_utc(epoch_us: int) -> str:
    """Epoch microseconds -> ``2026-11-26T08:26:02.123456Z`` (fixed width, so text order is time order)."""
    global _second
    seconds = epoch_us // 1_000_000
    cached, prefix = _second
    if cached != seconds:  # timestamps of one run share their second: format it once
        t = time.gmtime(seconds)
        prefix = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}."
        _second = (seconds, prefix)
    micros = epoch_us - seconds * 1_000_000
    return f"{prefix}{_DIGITS3[micros // 1000]}{_DIGITS3[micros % 1000]}Z"


#: below 2**52 ns (52 days) a float's rounding error in ``ns / 1e6`` is under 1e-6 ms, the distance from an
#: exact value to the nearest tie of a rounding to microseconds that is not itself a tie
_EXACT_NS = 2**52


def ms3(ns: int) -> float:
    """``round(ns / 1e6, 3)`` (a duration in milliseconds, to the microsecond), by integer arithmetic where
    that gives the same float: a non-negative ``ns`` below 2**52 that is not a tie (``ns % 1000 == 500``,
    which ``round`` resolves on the binary value). Half the cost of ``round``."""
    if 0 <= ns < _EXACT_NS and ns % 1000 != 500:
        return (ns + 500) // 1000 / 1000
    return round(ns / 1e6, 3)


def parse_iso_utc(text: str) -> datetime:
    """Inverse of :func:`iso_utc`, returning an aware UTC datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
