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
            try:
                pairs = list(data.items())
            except Exception as exc:  # a user-defined Mapping whose items() raises
                _guard.warn("metadata.type", "metadata could not be read; ignored", error=type(exc).__name__)
                pairs = []
            for key, value in pairs:
                if not isinstance(key, str):
                    if key is None or isinstance(key, (bool, int, float)):
                        _guard.warn("metadata.key", "metadata key is not a string; stored as str()")
                        key = str(key)
                    else:  # str() would run the key's own __str__, which may raise or block: never called
                        _guard.warn("metadata.key", "metadata key is not a string; dropped",
                                    got=type(key).__name__)
                        continue
                target[key] = value
    target.update(kwargs)


def _count(value: Any, field: str) -> int | None:
    """``value`` when it is a non-negative int below 2**63, else None after a counted warning."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        _guard.warn(f"call.{field}", f"{field} must be an int from 0 to 2**63-1; ignored", got=type(value).__name__)
        return None
    return value


_INT64 = 2**63


def _usage(call: Any, field: str, value: Any) -> None:
    """Set a token count of ``call``, or warn (counted) and leave it unknown when it is not a count."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _INT64:
        _guard.warn(f"usage.{field}", "token count must be an int from 0 to 2**63-1; recorded as unknown",
                    got=type(value).__name__)
        return
    setattr(call, field, value)


def _guarded(method: str, exc: Exception) -> None:
    # a bug of ours on a handle method: counted and logged, never raised into the agent
    _guard.internal_error(f"handle.{method}", exc)


class Step:
    """One step of a run (a tool call, an LLM turn, a retrieval, a plan...)."""

    __slots__ = ("__weakref__", "captured", "end_ns", "end_us", "ended", "error_message", "error_type", "inputs",
                 "kind", "metadata", "name", "output", "output_set", "parent_step_id", "run_id", "start_ns",
                 "start_us", "status", "step_id")

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
    #: set by set_output: the value the user set wins over the return value
    output_set: bool
    #: set when the step ended (frozen into its run); the handle then changes nothing
    ended: bool

    def __init__(self, step_id: str, run_id: str, parent_step_id: str | None, name: str, kind: str, start_us: int,
                 start_ns: int) -> None:
        # a plain class, written out: built for every step on the caller's thread (an attrs class's __init__
        # takes every field as an argument with its default)
        self.step_id = step_id
        self.run_id = run_id
        self.parent_step_id = parent_step_id
        self.name = name
        self.kind = kind
        self.start_us = start_us
        self.start_ns = start_ns
        self.end_us = self.end_ns = self.error_type = self.error_message = self.inputs = self.output = None
        self.status = RUNNING
        self.metadata = {}
        self.captured = self.output_set = self.ended = False

    def set_metadata(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Merge key/values into the step's metadata. Never raises."""
        try:
            if not _ended(self, "set_metadata"):
                _merge_metadata(self.metadata, data, kwargs)
        except Exception as exc:
            _guarded("set_metadata", exc)

    def set_output(self, value: Any) -> None:
        """Record the step's output explicitly. It wins over the return value (or the yielded items), and
        it is stored even with capture off, where it is the only captured value. Never raises."""
        _set_output(self, value)

    def __repr__(self) -> str:
        return f"<Step {self.name!r} {self.status} id={self.step_id}>"


class Call:
    """One API call (an LLM request, a search, any HTTP API) inside a step or run."""

    __slots__ = ("__weakref__", "cache_write_tokens", "cached_input_tokens", "call_id", "end_ns", "end_us", "ended",
                 "error_message", "error_type", "first_token_ns", "http_status", "input_tokens", "metadata", "model",
                 "operation", "output_tokens", "provider", "reasoning_tokens", "request_bytes", "response_bytes",
                 "retries", "run_id", "start_ns", "start_us", "status", "step_id", "units")

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
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    units: float | None
    metadata: dict[str, Any]
    #: set when the call ended (frozen into its run); the handle then changes nothing
    ended: bool

    def __init__(self, call_id: str, run_id: str, step_id: str | None, provider: str, operation: str,
                 model: str | None, start_us: int, start_ns: int) -> None:
        # a plain class, written out: built for every call on the caller's thread
        self.call_id = call_id
        self.run_id = run_id
        self.step_id = step_id
        self.provider = provider
        self.operation = operation
        self.model = model
        self.start_us = start_us
        self.start_ns = start_ns
        self.end_us = self.end_ns = self.error_type = self.error_message = self.http_status = None
        self.first_token_ns = self.request_bytes = self.response_bytes = self.input_tokens = None
        self.output_tokens = self.cached_input_tokens = self.cache_write_tokens = self.reasoning_tokens = None
        self.units = None
        self.status = RUNNING
        self.retries = 0
        self.metadata = {}
        self.ended = False

    def record_usage(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_input_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        model: str | None = None,
        units: float | None = None,
        *,
        cache_write_tokens: int | None = None,
    ) -> None:
        """Record token usage (and optionally the model that answered, or billable ``units`` such as search
        credits). Values not given stay unknown (``None``), never zero. Invalid values are warned about
        and recorded as unknown. Never raises."""
        try:
            if self.ended and _ended(self, "record_usage"):
                return
            # a plain int in range is set at once (most calls); anything else is checked by _usage
            if input_tokens is not None:
                if type(input_tokens) is int and 0 <= input_tokens < _INT64:
                    self.input_tokens = input_tokens
                else:
                    _usage(self, "input_tokens", input_tokens)
            if output_tokens is not None:
                if type(output_tokens) is int and 0 <= output_tokens < _INT64:
                    self.output_tokens = output_tokens
                else:
                    _usage(self, "output_tokens", output_tokens)
            if cached_input_tokens is not None:
                _usage(self, "cached_input_tokens", cached_input_tokens)
            if cache_write_tokens is not None:
                _usage(self, "cache_write_tokens", cache_write_tokens)
            if reasoning_tokens is not None:
                _usage(self, "reasoning_tokens", reasoning_tokens)
            if units is not None:
                if isinstance(units, bool) or not isinstance(units, (int, float)) or not 0 <= units < float("inf"):
                    _guard.warn("usage.units", "units must be a non-negative number; recorded as unknown")
                else:
                    self.units = float(units)
            if model is not None:
                if isinstance(model, str):
                    self.model = model
                else:  # str() would run the object's own __str__: never called
                    _guard.warn("usage.model", "model must be a string; ignored", got=type(model).__name__)
        except Exception as exc:
            _guarded("record_usage", exc)

    def set_http_status(self, status_code: int) -> None:
        """Record the HTTP status of the response (an int, or a string of digits). Never raises."""
        try:
            if _ended(self, "set_http_status"):
                return
            if isinstance(status_code, str) and status_code.strip().isdigit():
                status_code = int(status_code)
            if isinstance(status_code, bool) or not isinstance(status_code, int) or not 0 <= status_code < 1000:
                _guard.warn("call.http_status", "http status must be an int from 0 to 999; ignored",
                            got=type(status_code).__name__)
                return
            self.http_status = status_code
        except Exception as exc:
            _guarded("set_http_status", exc)

    def record_retry(self, count: int = 1) -> None:
        """Count a retry of this call (the client re-sent the request). Never raises."""
        try:
            if _ended(self, "record_retry"):
                return
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                _guard.warn("call.retries", "retry count must be a non-negative int; ignored",
                            got=type(count).__name__)
                return
            self.retries += count
        except Exception as exc:
            _guarded("record_retry", exc)

    def record_sizes(self, request_bytes: int | None = None, response_bytes: int | None = None) -> None:
        """Record request and response body sizes in bytes (non-negative ints; anything else is ignored
        with a counted warning). Never raises."""
        try:
            if _ended(self, "record_sizes"):
                return
            if request_bytes is not None and (n := _count(request_bytes, "request_bytes")) is not None:
                self.request_bytes = n
            if response_bytes is not None and (n := _count(response_bytes, "response_bytes")) is not None:
                self.response_bytes = n
        except Exception as exc:
            _guarded("record_sizes", exc)

    def mark_first_token(self) -> None:
        """Record now as the time the first token (or byte) of a streamed response arrived. Never raises."""
        try:
            if self.first_token_ns is None and not _ended(self, "mark_first_token"):
                self.first_token_ns = _clock.monotonic_ns()
        except Exception as exc:
            _guarded("mark_first_token", exc)

    def set_metadata(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Merge key/values into the call's metadata (for example ``result_count``). Never raises."""
        try:
            if self.ended and _ended(self, "set_metadata"):
                return
            if data is None:  # keywords only (the usual call): nothing to check, keys are strings
                self.metadata.update(kwargs)
            else:
                _merge_metadata(self.metadata, data, kwargs)
        except Exception as exc:
            _guarded("set_metadata", exc)

    def __repr__(self) -> str:
        return f"<Call {self.provider}.{self.operation} {self.status} id={self.call_id}>"


class Run:
    """One agent run: the unit exported as one document."""

    __slots__ = ("__weakref__", "agent", "body_open", "calls", "captured", "end_ns", "end_us", "ended",
                 "error_message", "error_type", "implicit", "inputs", "metadata", "name", "open_calls", "open_steps",
                 "output", "output_set", "parent_run_id", "processor", "ref", "run_id", "session_id", "start_ns",
                 "start_us", "status", "steps", "streams", "tags", "user_id", "version")

    run_id: str
    name: str
    agent: str | None
    start_us: int
    start_ns: int
    parent_run_id: str | None
    implicit: bool
    #: the dimensions runs are sliced by: the conversation, the end user and the agent's release
    session_id: str | None
    user_id: str | None
    version: str | None
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
    #: set by set_output: the value the user set wins over the return value
    output_set: bool
    #: finished steps and calls (frozen records, see :mod:`agentmeter._record`), in finishing order
    steps: list[Any]
    calls: list[Any]
    #: steps and calls started but not finished (recorded as cancelled if the run ends first)
    open_steps: dict[str, Step]
    open_calls: dict[str, Call]
    #: set when the run ended and was frozen; the handle then changes nothing
    ended: bool
    #: what keeps the run open: its body (the decorated function or ``with`` block) until it returns, and
    #: the streams (decorated generators) created in it until the last one ends
    body_open: bool
    streams: int
    #: where the finished run goes: the processor current when the run started (None: the current one)
    processor: Any
    #: what the ContextVars hold for this run (an agentmeter._context.Ref), cleared when the run ends
    ref: Any

    def __init__(self, run_id: str, name: str, agent: str | None, start_us: int, start_ns: int,
                 parent_run_id: str | None = None, implicit: bool = False) -> None:
        # a plain class, written out: built for every run on the caller's thread
        self.run_id = run_id
        self.name = name
        self.agent = agent
        self.start_us = start_us
        self.start_ns = start_ns
        self.parent_run_id = parent_run_id
        self.implicit = implicit
        self.session_id = self.user_id = self.version = self.end_us = self.end_ns = None
        self.error_type = self.error_message = self.inputs = self.output = self.processor = self.ref = None
        self.status = RUNNING
        self.tags = []
        self.metadata = {}
        self.steps = []
        self.calls = []
        self.open_steps = {}
        self.open_calls = {}
        self.captured = self.output_set = self.ended = False
        self.body_open = True
        self.streams = 0

    def set_metadata(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Merge key/values into the run's metadata. Never raises."""
        try:
            if not _ended(self, "set_metadata"):
                _merge_metadata(self.metadata, data, kwargs)
        except Exception as exc:
            _guarded("set_metadata", exc)

    def set_session(self, session_id: str | None) -> None:
        """Set the run's session (conversation, thread) id; None clears it. Runs started inside this one
        from now on inherit it. A non-string is ignored with a counted warning. Never raises."""
        _set_label(self, "session_id", session_id)

    def set_user(self, user_id: str | None) -> None:
        """Set the end user's id; None clears it. Inherited like the session. Never raises."""
        _set_label(self, "user_id", user_id)

    def set_version(self, version: str | None) -> None:
        """Set the agent's release (``AGENTMETER_VERSION`` gives the default); None clears it. Inherited
        like the session. Never raises."""
        _set_label(self, "version", version)

    def add_tags(self, *tags: str | Iterable[str]) -> None:
        """Add tags to the run (strings, or iterables of strings; duplicates ignored, order kept). Anything
        else is ignored with a counted warning. Never raises."""
        try:
            if _ended(self, "add_tags"):
                return
            from ._scrub import scrub  # its patterns take ~3 ms to compile: loaded with the first tag

            for tag in tags:
                if isinstance(tag, str):
                    items: Iterable[Any] = (tag,)
                elif isinstance(tag, (list, tuple, set, frozenset)):
                    items = tag
                else:  # iterating an arbitrary object runs its own code: only plain collections are read
                    _guard.warn("tags.type", "a tag must be a string or a list of strings; ignored",
                                got=type(tag).__name__)
                    continue
                for item in items:
                    if not isinstance(item, str):
                        _guard.warn("tags.type", "a tag must be a string; ignored", got=type(item).__name__)
                    else:
                        item = scrub(item)  # a tag is stored as is: a secret in it must not be
                        if item not in self.tags:
                            self.tags.append(item)
        except Exception as exc:
            _guarded("add_tags", exc)

    def set_output(self, value: Any) -> None:
        """Record the run's output explicitly (for example a final report). It wins over the return value,
        and it is stored even with capture off, where it is the only captured value. Never raises."""
        _set_output(self, value)

    @property
    def duration_ms(self) -> float | None:
        if self.end_ns is None:
            return None
        return (self.end_ns - self.start_ns) / 1e6

    def __repr__(self) -> str:
        return f"<Run {self.name!r} {self.status} id={self.run_id} steps={len(self.steps)}>"


#: the longest session id, user id or version kept (longer ones are cut, with a counted warning)
MAX_LABEL_CHARS = 200


def clean_label(field: str, value: Any) -> str | None:
    """``value`` as stored in ``field`` (session_id, user_id, version): a string, scrubbed of secrets and at
    most :data:`MAX_LABEL_CHARS` long, or None. Raises ``TypeError`` for anything else."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a string or None, got {type(value).__name__} (pass str(value))")
    if len(value) > MAX_LABEL_CHARS:
        _guard.warn("label.too_long", f"a {field} longer than {MAX_LABEL_CHARS} characters was cut", field=field)
        value = value[:MAX_LABEL_CHARS]
    from ._scrub import scrub  # its patterns take ~3 ms to compile: loaded with the first label

    return scrub(value)


def _set_label(run: Run, field: str, value: Any) -> None:
    try:
        if _ended(run, f"set_{field.removesuffix('_id')}"):
            return
        try:
            label = clean_label(field, value)
        except TypeError:
            _guard.warn(f"run.{field}", f"{field} must be a string or None; ignored", got=type(value).__name__)
            return
        setattr(run, field, label)
    except Exception as exc:
        _guarded(f"set_{field}", exc)


def _set_output(handle: Step | Run, value: Any) -> None:
    try:
        if _ended(handle, "set_output"):
            return
        from ._capture import snapshot  # loaded with the first captured value

        handle.output = snapshot(value)
        handle.captured = handle.output_set = True
    except Exception as exc:
        _guarded("set_output", exc)
