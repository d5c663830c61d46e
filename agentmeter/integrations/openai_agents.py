"""The OpenAI Agents SDK (``openai-agents``): every agent run recorded, without decorators.

::

    import agentmeter.integrations.openai_agents as am_agents

    am_agents.instrument()   # registers a tracing processor with the SDK (agents.add_trace_processor)

What becomes what:

* each trace -> a **run**: every ``Runner.run`` / ``run_sync`` / ``run_streamed`` outside a ``trace()``
  block makes its own trace; runs grouped in one ``with trace("workflow"):`` block make one run. The run's
  name is the workflow name, ``agent`` the first agent that ran; ``metadata`` holds ``agents`` (every agent,
  in order), ``handoffs`` (``{"from", "to"}``) and the trace's own metadata; the run's ``session_id`` is the
  trace's ``group_id``;
* agent spans -> steps of kind ``agent``; function tools -> steps of kind ``tool``; guardrails, custom and
  MCP spans -> steps of kind ``other``;
* generation spans (Chat Completions models) and response spans (the Responses API, streamed or not) ->
  **calls** with the model and the usage the API reported. The usage totals the SDK puts on its task and
  turn spans are never added again.

A ``@track_step`` or ``track_call`` inside a tool joins the run, nested under the tool's step. A request
that agentmeter's OpenAI integration also records (``agentmeter.integrations.openai.instrument()``) is
counted once: the client's call, under the SDK's generation/response span (then a step of kind ``llm``).
Turning the SDK's tracing off (``OPENAI_AGENTS_DISABLE_TRACING=1``, ``RunConfig(tracing_disabled=True)``)
turns this off too. Never raises into the agent; never blocks it on I/O.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Hashable
from typing import Any

from agents import tracing as agents_tracing

from .. import _guard, _spans
from .._model import Run, Step
from ._trees import CALL, OTHER, RUN, STEP, Forest, Node
from ._values import as_count as _tokens
from ._values import attr as _get

__all__ = ["instrument", "instrumented", "uninstrument"]

_SOURCE = "openai-agents"
_TRACE: Hashable = "trace"  # the node key of the trace itself (the run root)


class AgentmeterTracingProcessor(agents_tracing.TracingProcessor):
    """The SDK tracing processor behind :func:`instrument`. Thread-safe; never raises into the agent."""

    def __init__(self, trace_timeout: float = 300.0) -> None:
        self.enabled = True
        # the trace ends when the SDK says so (on_trace_end), not when no span is open between turns
        self.forest = Forest(_SOURCE, trace_timeout=trace_timeout, complete_when_idle=False, on_export=self._forget)
        self._starts: dict[Hashable, int] = {}
        self._roots: dict[str, Node] = {}
        self._lock = threading.Lock()

    # -- traces ---------------------------------------------------------------------------------------
    def on_trace_start(self, trace: Any) -> None:
        if not self.enabled:
            return
        try:
            meta: dict[str, Any] = {"agents": [], "handoffs": []}
            group = _get(trace, "group_id")
            if group:
                meta["session_id"] = str(group)
            user_meta = _get(trace, "metadata")
            if isinstance(user_meta, dict) and user_meta:
                meta["trace_metadata"] = dict(user_meta)
            meta["trace_id"] = trace.trace_id
            root = Node(_TRACE, None, RUN, str(_get(trace, "name") or "Agent workflow"), time.time_ns(), metadata=meta)
            with self._lock:
                self._roots[trace.trace_id] = root
            self.forest.start(trace.trace_id, root)
        except Exception as exc:
            _guard.internal_error("openai_agents.trace_start", exc)

    def on_trace_end(self, trace: Any) -> None:
        try:
            with self._lock:
                root = self._roots.pop(trace.trace_id, None)
            if root is None:
                return
            self.forest.end(trace.trace_id, dataclasses.replace(root, end_ns=time.time_ns()))
            self.forest.finish(trace.trace_id)
        except Exception as exc:
            _guard.internal_error("openai_agents.trace_end", exc)

    # -- spans ----------------------------------------------------------------------------------------
    def on_span_start(self, span: Any) -> None:
        if not self.enabled:
            return
        try:
            now = time.time_ns()
            self._starts[span.span_id] = now
            self.forest.start(span.trace_id, self._node(span, now, None))
        except Exception as exc:
            _guard.internal_error("openai_agents.span_start", exc)

    def on_span_end(self, span: Any) -> None:
        try:
            start = self._starts.pop(span.span_id, None)
            if start is None:
                return
            node = self._node(span, start, time.time_ns())
            data = span.span_data
            kind = _get(data, "type")
            if kind in ("agent", "handoff"):
                with self._lock:
                    root = self._roots.get(span.trace_id)
                if root is not None:
                    if kind == "agent":
                        root.agent = root.agent or node.agent
                        root.metadata["agents"].append(node.agent)
                    else:
                        root.metadata["handoffs"].append({"from": _get(data, "from_agent"),
                                                          "to": _get(data, "to_agent")})
            self.forest.end(span.trace_id, node)
        except Exception as exc:
            _guard.internal_error("openai_agents.span_end", exc)

    def _node(self, span: Any, start_ns: int, end_ns: int | None) -> Node:
        data = span.span_data
        kind = _get(data, "type")
        name = str(_get(data, "name") or kind or "span")
        node = Node(span.span_id, span.parent_id or _TRACE, OTHER, name, start_ns, end_ns)
        if kind == "agent":
            node.role, node.kind, node.agent = RUN, "agent", name
        elif kind == "function":
            node.role, node.kind = STEP, "tool"
            if _get(data, "mcp_data"):
                node.metadata["mcp"] = True
        elif kind in ("guardrail", "custom", "mcp_tools"):
            node.role, node.kind = STEP, "other"
            if kind == "guardrail":
                node.metadata["triggered"] = bool(_get(data, "triggered"))
            elif kind == "mcp_tools":
                node.name = f"mcp_list_tools {_get(data, 'server') or ''}".strip()
        elif kind in ("generation", "response"):
            node.role, node.kind, node.provider = CALL, "llm", "openai"
            node.operation = "chat.completions" if kind == "generation" else "responses"
            if end_ns is not None:
                _usage(node, data, kind)
        error = span.error if end_ns is not None else None
        if error:
            node.status = "error"
            details = _get(error, "data")
            # the SDK reports a message and free-form data, not the exception type (tool errors are redacted)
            node.error_type = "AgentsSpanError"
            text = ": ".join(str(p) for p in (_get(error, "message"), _get(details, "error")) if p)
            node.error_message = text[:2000] or None
        return node

    def _forget(self, tree: Any) -> None:
        for key, node in tree.nodes.items():
            if node.end_ns is None:
                self._starts.pop(key, None)
        with self._lock:
            self._roots.pop(str(tree.key), None)

    def shutdown(self) -> None:
        self.forest.close()

    def force_flush(self) -> None:
        self.forest.sweep()

    def outer(self) -> tuple[Run, Step | None] | None:
        """The run (and step) a decorated step opened now joins: the SDK's current span or trace."""
        if not self.enabled or self.forest.idle():
            return None
        span = agents_tracing.get_current_span()
        if span is not None:
            return self.forest.outer(span.trace_id, span.span_id)
        trace = agents_tracing.get_current_trace()
        if trace is not None:
            return self.forest.outer(trace.trace_id, _TRACE)
        return None


def _usage(node: Node, data: Any, kind: str) -> None:
    if kind == "generation":
        usage = _get(data, "usage")
        node.model = _get(data, "model")
        node.input_tokens = _tokens(_get(usage, "input_tokens") or _get(usage, "prompt_tokens"))
        node.output_tokens = _tokens(_get(usage, "output_tokens") or _get(usage, "completion_tokens"))
        details = _get(usage, "input_tokens_details") or _get(usage, "prompt_tokens_details")
        node.cached_input_tokens = _tokens(_get(details, "cached_tokens"))
        details = _get(usage, "output_tokens_details") or _get(usage, "completion_tokens_details")
        node.reasoning_tokens = _tokens(_get(details, "reasoning_tokens"))
        return
    response = _get(data, "response")
    usage = _get(response, "usage")
    node.model = _get(response, "model")
    if response is not None and _get(response, "id"):
        node.metadata["response_id"] = str(_get(response, "id"))
    if usage is None:
        return
    node.input_tokens = _tokens(_get(usage, "input_tokens"))
    node.output_tokens = _tokens(_get(usage, "output_tokens"))
    node.cached_input_tokens = _tokens(_get(_get(usage, "input_tokens_details"), "cached_tokens"))
    node.reasoning_tokens = _tokens(_get(_get(usage, "output_tokens_details"), "reasoning_tokens"))


_lock = threading.Lock()
_processor: AgentmeterTracingProcessor | None = None


def instrument(*, trace_timeout: float = 300.0) -> AgentmeterTracingProcessor:
    """Record every agent run of the SDK (idempotent: a second call returns the same processor).

    ``trace_timeout``: seconds without activity after which a trace that never ended is exported as it
    is. The SDK's own processors (its exporter to the OpenAI dashboard) are kept.
    """
    global _processor
    with _lock:
        if _processor is None:
            _processor = AgentmeterTracingProcessor(trace_timeout)
            agents_tracing.add_trace_processor(_processor)
        _processor.enabled = True
        _spans.add_outer_context(_processor.outer)
        return _processor


def uninstrument() -> None:
    """Stop recording (the processor stays registered with the SDK but ignores new traces). Never raises."""
    with _lock:
        if _processor is not None:
            _processor.enabled = False
            _spans.remove_outer_context(_processor.outer)


def instrumented() -> bool:
    return _processor is not None and _processor.enabled
