"""What the stub servers share: replies and faults, the request log entry, configuration, text helpers."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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

def _endpoint_key(path: str) -> str:
    key = path.split("?", 1)[0].strip("/")
    for prefix in (OPENAI_PREFIX.strip("/") + "/", "openai/", ANTHROPIC_PREFIX.strip("/") + "/", "v1/",
                   TAVILY_PREFIX.strip("/") + "/"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key
