"""Fixtures for the framework integrations: a loopback stub LLM that calls tools, captured runs.

The frameworks (opentelemetry-sdk, pydantic-ai-slim, openai-agents, langgraph, langchain-openai) are in the
``test`` extra. Under CI they must be installed (a missing one fails the run); elsewhere (a shared venv
without them) these tests are skipped with the missing package named.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import ModuleType

import pytest

from agentmeter.stubs import StubServer
from agentmeter.testing import CapturedRuns, capture_runs


def need(module: str) -> ModuleType:
    """Import ``module``; outside CI, skip the test module when it is not installed."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is in agentmeter[test]; not installed here")


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
