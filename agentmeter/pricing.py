"""Cost of API calls, computed in the exporter (never on the caller's thread).

Prices come from, in order:

1. **your overrides**, ``configure(prices={...})``: per model, per million tokens
   (``{"my-model": {"input_per_mtok": 0.5, "output_per_mtok": 1.5, "cached_input_per_mtok": 0.25,
   "cache_write_per_mtok": 0.625, "effective_from": "2026-01-01"}}``), or per request / per billable unit for
   non-token APIs (``{"tavily:search": {"per_credit": 0.008}}``, ``{"tavily:extract": {"per_request": 0.002}}``).
   A value may be a list of such dicts with different ``effective_from`` dates (a price history);
2. **genai-prices**, a maintained price library that ships its data and works offline;
3. otherwise the call is **unpriced**: ``cost_usd = None`` and ``priced = False``, never a silent $0.

Token counts follow one convention whatever the provider: ``input_tokens`` counts every input token, and
``cached_input_tokens`` (read from the provider's cache) and ``cache_write_tokens`` (written to it) are
the parts of it billed at their own rates; the rest is billed at the input rate. (OpenAI reports usage
this way; Anthropic reports the three separately and its integration adds them up.)

genai-prices is loaded by :func:`load_library`, on the thread that calls it, where the import cannot race
with your threads: ``agentmeter.configure()``, every LLM integration's ``instrument()`` and
``agentmeter.testing.capture_runs()`` call it, and so does the end of your first run when no other thread
of your program is running. The exporter's threads load it themselves only when that imports nothing but
genai-prices' own modules (pydantic and httpx2 already imported, as openai 3.x and anthropic do):
importing a module on a background thread while your threads use it can crash them (openai 2.x clients
look ``httpx2`` up in ``sys.modules`` and fail on a half-imported one). Otherwise calls that only the
library could price stay unpriced (``agentmeter.stats().unpriced_price_table_not_loaded`` counts them).

A request the provider rejected (OpenAI, Anthropic or Tavily answered 4xx/5xx and reported no usage) is
not billed: it costs 0 with ``price_source = "not_billed"``. A call whose tokens are unknown (a stream
read without the usage chunk or closed before its output count, a timeout) is unpriced even when its
model's price is known (:func:`tokens_unknown`).

Override keys are matched against each call, most specific first: ``"provider:model"``, ``"model"``, the
same two with a trailing date removed (``gpt-4o-2024-08-06`` -> ``gpt-4o``), ``"provider:operation"``,
then ``"provider"``.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import date, datetime, timezone
from typing import Any, NamedTuple

from . import _guard
from ._library_rates import BY_LIBRARY, hour_tokens, plain_rates
from .contract import Price, Pricer

__all__ = ["LIBRARY", "NOT_BILLED", "OVERRIDE", "PRICE_FIELDS", "library_loaded", "load_library",
           "load_library_if_alone", "make_pricer", "tokens_unknown", "validate_prices"]

OVERRIDE = "override"
LIBRARY = "genai-prices"
NOT_BILLED = "not_billed"

#: Accepted fields of one override, with their meaning (all prices in US dollars).
PRICE_FIELDS: dict[str, str] = {
    "input_per_mtok": "price of one million input (prompt) tokens",
    "output_per_mtok": "price of one million output tokens (reasoning tokens are output tokens)",
    "cached_input_per_mtok": "price of one million cached input tokens (default: input_per_mtok)",
    "cache_write_per_mtok": "price of one million input tokens written to the cache (default: input_per_mtok)",
    "per_request": "price of one successful request",
    "per_unit": "price of one billable unit the call reported (call.units: e.g. Tavily credits)",
    "per_credit": "alias of per_unit",
    "effective_from": "YYYY-MM-DD: the price applies to calls started on or after this date (UTC)",
}
_TOKEN_FIELDS = ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok")
#: Providers whose rejected requests (4xx/5xx without usage) are known not to be billed.
_REJECTS_FREE = ("openai", "anthropic", "tavily")
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


class _Spec(NamedTuple):
    effective_from: str  # "" = always
    input_per_mtok: float | None
    output_per_mtok: float | None
    cached_input_per_mtok: float | None
    cache_write_per_mtok: float | None
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
        _number(key, "cache_write_per_mtok", raw.get("cache_write_per_mtok")),
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


def _keys(call: Mapping[str, Any]) -> tuple[str, ...]:
    provider, model, operation = call.get("provider"), call.get("model"), call.get("operation")
    try:
        return _keys_of(provider, model, operation)
    except TypeError:  # an unhashable name: not cached
        return _keys_of.__wrapped__(provider, model, operation)


@functools.lru_cache(maxsize=1024)  # a program calls a few models: the keys of each are made once
def _keys_of(provider: Any, model: Any, operation: Any) -> tuple[str, ...]:
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
    return tuple(keys)


def _applicable(specs: tuple[_Spec, ...], started_at: Any) -> _Spec | None:
    day = started_at[:10] if isinstance(started_at, str) else ""
    chosen = None
    for spec in specs:  # oldest first
        if not spec.effective_from or (day and spec.effective_from <= day):
            chosen = spec
    return chosen


def tokens_unknown(call: Mapping[str, Any]) -> bool:
    """True when a call's tokens are not known well enough to price it: none was reported, or it is a
    stream whose output count never arrived (closed before its last event)."""
    if call.get("output_tokens") is not None:
        return False
    if call.get("input_tokens") is None:
        return True
    metadata = call.get("metadata")
    return isinstance(metadata, Mapping) and bool(metadata.get("stream"))


def _input_parts(call: Mapping[str, Any]) -> tuple[int, int, int]:
    """(input tokens, of which read from the cache, of which written to it), clamped to be consistent."""
    total = call.get("input_tokens") or 0
    cached = min(call.get("cached_input_tokens") or 0, total)
    written = min(call.get("cache_write_tokens") or 0, total - cached)
    return total, cached, written


def _override_cost(spec: _Spec, call: Mapping[str, Any]) -> Price:
    # tokens_unknown and _input_parts written out: this runs for every priced call, in the exporter
    get = call.get
    cost = 0.0
    if (spec.input_per_mtok is not None or spec.output_per_mtok is not None
            or spec.cached_input_per_mtok is not None or spec.cache_write_per_mtok is not None):  # _TOKEN_FIELDS
        output = get("output_tokens")
        total_in = get("input_tokens")
        if output is None and (total_in is None or tokens_unknown(call)):
            return _UNPRICED
        total_in = total_in or 0
        cached = min(get("cached_input_tokens") or 0, total_in)
        written = min(get("cache_write_tokens") or 0, total_in - cached)
        per_in = spec.input_per_mtok or 0.0
        per_cached = spec.cached_input_per_mtok if spec.cached_input_per_mtok is not None else per_in
        per_written = spec.cache_write_per_mtok if spec.cache_write_per_mtok is not None else per_in
        cost += (total_in - cached - written) * per_in + cached * per_cached + written * per_written
        cost += (output or 0) * (spec.output_per_mtok or 0.0)
        cost /= 1e6
    if spec.per_unit is not None:
        units = get("units")
        if units is None:
            if spec.per_request is None:
                return _UNPRICED
        else:
            cost += float(units) * spec.per_unit
    if spec.per_request is not None:
        cost += spec.per_request
    return _new_price(Price, (round(cost, 10), True, OVERRIDE))


_UNPRICED = Price(None, False, None)
_new_price = tuple.__new__  # a NamedTuple's __new__ is a Python function

#: no rates: the pricer decides (see :class:`TokenRates`)
_NO_RATES: tuple[float, ...] = ()


class TokenRates(dict[tuple[Any, Any, Any], tuple[float, ...]]):
    """``(provider, model, operation)`` -> ``(input, cached input, cache write, output)`` per million tokens:
    the rates of the override that prices that name's calls by their tokens alone, or ``()`` when none does
    (no override, a dated one, one with a per-request or per-unit part: only the pricer can say).

    What a store reads to price a call whose output tokens are known without building its dict: the cost is
    then ``round((0.0 + ((input - cached - written) * r[0] + cached * r[1] + written * r[2])
    + output * r[3]) / 1e6, 10)``, ``cached`` and ``written`` clamped as :func:`_override_cost` clamps them
    (the same float, in the same order). Filled on first use; a hit is a plain dict lookup (no call)."""

    __slots__ = ("_candidates",)

    def __init__(self, candidates: Any) -> None:
        super().__init__()
        self._candidates = candidates

    def __missing__(self, name: tuple[Any, Any, Any]) -> tuple[float, ...]:
        found = self._candidates({"provider": name[0], "model": name[1], "operation": name[2]})
        rates = _NO_RATES
        if found and len(found[0]) == 1:  # the first override applies to every call when it is not dated
            spec = found[0][0]
            if (not spec.effective_from and spec.per_unit is None and spec.per_request is None
                    and (spec.input_per_mtok is not None or spec.output_per_mtok is not None
                         or spec.cached_input_per_mtok is not None or spec.cache_write_per_mtok is not None)):
                per_in = spec.input_per_mtok or 0.0
                rates = (per_in,
                         spec.cached_input_per_mtok if spec.cached_input_per_mtok is not None else per_in,
                         spec.cache_write_per_mtok if spec.cache_write_per_mtok is not None else per_in,
                         spec.output_per_mtok or 0.0)
        if len(self) >= 1024:  # a program calls a few models
            self.clear()
        self[name] = rates
        return rates


def token_rates(pricer: Pricer) -> TokenRates | None:
    """The :class:`TokenRates` of a pricer :func:`make_pricer` made (``None`` for any other pricer)."""
    rates = getattr(pricer, "token_rates", None)
    return rates if isinstance(rates, TokenRates) else None


class _Library:
    """genai-prices and its bundled price table, loaded once per process (see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mod: Any = None
        self.providers: frozenset[str] = frozenset()
        self.missing = False  # not installed (or broken): every lookup misses
        #: (model, provider_id) -> the model's plain token rates, or BY_LIBRARY (:func:`plain_rates`)
        self.rates: dict[tuple[Any, Any], Any] = {}
        self.snapshot: Any = None  # the price table the rates were read from
        self.get_snapshot: Callable[[], Any] = lambda: None  # genai_prices.data_snapshot.get_snapshot, once loaded

    def load(self) -> bool:
        with self.lock:
            if self.mod is None and not self.missing:
                try:
                    import genai_prices  # ~30 ms: only when a price is needed
                    from genai_prices import data_snapshot  # ~30 ms: only when a price is needed

                    snapshot = data_snapshot.get_snapshot()  # imports the table (genai_prices.data) now
                    self.providers = frozenset(p.id for p in snapshot.providers)
                    self.get_snapshot = data_snapshot.get_snapshot
                    self.snapshot = snapshot
                    try:  # one price now, so the modules calc_price imports on first use load here too
                        genai_prices.calc_price(genai_prices.Usage(input_tokens=1, output_tokens=1),
                                                "gpt-4o-mini", provider_id="openai")
                    except LookupError:
                        pass
                    self.mod = genai_prices
                except ImportError:  # not installed (no pricing extra): calls without an override are unpriced
                    self.missing = True
                except Exception as exc:  # a broken install: the same, said once
                    self.missing = True
                    _guard.warn("pricing.library", "genai-prices failed to load; calls without a price "
                                "override are unpriced", error=f"{type(exc).__name__}: {exc}"[:300])
            return self.mod is not None

    def price(self, call: Mapping[str, Any]) -> Price | None:
        model = call.get("model")
        if not model or self.mod is None:
            return self.price_by_library(call)
        provider = call.get("provider")
        provider_id = provider if provider in self.providers else None
        if self.snapshot is not self.get_snapshot():  # update_prices() or set_custom_snapshot() swapped it
            with self.lock:
                self.rates.clear()
                self.snapshot = self.get_snapshot()
        try:
            rates = self.rates[model, provider_id]
        except KeyError:
            with self.lock:
                rates = self.rates[model, provider_id] = plain_rates(self.snapshot, model, provider_id)
        except TypeError:  # an unhashable model name: the library says what it is
            return self.price_by_library(call)
        if rates is BY_LIBRARY:
            return self.price_by_library(call)
        total_in, cached, written = _input_parts(call)
        output = call.get("output_tokens") or 0
        uncached = total_in - cached - written
        per_in, per_cached, per_written, per_out = rates
        if ((uncached and per_in is None) or (cached and per_cached is None) or (written and per_written is None)
                or (output and per_out is None) or (written and hour_tokens(call, written))):
            return self.price_by_library(call)  # a unit this model has no plain rate for, or 1-hour cache writes
        if tokens_unknown(call):
            return Price(None, False, None)  # the model is known, the tokens are not
        cost = ((per_in or 0) * uncached + (per_cached or 0) * cached + (per_written or 0) * written
                + (per_out or 0) * output) / 1_000_000
        return Price(round(float(cost), 10), True, LIBRARY)

    def price_by_library(self, call: Mapping[str, Any]) -> Price | None:
        """The price genai-prices' ``calc_price`` gives ``call`` (what :meth:`price` computes itself for
        models with plain token rates)."""
        model = call.get("model")
        if not model:
            return None
        lib = self.mod
        if lib is None:
            if self.missing:
                return None
            if not (_fully_imported("pydantic") and _fully_imported("httpx2")) or not self.load():
                # Not loaded, and loading it here (on the exporter's thread) would import modules your
                # threads may be using, half-imported (see the module docstring): unpriced, and counted.
                _guard.counters["pricing.library_not_loaded"] += 1
                return None
            lib = self.mod
        total_in, cached, written = _input_parts(call)
        parts: dict[str, int] = {"input_tokens": total_in, "output_tokens": call.get("output_tokens") or 0,
                                 "cache_read_tokens": cached}
        if written:
            parts["cache_write_tokens"] = written
            metadata = call.get("metadata")
            hour = metadata.get("cache_write_1h_tokens") if isinstance(metadata, Mapping) else None
            if isinstance(hour, int) and not isinstance(hour, bool) and 0 < hour <= written:
                parts["cache_write_1h_tokens"] = hour  # Anthropic's 1-hour cache writes cost more
        provider = call.get("provider")
        provider_id = provider if provider in self.providers else None
        with self.lock:
            try:
                result = lib.calc_price(lib.Usage(**parts), model, provider_id=provider_id,
                                        genai_request_timestamp=_timestamp(call.get("started_at")))
            except LookupError:
                return None
        if tokens_unknown(call):
            return Price(None, False, None)  # the model is known, the tokens are not
        return Price(round(float(result.total_price), 10), True, LIBRARY)


_library = _Library()


def _fully_imported(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


def load_library() -> bool:
    """Import genai-prices and load its price table on the calling thread (once per process); True when
    it is available. Idempotent, thread-safe; never raises.

    ``agentmeter.configure()``, the LLM integrations' ``instrument()`` and ``capture_runs()`` call it, so
    you need it only when none of them runs: call it once at start-up, before your threads start.
    """
    try:
        return _library.load()
    except Exception as exc:
        _guard.internal_error("pricing_load", exc)
        return False


def load_library_if_alone() -> None:
    """:func:`load_library` now if no other thread of the program runs (so nothing can race with the
    import); called where the exporter is created, on the caller's thread. Never raises."""
    try:
        if _library.mod is not None or _library.missing:
            return
        me = threading.current_thread()
        if all(t is me or t.name.startswith("agentmeter-") for t in threading.enumerate()):
            load_library()
    except Exception as exc:
        _guard.internal_error("pricing_load", exc)


def library_loaded() -> bool:
    """True once :func:`load_library` has loaded genai-prices in this process."""
    return _library.mod is not None


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
    library = _library

    def price(call: Mapping[str, Any]) -> Price:
        try:
            return lookup(call)
        except Exception as exc:
            _guard.internal_error("pricing", exc)
            return Price(None, False, None)

    #: (provider, model, operation) -> the price histories of its override keys, most specific first
    found_specs: dict[tuple[Any, Any, Any], tuple[tuple[_Spec, ...], ...]] = {}

    def _candidates(call: Mapping[str, Any]) -> tuple[tuple[_Spec, ...], ...]:
        name = (call.get("provider"), call.get("model"), call.get("operation"))
        try:
            return found_specs[name]
        except KeyError:
            pass
        except TypeError:  # an unhashable name: not cached
            return tuple(table[k] for k in _keys(call) if k in table)
        if len(found_specs) >= 1024:  # a program calls a few models
            found_specs.clear()
        found = found_specs[name] = tuple(table[k] for k in _keys(call) if k in table)
        return found

    def lookup(call: Mapping[str, Any]) -> Price:
        if (call.get("provider") in _REJECTS_FREE and call.get("status") == "error"
                and (call.get("http_status") or 0) >= 400 and call.get("input_tokens") is None
                and call.get("output_tokens") is None and call.get("units") is None):
            return Price(0.0, True, NOT_BILLED)
        name = (call.get("provider"), call.get("model"), call.get("operation"))
        try:  # _candidates, its cache hit written out: this runs for every priced call
            candidates = found_specs[name]
        except (KeyError, TypeError):
            candidates = _candidates(call)
        for specs in candidates:
            spec = specs[0] if len(specs) == 1 and not specs[0].effective_from else \
                _applicable(specs, call.get("started_at"))
            if spec is not None:
                return _override_cost(spec, call)
        found = library.price(call)
        return found if found is not None else Price(None, False, None)

    price.token_rates = TokenRates(_candidates)  # type: ignore[attr-defined]  # read by token_rates()
    return price
