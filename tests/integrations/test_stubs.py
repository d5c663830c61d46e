"""The stub server itself: API shapes the real clients accept, determinism, random and scripted faults."""

from __future__ import annotations

import openai
import pytest
from tavily import TavilyClient

from agentmeter.stubs import OK, StubServer, rate_limited, slow


def test_same_seed_same_answers_and_random_faults() -> None:
    def run() -> list[object]:
        with StubServer(seed=3, error_rate=0.2, rate_limit_rate=0.1) as server:
            c = openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0)
            out: list[object] = []
            for i in range(25):
                try:
                    r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}])
                    assert r.usage is not None
                    out.append((r.usage.prompt_tokens, r.usage.completion_tokens, r.choices[0].message.content))
                except openai.APIStatusError as exc:
                    out.append(exc.status_code)
            return out

    first, second = run(), run()
    assert first == second
    assert 500 in first and 429 in first and any(isinstance(x, tuple) for x in first)


def test_script_queue_then_normal_and_request_log() -> None:
    with StubServer(seed=1) as server:
        server.script("/v1/chat/completions", [rate_limited(), 503, OK])
        c = openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=3)
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert [r.status for r in server.requests] == [429, 503, 200]
        assert [r.fault for r in server.requests] == ["scripted"] * 3
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert server.requests[-1].fault is None and server.requests[-1].status == 200
        with pytest.raises(ValueError, match="unknown stub endpoint"):
            server.script("nope", [OK])


def test_tavily_shapes_and_latency() -> None:
    with StubServer(seed=2, latency_ms=(1.0, 2.0)) as server:
        server.script("search", [slow(50)])
        tv = TavilyClient(api_key="k", api_base_url=server.tavily_base_url)
        result = tv.search("acme corp", max_results=3, include_answer=True, include_usage=True)
        assert 1 <= len(result["results"]) <= 3
        assert {"url", "title", "content", "score"} <= set(result["results"][0])
        assert result["answer"] and result["usage"] == {"credits": 1}
        extract = tv.extract(["https://a.example.com/x"], include_usage=True)
        assert extract["results"][0]["raw_content"] and extract["usage"] == {"credits": 1}
    with pytest.raises(RuntimeError):
        _ = server.openai_base_url  # stopped


def test_cached_and_reasoning_tokens_are_realistic() -> None:
    long_prompt = "Acme Corp research notes. " * 300  # > 1024 tokens
    with StubServer(seed=4) as server:
        c = openai.OpenAI(base_url=server.openai_base_url, api_key="x")
        first = c.chat.completions.create(model="o3", messages=[{"role": "user", "content": long_prompt}])
        again = c.chat.completions.create(model="o3", messages=[{"role": "user", "content": long_prompt}])
    assert first.usage is not None and again.usage is not None
    assert first.usage.prompt_tokens_details is not None and again.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert cached and cached % 128 == 0 and cached <= again.usage.prompt_tokens
    assert first.usage.completion_tokens_details is not None
    assert first.usage.completion_tokens_details.reasoning_tokens
