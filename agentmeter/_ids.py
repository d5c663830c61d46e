"""Time-ordered unique ids (UUIDv7 text form), created once per record.

Ids are made on the caller's thread when a run, step or call starts and never change afterwards, so every
write downstream (SQLite upsert, MongoDB ``_id``, Snowflake de-duplication) is idempotent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

__all__ = ["new_id", "set_id_factory"]


def _uuid7() -> str:
    # RFC 9562 UUIDv7: 48-bit unix milliseconds, version 7, then 12 bits of sub-millisecond time (method 3,
    # so ids made one after another sort in creation order), variant 10, 62 random bits.
    ns = time.time_ns()
    ms, sub = divmod(ns, 1_000_000)
    value = (ms << 80) | (0x7000 | (sub * 4096 // 1_000_000)) << 64 | (0b10 << 62) | (
        int.from_bytes(os.urandom(8), "big") >> 2
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_factory: Callable[[], str] = _uuid7


def new_id() -> str:
    """Return a new time-ordered unique id. Never raises."""
    return _factory()


def set_id_factory(factory: Callable[[], str] | None) -> None:
    """Replace the id factory (``agentmeter.testing`` uses this for deterministic ids); None restores."""
    global _factory
    _factory = factory if factory is not None else _uuid7
