"""genai-prices' plain token rates: for most models of its table, the price of a call's tokens is four rates
times four counts. :func:`plain_rates` reads them once per model, so ``pricing._Library.price`` computes in
a few microseconds the exact Decimal that the library's ``calc_price`` takes about 0.1 ms to compute (its
units registry, decomposition and validation run on every call). Anything else (a price history, tiers, a
per-request price, a unit we would not report) is left to the library: :data:`BY_LIBRARY`.
``tests/integrations/test_pricing_library.py`` compares every model of the table with the library.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["BY_LIBRARY", "RATE_UNITS", "hour_tokens", "plain_rates"]

#: the rates :func:`plain_rates` returns, in this order
RATE_UNITS = ("input_mtok", "cache_read_mtok", "cache_write_mtok", "output_mtok")
#: the units a model may have beside them and still be priced by them: counts a call of ours never reports
#: (web and storage searches), and 1-hour cache writes (a call that reports those goes to the library)
_PLAIN_UNITS = frozenset({*RATE_UNITS, "cache_write_1h_mtok", "web_searches_kcount", "storage_searches_kcount"})
#: the model's price is the library's to compute
BY_LIBRARY: Any = object()


def plain_rates(snapshot: Any, model: Any, provider_id: Any) -> Any:
    """The ``(input, cache read, cache write, output)`` rates per million tokens of ``model`` (Decimals, None
    where it has none) when genai-prices prices a call's tokens by them alone: one undated price (no price
    history, whose rates depend on the call's time), no tiers, no unit beyond :data:`_PLAIN_UNITS`.
    Otherwise, and for a model the table does not know, :data:`BY_LIBRARY`."""
    from genai_prices.types import ModelPrice  # loaded already: the caller holds a loaded snapshot

    try:
        provider, info = snapshot.find_provider_model(model, None, provider_id, None)
    except LookupError:
        return BY_LIBRARY  # unknown: the library says so (unpriced)
    prices = info.prices
    if type(prices) is not ModelPrice or provider.id == "groq":  # groq: audio billed by its own rule
        return BY_LIBRARY
    given = {k: v for k, v in vars(prices).items() if v is not None and not k.startswith("_")}
    if any(type(v) is not Decimal for v in given.values()) or not given.keys() <= _PLAIN_UNITS:
        return BY_LIBRARY
    return tuple(given.get(k) for k in RATE_UNITS)


def hour_tokens(call: Mapping[str, Any], written: int) -> bool:
    """Whether ``call`` reports 1-hour cache writes (``metadata["cache_write_1h_tokens"]``, at most the
    cache-write tokens), which the library prices at their own rate."""
    metadata = call.get("metadata")
    hour = metadata.get("cache_write_1h_tokens") if isinstance(metadata, Mapping) else None
    return isinstance(hour, int) and not isinstance(hour, bool) and 0 < hour <= written
