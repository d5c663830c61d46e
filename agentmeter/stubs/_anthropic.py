"""The Anthropic routes of the stub: messages (JSON and server-sent events, tool use, prompt caching)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

from ._common import ANTHROPIC_MIN_CACHE_TOKENS, Reply, StubRequest, _estimate_tokens
from ._plumbing import HandlerBase, _anthropic_prompt


class AnthropicRoutes(HandlerBase):
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
