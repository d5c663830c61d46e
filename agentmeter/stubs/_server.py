"""The stub server: one loopback HTTP server in a daemon thread answering every API."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from http.server import ThreadingHTTPServer
from typing import Any

from ._anthropic import AnthropicRoutes
from ._common import (
    ANTHROPIC_PREFIX,
    ENDPOINTS,
    OPENAI_PREFIX,
    TAVILY_PREFIX,
    Latency,
    Reply,
    StubRequest,
    StubURLs,
    _Config,
    _endpoint_key,
    _shorthand,
)
from ._openai import OpenAIRoutes
from ._tavily import TavilyRoutes


class _Handler(OpenAIRoutes, AnthropicRoutes, TavilyRoutes):
    """Every API's routes on one handler."""


class StubServer:
    """OpenAI- and Tavily-shaped HTTP server on loopback, in a daemon thread.

    ``seed`` fixes every random choice; ``latency_ms`` is the wait before each answer's headers (a number,
    a ``(min, max)`` uniform range, or ``f(random.Random) -> ms``); ``chunk_ms`` the wait between streamed
    events; ``error_rate`` / ``rate_limit_rate`` the fraction of unscripted requests answered 500 / 429;
    ``chunks`` the (min, max) number of content chunks of a streamed answer. Never touches the network
    beyond loopback. With ``tool_calls=True``, a chat or responses request that offers function tools and
    holds no tool result yet is answered by calling its first tool (arguments made from the tool's JSON
    schema); the request that carries the tool's result gets the normal text answer. So an agent loop
    makes exactly two model requests and one tool call per run.
    """

    def __init__(
        self,
        seed: int = 0,
        latency_ms: Latency = 0.0,
        error_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        *,
        chunk_ms: Latency = 0.0,
        chunks: tuple[int, int] = (4, 12),
        host: str = "127.0.0.1",
        port: int = 0,
        tool_calls: bool = False,
    ) -> None:
        for name, rate in (("error_rate", error_rate), ("rate_limit_rate", rate_limit_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate!r}")
        if chunks[0] < 1 or chunks[1] < chunks[0]:
            raise ValueError(f"chunks must be (min, max) with 1 <= min <= max, got {chunks!r}")
        self._config = _Config(seed, latency_ms, chunk_ms, error_rate, rate_limit_rate, chunks)
        self._config.tool_calls = tool_calls
        self._host = host
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> StubURLs:
        """Start serving (idempotent) and return the base URLs for the two APIs."""
        if self._httpd is None:
            config = self._config
            config.stop.clear()

            class Handler(_Handler):
                cfg = config

            httpd = _QuietServer((self._host, self._port), Handler)
            self._httpd = httpd
            self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="agentmeter-stub-server", daemon=True)
            self._thread.start()
        return self.urls

    def stop(self) -> None:
        """Stop serving; requests still held by a delay are cut short. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._config.stop.set()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StubServer:
        self.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("StubServer is not started; call start() or use it in a with block")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def urls(self) -> StubURLs:
        return StubURLs(self.openai_base_url, self.tavily_base_url, self.anthropic_base_url)

    @property
    def anthropic_base_url(self) -> str:
        """Pass as ``Anthropic(base_url=...)`` (the client adds ``/v1/messages``)."""
        return self.base_url + ANTHROPIC_PREFIX

    @property
    def openai_base_url(self) -> str:
        """Pass as ``OpenAI(base_url=...)``."""
        return self.base_url + OPENAI_PREFIX

    @property
    def tavily_base_url(self) -> str:
        """Pass as ``TavilyClient(api_base_url=...)``."""
        return self.base_url + TAVILY_PREFIX

    # -- scripting and inspection ---------------------------------------------------------------------
    def script(self, path: str, replies: Iterable[Reply | int]) -> None:
        """Queue answers for the next requests to ``path`` ("chat/completions", "/v1/responses", "search",
        "/tavily/extract"...); an int is shorthand: 200 = :data:`OK`, 429 = :func:`rate_limited`, 5xx =
        :func:`server_error`, else ``Reply(status=...)``. Once the queue is used up the
        endpoint answers normally again. Scripted answers are never replaced by random faults."""
        key = _endpoint_key(path)
        if key not in ENDPOINTS:
            raise ValueError(f"unknown stub endpoint {path!r}; accepted: {', '.join(ENDPOINTS)}")
        items = [_shorthand(r) if isinstance(r, int) else r for r in replies]
        with self._config.lock:
            self._config.scripts.setdefault(key, deque()).extend(items)

    @property
    def requests(self) -> list[StubRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._config.lock:
            return list(self._config.log)

    def clear(self) -> None:
        """Forget the request log, pending scripts and the prompt cache."""
        with self._config.lock:
            self._config.log.clear()
            self._config.scripts.clear()
            self._config.seen_prompts.clear()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (timeout, closed stream) is normal here, not worth a traceback


