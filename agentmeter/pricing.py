"""Cost of API calls, computed in the exporter (never on the caller's thread).

Prices come from, in order:

1. **your overrides**, ``configure(prices={...})``: per model, per million tokens
   (``{"my-model": {"input_per_mtok": 0.5, "output_per_mtok": 1.5, "cached_input_per_mtok": 0.25,
   "effective_from": "2026-01-01"}}``), or per request / per billable unit for non-token APIs
   (``{"tavily:search": {"per_credit": 0.008}}``, ``{"tavily:extract": {"per_request": 0.002}}``). A value
   may be a list of such dicts with different ``effective_from`` dates (a price history);
2. **genai-prices**, a maintained price library that ships its data and works offline (imported the first
   time a call needs it, in the exporter, never by ``import agentmeter``);
3. otherwise the call is **unpriced**: ``cost_usd = None`` and ``priced = False``, never a silent $0.

A request the provider rejected (OpenAI or Tavily answered 4xx/5xx and reported no usage) is not billed:
it costs 0 with ``price_source = "not_billed"``. A call whose tokens are unknown (a stream read without the
usage chunk, a timeout) is unpriced even when its model's price is known.

Override keys are matched against each call, most specific first: ``"provider:model"``, ``"model"``, the
same two with a trailing date removed (``gpt-4o-2024-08-06`` -> ``gpt-4o``), ``"provider:operation"``,
then ``"provider"``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import Any, NamedTuple

from . import _guard
from .contract import Price, Pricer

__all__ = ["LIBRARY", "NOT_BILLED", "OVERRIDE", "PRICE_FIELDS", "make_pricer", "validate_prices"]

OVERRIDE = "override"
LIBRARY = "genai-prices"
NOT_BILLED = "not_billed"

#: Accepted fields of one override, with their meaning (all prices in US dollars).
PRICE_FIELDS: dict[str, str] = {
    "input_per_mtok": "price of one million input (prompt) tokens",
    "output_per_mtok": "price of one million output tokens (reasoning tokens are output tokens)",
    "cached_input_per_mtok": "price of one million cached input tokens (default: input_per_mtok)",
    "per_request": "price of one successful request",
    "per_unit": "price of one billable unit the call reported (call.units: e.g. Tavily credits)",
    "per_credit": "alias of per_unit",
    "effective_from": "YYYY-MM-DD: the price applies to calls started on or after this date (UTC)",
}
_TOKEN_FIELDS = ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok")
#: Providers whose rejected requests (4xx/5xx without usage) are known not to be billed.
_REJECTS_FREE = ("openai", "tavily")
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


class _Spec(NamedTuple):
    effective_from: str  # "" = always
    input_per_mtok: float | None
    output_per_mtok: float | None
    cached_input_per_mtok: float | None
    per_request: float | None
    per_unit: float | None


def _number(key: str, name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"prices[{key!r}].{name} must be a non-negative number, got {value!r}")
    return float(value)


def _spec(key: str, raw: Any) -> _Spec:
    if not isinstance(raw, Mapping):
        raise ValueError(f"prices[{key!r}] must be a dict (or a list of dicts) with some of "
                         f"{', '.join(PRICE_FIELDS)}; got {type(raw).__name__}")
    unknown = set(raw) - set(PRICE_FIELDS)
    if unknown:
        raise ValueError(f"prices[{key!r}] has unknown field(s) {sorted(unknown)}; accepted: "
                         f"{', '.join(PRICE_FIELDS)}")
    if "per_unit" in raw and "per_credit" in raw:
        raise ValueError(f"prices[{key!r}]: give per_unit or per_credit (the same thing), not both")
    when = raw.get("effective_from")
    if when is None:
        effective = ""
    elif isinstance(when, (date, datetime)):
        effective = when.strftime("%Y-%m-%d")
    elif isinstance(when, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", when):
        try:
            date.fromisoformat(when)
        except ValueError:
            raise ValueError(f"prices[{key!r}].effective_from is not a valid date: {when!r}") from None
        effective = when
    else:
        raise ValueError(f"prices[{key!r}].effective_from must be a 'YYYY-MM-DD' string, got {when!r}")
    spec = _Spec(
        effective,
        _number(key, "input_per_mtok", raw.get("input_per_mtok")),
        _number(key, "output_per_mtok", raw.get("output_per_mtok")),
        _number(key, "cached_input_per_mtok", raw.get("cached_input_per_mtok")),
        _number(key, "per_request", raw.get("per_request")),
        _number(key, "per_unit", raw.get("per_unit", raw.get("per_credit"))),
    )
    if all(v is None for v in spec[1:]):
        raise ValueError(f"prices[{key!r}] sets no price; give at least one of "
                         f"{', '.join(f for f in PRICE_FIELDS if f != 'effective_from')}")
    return spec


def validate_prices(prices: Any) -> dict[str, tuple[_Spec, ...]]:
    """Check a ``prices`` setting; return it parsed (each key's specs, oldest first).

    Raises ``ValueError`` naming the key and field at fault.
    """
    if not isinstance(prices, Mapping):
        raise ValueError(f"prices must be a dict of model (or 'provider:operation') -> price, "
                         f"got {type(prices).__name__}")
    table: dict[str, tuple[_Spec, ...]] = {}
    for key, raw in prices.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"prices keys must be non-empty strings (model names), got {key!r}")
        items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if not items:
            raise ValueError(f"prices[{key!r}] is an empty list")
        specs = sorted((_spec(key, item) for item in items), key=lambda s: s.effective_from)
        dates = [s.effective_from for s in specs]
        if len(set(dates)) != len(dates):
            raise ValueError(f"prices[{key!r}] has two prices with the same effective_from")
        table[key] = tuple(specs)
    return table


def _keys(call: Mapping[str, Any]) -> list[str]:
    provider, model, operation = call.get("provider"), call.get("model"), call.get("operation")
    keys: list[str] = []
    models = [model] if model else []
    if model:
        stripped = _DATE_SUFFIX.sub("", model)
        if stripped != model:
            models.append(stripped)
    for m in models:
        if provider:
            keys.append(f"{provider}:{m}")
        keys.append(m)
    if provider and operation:
        keys.append(f"{provider}:{operation}")
    if provider:
        keys.append(provider)
    return keys


def _applicable(specs: tuple[_Spec, ...], started_at: Any) -> _Spec | None:
    day = started_at[:10] if isinstance(started_at, str) else ""
    chosen = None
    for spec in specs:  # oldest first
        if not spec.effective_from or (day and spec.effective_from <= day):
            chosen = spec
    return chosen


def _override_cost(spec: _Spec, call: Mapping[str, Any]) -> Price:
    cost = 0.0
    if any(getattr(spec, f) is not None for f in _TOKEN_FIELDS):
        input_tokens, output_tokens = call.get("input_tokens"), call.get("output_tokens")
        if input_tokens is None and output_tokens is None:
            return Price(None, False, None)
        cached = min(call.get("cached_input_tokens") or 0, input_tokens or 0)
        per_in = spec.input_per_mtok or 0.0
        per_cached = spec.cached_input_per_mtok if spec.cached_input_per_mtok is not None else per_in
        cost += ((input_tokens or 0) - cached) * per_in + cached * per_cached
        cost += (output_tokens or 0) * (spec.output_per_mtok or 0.0)
        cost /= 1e6
    if spec.per_unit is not None:
        units = call.get("units")
        if units is None:
            if spec.per_request is None:
                return Price(None, False, None)
        else:
            cost += float(units) * spec.per_unit
    if spec.per_request is not None:
        cost += spec.per_request
    return Price(round(cost, 10), True, OVERRIDE)


class _Library:
    """genai-prices, imported on first use (in the exporter). Unavailable -> every lookup misses."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mod: Any = None
        self._providers: set[str] = set()
        self._failed = False

    def _load(self) -> Any:
        if self._mod is None and not self._failed:
            try:
                import genai_prices
                from genai_prices import data_snapshot

                self._mod = genai_prices
                self._providers = {p.id for p in data_snapshot.get_snapshot().providers}
            except ImportError:
                self._failed = True
        return self._mod

    def price(self, call: Mapping[str, Any]) -> Price | None:
        model = call.get("model")
        input_tokens, output_tokens = call.get("input_tokens"), call.get("output_tokens")
        if not model:
            return None
        with self._lock:
            lib = self._load()
            if lib is None:
                return None
            provider = call.get("provider")
            provider_id = provider if provider in self._providers else None
            when = _timestamp(call.get("started_at"))
            usage = lib.Usage(
                input_tokens=input_tokens or 0,
                output_tokens=output_tokens or 0,
                cache_read_tokens=min(call.get("cached_input_tokens") or 0, input_tokens or 0),
            )
            try:
                result = lib.calc_price(usage, model, provider_id=provider_id, genai_request_timestamp=when)
            except LookupError:
                return None
        if input_tokens is None and output_tokens is None:
            return Price(None, False, None)  # the model is known, the tokens are not
        return Price(round(float(result.total_price), 10), True, LIBRARY)


def _timestamp(started_at: Any) -> datetime | None:
    if not isinstance(started_at, str):
        return None
    try:
        return datetime.fromisoformat(started_at.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return None


def make_pricer(prices: Mapping[str, Any]) -> Pricer:
    """A pricer: overrides from ``prices`` first, then genai-prices, else unpriced. Raises ``ValueError``
    for an invalid ``prices`` setting; the pricer itself never raises."""
    table = validate_prices(prices)
    library = _Library()

    def price(call: Mapping[str, Any]) -> Price:
        try:
            return lookup(call)
        except Exception as exc:
            _guard.internal_error("pricing", exc)
            return Price(None, False, None)

    def lookup(call: Mapping[str, Any]) -> Price:
        if (call.get("provider") in _REJECTS_FREE and call.get("status") == "error"
                and (call.get("http_status") or 0) >= 400 and call.get("input_tokens") is None
                and call.get("output_tokens") is None and call.get("units") is None):
            return Price(0.0, True, NOT_BILLED)
        for key in _keys(call):
            specs = table.get(key)
            if specs is not None:
                spec = _applicable(specs, call.get("started_at"))
                if spec is not None:
                    return _override_cost(spec, call)
        found = library.price(call)
        return found if found is not None else Price(None, False, None)

    return price
