"""Fixtures for the integration tests: a loopback stub server, real openai / anthropic / tavily clients pointed at it,
and captured runs. Every test leaves the clients uninstrumented."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentmeter.stubs import StubServer
from agentmeter.testing import CapturedRuns, capture_runs


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(seed=7) as server:
        yield server


@pytest.fixture
def captured() -> Iterator[CapturedRuns]:
    with capture_runs() as runs:
        yield runs


@pytest.fixture(autouse=True)
def _uninstrument_after() -> Iterator[None]:
    yield
    import sys

    for name in ("agentmeter.integrations.openai", "agentmeter.integrations.anthropic",
                 "agentmeter.integrations.tavily"):
        module = sys.modules.get(name)
        if module is not None:
            module.uninstrument()
