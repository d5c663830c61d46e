"""The demo's plumbing: load the bundled example agent and give it API clients, live or offline.

* :func:`load_agent` loads ``examples/company_research/agent.py`` from
  :func:`agentmeter._resources.shipped_path` by file path, so it works from an installed wheel as well as
  from a checkout.
* :func:`open_clients` decides the mode. Tavily is live when ``TAVILY_API_KEY`` is set; OpenAI is live when
  ``OPENAI_API_KEY`` is set. Without keys (or with ``offline=True``) the **real** ``tavily`` and ``openai``
  clients are pointed (``api_base_url=`` / ``base_url=``) at the loopback stub servers of
  :mod:`agentmeter.stubs`, which answer like the real APIs with realistic latency, token usage and the
  occasional error or rate limit. With a Tavily key but no OpenAI key the agent searches live and writes
  its brief without an LLM (a stub summary of live results would be fiction); with an OpenAI key but no
  Tavily key everything stays offline.

Importing this module imports neither openai nor tavily; :func:`open_clients` does.
"""

from __future__ import annotations

import importlib.util
import math
import os
import random
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ._extras import MissingExtra
from ._resources import shipped_path

__all__ = [
    "DEFAULT_COMPANIES",
    "DEMO_STUB_OPTIONS",
    "TAVILY_PRICES",
    "DemoClients",
    "Mode",
    "agent_path",
    "choose_mode",
    "load_agent",
    "open_clients",
]

#: fictional companies, so the offline answers invent nothing about real ones
DEFAULT_COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella Corp", "Hooli", "Stark Industries")

#: Tavily's published pay-as-you-go price (USD per API credit); configured by the demo so search has a cost
TAVILY_PRICES: Mapping[str, Any] = {"tavily": {"per_credit": 0.008}}

_MODULE_NAME = "agentmeter_example_company_research"
_STUB_KEYS = {"tavily": "tvly-offline-demo", "openai": "sk-offline-demo"}


def agent_path() -> Path:
    """Path of the bundled example agent (``company_research/agent.py``). Raises FileNotFoundError."""
    path = shipped_path("examples") / "company_research" / "agent.py"
    if not path.is_file():
        raise FileNotFoundError(f"the example agent is missing from this installation: {path}")
    return path


def load_agent() -> ModuleType:
    """Import the bundled example agent by file path (once per process) and return its module."""
    cached = sys.modules.get(_MODULE_NAME)
    if cached is not None:
        return cached
    path = agent_path()
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the example agent from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(_MODULE_NAME, None)
        raise
    return module


@dataclass(frozen=True)
class Mode:
    """Where each API goes: ``"live"``, ``"stub"`` or (OpenAI only) ``None`` for no summarization."""

    tavily: str
    openai: str | None

    @property
    def offline(self) -> bool:
        return self.tavily == "stub"

    @property
    def label(self) -> str:
        if self.offline:
            return "offline"
        return "live" if self.openai == "live" else "live (search only)"


def choose_mode(environ: Mapping[str, str] | None = None, offline: bool = False) -> Mode:
    """The mode :func:`open_clients` uses, from ``TAVILY_API_KEY`` / ``OPENAI_API_KEY`` unless ``offline``.

    Search is the agent's backbone: without a Tavily key everything is offline, even when an OpenAI key
    is set (paying for live summaries of stub search results would be a poor surprise).
    """
    env = os.environ if environ is None else environ
    tavily_live = bool(env.get("TAVILY_API_KEY", "").strip())
    openai_live = bool(env.get("OPENAI_API_KEY", "").strip())
    if offline or not tavily_live:
        return Mode("stub", "stub")
    return Mode("live", "live" if openai_live else None)


@dataclass
class DemoClients:
    """What :func:`open_clients` yields: the clients to hand to the agent and where they point."""

    mode: Mode
    tavily: Any
    openai: Any | None
    tavily_url: str
    openai_url: str | None
    seed: int | None = None

    def describe(self) -> str:
        """One paragraph saying which mode is in use and why (printed by ``agentmeter demo``)."""
        if self.mode.offline:
            seed = "" if self.seed is None else f", seed {self.seed}"
            head = (f"Mode: offline - the real tavily and openai clients talk to local stub servers "
                    f"(Tavily {self.tavily_url}, OpenAI {self.openai_url}{seed}).")
            tail = "Set TAVILY_API_KEY (and OPENAI_API_KEY for summaries) to call the live APIs."
            return f"{head}\n{tail}"
        parts = [f"Tavily live ({self.tavily_url})"]
        if self.mode.openai is None:
            parts.append("OpenAI not used (no OPENAI_API_KEY: briefs are written from search snippets)")
        else:
            parts.append(f"OpenAI live ({self.openai_url})")
        return f"Mode: {self.mode.label} - " + "; ".join(parts) + ". These calls are billed by the providers."


def _loopback_session() -> Any:
    import requests  # heavy: only when the demo runs

    session = requests.Session()
    session.trust_env = False  # a proxy from the environment must not intercept loopback traffic
    return session


@contextmanager
def open_clients(
    *,
    offline: bool = False,
    seed: int | None = None,
    environ: Mapping[str, str] | None = None,
    stub_options: Mapping[str, Any] | None = None,
) -> Iterator[DemoClients]:
    """Yield a :class:`DemoClients` for the mode :func:`choose_mode` picks; stub servers (if any) run
    until the block ends. ``seed`` makes the stubs' variation repeatable; ``stub_options`` are passed to
    the stub servers. Raises ImportError naming the extra when tavily-python or openai is missing."""
    mode = choose_mode(environ, offline)
    if seed is None and mode.offline:
        seed = random.SystemRandom().randrange(1_000_000)  # printed, so a run can be repeated
    try:
        import tavily  # optional extra [tavily]: only when the demo runs
    except ImportError as exc:
        raise MissingExtra("the demo", "tavily-python", "tavily,openai") from exc
    with ExitStack() as stack:
        tavily_url, openai_url = "https://api.tavily.com", None
        stub_urls: dict[str, str] = {}
        if "stub" in (mode.tavily, mode.openai):
            stub_urls = stack.enter_context(_stub_servers(seed, stub_options or {}))
        if mode.tavily == "stub":
            tavily_url = stub_urls["tavily"]
            session = _loopback_session()
            stack.callback(session.close)  # TavilyClient.close() leaves a session it was given open
            tavily_client = tavily.TavilyClient(
                api_key=_STUB_KEYS["tavily"], api_base_url=tavily_url, session=session
            )
        else:
            tavily_client = tavily.TavilyClient()
        stack.callback(tavily_client.close)
        openai_client = None
        if mode.openai is not None:
            try:
                import openai  # optional extra [openai]: only when the demo runs
            except ImportError as exc:
                raise MissingExtra("the demo", "openai", "tavily,openai") from exc
            if mode.openai == "stub":
                openai_url = stub_urls["openai"]
                openai_client = openai.OpenAI(
                    api_key=_STUB_KEYS["openai"], base_url=openai_url,
                    http_client=openai.DefaultHttpxClient(trust_env=False),
                )
            else:
                openai_client = openai.OpenAI()
                openai_url = str(openai_client.base_url)
            stack.callback(openai_client.close)
        yield DemoClients(mode, tavily_client, openai_client, tavily_url, openai_url, seed)


def demo_latency_ms(rng: random.Random) -> float:
    """The stubs' latency in the demo: log-normal, median 35 ms, a long tail capped at 400 ms.

    Real APIs answer in 0.3 to 3 s; the demo keeps their shape (a tail, p95 about 2.5x the median) at a
    tenth of the scale so a 20-run demo finishes in seconds."""
    return min(400.0, rng.lognormvariate(math.log(35.0), 0.55))


#: stub settings of the demo: realistic variation, an occasional 500 or 429
DEMO_STUB_OPTIONS: Mapping[str, Any] = {
    "latency_ms": demo_latency_ms, "error_rate": 0.04, "rate_limit_rate": 0.04,
}


@contextmanager
def _stub_servers(seed: int | None, options: Mapping[str, Any]) -> Iterator[dict[str, str]]:
    """Start one stub server (both APIs) on loopback; yield the two base URLs."""
    from .stubs import StubServer  # http.server: only for an offline demo

    settings = {**DEMO_STUB_OPTIONS, **options}
    with StubServer(seed=0 if seed is None else seed, **settings) as server:
        yield {"tavily": server.tavily_base_url, "openai": server.openai_base_url}
