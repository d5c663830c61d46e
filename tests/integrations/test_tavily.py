"""The real ``tavily-python`` clients (requests and httpx), instrumented, against the loopback stub."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from tavily import AsyncTavilyClient, TavilyClient
from tavily.errors import TimeoutError as TavilyTimeoutError
from tavily.errors import UsageLimitExceededError

import agentmeter
import agentmeter.integrations.tavily as am_tavily
from agentmeter.stubs import StubServer, timeout
from agentmeter.testing import CapturedRuns, capture_runs

PRICES = {"tavily:search": {"per_credit": 0.008}, "tavily:extract": {"per_request": 0.002}}


def sync_client(stub: StubServer) -> TavilyClient:
    return TavilyClient(api_key="tvly-stub", api_base_url=stub.tavily_base_url)


def async_client(stub: StubServer) -> AsyncTavilyClient:
    return AsyncTavilyClient(api_key="tvly-stub", api_base_url=stub.tavily_base_url)


def test_search_and_extract_recorded_with_results_and_credits(stub: StubServer) -> None:
    am_tavily.instrument()
    tv = sync_client(stub)
    with capture_runs(prices=PRICES) as captured, agentmeter.track_run("research"):
        with agentmeter.track_step("search", kind="retrieval"):
            found = tv.search("acme corp funding", search_depth="advanced", include_usage=True)
        with agentmeter.track_step("read", kind="retrieval"):
            read = tv.extract(["https://news.example.com/a", "https://b.example.com/fail"])

    (run,) = captured.runs
    steps = {s["name"]: s["step_id"] for s in run["steps"]}
    search, extract = sorted(run["calls"], key=lambda c: c["started_at"])
    assert (search["provider"], search["operation"], search["model"]) == ("tavily", "search", None)
    assert search["step_id"] == steps["search"] and extract["step_id"] == steps["read"]
    assert search["status"] == "success" and search["http_status"] == 200 and search["retries"] == 0
    assert search["metadata"]["result_count"] == len(found["results"]) == stub.requests[0].result_count
    assert search["metadata"]["search_depth"] == "advanced"
    assert search["units"] == found["usage"]["credits"] == 2
    assert search["cost_usd"] == pytest.approx(2 * 0.008) and search["price_source"] == "override"
    assert extract["metadata"]["result_count"] == len(read["results"]) == 1
    assert extract["metadata"]["failed_count"] == 1
    assert extract["units"] is None  # not asked for usage: credits unknown
    assert extract["cost_usd"] == pytest.approx(0.002)
    assert search["request_bytes"] and search["response_bytes"]
    assert search["input_tokens"] is None


def test_unpriced_without_a_configured_price(stub: StubServer, captured: CapturedRuns) -> None:
    am_tavily.instrument()
    with agentmeter.track_run("r"):
        sync_client(stub).search("acme", include_usage=True)
    (call,) = captured.calls
    assert call["units"] == 1
    assert call["priced"] is False and call["cost_usd"] is None
    assert captured.runs[0]["unpriced_call_count"] == 1


def test_include_usage_opt_in(stub: StubServer, captured: CapturedRuns) -> None:
    am_tavily.instrument(include_usage=True)
    with agentmeter.track_run("r"):
        sync_client(stub).search("acme")
        sync_client(stub).search("acme", include_usage=False)  # an explicit choice is kept
    assert [r.body.get("include_usage") for r in stub.requests] == [True, False]
    assert [c["units"] for c in captured.calls] == [1, None]


def test_errors_are_recorded_with_their_status(stub: StubServer, captured: CapturedRuns) -> None:
    am_tavily.instrument()
    tv = sync_client(stub)
    stub.script("search", [429, 500, timeout(3)])
    with agentmeter.track_run("r"):
        with pytest.raises(UsageLimitExceededError):
            tv.search("a")
        with pytest.raises(Exception) as server_failure:
            tv.search("b")
        with pytest.raises(TavilyTimeoutError):
            tv.search("c", timeout=0.2)
    limited, failed, timed_out = sorted(captured.calls, key=lambda c: c["started_at"])
    assert (limited["status"], limited["http_status"], limited["error_type"]) == (
        "error", 429, "UsageLimitExceededError")
    assert (failed["status"], failed["http_status"]) == ("error", 500)
    assert failed["error_type"] == type(server_failure.value).__qualname__
    assert (timed_out["status"], timed_out["http_status"]) == ("error", None)
    assert timed_out["error_type"] == "TimeoutError"
    assert limited["cost_usd"] == 0.0 and limited["price_source"] == "not_billed"
    assert timed_out["priced"] is False


def test_async_client(stub: StubServer, captured: CapturedRuns) -> None:
    am_tavily.instrument()

    async def agent() -> None:
        tv = async_client(stub)
        async with agentmeter.track_run("async"):
            async with agentmeter.track_step("both", kind="retrieval"):
                await asyncio.gather(tv.search("acme one", include_usage=True),
                                     tv.extract("https://x.example.com/page", include_usage=True))
            stub.script("search", [500])
            with pytest.raises(httpx.HTTPStatusError):
                await tv.search("boom")

    asyncio.run(agent())
    (run,) = captured.runs
    (step,) = run["steps"]
    calls = {c["operation"] + ("-err" if c["status"] == "error" else ""): c for c in run["calls"]}
    assert calls["search"]["step_id"] == calls["extract"]["step_id"] == step["step_id"]
    assert calls["search"]["units"] == 1 and calls["extract"]["units"] == 1
    assert calls["search"]["http_status"] == 200
    assert calls["search"]["metadata"]["result_count"] == next(
        r.result_count for r in stub.requests if r.endpoint == "search")
    assert calls["search-err"]["http_status"] == 500 and calls["search-err"]["step_id"] is None


def test_instrument_twice_and_per_instance(stub: StubServer, captured: CapturedRuns) -> None:
    tv, other = sync_client(stub), sync_client(stub)
    am_tavily.instrument(tv)
    am_tavily.instrument(tv)
    with agentmeter.track_run("r"):
        tv.search("one")
        other.search("not recorded")
    assert len(captured.calls) == 1
    am_tavily.instrument()
    am_tavily.instrument()
    with agentmeter.track_run("r"):
        tv.search("two")
        other.search("three")
    assert len(captured.calls) == 3


def test_uninstrument_restores_the_original_methods(stub: StubServer, captured: CapturedRuns) -> None:
    originals = {(cls, n): cls.__dict__[n] for cls in (TavilyClient, AsyncTavilyClient)
                 for n in am_tavily.OPERATIONS if n in cls.__dict__}
    tv = sync_client(stub)
    am_tavily.instrument()
    am_tavily.instrument(tv)
    assert all(cls.__dict__[n] is not fn for (cls, n), fn in originals.items())
    am_tavily.uninstrument()
    assert all(cls.__dict__[n] is fn for (cls, n), fn in originals.items())
    assert "search" not in vars(tv)
    with agentmeter.track_run("r"):
        tv.search("x")
    assert captured.calls == []


def test_instrument_rejects_other_objects() -> None:
    with pytest.raises(TypeError):
        am_tavily.instrument(object())
