"""Cost of API calls, computed in the exporter (never on the caller's thread).

Prices come from user overrides (``configure(prices=...)``) first, then from the ``genai-prices`` library
when it is installed (it works offline). A call whose model has no known price gets ``cost_usd = None``
and ``priced = False``: never a silent $0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .contract import Price, Pricer

__all__ = ["make_pricer"]


def _override_price(spec: Mapping[str, Any], call: Mapping[str, Any]) -> Price:
    per_m_in = float(spec.get("input_per_mtok", 0.0))
    per_m_out = float(spec.get("output_per_mtok", 0.0))
    per_m_cached = float(spec.get("cached_input_per_mtok", per_m_in))
    if call.get("input_tokens") is None and call.get("output_tokens") is None:
        return Price(None, False, "override")
    cached = call.get("cached_input_tokens") or 0
    uncached = max((call.get("input_tokens") or 0) - cached, 0)
    cost = (uncached * per_m_in + cached * per_m_cached + (call.get("output_tokens") or 0) * per_m_out) / 1e6
    return Price(round(cost, 10), True, "override")


def make_pricer(prices: Mapping[str, Any]) -> Pricer:
    """A pricer using ``prices`` (model -> per-million-token prices) as overrides."""
    table = dict(prices)

    def price(call: Mapping[str, Any]) -> Price:
        model = call.get("model")
        if model is not None and model in table:
            return _override_price(table[model], call)
        return Price(None, False, None)

    return price
