"""Time-ordered unique ids (UUIDv7 text form), created once per record.

Ids are made on the caller's thread when a run, step or call starts and never change afterwards, so every
write downstream (SQLite upsert, MongoDB ``_id``, Snowflake de-duplication) is idempotent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

__all__ = ["new_id", "set_id_factory"]


_HEX3 = [f"{i:03x}" for i in range(4096)]
_prefix: tuple[int, str] = (-1, "")
_time_ns = time.time_ns
_bits = random.getrandbits  # the random module reseeds itself in a forked child


def _uuid7() -> str:
    # RFC 9562 UUIDv7: 48-bit unix milliseconds, version 7, then 12 bits of sub-millisecond time (method 3,
    # so ids made one after another sort in creation order), variant 10, 62 random bits. The millisecond
    # prefix is formatted once per millisecond: this runs for every span, on the caller's thread.
    global _prefix
    ms, sub = divmod(_time_ns(), 1_000_000)
    cached_ms, prefix = _prefix
    if cached_ms != ms:
        prefix = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7"
        _prefix = (ms, prefix)
    tail = "%016x" % ((_bits(64) >> 2) | 0x8000000000000000)
    return f"{prefix}{_HEX3[sub * 4096 // 1_000_000]}-{tail[:4]}-{tail[4:]}"


_factory: Callable[[], str] = _uuid7


def new_id() -> str:
    """Return a new time-ordered unique id. Never raises."""
    return _factory()


def set_id_factory(factory: Callable[[], str] | None) -> None:
    """Replace the id factory (``agentmeter.testing`` uses this for deterministic ids); None restores."""
    global _factory
    _factory = factory if factory is not None else _uuid7
