"""Time buckets of the local store read as ranges of its ``started_at`` indexes, for the over-time charts
over every run (the page's default: all time, no filter).

A ``GROUP BY`` of the bucket (``substr(started_at, 1, n) || ...``) sorts every run: SQLite cannot tell that
the expression keeps the index's order (1M-call store, 100,000 runs: 0.15 s, most of it the sort). Here the
buckets are found with one index seek each (the smallest start past the last bucket), and each (bucket,
key) is counted on an index that leads with the key and then ``started_at`` (a range count, no sort).

Exact, not approximate: the runs whose ``substr(started_at, 1, n)`` is a prefix ``k`` of ``n`` characters
are exactly those from ``k`` (included) to ``k`` with its last character incremented (excluded), in
SQLite's byte order (UTF-8 keeps code point order). ``substr`` stops at a NUL: a start shorter than ``n``
characters before its first NUL (if any) is in the bucket of that part ``q``, from ``q`` to ``q`` followed
by the character 1 (``q`` itself, and ``q``, NUL, anything). Only text starts are read this way (numbers sort before
text, blobs after: the smallest and largest start tell), and at most :data:`MAX_BUCKETS` buckets and
:data:`MAX_KEYS` keys; otherwise the callers run their ``GROUP BY``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["MAX_BUCKETS", "MAX_KEYS", "MAX_UNION", "PREFIX", "Rows", "bucket_ranges", "counts_sql", "keys_of"]

#: a bucket size -> how many characters of ``started_at`` name its bucket (the SQLite dialect's ``substr``)
PREFIX = {"minute": 16, "hour": 13, "day": 10}

#: more buckets than this: the GROUP BY (the auto bucket draws at most 240)
MAX_BUCKETS = 500
#: more keys (statuses, agents) than this: the GROUP BY
MAX_KEYS = 50
#: more buckets than this for one query of a SELECT per bucket: the GROUP BY (SQLite allows 500 SELECTs in
#: a compound one)
MAX_UNION = 240
#: the largest code point: a prefix ending with it has no successor
_LAST = 0x10FFFF

Rows = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def bucket_ranges(rows: Rows, length: int) -> list[tuple[str, str, str]] | None:
    """``(prefix, low, high)`` of each distinct ``substr(started_at, 1, length)`` of agent_runs' non-null
    starts, ascending: its runs start from ``low`` (included) to ``high`` (excluded). None when a start is
    not text, a prefix has no successor, or there are more than :data:`MAX_BUCKETS`."""
    # one seek each (min() and max() alone in their query: the planner reads an end of the index)
    (low,), = rows("SELECT min(started_at) FROM agent_runs", ())
    (high,), = rows("SELECT max(started_at) FROM agent_runs", ())
    if low is None:
        return []
    if not isinstance(low, str) or not isinstance(high, str):
        return None
    out: list[tuple[str, str, str]] = []
    start: str | None = low
    while start is not None:
        if len(out) == MAX_BUCKETS:
            return None
        prefix = start.split("\x00", 1)[0][:length]  # SQLite's substr stops at a NUL
        if len(prefix) < length:  # a short start: itself, or itself then a NUL and anything
            end = prefix + "\x01"
        elif ord(prefix[-1]) == _LAST:
            return None
        else:
            end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        out.append((prefix, prefix, end))
        (start,), = rows("SELECT min(started_at) FROM agent_runs WHERE started_at >= ?", [end])
    return out


def keys_of(rows: Rows, column: str) -> list[Any] | None:
    """The distinct values of agent_runs' ``column`` (NULL first when some run has none), one seek each on
    the index that leads with it; None when there are more than :data:`MAX_KEYS`."""
    keys: list[Any] = [None] if rows(f"SELECT 1 FROM agent_runs WHERE {column} IS NULL LIMIT 1", ()) else []
    (key,), = rows(f"SELECT min({column}) FROM agent_runs", ())
    while key is not None:
        if len(keys) == MAX_KEYS:
            return None
        keys.append(key)
        (key,), = rows(f"SELECT min({column}) FROM agent_runs WHERE {column} > ?", [key])
    return keys


def counts_sql(ranges: Sequence[tuple[str, str, str]], keys: Sequence[Any], column: str, index: str,
               label: str) -> tuple[str, list[Any]]:
    """One query: ``(bucket, key, runs)`` for every bucket of ``ranges`` and key of ``keys`` (0 included), by
    bucket and key; ``label`` is the SQL of a bucket's label from its prefix ``p``."""
    buckets = ", ".join("(?, ?, ?)" for _ in ranges)
    values = ", ".join("(?)" for _ in keys)
    sql = (f"WITH bk(p, lo, hi) AS (VALUES {buckets}), k(v) AS (VALUES {values}) "
           f"SELECT {label} AS b, v, (SELECT count(*) FROM agent_runs INDEXED BY {index} WHERE {column} IS v "
           "AND started_at >= lo AND started_at < hi) FROM bk, k ORDER BY b, v")
    return sql, [*(x for r in ranges for x in r), *keys]
