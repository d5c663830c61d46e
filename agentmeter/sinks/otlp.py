"""OpenTelemetry out: every run document exported as OTLP spans following the GenAI conventions.

``OTLPSink(endpoint="http://collector:4318/v1/traces")`` (``pip install agentmeter[otel]``) sends each run
through the official OTLP/HTTP exporter (``opentelemetry-exporter-otlp-proto-http``) to any OpenTelemetry
back end (a collector, Datadog, Langfuse, Phoenix...):

* the run -> an ``invoke_agent`` span (``gen_ai.agent.name``; ``gen_ai.conversation.id`` and
  ``session.id`` from ``session_id``; ``user.id``; ``agentmeter.version``), its rollups under
  ``agentmeter.usage.*`` and ``agentmeter.cost_usd`` (never as ``gen_ai.usage.*``, so a back end that
  sums usage over spans counts every token once);
* steps -> ``execute_tool`` spans (kind ``tool``), ``retrieval`` spans, ``invoke_agent`` spans (kind
  ``agent``), and internal spans for the other kinds, nested as the steps are;
* calls -> client spans: LLM calls as inference spans (``gen_ai.operation.name`` ``chat``/``embeddings``/...,
  ``gen_ai.provider.name``, ``gen_ai.response.model``, ``gen_ai.usage.*``, time to first chunk), other APIs
  (a search) as plain client spans; each with ``agentmeter.cost_usd``, ``agentmeter.priced`` and
  ``agentmeter.price_source``.

Trace and span ids are derived from the run, step and call ids (a UUIDv7 run id *is* the 128-bit trace id),
so a document sent twice (a retry, a replay from the spool) carries the same ids. The sink is an ordinary
:class:`~agentmeter.sinks.Sink`: one export per ``write`` (the OTLP exporter retries within its
``timeout``), and what still fails is retried, spooled and replayed by agentmeter's exporter like for any
sink. The exporter package is imported on the first write, never by ``import agentmeter``.
"""

from __future__ import annotations

import calendar
import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .._version import __version__
from ._base import Document, Sink, WriteResult

__all__ = ["OTLPSink", "document_spans"]

_INFERENCE = {"chat": "chat", "chat.completions": "chat", "responses": "chat", "completions": "text_completion",
              "text_completion": "text_completion", "generate_content": "generate_content",
              "embeddings": "embeddings", "messages": "chat"}


def _ns(iso: str | None) -> int | None:
    """``2026-11-26T08:26:02.123456Z`` -> epoch nanoseconds."""
    if not iso:
        return None
    seconds = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
    micros = int(iso[20:26]) if len(iso) >= 26 and iso[19] == "." else 0
    return (seconds * 1_000_000 + micros) * 1000


def trace_id_of(run_id: str) -> int:
    """The trace id of a run: its UUID's 128 bits, else a hash of the id (never 0)."""
    text = run_id.replace("-", "")
    if len(text) == 32:
        try:
            value = int(text, 16)
            if value:
                return value
        except ValueError:
            pass
    return int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=16).digest(), "big") or 1


def span_id_of(record_id: str) -> int:
    """A 64-bit span id derived from a run, step or call id (never 0)."""
    return int.from_bytes(hashlib.blake2b(record_id.encode(), digest_size=8).digest(), "big") or 1


def _put(attrs: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and value != "":
        attrs[key] = value if isinstance(value, (str, bool, int, float)) else str(value)


def _times(row: Mapping[str, Any], run: Mapping[str, Any]) -> tuple[int, int]:
    start = _ns(row.get("started_at")) or _ns(run.get("started_at")) or 0
    duration = row.get("duration_ms")
    if isinstance(duration, (int, float)) and duration >= 0:  # from the monotonic clock: the exact duration
        return start, start + round(duration * 1e6)
    end = _ns(row.get("ended_at")) or _ns(run.get("ended_at")) or start
    return start, max(end, start)


def _usage(attrs: dict[str, Any], row: Mapping[str, Any], prefix: str) -> None:
    for key, field in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                       ("cache_read.input_tokens", "cached_input_tokens"),
                       ("reasoning.output_tokens", "reasoning_tokens")):
        _put(attrs, f"{prefix}.{key}", row.get(field))


def _error(attrs: dict[str, Any], row: Mapping[str, Any]) -> tuple[bool, str | None]:
    status = row.get("status")
    _put(attrs, "agentmeter.status", status)
    if status in ("error", "cancelled"):
        _put(attrs, "error.type", row.get("error_type") or status)
        return True, row.get("error_message")
    return False, None


def _span_parts(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each span of a run document as plain parts: name, ids, kind ("internal"/"client"), times, attributes,
    error. Pure; :func:`document_spans` turns them into SDK spans."""
    run_id = str(doc["run_id"])
    trace_id, run_span = trace_id_of(run_id), span_id_of(run_id)
    agent = doc.get("agent") or doc.get("name")
    metadata = doc.get("metadata") or {}
    attrs: dict[str, Any] = {"gen_ai.operation.name": "invoke_agent"}
    _put(attrs, "gen_ai.agent.name", agent)
    _put(attrs, "gen_ai.conversation.id", doc.get("session_id") or metadata.get("session_id"))
    _put(attrs, "session.id", doc.get("session_id"))
    _put(attrs, "user.id", doc.get("user_id"))
    _put(attrs, "agentmeter.version", doc.get("version"))
    _put(attrs, "agentmeter.run_id", run_id)
    _put(attrs, "agentmeter.run.name", doc.get("name"))
    _put(attrs, "agentmeter.parent_run_id", doc.get("parent_run_id"))
    _usage(attrs, doc, "agentmeter.usage")
    _put(attrs, "agentmeter.cost_usd", doc.get("cost_usd"))
    _put(attrs, "agentmeter.unpriced_call_count", doc.get("unpriced_call_count"))
    _put(attrs, "agentmeter.step_count", doc.get("step_count"))
    _put(attrs, "agentmeter.call_count", doc.get("call_count"))
    if doc.get("tags"):
        attrs["agentmeter.tags"] = [str(t) for t in doc["tags"]]
    failed, message = _error(attrs, doc)
    start, end = _times(doc, doc)
    parts = [{"name": f"invoke_agent {agent}", "trace_id": trace_id, "span_id": run_span, "parent": None,
              "kind": "internal", "start": start, "end": end, "attributes": attrs, "error": failed,
              "message": message}]
    steps = {s["step_id"] for s in doc.get("steps", ())}
    for step in doc.get("steps", ()):
        attrs = {}
        kind = step.get("kind")
        if kind == "tool":
            attrs["gen_ai.operation.name"] = "execute_tool"
            name = f"execute_tool {step.get('name')}"
            _put(attrs, "gen_ai.tool.name", step.get("name"))
        elif kind == "retrieval":
            attrs["gen_ai.operation.name"] = "retrieval"
            name = f"retrieval {step.get('name')}"
        elif kind == "agent":
            attrs["gen_ai.operation.name"] = "invoke_agent"
            name = f"invoke_agent {step.get('name')}"
            _put(attrs, "gen_ai.agent.name", step.get("name"))
        else:
            name = str(step.get("name"))
        _put(attrs, "agentmeter.step_id", step.get("step_id"))
        _put(attrs, "agentmeter.step.kind", kind)
        _put(attrs, "agentmeter.cost_usd", step.get("cost_usd"))
        failed, message = _error(attrs, step)
        parent = step.get("parent_step_id")
        start, end = _times(step, doc)
        parts.append({"name": name, "trace_id": trace_id, "span_id": span_id_of(step["step_id"]),
                      "parent": span_id_of(parent) if parent in steps else run_span, "kind": "internal",
                      "start": start, "end": end, "attributes": attrs, "error": failed, "message": message})
    for call in doc.get("calls", ()):
        attrs = {}
        operation = _INFERENCE.get(str(call.get("operation")))
        tokens = call.get("input_tokens") is not None or call.get("output_tokens") is not None
        if operation is not None or tokens:
            op = operation or "chat"
            attrs["gen_ai.operation.name"] = op
            name = f"{op} {call.get('model') or ''}".strip()
            _put(attrs, "gen_ai.provider.name", call.get("provider"))
            _put(attrs, "gen_ai.request.model", (call.get("metadata") or {}).get("request_model") or call.get("model"))
            _put(attrs, "gen_ai.response.model", call.get("model"))
            _usage(attrs, call, "gen_ai.usage")
            ttft = call.get("time_to_first_token_ms")
            if ttft is not None:
                attrs["gen_ai.response.time_to_first_chunk"] = ttft / 1000
        else:
            name = f"{call.get('provider')} {call.get('operation')}"
        _put(attrs, "agentmeter.call_id", call.get("call_id"))
        _put(attrs, "agentmeter.provider", call.get("provider"))
        _put(attrs, "agentmeter.operation", call.get("operation"))
        _put(attrs, "http.response.status_code", call.get("http_status"))
        _put(attrs, "agentmeter.retries", call.get("retries") or None)
        _put(attrs, "agentmeter.units", call.get("units"))
        _put(attrs, "agentmeter.cost_usd", call.get("cost_usd"))
        attrs["agentmeter.priced"] = bool(call.get("priced"))
        _put(attrs, "agentmeter.price_source", call.get("price_source"))
        failed, message = _error(attrs, call)
        parent = call.get("step_id")
        start, end = _times(call, doc)
        parts.append({"name": name, "trace_id": trace_id, "span_id": span_id_of(call["call_id"]),
                      "parent": span_id_of(parent) if parent in steps else run_span, "kind": "client",
                      "start": start, "end": end, "attributes": attrs, "error": failed, "message": message})
    return parts


def document_spans(doc: Mapping[str, Any], resource: Any = None) -> list[Any]:
    """The OpenTelemetry SDK spans (``ReadableSpan``) of one run document."""
    from opentelemetry.sdk.resources import Resource  # optional extra [otlp]
    from opentelemetry.sdk.trace import ReadableSpan  # optional extra [otlp]
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope  # optional extra [otlp]
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags  # optional extra [otlp]

    resource = resource if resource is not None else Resource.create({"service.name": "agentmeter"})
    scope = InstrumentationScope("agentmeter", __version__)
    sampled = TraceFlags(TraceFlags.SAMPLED)
    spans = []
    for part in _span_parts(doc):
        context = SpanContext(part["trace_id"], part["span_id"], is_remote=False, trace_flags=sampled)
        parent = (SpanContext(part["trace_id"], part["parent"], is_remote=False, trace_flags=sampled)
                  if part["parent"] is not None else None)
        status = Status(StatusCode.ERROR, part["message"]) if part["error"] else Status(StatusCode.OK)
        spans.append(ReadableSpan(
            name=part["name"], context=context, parent=parent, resource=resource, attributes=part["attributes"],
            kind=SpanKind.CLIENT if part["kind"] == "client" else SpanKind.INTERNAL, status=status,
            start_time=part["start"], end_time=part["end"], instrumentation_scope=scope))
    return spans


class OTLPSink(Sink):
    """Runs as OTLP/HTTP spans to ``endpoint`` (default: the exporter's own, ``OTEL_EXPORTER_OTLP_*``).

    ``headers`` are sent with every request (an API key for a hosted back end: never logged or stored in a
    run); ``timeout`` bounds one write, the exporter's retries included; ``service_name`` is the
    ``service.name`` resource attribute. Raises ``ValueError`` for a bad setting.
    """

    preferred_batch_size = 100

    def __init__(self, endpoint: str | None = None, *, headers: Mapping[str, str] | None = None,
                 timeout: float = 10.0, service_name: str = "agentmeter", name: str = "otlp") -> None:
        if endpoint is not None and not (isinstance(endpoint, str) and endpoint.startswith(("http://", "https://"))):
            raise ValueError(f"OTLPSink endpoint must be an http(s) URL such as http://localhost:4318/v1/traces, "
                             f"got {endpoint!r}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"OTLPSink timeout must be a positive number of seconds, got {timeout!r}")
        self.name = name
        self.endpoint = endpoint
        self._headers = dict(headers or {})
        self._timeout = float(timeout)
        self._service_name = service_name
        self._exporter: Any = None
        self._resource: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> OTLPSink:
        """``AGENTMETER_SINKS=otlp``: endpoint and headers from the standard ``OTEL_EXPORTER_OTLP_*``."""
        return cls()

    def _client(self) -> Any:
        with self._lock:
            if self._exporter is None:
                # optional extra [otlp]: only when the sink is built
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                from opentelemetry.sdk.resources import Resource  # optional extra [otlp]

                self._resource = Resource.create({"service.name": self._service_name})
                self._exporter = OTLPSpanExporter(endpoint=self.endpoint, headers=self._headers or None,
                                                  timeout=self._timeout)
            return self._exporter

    def write(self, documents: Sequence[Document]) -> WriteResult:
        exporter = self._client()
        spans: list[Any] = []
        rejected: dict[int, str] = {}
        for index, doc in enumerate(documents):
            try:
                spans.extend(document_spans(doc, self._resource))
            except (KeyError, TypeError, ValueError) as exc:  # a document this sink cannot express
                rejected[index] = f"not convertible to OTLP spans: {type(exc).__name__}: {exc}"
        if not spans:
            return WriteResult(rejected=rejected)
        from opentelemetry.sdk.trace.export import SpanExportResult  # optional extra [otlp]

        result = exporter.export(spans)
        if result is SpanExportResult.SUCCESS:
            return WriteResult(rejected=rejected)
        failed = {i: "the OTLP receiver did not accept the spans" for i in range(len(documents)) if i not in rejected}
        return WriteResult(failed=failed, rejected=rejected)

    def close(self, timeout: float | None = None) -> bool:
        with self._lock:
            exporter, self._exporter = self._exporter, None
        if exporter is not None:
            exporter.shutdown()
        return True
