"""The request handler's plumbing: dispatch, scripted faults, JSON and server-sent-event answers."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any

from ._common import (
    ANTHROPIC_PREFIX,
    ENDPOINTS,
    OK,
    OPENAI_PREFIX,
    TAVILY_PREFIX,
    Reply,
    StubRequest,
    _Config,
    _endpoint_key,
    _estimate_tokens,
    _text_of,
    rate_limited,
    server_error,
)

#: endpoint -> the handler method that answers it
_ROUTES = {"chat/completions": "_chat", "responses": "_responses", "embeddings": "_embeddings",
           "messages": "_messages", "search": "_search", "extract": "_extract"}


class _Cut(Exception):
    """The scripted connection drop of a streamed answer."""


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


class HandlerBase(BaseHTTPRequestHandler):
    """The plumbing every API's routes use: reading requests, picking a reply, JSON, SSE, faults."""

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
        if entry.endpoint == "messages/count_tokens":
            self._finish_json(entry, {"input_tokens": _anthropic_prompt(body)[0]}, reply)
            return
        # each API's routes are a mixin of the server's handler (OpenAIRoutes, AnthropicRoutes, TavilyRoutes)
        getattr(self, _ROUTES.get(entry.endpoint, "_extract"))(entry, body, reply)

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
