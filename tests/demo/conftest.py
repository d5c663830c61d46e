"""Fixtures for the demo tests: a stub server, real clients pointed at it, and the bundled agent module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from agentmeter.demo import load_agent
from agentmeter.stubs import StubServer

#: environment variables that would switch the demo to the live APIs
LIVE_KEYS = ("TAVILY_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "TAVILY_PROJECT", "TAVILY_ORG_ID")


@pytest.fixture
def stub() -> Iterator[StubServer]:
    """A stub server with no random faults and no latency: tests script the faults they want."""
    with StubServer(seed=7) as server:
        yield server


@pytest.fixture
def clients(stub: StubServer) -> Iterator[tuple[Any, Any]]:
    """The real tavily and openai clients, talking to ``stub``."""
    import openai
    import tavily

    t = tavily.TavilyClient(api_key="tvly-test", api_base_url=stub.tavily_base_url)
    o = openai.OpenAI(api_key="sk-test", base_url=stub.openai_base_url, max_retries=2)
    yield t, o
    t.close()
    o.close()


@pytest.fixture
def agent_module() -> ModuleType:
    return load_agent()


@pytest.fixture
def no_live_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the API keys from this process's environment (and so from its children's)."""
    for key in LIVE_KEYS:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def offline_env(tmp_path: Any) -> dict[str, str]:
    """The environment of a subprocess with no API keys and no agentmeter settings but the test's own."""
    env = {k: v for k, v in os.environ.items() if k not in LIVE_KEYS and not k.startswith("AGENTMETER_")}
    env["AGENTMETER_SPOOL_DIR"] = str(tmp_path / "spool")
    env["AGENTMETER_DB"] = str(tmp_path / "default.db")  # never the user's store
    env["COLUMNS"] = "200"  # rich draws the report table at this width in a pipe
    env["NO_COLOR"] = "1"
    return env
