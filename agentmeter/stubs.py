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

import base64
import hashlib
import json
import math
import random
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

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

OPENAI_PREFIX = "/openai/v1"
ANTHROPIC_PREFIX = "/anthropic"
TAVILY_PREFIX = "/tavily"
ENDPOINTS = ("chat/completions", "responses", "embeddings", "messages", "messages/count_tokens", "search", "extract")
#: Anthropic caches a prefix only from this many tokens on (Sonnet and Opus models)
ANTHROPIC_MIN_CACHE_TOKENS = 1024

#: A latency: fixed milliseconds, a uniform (min, max) range, or a function of the server's Random.
Latency = float | tuple[float, float] | Callable[[random.Random], float]


@dataclass(frozen=True)
class Reply:
    """One scripted answer for :meth:`StubServer.script`.

    ``status`` 200 means "the normal generated answer"; any other status answers an API-shaped error body
    (or ``body`` when given). ``delay_ms`` waits before the headers (longer than the client's timeout makes
    a timeout). ``body`` replaces the generated JSON body of a 200. ``include_usage`` forces (True) or
    suppresses (False) usage in the answer, whatever the request asked. ``cut_after_chunks`` drops the
    connection mid-stream after that many events.
    """

    status: int = 200
    delay_ms: float = 0.0
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    include_usage: bool | None = None
    cut_after_chunks: int | None = None


#: The normal generated answer, as a script entry.
OK = Reply()


def rate_limited(retry_after_ms: float = 1.0) -> Reply:
    """A 429 with ``retry-after-ms`` (the OpenAI client waits that long before it retries)."""
    return Reply(status=429, headers={"retry-after-ms": f"{retry_after_ms:g}", "retry-after": "0"})


def server_error(status: int = 500, retry_after_ms: float | None = 1.0) -> Reply:
    """A 5xx answer with an API-shaped error body (the OpenAI client retries 500, 502, 503, 504).

    ``retry_after_ms`` (sent as ``retry-after-ms``) keeps the client's back-off short; ``None`` sends no
    header, so the client backs off exponentially from 0.5 s as it would against the real API."""
    headers = {} if retry_after_ms is None else {"retry-after-ms": f"{retry_after_ms:g}"}
    return Reply(status=status, headers=headers)


def timeout(seconds: float = 5.0) -> Reply:
    """Hold the request ``seconds`` before answering normally: longer than the client's timeout."""
    return Reply(delay_ms=seconds * 1000.0)


def slow(ms: float) -> Reply:
    """The normal answer, ``ms`` milliseconds late."""
    return Reply(delay_ms=ms)


def cut_stream(after_chunks: int = 2) -> Reply:
    """A streamed answer whose connection drops after ``after_chunks`` events."""
    return Reply(cut_after_chunks=after_chunks)


def _shorthand(status: int) -> Reply:
    if status == 429:
        return rate_limited()
    if status >= 500:
        return server_error(status)
    return Reply(status=status)


class StubURLs(NamedTuple):
    openai: str
    tavily: str
    anthropic: str


@dataclass
class StubRequest:
    """One request the server received, and what it answered (``usage`` as the body reported it)."""

    api: str  # "openai", "anthropic" or "tavily"
    endpoint: str  # one of ENDPOINTS, or the unknown path
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int = 0
    streamed: bool = False
    usage: dict[str, Any] | None = None
    fault: str | None = None  # "scripted", "random_error", "random_rate_limit" or None
    model: str | None = None
    result_count: int | None = None
    tool_call: str | None = None  # the tool the answer called (``tool_calls=True`` servers)
    #: milliseconds from the request's arrival to when the server began writing the first content event
    #: (streams) and the end of its answer: a client cannot have read either sooner
    first_content_ms: float | None = None
    answer_ms: float | None = None
    received_ns: int = field(default_factory=time.monotonic_ns, repr=False)

    def _mark(self, first_content: bool = False) -> None:
        elapsed = math.floor((time.monotonic_ns() - self.received_ns) / 1e3) / 1e3  # floor to 1 us
        if first_content and self.first_content_ms is None:
            self.first_content_ms = elapsed
        self.answer_ms = elapsed


_VOCABULARY = (
    "revenue growth market customers product platform strategy team funding competitors pricing "
    "expansion partnerships quarter analysts outlook margin enterprise cloud research launch users "
    "regulation hiring acquisition roadmap infrastructure security data model pipeline demand supply "
    "leadership europe asia retail developers api latency adoption forecast investment risk"
)
_WORDS = tuple(_VOCABULARY.split())
_DOMAINS = ("news.example.com", "finance.example.org", "wiki.example.net", "blog.example.io",
            "docs.example.dev")
_REASONING = ("o1", "o3", "o4", "gpt-5")
_EMBED_DIMS = {"text-embedding-3-large": 3072, "text-embedding-3-small": 1536, "text-embedding-ada-002": 1536}


def _estimate_tokens(text: str) -> int:
    """About four characters per token, as OpenAI's rule of thumb says."""
    return max(1, math.ceil(len(text) / 4))


def _text_of(value: Any) -> str:
    """All the text inside a chat ``messages`` list or a responses ``input`` (strings, parts, lists)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        parts = [_text_of(value.get(k)) for k in ("content", "text", "input_text", "instructions")]
        return " ".join(p for p in parts if p)
    if isinstance(value, Iterable):
        return " ".join(_text_of(v) for v in value)
    return str(value)


def _pending_tool(body: Mapping[str, Any], history: str) -> tuple[str, str] | None:
    """(name, JSON arguments) of the first function tool a request offers, unless its ``history``
    (``messages`` or ``input``) already holds a tool result."""
    tools = [t for t in body.get("tools") or () if isinstance(t, Mapping) and t.get("type") == "function"]
    items = body.get(history)
    if not tools or (isinstance(items, list) and any(
            isinstance(m, Mapping) and (m.get("role") == "tool" or m.get("type") == "function_call_output")
            for m in items)):
        return None
    spec = tools[0].get("function") or tools[0]
    schema = spec.get("parameters") or {}
    samples: dict[Any, Any] = {"string": "stub", "integer": 1, "number": 1.5, "boolean": True}
    props = schema.get("properties") or {}
    args = {k: samples.get((props.get(k) or {}).get("type"), "stub") for k in schema.get("required") or props}
    return str(spec.get("name")), json.dumps(args)


class _Config:
    def __init__(self, seed: int, latency_ms: Latency, chunk_ms: Latency, error_rate: float,
                 rate_limit_rate: float, chunks: tuple[int, int]) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.latency_ms = latency_ms
        self.chunk_ms = chunk_ms
        self.error_rate = error_rate
        self.rate_limit_rate = rate_limit_rate
        self.chunks = chunks
        self.scripts: dict[str, deque[Reply]] = {}
        self.log: list[StubRequest] = []
        self.seen_prompts: set[str] = set()
        self.stop = threading.Event()
        self.tool_calls = False

    def draw(self, latency: Latency) -> float:
        with self.lock:
            if callable(latency):
                return max(0.0, float(latency(self.rng)))
            if isinstance(latency, tuple):
                low, high = latency
                return self.rng.uniform(low, high) if high > low else float(low)
            return float(latency)

    def random(self) -> float:
        with self.lock:
            return self.rng.random()

    def randint(self, low: int, high: int) -> int:
        with self.lock:
            return self.rng.randint(low, high)

    def words(self, n: int) -> list[str]:
        with self.lock:
            return [self.rng.choice(_WORDS) for _ in range(n)]


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


def _endpoint_key(path: str) -> str:
    key = path.split("?", 1)[0].strip("/")
    for prefix in (OPENAI_PREFIX.strip("/") + "/", "openai/", ANTHROPIC_PREFIX.strip("/") + "/", "v1/",
                   TAVILY_PREFIX.strip("/") + "/"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _anthropic_prompt(body: Mapping[str, Any]) -> tuple[int, tuple[int, str] | None, str | None]:
    """(prompt tokens, (tokens, key) of the cached prefix or None, its cache ttl) of a messages request.

    The prompt is read in Anthropic's cache order (tools, system, messages); the cached prefix ends at the
    last block marked ``cache_control``."""
    parts: list[tuple[str, Any]] = []
    for tool in body.get("tools") or []:
        parts.append((json.dumps(tool, sort_keys=True), tool.get("cache_control") if isinstance(tool, dict) else None))
    system = body.get("system")
    blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system or [])
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        blocks += [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    for block in blocks:
        if isinstance(block, Mapping):
            parts.append((_text_of(block) or json.dumps(block, sort_keys=True), block.get("cache_control")))
    model = str(body.get("model") or "")
    total = _estimate_tokens(" ".join(text for text, _ in parts)) + 3
    cached, ttl = None, None
    for i, (_text, control) in enumerate(parts):
        if isinstance(control, Mapping):
            prefix = " ".join(text for text, _ in parts[: i + 1])
            key = hashlib.sha256((model + "\0" + prefix).encode()).hexdigest()
            cached, ttl = (_estimate_tokens(prefix), key), control.get("ttl")
    return total, cached, ttl if isinstance(ttl, str) else None


def _is_content(event: str | None, data: Any) -> bool:
    """True for a streamed event carrying generated content (text, a tool call's arguments...)."""
    if not isinstance(data, dict):
        return False
    kind = str(data.get("type") or event or "")
    if kind.endswith(".delta") or kind == "content_block_delta":
        return True
    choices = data.get("choices")
    delta = choices[0].get("delta") if isinstance(choices, list) and choices else None
    return isinstance(delta, dict) and bool(delta.get("content") or delta.get("tool_calls"))


class _Cut(Exception):
    """The scripted connection drop of a streamed answer."""


class _Handler(BaseHTTPRequestHandler):
    cfg: _Config
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall
    server_version = "agentmeter-stub/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the request log is kept in StubServer.requests

    # -- plumbing -------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        cfg = self.cfg
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        api = ("openai" if path.startswith(OPENAI_PREFIX)
               else "anthropic" if path.startswith(ANTHROPIC_PREFIX + "/v1/")
               else "tavily" if path.startswith(TAVILY_PREFIX) else "-")
        entry = StubRequest(api, _endpoint_key(path), "POST", path, dict(self.headers.items()), body)
        with cfg.lock:
            cfg.log.append(entry)
        if api == "-" or entry.endpoint not in ENDPOINTS:
            self._error(entry, 404, "not_found", f"no such endpoint {path}")
            return
        if not isinstance(body, dict):
            self._error(entry, 400, "invalid_request_error", "body must be a JSON object")
            return
        reply = self._pick_reply(entry)
        delay = reply.delay_ms + cfg.draw(cfg.latency_ms)
        if delay > 0 and cfg.stop.wait(delay / 1000.0):
            return  # server stopping
        try:
            if reply.status != 200:
                self._error(entry, reply.status, None, None, reply)
            else:
                self._answer(entry, body, reply)
        except (BrokenPipeError, ConnectionResetError, _Cut):
            self.close_connection = True

    def _pick_reply(self, entry: StubRequest) -> Reply:
        cfg = self.cfg
        with cfg.lock:
            queue = cfg.scripts.get(entry.endpoint)
            if queue:
                entry.fault = "scripted"
                return queue.popleft()
        roll = cfg.random() if (cfg.error_rate or cfg.rate_limit_rate) else 1.0
        if roll < cfg.rate_limit_rate:
            entry.fault = "random_rate_limit"
            return rate_limited(5.0)
        if roll < cfg.rate_limit_rate + cfg.error_rate:
            entry.fault = "random_error"
            return server_error(500, retry_after_ms=5.0)
        return OK

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None,
                   entry: StubRequest | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", "req_" + uuid.uuid4().hex[:24])
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if entry is not None:
            entry._mark()
        self.wfile.write(data)
        self.wfile.flush()

    def _error(self, entry: StubRequest, status: int, kind: str | None, message: str | None,
               reply: Reply | None = None) -> None:
        entry.status = status
        headers = dict(reply.headers) if reply is not None else {}
        if reply is not None and reply.body is not None:
            self._send_json(status, reply.body, headers, entry)
            return
        if status == 429:
            kind = kind or "rate_limit_exceeded"
            message = message or "Rate limit reached. Please try again in 1ms."
        elif status >= 500:
            kind = kind or "server_error"
            message = message or "The server had an error while processing your request. Sorry about that!"
        kind, message = kind or "invalid_request_error", message or f"error {status}"
        if entry.api == "tavily":
            self._send_json(status, {"detail": {"error": message}}, headers, entry)
        elif entry.api == "anthropic":
            kinds = {429: "rate_limit_error", 529: "overloaded_error", 404: "not_found_error",
                     400: "invalid_request_error"}
            kind = kinds.get(status, "api_error" if status >= 500 else kind)
            self._send_json(status, {"type": "error", "error": {"type": kind, "message": message}}, headers, entry)
        else:
            code = kind if kind == "rate_limit_exceeded" else None
            error = {"message": message, "type": kind, "param": None, "code": code}
            self._send_json(status, {"error": error}, headers, entry)

    def _answer(self, entry: StubRequest, body: dict[str, Any], reply: Reply) -> None:
        endpoint = entry.endpoint
        if endpoint == "chat/completions":
            self._chat(entry, body, reply)
        elif endpoint == "responses":
            self._responses(entry, body, reply)
        elif endpoint == "embeddings":
            self._embeddings(entry, body, reply)
        elif endpoint == "messages":
            self._messages(entry, body, reply)
        elif endpoint == "messages/count_tokens":
            self._finish_json(entry, {"input_tokens": _anthropic_prompt(body)[0]}, reply)
        elif endpoint == "search":
            self._search(entry, body, reply)
        else:
            self._extract(entry, body, reply)

    def _finish_json(self, entry: StubRequest, payload: dict[str, Any], reply: Reply) -> None:
        if reply.body is not None:
            payload = reply.body
        entry.status = 200
        usage = payload.get("usage") if isinstance(payload, dict) else None
        entry.usage = usage if isinstance(usage, dict) else None
        self._send_json(200, payload, reply.headers, entry)

    # -- streaming ------------------------------------------------------------------------------------
    def _stream(self, entry: StubRequest, events: Iterator[tuple[str | None, Any]], reply: Reply) -> None:
        entry.status = 200
        entry.streamed = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", "req_" + uuid.uuid4().hex[:24])
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        # Each event is written when the next one is due, and the last one together with the end of the
        # chunked body, so a client that stops reading at the last event still finds the body complete
        # and can reuse the connection (as with the real API).
        pending, pending_content = b"", False
        for sent, (event, data) in enumerate(events):
            if reply.cut_after_chunks is not None and sent >= reply.cut_after_chunks:
                self.wfile.write(pending)
                self.wfile.flush()
                self.close_connection = True
                raise _Cut()
            pause = self.cfg.draw(self.cfg.chunk_ms) if sent else 0.0
            if pause > 0 and self.cfg.stop.wait(pause / 1000.0):
                raise _Cut()
            if pending:
                entry._mark(pending_content)
                self.wfile.write(pending)
                self.wfile.flush()
            text = data if isinstance(data, str) else json.dumps(data)
            chunk = ((f"event: {event}\n" if event else "") + f"data: {text}\n\n").encode()
            pending = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            pending_content = _is_content(event, data)
        entry._mark(pending_content)
        self.wfile.write(pending + b"0\r\n\r\n")
        self.wfile.flush()

    # -- OpenAI ---------------------------------------------------------------------------------------
    def _completion(self, body: dict[str, Any], prompt: str) -> tuple[list[str], dict[str, Any]]:
        """Generated answer pieces and usage in chat-completions form."""
        cfg = self.cfg
        model = str(body.get("model") or "gpt-4o-mini")
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
        n_words = cfg.randint(20, 120)
        if isinstance(limit, int) and limit > 0:
            n_words = min(n_words, limit)
        words = cfg.words(n_words)
        n_chunks = min(cfg.randint(*cfg.chunks), n_words)
        size = math.ceil(n_words / n_chunks)
        pieces = [" ".join(words[i:i + size]) + " " for i in range(0, n_words, size)]
        pieces[-1] = pieces[-1].rstrip()
        prompt_tokens = _estimate_tokens(prompt) + 7
        key = hashlib.sha256((model + "\0" + prompt).encode()).hexdigest()
        with cfg.lock:
            repeat = key in cfg.seen_prompts
            cfg.seen_prompts.add(key)
        cached = (prompt_tokens // 128) * 128 if repeat and prompt_tokens >= 1024 else 0
        reasoning = cfg.randint(16, 256) if model.startswith(_REASONING) else 0
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n_words + reasoning,
            "total_tokens": prompt_tokens + n_words + reasoning,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }
        return pieces, usage

    def _chat(self, entry: StubRequest, body: dict[str, Any], reply: Reply) -> None:
        model = str(body.get("model") or "gpt-4o-mini")
        entry.model = model
        pieces, usage = self._completion(body, _text_of(body.get("messages")))
        tool = _pending_tool(body, "messages") if self.cfg.tool_calls else None
        if tool is not None:
            self._chat_tool_call(entry, body, reply, tool, usage)
            return
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        text = "".join(pieces)
        if not body.get("stream"):
            self._finish_json(entry, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                     "annotations": []},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": usage, "service_tier": "default", "system_fingerprint": "fp_stub",
            }, reply)
            return
        options = body.get("stream_options") or {}
        asked = bool(options.get("include_usage"))
        with_usage = asked if reply.include_usage is None else reply.include_usage
        entry.usage = usage if with_usage else None

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_stub", "service_tier": "default",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if with_usage:
                out["usage"] = None
            return out

        def events() -> Iterator[tuple[str | None, Any]]:
            yield None, chunk({"role": "assistant", "content": "", "refusal": None}, None)
            for piece in pieces:
                yield None, chunk({"content": piece}, None)
            yield None, chunk({}, "stop")
            if with_usage:
                final = chunk({}, None)
                final["choices"] = []
                final["usage"] = usage
                yield None, final
            yield None, "[DONE]"

        self._stream(entry, events(), reply)

    def _chat_tool_call(self, entry: StubRequest, body: dict[str, Any], reply: Reply, tool: tuple[str, str],
                        usage: dict[str, Any]) -> None:
        """Answer a chat request by calling ``tool`` (name, JSON arguments), plain or streamed."""
        model, cid, created = entry.model, "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())
        entry.tool_call = tool[0]
        call = {"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                "function": {"name": tool[0], "arguments": tool[1]}}
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "refusal": None, "annotations": [],
                       "tool_calls": [call]}
            self._finish_json(entry, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}],
                "usage": usage, "service_tier": "default", "system_fingerprint": "fp_stub"}, reply)
            return
        asked = bool((body.get("stream_options") or {}).get("include_usage"))
        with_usage = asked if reply.include_usage is None else reply.include_usage
        entry.usage = usage if with_usage else None

        def chunk(delta: dict[str, Any], finish: str | None, choices: bool = True) -> dict[str, Any]:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": "fp_stub", "usage": None if choices else usage,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
                    if choices else []}

        def events() -> Iterator[tuple[str | None, Any]]:
            head = {**call, "index": 0, "function": {"name": tool[0], "arguments": ""}}
            yield None, chunk({"role": "assistant", "content": None, "tool_calls": [head]}, None)
            yield None, chunk({"tool_calls": [{"index": 0, "function": {"arguments": tool[1]}}]}, None)
            yield None, chunk({}, "tool_calls")
            if with_usage:
                yield None, chunk({}, None, choices=False)
            yield None, "[DONE]"

        self._stream(entry, events(), reply)

    def _responses(self, entry: StubRequest, body: dict[str, Any], reply: Reply) -> None:
        model = str(body.get("model") or "gpt-4o-mini")
        entry.model = model
        prompt = _text_of(body.get("instructions")) + " " + _text_of(body.get("input"))
        pieces, chat_usage = self._completion(body, prompt)
        usage = {
            "input_tokens": chat_usage["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": chat_usage["prompt_tokens_details"]["cached_tokens"]},
            "output_tokens": chat_usage["completion_tokens"],
            "output_tokens_details": {
                "reasoning_tokens": chat_usage["completion_tokens_details"]["reasoning_tokens"]},
            "total_tokens": chat_usage["total_tokens"],
        }
        rid, mid = "resp_" + uuid.uuid4().hex, "msg_" + uuid.uuid4().hex
        text = "".join(pieces)
        tool = _pending_tool(body, "input") if self.cfg.tool_calls else None
        message: dict[str, Any]
        if tool is not None:
            entry.tool_call = tool[0]
            mid = "fc_" + uuid.uuid4().hex
            message = {"id": mid, "type": "function_call", "status": "completed", "call_id": "call_" + mid[3:27],
                       "name": tool[0], "arguments": tool[1]}
        else:
            message = {"id": mid, "type": "message", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}

        def response(status: str, output: list[Any], use: dict[str, Any] | None) -> dict[str, Any]:
            return {
                "id": rid, "object": "response", "created_at": int(time.time()), "status": status,
                "error": None, "incomplete_details": None, "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"), "model": model, "output": output,
                "parallel_tool_calls": True, "previous_response_id": None,
                "reasoning": {"effort": None, "summary": None}, "store": True, "temperature": 1.0,
                "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
                "truncation": "disabled", "usage": use, "user": None, "metadata": {},
            }

        if not body.get("stream"):
            self._finish_json(entry, response("completed", [message], usage), reply)
            return
        with_usage = True if reply.include_usage is None else reply.include_usage
        entry.usage = usage if with_usage else None

        def events() -> Iterator[tuple[str | None, Any]]:
            seq = iter(range(10_000))

            def ev(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
                return kind, {"type": kind, "sequence_number": next(seq), **fields}

            at = {"item_id": mid, "output_index": 0, "content_index": 0}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield ev("response.created", response=response("in_progress", [], None))
            yield ev("response.in_progress", response=response("in_progress", [], None))
            if tool is not None:
                yield ev("response.output_item.added", output_index=0,
                         item={**message, "status": "in_progress", "arguments": ""})
                yield ev("response.function_call_arguments.delta", item_id=mid, output_index=0, delta=tool[1])
                yield ev("response.function_call_arguments.done", item_id=mid, output_index=0, arguments=tool[1],
                         name=tool[0])
                yield ev("response.output_item.done", output_index=0, item=message)
                yield ev("response.completed", response=response("completed", [message], usage if with_usage else None))
                return
            yield ev("response.output_item.added", output_index=0,
                     item={**message, "status": "in_progress", "content": []})
            yield ev("response.content_part.added", **at, part=part)
            for piece in pieces:
                yield ev("response.output_text.delta", **at, delta=piece, logprobs=[])
            yield ev("response.output_text.done", **at, text=text, logprobs=[])
            yield ev("response.content_part.done", **at, part={**part, "text": text})
            yield ev("response.output_item.done", output_index=0, item=message)
            final = response("completed", [message], usage if with_usage else None)
            yield ev("response.completed", response=final)

        self._stream(entry, events(), reply)

    def _embeddings(self, entry: StubRequest, body: dict[str, Any], reply: Reply) -> None:
        model = str(body.get("model") or "text-embedding-3-small")
        entry.model = model
        raw = body.get("input")
        inputs: list[Any] = [raw] if isinstance(raw, str) or (
            isinstance(raw, list) and raw and isinstance(raw[0], int)) else list(raw or [])
        dims = body.get("dimensions") or _EMBED_DIMS.get(model, 1536)
        as_base64 = body.get("encoding_format") == "base64"
        data, tokens = [], 0
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else json.dumps(item)
            tokens += len(item) if isinstance(item, list) else _estimate_tokens(text)
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
            rng = random.Random(seed)
            vector = [rng.gauss(0.0, 1.0) for _ in range(int(dims))]
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            vector = [v / norm for v in vector]
            encoded: Any = (base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                            if as_base64 else vector)
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        self._finish_json(entry, {"object": "list", "data": data, "model": model,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, reply)

    # -- Anthropic ------------------------------------------------------------------------------------
    def _messages(self, entry: StubRequest, body: dict[str, Any], reply: Reply) -> None:
        cfg = self.cfg
        model = str(body.get("model") or "claude-sonnet-4-5")
        entry.model = model
        total, cached_prefix, ttl = _anthropic_prompt(body)
        read = written = 0
        if cached_prefix is not None and cached_prefix[0] >= ANTHROPIC_MIN_CACHE_TOKENS:
            tokens, key = cached_prefix
            with cfg.lock:
                seen = key in cfg.seen_prompts
                cfg.seen_prompts.add(key)
            read, written = (tokens, 0) if seen else (0, tokens)
        limit = body.get("max_tokens")
        n_words = cfg.randint(20, 120)
        if isinstance(limit, int) and limit > 0:
            n_words = min(n_words, limit)
        words = cfg.words(n_words)
        n_chunks = min(cfg.randint(*cfg.chunks), n_words)
        size = math.ceil(n_words / n_chunks)
        pieces = [" ".join(words[i:i + size]) + " " for i in range(0, n_words, size)]
        pieces[-1] = pieces[-1].rstrip()
        tools = body.get("tools") if isinstance(body.get("tools"), list) else []
        tool = tools[0] if tools and isinstance(tools[0], dict) and tools[0].get("name") else None
        tool_input = {"query": " ".join(words[:4])} if tool is not None else None
        tool_json = json.dumps(tool_input) if tool_input is not None else ""
        output_tokens = n_words + (_estimate_tokens(tool_json) + 10 if tool is not None else 0)
        usage: dict[str, Any] = {
            "input_tokens": total - read - written,  # Anthropic counts cached tokens apart
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": written if ttl != "1h" else 0,
                               "ephemeral_1h_input_tokens": written if ttl == "1h" else 0},
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }
        mid = "msg_" + uuid.uuid4().hex[:24]
        text = "".join(pieces)
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        tool_id = "toolu_" + uuid.uuid4().hex[:24]
        if tool is not None:
            content.append({"type": "tool_use", "id": tool_id, "name": tool["name"], "input": tool_input})
        stop_reason = "tool_use" if tool is not None else "end_turn"
        message = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
                   "stop_reason": stop_reason, "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            self._finish_json(entry, message, reply)
            return
        with_usage = True if reply.include_usage is None else reply.include_usage
        entry.usage = usage if with_usage else None

        def events() -> Iterator[tuple[str | None, Any]]:
            start_usage = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens",
                                                  "cache_read_input_tokens", "cache_creation", "service_tier")}
            yield "message_start", {"type": "message_start", "message": {
                **message, "content": [], "stop_reason": None, "usage": {**start_usage, "output_tokens": 1}}}
            yield "content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}}
            yield "ping", {"type": "ping"}
            for piece in pieces:
                yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": piece}}
            yield "content_block_stop", {"type": "content_block_stop", "index": 0}
            if tool is not None:
                yield "content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
                    "type": "tool_use", "id": tool_id, "name": tool["name"], "input": {}}}
                half = len(tool_json) // 2
                for part in (tool_json[:half], tool_json[half:]):
                    yield "content_block_delta", {"type": "content_block_delta", "index": 1,
                                                  "delta": {"type": "input_json_delta", "partial_json": part}}
                yield "content_block_stop", {"type": "content_block_stop", "index": 1}
            final = {"output_tokens": output_tokens} if with_usage else {}
            yield "message_delta", {"type": "message_delta", "usage": final,
                                    "delta": {"stop_reason": stop_reason, "stop_sequence": None}}
            yield "message_stop", {"type": "message_stop"}

        self._stream(entry, events(), reply)

    # -- Tavily ---------------------------------------------------------------------------------------
    def _search(self, entry: StubRequest, body: dict[str, Any], reply: Reply) -> None:
        cfg = self.cfg
        query = str(body.get("query") or "")
        depth = body.get("search_depth") or "basic"
        max_results = int(body.get("max_results") or 5)
        count = max(0, min(max_results, cfg.randint(max(1, max_results - 2), max_results)))
        slug = "-".join(query.lower().split())[:60] or "result"
        results = []
        for i in range(count):
            words = cfg.words(cfg.randint(25, 60))
            domain = _DOMAINS[(i + len(query)) % len(_DOMAINS)]
            results.append({
                "url": f"https://{domain}/{slug}/{i + 1}",
                "title": f"{query.title()}: {' '.join(words[:4])}",
                "content": f"{query}: " + " ".join(words) + ".",
                "score": round(0.95 - i * 0.07 - cfg.random() * 0.05, 5),
                "raw_content": (" ".join(words) * 3) if body.get("include_raw_content") else None,
            })
        payload: dict[str, Any] = {
            "query": query, "follow_up_questions": None,
            "answer": (f"{query}: " + " ".join(cfg.words(30)) + ".") if body.get("include_answer") else None,
            "images": [], "results": results, "response_time": round(cfg.random() * 1.5 + 0.3, 2),
            "request_id": str(uuid.uuid4()),
        }
        want_usage = bool(body.get("include_usage")) if reply.include_usage is None else reply.include_usage
        if want_usage:
            payload["usage"] = {"credits": 2 if depth == "advanced" else 1}
        entry.result_count = count
        self._finish_json(entry, payload, reply)

    def _extract(self, entry: StubRequest, body: dict[str, Any], reply: Reply) -> None:
        cfg = self.cfg
        urls = body.get("urls") or []
        urls = [urls] if isinstance(urls, str) else list(urls)
        results, failed = [], []
        for url in urls:
            if "invalid" in str(url) or "fail" in str(url):
                failed.append({"url": url, "error": "Failed to fetch url"})
                continue
            text = " ".join(cfg.words(cfg.randint(120, 400)))
            results.append({"url": url, "raw_content": text, "images": []})
        payload: dict[str, Any] = {"results": results, "failed_results": failed,
                                   "response_time": round(cfg.random() * 2 + 0.2, 2),
                                   "request_id": str(uuid.uuid4())}
        want_usage = bool(body.get("include_usage")) if reply.include_usage is None else reply.include_usage
        if want_usage:
            per_five = 2 if body.get("extract_depth") == "advanced" else 1
            payload["usage"] = {"credits": per_five * math.ceil(len(results) / 5)}
        entry.result_count = len(results)
        self._finish_json(entry, payload, reply)
