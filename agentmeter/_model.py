"""The run model: a run, its steps and the API calls inside them.

These objects are the handles user code receives (``with track_run(...) as run``). They are mutated only
by the code that owns them while they are open. A step or call is appended to its run when it finishes and
is never touched again; when the run finishes it is sealed (``steps``/``calls`` become tuples) and only
then handed to the exporter, so nothing crosses threads while it can still change. Times are kept raw
(epoch microseconds and monotonic nanoseconds); conversion, pricing and rollups happen in the exporter
(:mod:`agentmeter.contract`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from . import _clock, _guard

__all__ = ["CALL_STATUSES", "STATUSES", "STEP_KINDS", "Call", "Run", "Step"]

RUNNING: Final = "running"
SUCCESS: Final = "success"
ERROR: Final = "error"
CANCELLED: Final = "cancelled"
STATUSES: Final = (SUCCESS, ERROR, CANCELLED)
CALL_STATUSES: Final = STATUSES
STEP_KINDS: Final = ("tool", "llm", "retrieval", "plan", "agent", "other")

_MAX_ERROR_MESSAGE = 2000
#: default of the list and dict fields: a new empty one per object (``attrs.Factory`` semantics)
_NOTHING: Any = object()


def error_fields(exc: BaseException) -> tuple[str, str, str]:
    """(status, error_type, error_message) for an exception leaving user code."""
    from ._tracking import is_cancellation  # local: avoids an import cycle at module load

    status = CANCELLED if is_cancellation(exc) else ERROR
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {type(exc).__name__}>"
    return status, type(exc).__qualname__, message[:_MAX_ERROR_MESSAGE]


def _merge_metadata(target: dict[str, Any], data: Mapping[Any, Any] | None, kwargs: Mapping[str, Any]) -> None:
    if data is not None:
        if not isinstance(data, Mapping):
            _guard.warn("metadata.type", "metadata must be a mapping; ignored", got=type(data).__name__)
        else:
            for key, value in data.items():
                if not isinstance(key, str):
                    _guard.warn("metadata.key", "metadata key is not a string; stored as str()")
                    key = str(key)
                target[key] = value
    target.update(kwargs)


class Step:
    """One step of a run (a tool call, an LLM turn, a retrieval, a plan...)."""

    __slots__ = (
        "__weakref__",
        "captured",
        "end_ns",
        "end_us",
        "error_message",
        "error_type",
        "inputs",
        "kind",
        "metadata",
        "name",
        "output",
        "parent_step_id",
        "run_id",
        "start_ns",
        "start_us",
        "status",
        "step_id",
    )
    __match_args__ = (
        "step_id", "run_id", "parent_step_id", "name", "kind", "start_us",
        "start_ns", "end_us", "end_ns", "status", "error_type", "error_message",
        "metadata", "inputs", "output", "captured",
    )

    step_id: str
    run_id: str
    parent_step_id: str | None
    name: str
    kind: str
    start_us: int
    start_ns: int
    end_us: int | None
    end_ns: int | None
    status: str
    error_type: str | None
    error_message: str | None
    metadata: dict[str, Any]
    inputs: Any
    output: Any
    captured: bool

    def __init__(
        self,
        step_id: str,
        run_id: str,
        parent_step_id: str | None,
        name: str,
        kind: str,
        start_us: int,
        start_ns: int,
        end_us: int | None = None,
        end_ns: int | None = None,
        status: str = RUNNING,
        error_type: str | None = None,
        error_message: str | None = None,
        metadata: dict[str, Any] = _NOTHING,
        inputs: Any = None,
        output: Any = None,
        captured: bool = False,
    ) -> None:
        self.step_id = step_id
        self.run_id = run_id
        self.parent_step_id = parent_step_id
        self.name = name
        self.kind = kind
        self.start_us = start_us
        self.start_ns = start_ns
        self.end_us = end_us
        self.end_ns = end_ns
        self.status = status
        self.error_type = error_type
        self.error_message = error_message
        self.metadata = {} if metadata is _NOTHING else metadata
        self.inputs = inputs
        self.output = output
        self.captured = captured

    def set_metadata(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Merge key/values into the step's metadata. Never raises."""
        _merge_metadata(self.metadata, data, kwargs)

    def set_output(self, value: Any) -> None:
        """Record the step's output explicitly (captured only when capture is on). Never raises."""
        from ._capture import snapshot

        self.output = snapshot(value)
        self.captured = True

    def __repr__(self) -> str:
        return f"<Step {self.name!r} {self.status} id={self.step_id}>"


class Call:
    """One API call (an LLM request, a search, any HTTP API) inside a step or run."""

    __slots__ = (
        "__weakref__",
        "cached_input_tokens",
        "call_id",
        "end_ns",
        "end_us",
        "error_message",
        "error_type",
        "first_token_ns",
        "http_status",
        "input_tokens",
        "metadata",
        "model",
        "operation",
        "output_tokens",
        "provider",
        "reasoning_tokens",
        "request_bytes",
        "response_bytes",
        "retries",
        "run_id",
        "start_ns",
        "start_us",
        "status",
        "step_id",
        "units",
    )
    __match_args__ = (
        "call_id", "run_id", "step_id", "provider", "operation", "model",
        "start_us", "start_ns", "end_us", "end_ns", "status", "error_type",
        "error_message", "http_status", "retries", "first_token_ns", "request_bytes", "response_bytes",
        "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "units", "metadata",
    )

    call_id: str
    run_id: str
    step_id: str | None
    provider: str
    operation: str
    model: str | None
    start_us: int
    start_ns: int
    end_us: int | None
    end_ns: int | None
    status: str
    error_type: str | None
    error_message: str | None
    http_status: int | None
    retries: int
    first_token_ns: int | None
    request_bytes: int | None
    response_bytes: int | None
    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    reasoning_tokens: int | None
    units: float | None
    metadata: dict[str, Any]

    def __init__(
        self,
        call_id: str,
        run_id: str,
        step_id: str | None,
        provider: str,
        operation: str,
        model: str | None,
        start_us: int,
        start_ns: int,
        end_us: int | None = None,
        end_ns: int | None = None,
        status: str = RUNNING,
        error_type: str | None = None,
        error_message: str | None = None,
        http_status: int | None = None,
        retries: int = 0,
        first_token_ns: int | None = None,
        request_bytes: int | None = None,
        response_bytes: int | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_input_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        units: float | None = None,
        metadata: dict[str, Any] = _NOTHING,
    ) -> None:
        self.call_id = call_id
        self.run_id = run_id
        self.step_id = step_id
        self.provider = provider
        self.operation = operation
        self.model = model
        self.start_us = start_us
        self.start_ns = start_ns
        self.end_us = end_us
        self.end_ns = end_ns
        self.status = status
        self.error_type = error_type
        self.error_message = error_message
        self.http_status = http_status
        self.retries = retries
        self.first_token_ns = first_token_ns
        self.request_bytes = request_bytes
        self.response_bytes = response_bytes
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cached_input_tokens = cached_input_tokens
        self.reasoning_tokens = reasoning_tokens
        self.units = units
        self.metadata = {} if metadata is _NOTHING else metadata

    def record_usage(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_input_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        model: str | None = None,
        units: float | None = None,
    ) -> None:
        """Record token usage (and optionally the model that answered, or billable ``units`` such as search
        credits). Values not given stay unknown (``None``), never zero. Invalid values are warned about
        and recorded as unknown. Never raises."""
        for field, value in (
            ("input_tokens", input_tokens),
            ("output_tokens", output_tokens),
            ("cached_input_tokens", cached_input_tokens),
            ("reasoning_tokens", reasoning_tokens),
        ):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                _guard.warn(
                    f"usage.{field}",
                    "token count must be a non-negative int; recorded as unknown",
                    value=repr(value)[:100],
                )
                continue
            setattr(self, field, value)
        if units is not None:
            if isinstance(units, bool) or not isinstance(units, (int, float)) or not 0 <= units < float("inf"):
                _guard.warn("usage.units", "units must be a non-negative number; recorded as unknown")
            else:
                self.units = float(units)
        if model is not None:
            self.model = str(model)

    def set_http_status(self, status_code: int) -> None:
        """Record the HTTP status of the response. Never raises."""
        try:
            self.http_status = int(status_code)
        except (TypeError, ValueError):
            _guard.warn("call.http_status", "http status must be an int; ignored")

    def record_retry(self, count: int = 1) -> None:
        """Count a retry of this call (the client re-sent the request). Never raises."""
        if isinstance(count, int) and count > 0:
            self.retries += count

    def record_sizes(self, request_bytes: int | None = None, response_bytes: int | None = None) -> None:
        """Record request and response body sizes in bytes. Never raises."""
        if request_bytes is not None:
            self.request_bytes = int(request_bytes)
        if response_bytes is not None:
            self.response_bytes = int(response_bytes)

    def mark_first_token(self) -> None:
        """Record now as the time the first token (or byte) of a streamed response arrived."""
        if self.first_token_ns is None:
            self.first_token_ns = _clock.monotonic_ns()

    def set_metadata(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Merge key/values into the call's metadata (for example ``result_count``). Never raises."""
        _merge_metadata(self.metadata, data, kwargs)

    def __repr__(self) -> str:
        return f"<Call {self.provider}.{self.operation} {self.status} id={self.call_id}>"


class Run:
    """One agent run: the unit exported as one document."""

    __slots__ = (
        "__weakref__",
        "agent",
        "calls",
        "captured",
        "document",
        "end_ns",
        "end_us",
        "error_message",
        "error_type",
        "implicit",
        "inputs",
        "metadata",
        "name",
        "open_calls",
        "open_steps",
        "output",
        "parent_run_id",
        "run_id",
        "sealed",
        "start_ns",
        "start_us",
        "status",
        "steps",
        "tags",
    )
    __match_args__ = (
        "run_id", "name", "agent", "start_us", "start_ns", "parent_run_id",
        "implicit", "end_us", "end_ns", "status", "error_type", "error_message",
        "tags", "metadata", "inputs", "output", "captured", "steps",
        "calls", "open_steps", "open_calls", "sealed", "document",
    )

    run_id: str
    name: str
    agent: str | None
    start_us: int
    start_ns: int
    parent_run_id: str | None
    implicit: bool
    end_us: int | None
    end_ns: int | None
    status: str
    error_type: str | None
    error_message: str | None
    tags: list[str]
    metadata: dict[str, Any]
    inputs: Any
    output: Any
    captured: bool
    #: finished steps and calls, in finishing order; tuples once the run is sealed
    steps: list[Step] | tuple[Step, ...]
    calls: list[Call] | tuple[Call, ...]
    #: steps and calls started but not finished (recorded as cancelled if the run ends first)
    open_steps: dict[str, Step]
    open_calls: dict[str, Call]
    sealed: bool
    #: the exported document, built once by the exporter and shared by every sink lane
    document: dict[str, Any] | None

    def __init__(
        self,
        run_id: str,
        name: str,
        agent: str | None,
        start_us: int,
        start_ns: int,
        parent_run_id: str | None = None,
        implicit: bool = False,
        end_us: int | None = None,
        end_ns: int | None = None,
        status: str = RUNNING,
        error_type: str | None = None,
        error_message: str | None = None,
        tags: list[str] = _NOTHING,
        metadata: dict[str, Any] = _NOTHING,
        inputs: Any = None,
        output: Any = None,
        captured: bool = False,
        steps: list[Step] | tuple[Step, ...] = _NOTHING,
        calls: list[Call] | tuple[Call, ...] = _NOTHING,
        open_steps: dict[str, Step] = _NOTHING,
        open_calls: dict[str, Call] = _NOTHING,
        sealed: bool = False,
        document: dict[str, Any] | None = None,
    ) -> None:
        self.run_id = run_id
        self.name = name
        self.agent = agent
        self.start_us = start_us
        self.start_ns = start_ns
        self.parent_run_id = parent_run_id
        self.implicit = implicit
        self.end_us = end_us
        self.end_ns = end_ns
        self.status = status
        self.error_type = error_type
        self.error_message = error_message
        self.tags = [] if tags is _NOTHING else tags
        self.metadata = {} if metadata is _NOTHING else metadata
        self.inputs = inputs
        self.output = output
        self.captured = captured
        self.steps = [] if steps is _NOTHING else steps
        self.calls = [] if calls is _NOTHING else calls
        self.open_steps = {} if open_steps is _NOTHING else open_steps
        self.open_calls = {} if open_calls is _NOTHING else open_calls
        self.sealed = sealed
        self.document = document

    def set_metadata(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Merge key/values into the run's metadata. Never raises."""
        _merge_metadata(self.metadata, data, kwargs)

    def add_tags(self, *tags: str | Iterable[str]) -> None:
        """Add tags to the run (duplicates ignored, order kept). Never raises."""
        for tag in tags:
            items = [tag] if isinstance(tag, str) else list(tag)
            for item in items:
                item = str(item)
                if item not in self.tags:
                    self.tags.append(item)

    def set_output(self, value: Any) -> None:
        """Record the run's output explicitly (for example a final report). Never raises."""
        from ._capture import snapshot

        self.output = snapshot(value)
        self.captured = True

    @property
    def duration_ms(self) -> float | None:
        if self.end_ns is None:
            return None
        return (self.end_ns - self.start_ns) / 1e6

    def __repr__(self) -> str:
        return f"<Run {self.name!r} {self.status} id={self.run_id} steps={len(self.steps)}>"
