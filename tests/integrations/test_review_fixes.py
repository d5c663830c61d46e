"""Review findings on the OpenAI integration, each proved with the real ``openai`` client against the
loopback stub server."""

from __future__ import annotations

import asyncio

import openai
import pytest

import agentmeter
import agentmeter.integrations.openai as am_openai
from agentmeter.stubs import StubServer
from agentmeter.testing import CapturedRuns

MESSAGES = [{"role": "user", "content": "Summarize what Acme Corp does."}]


def test_resources_named_with_underscores_keep_their_operation(stub: StubServer, captured: CapturedRuns) -> None:
    # "vector_stores" or "fine_tuning" are resource names, not ids: the call must not be filed as "request"
    am_openai.instrument()
    c = openai.OpenAI(base_url=stub.openai_base_url, api_key="sk-stub", max_retries=0)
    with agentmeter.track_run("r"):
        with pytest.raises(openai.NotFoundError):
            c.vector_stores.create(name="docs")
        with pytest.raises(openai.NotFoundError):
            c.vector_stores.files.create(vector_store_id="vs_68ab12Cd34", file_id="file-9Zx81")
        with pytest.raises(openai.NotFoundError):
            c.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-9Zx81")
    (run,) = captured.runs
    assert [call["operation"] for call in run["calls"]] == ["vector_stores", "vector_stores", "fine_tuning.jobs"]
    assert [call["http_status"] for call in run["calls"]] == [404, 404, 404]


@pytest.mark.parametrize(("url", "operation"), [
    ("/vector_stores/vs_68ab12Cd34/file_batches", "vector_stores"),
    ("/fine_tuning/jobs/ftjob-abc123/events", "fine_tuning.jobs"),
    ("/realtime/client_secrets", "realtime.client_secrets"),
    ("/responses/resp_123/input_items", "responses"),
    ("/files/file-abc123/content", "files"),
])
def test_operation_names_of_underscored_resources(url: str, operation: str) -> None:
    assert am_openai.operation_of(url) == operation


def test_a_client_derived_with_with_options_is_still_recorded(stub: StubServer, captured: CapturedRuns) -> None:
    # client.with_options(...) / client.copy() build a new client; instrumenting one client must not lose
    # the requests its derived clients make
    c = openai.OpenAI(base_url=stub.openai_base_url, api_key="sk-stub")
    am_openai.instrument(c)
    with agentmeter.track_run("r"):
        c.with_options(timeout=5).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        c.copy(max_retries=1).embeddings.create(model="text-embedding-3-small", input="Acme")
    (run,) = captured.runs
    assert [call["operation"] for call in run["calls"]] == ["chat.completions", "embeddings"]
    assert all(call["input_tokens"] for call in run["calls"])
    am_openai.uninstrument(c)
    derived = c.with_options(timeout=5)
    assert not am_openai.instrumented(derived) and "copy" not in vars(c) and "with_options" not in vars(c)


def test_an_async_client_derived_with_with_options_is_still_recorded(stub: StubServer, captured: CapturedRuns) -> None:
    async def main() -> None:
        c = openai.AsyncOpenAI(base_url=stub.openai_base_url, api_key="sk-stub")
        am_openai.instrument(c)
        with agentmeter.track_run("r"):
            await c.with_options(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        await c.close()

    asyncio.run(main())
    (run,) = captured.runs
    assert [call["operation"] for call in run["calls"]] == ["chat.completions"]
