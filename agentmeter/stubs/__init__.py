"""Local stub servers shaped like the OpenAI and Tavily HTTP APIs, for offline demos, tests and benchmarks.

One :class:`StubServer` listens on loopback (``127.0.0.1``, a free port) in a daemon thread and answers

* OpenAI (``server.openai_base_url``, e.g. ``http://127.0.0.1:PORT/openai/v1``): ``POST /chat/completions``
  (plain, and server-sent events with or without the final usage chunk), ``POST /responses`` (plain and
  streamed events), ``POST /embeddings`` (float or base64);
* Anthropic (``server.anthropic_base_url``, e.g. ``http://127.0.0.1:PORT/anthropic``): ``POST /v1/messages``
  (a message, or its server-sent events with ``stream: true``; a ``tool_use`` block when the request offers
  tools; prompt caching: blocks marked ``cache_control`` are written to the cache the first time and read
  from it after, as ``cache_creation_input_tokens`` / ``cache_read_input_tokens``, apart from
  ``input_tokens`` as Anthropic counts them) and ``POST /v1/messages/count_tokens``;
* Tavily (``server.tavily_base_url``, e.g. ``http://127.0.0.1:PORT/tavily``): ``POST /search`` and
  ``POST /extract``, with ``usage.credits`` when the request asks ``include_usage``.

Point the real clients at it: ``OpenAI(base_url=server.openai_base_url, api_key="stub")``,
``Anthropic(base_url=server.anthropic_base_url, api_key="stub")``,
``TavilyClient(api_key="stub", api_base_url=server.tavily_base_url)``.

Answers are generated, not canned: token counts follow the prompt's length, texts and result lists vary,
and all variation comes from one seeded :class:`random.Random`, so a sequential run with the same seed
gets the same answers. Faults come two ways: at random (``error_rate`` answers 500, ``rate_limit_rate``
answers 429 with ``retry-after-ms``) and scripted per endpoint (:meth:`StubServer.script`), which is what
tests use::

    with StubServer(seed=0) as server:
        server.script("chat/completions", [rate_limited(), OK])  # a 429, then the normal answer
        ...
        server.requests[-1].usage   # what the server reported for the last request

Stdlib only (``http.server``); never imports openai, anthropic or tavily. This module is not imported by
``import agentmeter``.
"""

from __future__ import annotations

from ._common import OK, Reply, StubRequest, StubURLs, cut_stream, rate_limited, server_error, slow, timeout
from ._server import StubServer

__all__ = [
    "OK",
    "Reply",
    "StubRequest",
    "StubServer",
    "StubURLs",
    "cut_stream",
    "rate_limited",
    "server_error",
    "slow",
    "timeout",
]
