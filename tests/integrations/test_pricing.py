"""Cost: published per-token prices computed by hand, overrides, price history, unknown models."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import agentmeter
from agentmeter.pricing import load_library, make_pricer, validate_prices
from agentmeter.testing import capture_runs


@pytest.fixture(autouse=True, scope="module")
def _price_table() -> None:
    assert load_library()  # what configure() and instrument() do on the caller's thread


def row(model: str | None, input_tokens: int | None = None, output_tokens: int | None = None,
        cached: int | None = None, provider: str = "openai", **extra: Any) -> dict[str, Any]:
    base = {"provider": provider, "operation": "chat.completions", "model": model, "status": "success",
            "http_status": 200, "input_tokens": input_tokens, "output_tokens": output_tokens,
            "cached_input_tokens": cached, "units": None, "started_at": "2026-06-01T12:00:00.000000Z"}
    base.update(extra)
    return base


# OpenAI's published prices, US dollars per million tokens: (input, cached input, output)
PUBLISHED = {
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "gpt-4.1": (2.00, 0.50, 8.00),
    "o4-mini": (1.10, 0.275, 4.40),
}


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_known_models_priced_from_published_prices(model: str) -> None:
    per_in, per_cached, per_out = PUBLISHED[model]
    price = make_pricer({})(row(model, input_tokens=12_000, output_tokens=3_000, cached=2_048))
    by_hand = ((12_000 - 2_048) * per_in + 2_048 * per_cached + 3_000 * per_out) / 1_000_000
    assert price.priced is True and price.source == "genai-prices"
    assert price.cost_usd == pytest.approx(by_hand, rel=1e-9)


def test_dated_model_names_resolve_to_their_family() -> None:
    pricer = make_pricer({})
    assert pricer(row("gpt-4o-mini-2024-07-18", 1_000_000, 0)).cost_usd == pytest.approx(0.15)


def test_override_wins_over_the_library() -> None:
    pricer = make_pricer({"gpt-4o": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "cached_input_per_mtok": 0.5}})
    price = pricer(row("gpt-4o", input_tokens=1_000, output_tokens=500, cached=200))
    assert price.source == "override"
    assert price.cost_usd == pytest.approx((800 * 1.0 + 200 * 0.5 + 500 * 2.0) / 1e6)
    # the API reports dated names: the override still applies
    assert pricer(row("gpt-4o-2024-08-06", 1_000_000, 0)).cost_usd == pytest.approx(1.0)


def test_cached_input_defaults_to_the_input_price() -> None:
    price = make_pricer({"my-llama": {"input_per_mtok": 0.2, "output_per_mtok": 0.4}})(
        row("my-llama", 1_000_000, 1_000_000, cached=500_000, provider="custom"))
    assert price.cost_usd == pytest.approx(0.6)


def test_effective_from_selects_the_price_in_force() -> None:
    pricer = make_pricer({"house-model": [
        {"input_per_mtok": 2.0, "output_per_mtok": 2.0, "effective_from": "2026-01-01"},
        {"input_per_mtok": 1.0, "output_per_mtok": 1.0, "effective_from": "2026-07-01"},
    ]})
    assert pricer(row("house-model", 1_000_000, 0, started_at="2026-06-30T23:59:59.000000Z")).cost_usd == 2.0
    assert pricer(row("house-model", 1_000_000, 0, started_at="2026-07-01T00:00:00.000000Z")).cost_usd == 1.0
    before = pricer(row("house-model", 1_000_000, 0, started_at="2025-12-31T00:00:00.000000Z"))
    assert (before.cost_usd, before.priced) == (None, False)  # no price in force, not in the library


def test_unknown_model_is_unpriced_not_zero() -> None:
    price = make_pricer({})(row("totally-unknown-model-x", 1_000, 1_000))
    assert (price.cost_usd, price.priced) == (None, False)


def test_unknown_tokens_are_unpriced_even_for_known_models() -> None:
    assert make_pricer({})(row("gpt-4o")).priced is False
    assert make_pricer({"gpt-4o": {"input_per_mtok": 1.0}})(row("gpt-4o")).priced is False


def test_rejected_requests_are_not_billed() -> None:
    price = make_pricer({})(row("gpt-4o", status="error", http_status=429))
    assert (price.cost_usd, price.priced, price.source) == (0.0, True, "not_billed")
    timed_out = make_pricer({})(row("gpt-4o", status="error", http_status=None))
    assert timed_out.priced is False


def test_per_request_and_per_credit_prices() -> None:
    pricer = make_pricer({"tavily:search": {"per_credit": 0.008}, "tavily": {"per_request": 0.01}})
    search = row(None, provider="tavily", operation="search", units=2.0)
    assert pricer(search).cost_usd == pytest.approx(0.016)
    assert pricer({**search, "units": None}).priced is False  # credits unknown, no per-request fallback
    extract = row(None, provider="tavily", operation="extract")
    assert pricer(extract).cost_usd == pytest.approx(0.01)  # falls back to the provider-wide price


@pytest.mark.parametrize(("prices", "message"), [
    ({"m": {"input_per_mtok": -1}}, "non-negative"),
    ({"m": {"input_per_token": 1}}, "unknown field"),
    ({"m": {"effective_from": "2026-01-01"}}, "sets no price"),
    ({"m": {"input_per_mtok": 1, "effective_from": "01/02/2026"}}, "YYYY-MM-DD"),
    ({"m": {"per_unit": 1, "per_credit": 1}}, "not both"),
    ({"m": 3}, "must be a dict"),
    ({"m": [{"input_per_mtok": 1}, {"input_per_mtok": 2}]}, "same effective_from"),
    ([("m", 1)], "must be a dict"),
])
def test_bad_prices_fail_with_a_message(prices: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_prices(prices)


def test_exporter_prices_calls_and_counts_unpriced() -> None:
    prices = {"my-finetune": {"input_per_mtok": 3.0, "output_per_mtok": 12.0}}
    with capture_runs(prices=prices) as captured, agentmeter.track_run("r"):
        for model in ("my-finetune", "gpt-4o-mini", "nobody-knows-me"):
            with agentmeter.track_call("openai", "chat.completions", model=model) as call:
                call.record_usage(input_tokens=1_000, output_tokens=100)
    (run,) = captured.runs
    costs = {c["model"]: (c["cost_usd"], c["price_source"]) for c in run["calls"]}
    assert costs["my-finetune"] == (pytest.approx((1_000 * 3.0 + 100 * 12.0) / 1e6), "override")
    assert costs["gpt-4o-mini"] == (pytest.approx((1_000 * 0.15 + 100 * 0.60) / 1e6), "genai-prices")
    assert costs["nobody-knows-me"] == (None, None)
    assert run["unpriced_call_count"] == 1
    assert run["cost_usd"] == pytest.approx(costs["my-finetune"][0] + costs["gpt-4o-mini"][0])


def test_import_agentmeter_imports_no_client_or_price_library() -> None:
    code = ("import sys, agentmeter; heavy = [m for m in ('openai', 'tavily', 'genai_prices') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = "import sys, agentmeter.stubs, agentmeter.integrations; print('openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_price_table_is_never_imported_by_a_pricer_that_could_race() -> None:
    # A fresh interpreter where nothing imported pydantic or httpx2 and another thread runs: pricing a
    # call there (as the exporter's threads do) must not import genai-prices; load_library() does.
    code = """
import sys, threading
from agentmeter import _guard
from agentmeter.pricing import library_loaded, load_library, make_pricer
busy = threading.Event()
threading.Thread(target=busy.wait, daemon=True).start()
row = {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1_000_000, "output_tokens": 0,
       "started_at": "2026-06-01T12:00:00.000000Z"}
before = make_pricer({})(row)
imported = [m for m in ("genai_prices", "httpx2", "pydantic") if m in sys.modules]
counted = _guard.counters["pricing.library_not_loaded"]
assert load_library() and library_loaded()
after = make_pricer({})(row)
print(before.priced, imported, counted, after.priced, after.cost_usd)
busy.set()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "[]", "1", "True", "0.15"]


def test_cache_write_tokens_priced_by_overrides_and_the_library() -> None:
    # Overrides: cache writes at cache_write_per_mtok (default: the input price); the rest at their rates.
    pricer = make_pricer({"my-claude": {"input_per_mtok": 3.0, "output_per_mtok": 15.0,
                                        "cached_input_per_mtok": 0.3, "cache_write_per_mtok": 3.75},
                          "plain": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}})
    usage = {"input_tokens": 10_000, "output_tokens": 1_000, "cached": 2_000, "cache_write_tokens": 3_000}
    price = pricer(row("my-claude", usage["input_tokens"], usage["output_tokens"], cached=usage["cached"],
                       provider="anthropic", cache_write_tokens=usage["cache_write_tokens"]))
    assert price.cost_usd == pytest.approx((5_000 * 3.0 + 2_000 * 0.3 + 3_000 * 3.75 + 1_000 * 15.0) / 1e6)
    plain = pricer(row("plain", 10_000, 1_000, provider="custom", cache_write_tokens=3_000))
    assert plain.cost_usd == pytest.approx((10_000 * 2.0 + 1_000 * 8.0) / 1e6)
    # genai-prices: Claude Sonnet 4.5 is $3 input, $15 output, $0.30 cache read, $3.75 cache write (5 min)
    # and $6 (1 h) per million tokens
    library = make_pricer({})
    sonnet = row("claude-sonnet-4-5", 10_000, 1_000, cached=2_000, provider="anthropic", cache_write_tokens=3_000)
    assert library(sonnet).cost_usd == pytest.approx((5_000 * 3 + 2_000 * 0.3 + 3_000 * 3.75 + 1_000 * 15) / 1e6)
    hour = {**sonnet, "metadata": {"cache_write_1h_tokens": 1_000}}
    assert library(hour).cost_usd == pytest.approx(
        (5_000 * 3 + 2_000 * 0.3 + 2_000 * 3.75 + 1_000 * 6 + 1_000 * 15) / 1e6)
    # OpenAI bills no cache writes: its models price them as input
    mini = row("gpt-4o-mini", 10_000, 1_000, cached=2_000, cache_write_tokens=3_000)
    assert library(mini).cost_usd == pytest.approx((8_000 * 0.15 + 2_000 * 0.075 + 1_000 * 0.60) / 1e6)


def test_a_stream_without_its_output_count_is_unpriced() -> None:
    pricer = make_pricer({"house": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}})
    closed = row("claude-sonnet-4-5", 5_000, None, provider="anthropic", metadata={"stream": True})
    assert pricer(closed).priced is False and make_pricer({})(closed).priced is False
    assert pricer(row("house", 5_000, None, metadata={"stream": True})).priced is False
    # not a stream: an input-only call (an embedding recorded by hand) is priced on its input
    assert pricer(row("house", 1_000_000, None)).cost_usd == pytest.approx(1.0)


def test_cache_write_price_must_be_a_number() -> None:
    with pytest.raises(ValueError, match="cache_write_per_mtok"):
        validate_prices({"m": {"input_per_mtok": 1, "cache_write_per_mtok": "1.25x"}})


# docs/integrations.md "Cache writes, priced": (model, provider, input, cached, written, 1h written, output) -> cost
DOC_EXAMPLES = [
    ("claude-sonnet-4-5", "anthropic", 2_050, 0, 2_000, 0, 400, "$0.013650"),
    ("claude-sonnet-4-5", "anthropic", 2_050, 2_000, 0, 0, 400, "$0.006750"),
    ("claude-haiku-4-5", "anthropic", 2_050, 0, 2_000, 2_000, 400, "$0.006050"),
    ("claude-opus-4-1", "anthropic", 2_050, 0, 2_000, 0, 400, "$0.068250"),
    ("gpt-4o-mini", "openai", 1_500, 1_024, 0, 0, 200, "$0.0002682"),
]


@pytest.mark.parametrize("example", DOC_EXAMPLES, ids=[f"{e[0]}-{e[7]}" for e in DOC_EXAMPLES])
def test_the_documented_cache_write_examples_are_what_agentmeter_charges(example: tuple[Any, ...]) -> None:
    from pathlib import Path

    model, provider, total, cached, written, hour, output, shown = example
    call = row(model, total, output, cached=cached, provider=provider, cache_write_tokens=written,
               metadata={"cache_write_1h_tokens": hour} if hour else {})
    price = make_pricer({})(call)
    assert price.source == "genai-prices"
    assert f"${price.cost_usd:.{len(shown) - 3}f}" == shown
    doc = (Path(__file__).resolve().parents[2] / "docs" / "integrations.md").read_text()
    assert f"**{shown}**" in doc
