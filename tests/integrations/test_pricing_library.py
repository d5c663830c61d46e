"""genai-prices' plain token rates, read once per model by ``pricing._Library``, give exactly the price the
library's own ``calc_price`` gives (about 0.1 ms of the exporter's time per call), for every model of the
table it prices that way, and the models it does not price that way go to the library."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmeter import pricing
from agentmeter._library_rates import BY_LIBRARY, plain_rates
from agentmeter.pricing import _library, load_library


def _models() -> list[tuple[str, str]]:
    assert load_library()
    from genai_prices import data_snapshot

    found = []
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            try:  # the names a call can carry: the ids the table resolves to the model itself
                _, info = data_snapshot.get_snapshot().find_provider_model(model.id, None, provider.id, None)
            except LookupError:
                continue
            if info is model:
                found.append((provider.id, model.id))
    return found


MODELS = _models()


def plain_rates_of(model: str, provider: str) -> object:
    from genai_prices import data_snapshot

    return plain_rates(data_snapshot.get_snapshot(), model, provider)


def _call(provider: str, model: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {"provider": provider, "model": model, "operation": "chat", "started_at": "2026-11-30T12:00:00.000000Z",
            **usage}


usages = st.fixed_dictionaries({
    "input_tokens": st.integers(0, 2 * 10**9),
    "output_tokens": st.one_of(st.none(), st.integers(0, 10**8)),
    "cached_input_tokens": st.one_of(st.none(), st.integers(0, 10**9)),
    "cache_write_tokens": st.one_of(st.none(), st.integers(0, 10**9)),
})


def test_most_models_are_priced_from_their_plain_rates() -> None:
    plain = [m for m in MODELS if plain_rates_of(m[1], m[0]) is not BY_LIBRARY]
    assert len(MODELS) > 1000 and len(plain) > len(MODELS) // 2, (len(MODELS), len(plain))
    assert plain_rates_of("gpt-4o-mini", "openai") is not BY_LIBRARY  # the demo's and the bench's model


FIXED_USAGES = (
    {"input_tokens": 1200, "output_tokens": 300},
    {"input_tokens": 1200, "output_tokens": 300, "cached_input_tokens": 700},
    {"input_tokens": 1200, "output_tokens": 300, "cached_input_tokens": 200, "cache_write_tokens": 900},
    {"input_tokens": 0, "output_tokens": 0},
    {"input_tokens": 10**9 + 7, "output_tokens": 10**7 + 3},
)


def test_every_model_of_the_table_gets_the_library_price_for_each_kind_of_usage() -> None:
    wrong = [(provider, model, usage, _library.price(call), _library.price_by_library(call))
             for provider, model in MODELS for usage in FIXED_USAGES
             for call in [_call(provider, model, usage)]
             if _library.price(call) != _library.price_by_library(call)]
    assert wrong == []


@pytest.mark.parametrize("chunk", range(8))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_model_gets_the_library_price(chunk: int, data: st.DataObject) -> None:
    provider, model = data.draw(st.sampled_from(MODELS[chunk::8]))
    usage = data.draw(usages)
    call = _call(provider if data.draw(st.booleans()) else "someone-else", model, usage)
    assert _library.price(call) == _library.price_by_library(call), call


def test_one_hour_cache_writes_tiers_and_price_histories_go_to_the_library() -> None:
    call = _call("anthropic", "claude-sonnet-4-5", {"input_tokens": 5000, "output_tokens": 10,
                                                    "cache_write_tokens": 4000,
                                                    "metadata": {"cache_write_1h_tokens": 4000}})
    assert _library.price(call) == _library.price_by_library(call)
    five_min = _library.price({**call, "metadata": {}})
    assert five_min is not None and _library.price(call) is not None
    assert _library.price(call).cost_usd > five_min.cost_usd  # type: ignore[union-attr, operator]
    from genai_prices import data_snapshot
    from genai_prices.types import ModelPrice

    odd = [(p.id, m.id) for p in data_snapshot.get_snapshot().providers for m in p.models
           if not isinstance(m.prices, ModelPrice) or any(type(v).__name__ == "TieredPrices"
                                                          for v in vars(m.prices).values())]
    assert odd and all(plain_rates_of(m, p) is BY_LIBRARY for p, m in odd if (p, m) in set(MODELS))


def test_a_new_price_table_is_read_again() -> None:
    from genai_prices import data_snapshot

    call = _call("openai", "gpt-4o-mini", {"input_tokens": 1_000_000, "output_tokens": 0})
    before = _library.price(call)
    assert before is not None and before.cost_usd == pytest.approx(0.15)
    snapshot = data_snapshot.get_snapshot()
    from copy import deepcopy
    from decimal import Decimal

    changed = deepcopy(snapshot)
    _, mine = changed.find_provider_model("gpt-4o-mini", None, "openai", None)
    mine.prices.input_mtok = Decimal("0.5")
    data_snapshot.set_custom_snapshot(changed)
    try:
        after = _library.price(call)
        assert after is not None and after.cost_usd == pytest.approx(0.5)
        assert after == _library.price_by_library(call)
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert _library.price(call) == before


def test_unknown_models_and_unknown_tokens_as_before() -> None:
    assert _library.price(_call("openai", "no-such-model-xyz", {"input_tokens": 10, "output_tokens": 1})) is None
    stream = _call("openai", "gpt-4o-mini", {"input_tokens": 10, "output_tokens": None, "metadata": {"stream": True}})
    assert pricing.tokens_unknown(stream)
    assert _library.price(stream) == _library.price_by_library(stream) == (None, False, None)
