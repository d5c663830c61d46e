"""The bundled company-research agent, run with the real tavily and openai clients against the stub server:
the recorded tree must be exactly what the agent did (runs, planned steps, Tavily and OpenAI calls with
the tokens the server reported and their cost)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from agentmeter.demo import TAVILY_PRICES
from agentmeter.stubs import OK, StubServer, rate_limited, server_error
from agentmeter.testing import capture_runs

COMPANIES = ["Acme Corp", "Globex", "Initech"]
PLANNED = [("plan_queries", "plan"), ("web_search", "tool"), ("web_search", "tool"), ("web_search", "tool"),
           ("extract_pages", "retrieval"), ("summarize", "llm")]
# gpt-4o-mini's published price, USD per token
GPT_4O_MINI_IN, GPT_4O_MINI_OUT = 0.15 / 1e6, 0.60 / 1e6


def _ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: r["started_at"])


def _calls_of(run: dict[str, Any], step: dict[str, Any]) -> list[dict[str, Any]]:
    return _ordered([c for c in run["calls"] if c["step_id"] == step["step_id"]])


def test_one_run_per_company_with_planned_steps_and_calls(
    stub: StubServer, clients: tuple[Any, Any], agent_module: ModuleType
) -> None:
    tavily_client, openai_client = clients
    with capture_runs(prices=TAVILY_PRICES) as captured:
        agent = agent_module.CompanyResearcher(tavily_client, openai_client)
        reports = [agent.research(company) for company in COMPANIES]

    chats = [r for r in stub.requests if r.endpoint == "chat/completions"]
    searches = [r for r in stub.requests if r.endpoint == "search"]
    assert len(chats) == len(COMPANIES) and len(searches) == 3 * len(COMPANIES)
    runs = captured.runs
    assert [run["metadata"]["company"] for run in runs] == COMPANIES
    for run, report, chat in zip(runs, reports, chats, strict=True):
        assert (run["name"], run["agent"], run["status"]) == ("research_company", "company-research", "success")
        assert run["parent_run_id"] is None and not run["implicit"]
        steps = _ordered(run["steps"])
        assert [(s["name"], s["kind"]) for s in steps] == PLANNED
        assert all(s["status"] == "success" and s["parent_step_id"] is None for s in steps)
        assert run["step_count"] == 6 and run["call_count"] == 5

        plan, *search_steps, extract, summarize = steps
        assert _calls_of(run, plan) == []
        for step, query in zip(search_steps, report.queries, strict=True):
            (call,) = _calls_of(run, step)
            assert (call["provider"], call["operation"], call["status"], call["http_status"]) == (
                "tavily", "search", "success", 200)
            assert call["retries"] == 0
            assert call["input_tokens"] is None and call["output_tokens"] is None  # Tavily reports none
            assert call["units"] == 1.0  # one credit per basic search, as the response said
            assert (call["priced"], call["cost_usd"], call["price_source"]) == (True, pytest.approx(0.008), "override")
            request = next(r for r in searches if r.body["query"] == query)
            assert call["metadata"]["result_count"] == request.result_count
        (call,) = _calls_of(run, extract)
        assert (call["provider"], call["operation"], call["status"]) == ("tavily", "extract", "success")
        assert call["metadata"]["result_count"] == len(report.sources) == 2
        assert call["units"] == 1.0 and call["cost_usd"] == pytest.approx(0.008)  # 1 credit per 5 URLs

        (llm,) = _calls_of(run, summarize)
        usage = chat.usage
        assert usage is not None
        assert (llm["provider"], llm["operation"], llm["model"], llm["status"], llm["http_status"]) == (
            "openai", "chat.completions", "gpt-4o-mini", "success", 200)
        assert llm["input_tokens"] == usage["prompt_tokens"]
        assert llm["output_tokens"] == usage["completion_tokens"]
        assert llm["total_tokens"] == usage["total_tokens"]
        expected_cost = usage["prompt_tokens"] * GPT_4O_MINI_IN + usage["completion_tokens"] * GPT_4O_MINI_OUT
        assert llm["priced"] is True
        assert llm["cost_usd"] == pytest.approx(expected_cost, rel=1e-9)
        assert summarize["cost_usd"] == pytest.approx(expected_cost, rel=1e-9)
        assert summarize["input_tokens"] == usage["prompt_tokens"]

        # the run's rollups are the sums of its calls: four Tavily credits and one summary
        assert run["input_tokens"] == usage["prompt_tokens"]
        assert run["total_tokens"] == usage["total_tokens"]
        assert run["unpriced_call_count"] == 0
        assert run["cost_usd"] == pytest.approx(4 * 0.008 + expected_cost, rel=1e-9)
        assert report.summary and report.summarized_by == "gpt-4o-mini"


def test_failed_search_and_retried_llm_call_are_recorded(
    stub: StubServer, clients: tuple[Any, Any], agent_module: ModuleType
) -> None:
    tavily_client, openai_client = clients
    stub.script("search", [OK, rate_limited(), OK])
    stub.script("chat/completions", [server_error(500), OK])
    with capture_runs() as captured:
        report = agent_module.CompanyResearcher(tavily_client, openai_client).research("Hooli")

    (run,) = captured.runs
    assert run["status"] == "success"  # one failed search does not sink the run
    assert report.failed_queries == [report.queries[1]]
    searches = [s for s in _ordered(run["steps"]) if s["name"] == "web_search"]
    assert [s["status"] for s in searches] == ["success", "error", "success"]
    assert searches[1]["error_type"] == "UsageLimitExceededError"
    (failed,) = _calls_of(run, searches[1])
    assert (failed["status"], failed["http_status"], failed["units"]) == ("error", 429, None)
    assert run["error_step_count"] == 1 and run["error_call_count"] == 1

    (summarize,) = [s for s in run["steps"] if s["name"] == "summarize"]
    (llm,) = _calls_of(run, summarize)
    assert (llm["status"], llm["http_status"], llm["retries"]) == ("success", 200, 1)
    assert [r.status for r in stub.requests if r.endpoint == "chat/completions"] == [500, 200]


def test_run_fails_when_most_searches_fail(
    stub: StubServer, clients: tuple[Any, Any], agent_module: ModuleType
) -> None:
    tavily_client, openai_client = clients
    stub.script("search", [server_error(503), OK, rate_limited()])
    with capture_runs() as captured, pytest.raises(agent_module.ResearchError, match="2 of 3 searches"):
        agent_module.CompanyResearcher(tavily_client, openai_client).research("Initech")

    (run,) = captured.runs
    assert (run["status"], run["error_type"]) == ("error", "ResearchError")
    assert [s["name"] for s in _ordered(run["steps"])] == ["plan_queries", "web_search", "web_search", "web_search"]
    assert [c["http_status"] for c in _ordered(run["calls"])] == [503, 200, 429]
    assert not any(r.endpoint == "chat/completions" for r in stub.requests)


def test_without_openai_the_brief_is_a_digest_of_the_snippets(
    stub: StubServer, clients: tuple[Any, Any], agent_module: ModuleType
) -> None:
    tavily_client, _ = clients
    with capture_runs() as captured:
        report = agent_module.research_company("Stark Industries", tavily_client)
    (run,) = captured.runs
    assert [s["kind"] for s in _ordered(run["steps"])][-1] == "other"
    assert {c["provider"] for c in run["calls"]} == {"tavily"}
    assert report.summarized_by is None and report.summary.startswith("Stark Industries")
