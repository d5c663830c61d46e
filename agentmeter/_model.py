"""The run model: a run, its steps and the API calls inside them.

These objects are the handles user code receives (``with track_run(...) as run``). They are mutated only
by the code that owns them while they are open. When a step or call ends it is frozen into an immutable
record (:mod:`agentmeter._record`) appended to its run; when the run ends, the run is frozen too and only
that record crosses to the exporter. A handle used after it ended changes nothing: the call is ignored,
counted and logged (rate-limited) as ``handle.after_end``. Times are kept raw (epoch microseconds and
monotonic nanoseconds); conversion, pricing and rollups happen in the exporter (:mod:`agentmeter.contract`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from . import _clock, _guard
from ._status import CANCELLED, ERROR, RUNNING, STATUSES, STEP_KINDS, SUCCESS, error_fields

__all__ = ["CANCELLED", "ERROR", "RUNNING", "STATUSES", "STEP_KINDS", "SUCCESS", "Call", "Run", "Step",
           "error_fields"]


def _ended(handle: Any, method: str) -> bool:
    """True (after a counted, rate-limited warning) when ``handle`` already ended: the call is ignored."""
    if not handle.ended:
        return False
    _guard.warn("handle.after_end", "a run, step or call handle was used after it ended; ignored",
                handle=type(handle).__name__, method=method)
    return True


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


@attrs.define(slots=True, eq=False, repr=False)
class Step:
    """One step of a run (a tool call, an LLM turn, a retrieval, a plan...)."""

    step_id: str
    run_id: str
    parent_step_id: str | None
    name: str
    kind: str
    start_us: int
    start_ns: int
    end_us: int | None = None
    end_ns: int | None = None
    status: str = RUNNING
    error_type: str | None = None
    error_message: str | None = None
    metadata: dict[str, Any] = attrs.Factory(dict)
    inputs: Any = None
    output: Any = None
    captured: bool = False
    #: set when the step ended (frozen into its run); the handle then changes nothing
    ended: bool = False

    def set_metadata(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Merge key/values into the step's metadata. Never raises."""
        if not _ended(self, "set_metadata"):
            _merge_metadata(self.metadata, data, kwargs)

    def set_output(self, value: Any) -> None:
        """Record the step's output explicitly (captured only when capture is on). Never raises."""
        if _ended(self, "set_output"):
            return
        from ._capture import snapshot

        self.output = snapshot(value)
        self.captured = True

    def __repr__(self) -> str:
        return f"<Step {self.name!r} {self.status} id={self.step_id}>"


@attrs.define(slots=True, eq=False, repr=False)
class Call:
    """One API call (an LLM request, a search, any HTTP API) inside a step or run."""

    call_id: str
    run_id: str
    step_id: str | None
    provider: str
    operation: str
    model: str | None
    start_us: int
    start_ns: int
    end_us: int | None = None
    end_ns: int | None = None
    status: str = RUNNING
    error_type: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    retries: int = 0
    first_token_ns: int | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    units: float | None = None
    metadata: dict[str, Any] = attrs.Factory(dict)
    #: set when the call ended (frozen into its run); the handle then changes nothing
    ended: bool = False

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
        if _ended(self, "record_usage"):
            return
        for field, value in (
            ("input_tokens", input_tokens),
            ("output_tokens", output_tokens),
            ("cached_input_tokens", cached_input_tokens),
            ("reasoning_tokens", reasoning_tokens),
        ):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                _guard.warn(
                    f"usage.{field}",
                    "token count must be an int from 0 to 2**63-1; recorded as unknown",
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
        if _ended(self, "set_http_status"):
            return
        try:
            self.http_status = int(status_code)
        except (TypeError, ValueError, OverflowError):
            _guard.warn("call.http_status", "http status must be an int; ignored")

    def record_retry(self, count: int = 1) -> None:
        """Count a retry of this call (the client re-sent the request). Never raises."""
        if _ended(self, "record_retry"):
            return
        if isinstance(count, int) and count > 0:
            self.retries += count

    def record_sizes(self, request_bytes: int | None = None, response_bytes: int | None = None) -> None:
        """Record request and response body sizes in bytes. Never raises."""
        if _ended(self, "record_sizes"):
            return
        for field, value in (("request_bytes", request_bytes), ("response_bytes", response_bytes)):
            if value is None:
                continue
            try:
                setattr(self, field, int(value))
            except (TypeError, ValueError, OverflowError):  # NaN, infinity, text: unknown, never raised
                _guard.warn("call.sizes", "sizes must be integers; recorded as unknown", field=field,
                            value=repr(value)[:60])

    def mark_first_token(self) -> None:
        """Record now as the time the first token (or byte) of a streamed response arrived."""
        if self.first_token_ns is None and not _ended(self, "mark_first_token"):
            self.first_token_ns = _clock.monotonic_ns()

    def set_metadata(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Merge key/values into the call's metadata (for example ``result_count``). Never raises."""
        if not _ended(self, "set_metadata"):
            _merge_metadata(self.metadata, data, kwargs)

    def __repr__(self) -> str:
        return f"<Call {self.provider}.{self.operation} {self.status} id={self.call_id}>"


@attrs.define(slots=True, eq=False, repr=False)
class Run:
    """One agent run: the unit exported as one document."""

    run_id: str
    name: str
    agent: str | None
    start_us: int
    start_ns: int
    parent_run_id: str | None = None
    implicit: bool = False
    end_us: int | None = None
    end_ns: int | None = None
    status: str = RUNNING
    error_type: str | None = None
    error_message: str | None = None
    tags: list[str] = attrs.Factory(list)
    metadata: dict[str, Any] = attrs.Factory(dict)
    inputs: Any = None
    output: Any = None
    captured: bool = False
    #: finished steps and calls (frozen records, see :mod:`agentmeter._record`), in finishing order
    steps: list[Any] = attrs.Factory(list)
    calls: list[Any] = attrs.Factory(list)
    #: steps and calls started but not finished (recorded as cancelled if the run ends first)
    open_steps: dict[str, Step] = attrs.Factory(dict)
    open_calls: dict[str, Call] = attrs.Factory(dict)
    #: set when the run ended and was frozen; the handle then changes nothing
    ended: bool = False

    def set_metadata(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Merge key/values into the run's metadata. Never raises."""
        if not _ended(self, "set_metadata"):
            _merge_metadata(self.metadata, data, kwargs)

    def add_tags(self, *tags: str | Iterable[str]) -> None:
        """Add tags to the run (duplicates ignored, order kept). Never raises."""
        if _ended(self, "add_tags"):
            return
        for tag in tags:
            items = [tag] if isinstance(tag, str) else list(tag)
            for item in items:
                item = str(item)
                if item not in self.tags:
                    self.tags.append(item)

    def set_output(self, value: Any) -> None:
        """Record the run's output explicitly (for example a final report). Never raises."""
        if _ended(self, "set_output"):
            return
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
