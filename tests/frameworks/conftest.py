"""Fixtures for the framework integrations: a loopback stub LLM that calls tools, captured runs.

The frameworks (opentelemetry-sdk, pydantic-ai-slim, openai-agents, langgraph, langchain-openai) are in the
``test`` extra, which ``make test`` installs: a missing one fails the run, never skips it.
"""

from __future__ import annotations

import importlib
import json
from collections import Counter
from collections.abc import Iterator
from types import ModuleType

import pytest

from agentmeter.stubs import StubServer
from agentmeter.testing import CapturedRuns, capture_runs


def need(module: str) -> ModuleType:
    """Import ``module`` (a test dependency: ``pip install -e '.[all]' --group dev``)."""
    return importlib.import_module(module)


def served_by_run(stub: StubServer, marker: str) -> Counter[tuple[int, int, int]]:
    """Per run (found by the word starting with ``marker`` in its prompts): the number of model requests
    and the input and output tokens the stub served them."""
    totals: dict[str, list[int]] = {}
    for req in stub.requests:
        words = json.dumps(req.body).replace('"', " ").replace("?", " ").replace("\\", " ").split()
        key = next(w for w in words if w.startswith(marker))
        usage = req.usage
        assert usage is not None, f"the stub served no usage for {req.endpoint}"
        t = totals.setdefault(key, [0, 0, 0])
        t[0] += 1
        t[1] += usage.get("prompt_tokens", usage.get("input_tokens", 0))
        t[2] += usage.get("completion_tokens", usage.get("output_tokens", 0))
    return Counter((a, b, c) for a, b, c in totals.values())


def served_tokens(stub: StubServer) -> int:
    return sum(int(q.usage["total_tokens"]) for q in stub.requests if q.usage)


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(seed=11, tool_calls=True) as server:
        yield server


@pytest.fixture
def captured() -> Iterator[CapturedRuns]:
    with capture_runs() as runs:
        yield runs


@pytest.fixture(autouse=True)
def _uninstrument_after() -> Iterator[None]:
    yield
    import sys

    module = sys.modules.get("agentmeter.integrations.openai")
    if module is not None:
        module.uninstrument()
