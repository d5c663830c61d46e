"""OpenTelemetry in: GenAI spans of any instrumented agent become agentmeter runs, steps and calls.

Add the processor to your ``TracerProvider`` (``pip install agentmeter[otel]``)::

    from agentmeter.integrations.opentelemetry import AgentmeterSpanProcessor

    provider.add_span_processor(AgentmeterSpanProcessor())

Spans are mapped by the `GenAI semantic conventions`_ (``gen_ai.operation.name``), the older names
(``gen_ai.system``, ``gen_ai.usage.prompt_tokens``/``completion_tokens``, OpenLLMetry's
``llm.request.type`` and ``traceloop.span.kind``) and OpenInference's (``openinference.span.kind``,
``llm.token_count.*``):

* ``invoke_agent`` / ``invoke_workflow`` (OpenInference ``AGENT``), or else the outermost GenAI span of a
  trace -> a **run** (nested agent spans -> steps of kind ``agent``);
* ``execute_tool``, ``retrieval``, ``plan`` and any other non-inference GenAI span -> **steps**, nested by
  parent (spans that are not GenAI, such as HTTP spans, are skipped over);
* ``chat``, ``text_completion``, ``generate_content``, ``embeddings`` -> **calls** with ``gen_ai.usage.*``,
  ``gen_ai.response.model``, the provider (normalised to the pricing library's names, e.g. ``gcp.vertex_ai``
  -> ``google``), time to first chunk and error status. Only leaf inference spans are calls: usage totals
  that agent or wrapper spans carry are never added again.

``gen_ai.conversation.id`` (OpenInference ``session.id``) is the run's ``session_id`` (``user.id`` its ``user_id``).
Spans of different traces never mix; a trace's runs are exported when every span of it that started has
ended, or, for a trace whose spans stop arriving (a root that never ends), ``trace_timeout`` seconds after
the last one, unfinished spans recorded as unfinished. Nothing here runs I/O on your thread: building the
run is a few microseconds per span, and the processor hands it over without blocking.

A ``@track_step`` or ``track_call`` inside an instrumented agent (in a tool, say) joins the run of the
OpenTelemetry span current at that moment, nested under its nearest GenAI span.

.. _GenAI semantic conventions: https://opentelemetry.io/docs/specs/semconv/gen-ai/
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from .. import _guard, _spans, _state
from .._model import Run, Step
from ._trees import CALL, OTHER, RUN, STEP, Forest, Node, status_of_error

__all__ = ["AgentmeterSpanProcessor", "normalize_provider"]

_SOURCE = "opentelemetry"
_INFERENCE = {"chat": "chat", "text_completion": "text_completion", "generate_content": "generate_content",
              "embeddings": "embeddings", "completion": "text_completion", "embedding": "embeddings"}
_RUN_OPS = ("invoke_agent", "invoke_workflow")
_STEP_KINDS = {"execute_tool": "tool", "retrieval": "retrieval", "plan": "plan"}
# OpenInference span kinds -> (role, step kind or operation)
_OPENINFERENCE = {"LLM": (CALL, "chat"), "EMBEDDING": (CALL, "embeddings"), "AGENT": (RUN, "agent"),
                  "TOOL": (STEP, "tool"), "RETRIEVER": (STEP, "retrieval"), "RERANKER": (STEP, "retrieval"),
                  "CHAIN": (STEP, "other"), "GUARDRAIL": (STEP, "other"), "EVALUATOR": (STEP, "other")}
_TRACELOOP = {"workflow": (RUN, "agent"), "agent": (RUN, "agent"), "tool": (STEP, "tool"), "task": (STEP, "other")}
#: provider names of the conventions (and of OpenInference) -> the pricing library's provider ids
_PROVIDERS = {
    "gcp.gen_ai": "google", "gcp.vertex_ai": "google", "gcp.gemini": "google", "vertex_ai": "google",
    "vertexai": "google", "gemini": "google", "google_genai": "google", "google-gla": "google",
    "google-vertex": "google", "azure.ai.openai": "azure", "az.ai.openai": "azure", "azure.ai.inference": "azure",
    "az.ai.inference": "azure", "azure_openai": "azure", "aws.bedrock": "aws", "bedrock": "aws",
    "x_ai": "x-ai", "xai": "x-ai", "mistral_ai": "mistral", "mistralai": "mistral", "cohere_ai": "cohere",
    "anthropic": "anthropic", "openai": "openai", "deepseek": "deepseek", "groq": "groq",
    "perplexity": "perplexity",
}


def normalize_provider(name: object) -> str:
    """The pricing library's id for a provider name as instrumentations write it; ``unknown`` if none."""
    if not isinstance(name, str) or not name.strip():
        return "unknown"
    key = name.strip().lower()
    return _PROVIDERS.get(key, key)


def _first(attrs: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def _int(attrs: Mapping[str, Any], *names: str) -> int | None:
    value = _first(attrs, *names)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return int(value)


def _text(attrs: Mapping[str, Any], *names: str) -> str | None:
    value = _first(attrs, *names)
    return str(value) if value is not None else None


def classify(name: str, attrs: Mapping[str, Any]) -> tuple[str, str]:
    """(role, step kind or inference operation) of a span from its name and attributes."""
    op = attrs.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        if op in _INFERENCE:
            return CALL, _INFERENCE[op]
        if op in _RUN_OPS:
            return RUN, "agent"
        return STEP, _STEP_KINDS.get(op, "other")
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str) and kind.upper() in _OPENINFERENCE:
        return _OPENINFERENCE[kind.upper()]
    kind = attrs.get("traceloop.span.kind")
    if isinstance(kind, str) and kind in _TRACELOOP:
        return _TRACELOOP[kind]
    request_type = attrs.get("llm.request.type")
    if isinstance(request_type, str) and request_type in _INFERENCE:
        return CALL, _INFERENCE[request_type]
    if _first(attrs, "gen_ai.provider.name", "gen_ai.system") is not None:
        return CALL, "chat"
    return OTHER, "other"


def _node(span: ReadableSpan, final: bool) -> Node:
    attrs: Mapping[str, Any] = span.attributes or {}
    name = span.name
    role, kind = classify(name, attrs)
    ctx = span.get_span_context()
    parent = span.parent.span_id if span.parent is not None else None
    node = Node(ctx.span_id if ctx is not None else id(span), parent, role, name, span.start_time or 0,
                span.end_time if final else None)
    if role == OTHER:
        return node
    meta = node.metadata
    if role == RUN:
        agent = _text(attrs, "gen_ai.agent.name", "agent.name")
        node.agent = agent
        node.name = _text(attrs, "gen_ai.workflow.name", "traceloop.entity.name") or agent or name
        for key, names in (("session_id", ("gen_ai.conversation.id", "session.id")),
                           ("agent_id", ("gen_ai.agent.id",)), ("user_id", ("user.id",))):
            value = _text(attrs, *names)
            if value is not None:
                meta[key] = value
    elif role == STEP:
        node.kind = kind
        node.name = _text(attrs, "gen_ai.tool.name", "tool.name", "traceloop.entity.name") or name
        for key, attr in (("tool_call_id", "gen_ai.tool.call.id"), ("tool_type", "gen_ai.tool.type"),
                          ("data_source_id", "gen_ai.data_source.id")):
            value = _text(attrs, attr)
            if value is not None:
                meta[key] = value
    else:
        _usage(node, attrs, kind)
    if ctx is not None and role == RUN:
        meta["otel_trace_id"] = f"{ctx.trace_id:032x}"
    if final:
        _status(node, span)
    return node


def _usage(node: Node, attrs: Mapping[str, Any], operation: str) -> None:
    raw = _text(attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
    node.kind = "llm"
    node.operation = operation
    node.provider = normalize_provider(raw)
    if raw is not None and raw != node.provider:
        node.metadata["provider_name"] = raw
    node.model = _text(attrs, "gen_ai.response.model", "gen_ai.request.model", "llm.model_name",
                       "llm.response.model", "llm.request.model")
    requested = _text(attrs, "gen_ai.request.model")
    if requested is not None and requested != node.model:
        node.metadata["request_model"] = requested
    node.input_tokens = _int(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                             "llm.token_count.prompt", "llm.usage.prompt_tokens")
    node.output_tokens = _int(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                              "llm.token_count.completion", "llm.usage.completion_tokens")
    node.cached_input_tokens = _int(attrs, "gen_ai.usage.cache_read.input_tokens",
                                    "gen_ai.usage.cache_read_input_tokens",
                                    "llm.token_count.prompt_details.cache_read")
    node.reasoning_tokens = _int(attrs, "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.details.reasoning_tokens",
                                 "llm.token_count.completion_details.reasoning")
    cache_write = _int(attrs, "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens",
                       "llm.token_count.prompt_details.cache_write")
    if cache_write is not None:
        node.metadata["cache_write_tokens"] = cache_write
    ttfc = _first(attrs, "gen_ai.response.time_to_first_chunk", "gen_ai.client.operation.time_to_first_chunk")
    if isinstance(ttfc, (int, float)) and not isinstance(ttfc, bool) and ttfc >= 0:
        node.first_token_ns = node.start_ns + int(ttfc * 1e9)
    status = _int(attrs, "http.response.status_code", "http.status_code")
    node.http_status = status
    for key, attr in (("response_id", "gen_ai.response.id"), ("finish_reasons", "gen_ai.response.finish_reasons")):
        value = attrs.get(attr)
        if value is not None:
            node.metadata[key] = list(value) if isinstance(value, tuple) else value


def _status(node: Node, span: ReadableSpan) -> None:
    status = span.status
    if status is None or status.status_code is not StatusCode.ERROR:
        return
    attrs: Mapping[str, Any] = span.attributes or {}
    error_type = _text(attrs, "error.type")
    message = None
    for event in span.events or ():
        if event.name == "exception":  # the exception's own message, not the status's "Type: message"
            event_attrs: Mapping[str, Any] = event.attributes or {}
            error_type = error_type or _text(event_attrs, "exception.type")
            message = message or _text(event_attrs, "exception.message")
    message = message or status.description
    if error_type is not None:
        error_type = error_type.rsplit(".", 1)[-1]
    node.status = status_of_error(error_type)
    node.error_type = error_type or "Error"
    node.error_message = (message or "")[:2000] or None


class AgentmeterSpanProcessor(SpanProcessor):
    """A span processor that records GenAI spans as agentmeter runs. Never raises into the instrumented
    code; never blocks it on I/O.

    ``trace_timeout``: seconds without a span of a trace starting or ending after which the trace is
    exported as it is (default 300). ``max_traces``/``max_spans``: bounds on what is kept in memory
    (open traces; spans per trace); beyond them spans are dropped and counted
    (``agentmeter.stats()`` warnings ``opentelemetry.dropped_spans``).
    """

    def __init__(self, *, trace_timeout: float = 300.0, max_traces: int = 10_000, max_spans: int = 10_000) -> None:
        self._forest = Forest(_SOURCE, trace_timeout=trace_timeout, max_traces=max_traces, max_spans=max_spans)
        _spans.add_outer_context(self._outer)

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        try:
            ctx = span.get_span_context()
            if ctx is not None:
                self._forest.start(ctx.trace_id, _node(span, final=False))
        except Exception as exc:
            _guard.internal_error("opentelemetry.on_start", exc)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            ctx = span.get_span_context()
            if ctx is not None:
                self._forest.end(ctx.trace_id, _node(span, final=True))
        except Exception as exc:
            _guard.internal_error("opentelemetry.on_end", exc)

    def shutdown(self) -> None:
        """Export traces still open (as unfinished) and stop; the agentmeter exporter keeps running."""
        _spans.remove_outer_context(self._outer)
        self._forest.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export traces idle past their deadline, then flush agentmeter's exporter. Completed traces are
        exported as they complete already."""
        try:
            self._forest.sweep()
            return _state.processor().flush(timeout=timeout_millis / 1000).ok
        except Exception as exc:
            _guard.internal_error("opentelemetry.force_flush", exc)
            return False

    @property
    def open_traces(self) -> int:
        """Traces with spans still open (kept until complete or past ``trace_timeout``)."""
        return self._forest.open_traces()

    def _outer(self) -> tuple[Run, Step | None] | None:
        if self._forest.idle():
            return None
        ctx = otel_trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return self._forest.outer(ctx.trace_id, ctx.span_id)
