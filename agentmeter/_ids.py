"""Time-ordered unique ids (UUIDv7 text form), created once per record.

Ids are made on the caller's thread when a run, step or call starts and never change afterwards, so every
write downstream (SQLite upsert, MongoDB ``_id``, Snowflake de-duplication) is idempotent.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable

__all__ = ["new_id", "set_id_factory"]


_HEX3 = [f"{i:03x}" for i in range(4096)]
_HEX1 = "0123456789abcdef"
_prefix: tuple[int, str] = (-1, "")
#: (milliseconds >> 16, its text "xxxxxxxx-"): the id's first 32 bits, which change every 65 s
_upper: tuple[int, str] = (-1, "")
_time_ns = time.time_ns
#: the 62 bits after the variant: a counter from a random start, so ids made in one process never repeat
#: and ids of two processes (a forked child, a pool worker, another host) collide only if both start
#: within 2**-20 of each other's range of 2**62 (the counter is re-seeded in a forked child)
_START_BITS = 61


def _seed() -> itertools.count[int]:
    return itertools.count(int.from_bytes(os.urandom(8), "big") >> (64 - _START_BITS))


_counter = _seed()
#: (counter >> 12, its text "-vxxx-xxxxxxxxx"): the variant and the counter's upper bits, formatted once per
#: 4096 ids; the lowest 12 bits are a table lookup
_middle: tuple[int, str] = (-1, "")


def _reseed() -> None:  # a forked child must not repeat its parent's sequence
    global _counter, _middle
    _counter = _seed()
    _middle = (-1, "")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def _uuid7() -> str:
    # RFC 9562 UUIDv7: 48-bit unix milliseconds, version 7, then 12 bits of sub-millisecond time (method 3,
    # so ids made one after another sort in creation order), variant 10, then 62 bits: a counter from a
    # random start (method 1's dedicated counter, seeded per process), so ids of one thread sort in
    # creation order even within one sub-millisecond step. The millisecond prefix and the counter's upper
    # bits are formatted once each: this runs for every span, on the caller's thread.
    global _prefix, _middle, _upper
    ms, sub = divmod(_time_ns(), 1_000_000)
    n = next(_counter)
    cached_ms, prefix = _prefix
    if cached_ms != ms:  # every millisecond: the upper 32 bits (every 65 s) by format, the lower 16 by lookups
        cached_hi, hi = _upper
        if cached_hi != ms >> 16:
            hi = f"{ms >> 16:08x}-"
            _upper = (ms >> 16, hi)
        lo = ms & 0xFFFF
        prefix = f"{hi}{_HEX3[lo >> 4]}{_HEX1[lo & 0xF]}-7"
        _prefix = (ms, prefix)
    high = n >> 12
    cached_high, middle = _middle
    if cached_high != high:
        text = "%013x" % ((high & 0x3FFFFFFFFFFFF) | 0x8000000000000)
        middle = f"-{text[:4]}-{text[4:]}"
        _middle = (high, middle)
    return f"{prefix}{_HEX3[sub * 4096 // 1_000_000]}{middle}{_HEX3[n & 0xFFF]}"


_factory: Callable[[], str] = _uuid7


def new_id() -> str:
    """Return a new time-ordered unique id. Never raises."""
    return _factory()


def set_id_factory(factory: Callable[[], str] | None) -> None:
    """Replace the id factory (``agentmeter.testing`` uses this for deterministic ids); None restores."""
    global _factory
    _factory = factory if factory is not None else _uuid7
