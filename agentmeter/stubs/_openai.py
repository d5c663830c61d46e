"""The OpenAI routes of the stub: chat completions (with tool calls), responses, embeddings."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

from ._common import _EMBED_DIMS, _REASONING, Reply, StubRequest, _estimate_tokens, _pending_tool, _text_of
from ._plumbing import HandlerBase


class OpenAIRoutes(HandlerBase):
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
