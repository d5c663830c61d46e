"""The one JSON encoder for what agentmeter stores: orjson (compact, UTF-8, key order kept).

Chosen over msgspec and the standard library by measurement (``benchmarks/bench_json.py``, table in
``docs/performance.md``). It is strict where the stores are: it raises ``TypeError`` on invalid Unicode (an
unpaired surrogate), an integer past 64 bits, a non-string key or an unknown type, so the caller repairs
the value instead of storing it half-right. It writes NaN and infinity as ``null``, so it is only given
values already made JSON-safe (:func:`agentmeter._capture.jsonable` writes them as the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"``; the exporter's last check, ``export._documents.json_safe``, as their
``repr``).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["OPT_PASSTHROUGH_SUBCLASS", "OPT_STRICT_INTEGER", "dumps", "dumps_bytes"]

OPT_STRICT_INTEGER = orjson.OPT_STRICT_INTEGER
#: subclasses of JSON types (named tuples) go to ``default``
OPT_PASSTHROUGH_SUBCLASS = orjson.OPT_PASSTHROUGH_SUBCLASS

#: ``value`` as compact JSON in UTF-8 bytes (the same rules as :func:`dumps`)
dumps_bytes = _dumps = orjson.dumps


def dumps(value: Any) -> str:
    """``value`` as compact JSON text. Raises ``TypeError`` for what no store can hold exactly."""
    return _dumps(value).decode()
