"""The frozen records: what crosses from the caller's thread to the exporter.

When a step or call ends, and when its run ends, the caller's thread turns the live handle into one of these
immutable tuples. Every value the user gave (metadata, tags, captured inputs and outputs, error fields) is
read once, into plain JSON-safe data (:func:`agentmeter._capture.jsonable`), so no other thread ever reads
the user's objects, and nothing the user does to a handle, a dict or a list afterwards changes what is
exported. A value that cannot be read cheaply (an object with its own ``__repr__``, say) becomes a
placeholder naming its type; reading a value never blocks on user code.

The field names are those of the handles (:mod:`agentmeter._model`), so the contract reads either.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from . import _guard
from ._capture import Snapshot, flat, jsonable

__all__ = ["FinishedCall", "FinishedRun", "FinishedScore", "FinishedStep", "freeze_call", "freeze_run",
           "freeze_step"]

_EMPTY = Snapshot({}, False, 0)


class FinishedCall(NamedTuple):
    """An API call as it was when it ended (or, for a call still open when its run ended, at that time)."""

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
    metadata: Snapshot


class FinishedStep(NamedTuple):
    """A step as it was when it ended (or when its run ended, for a step still open then)."""

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
    metadata: Snapshot
    inputs: Snapshot | None
    output: Snapshot | None
    captured: bool


class FinishedRun(NamedTuple):
    """A finished run with its finished steps and calls, and those still open when it ended."""

    run_id: str
    name: str
    agent: str | None
    start_us: int
    start_ns: int
    parent_run_id: str | None
    implicit: bool
    end_us: int
    end_ns: int
    status: str
    error_type: str | None
    error_message: str | None
    tags: tuple[str, ...]
    metadata: Snapshot
    inputs: Snapshot | None
    output: Snapshot | None
    captured: bool
    steps: tuple[FinishedStep, ...]
    calls: tuple[FinishedCall, ...]
    open_steps: tuple[FinishedStep, ...]
    open_calls: tuple[FinishedCall, ...]
    #: the dimensions (last, with defaults: records spooled by an older version still decode)
    session_id: str | None = None
    user_id: str | None = None
    version: str | None = None

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class FinishedScore(NamedTuple):
    """A score given to a run (``agentmeter.score``), checked and cleaned at the call."""

    event_id: str  # this call's own id (UUIDv7): its delivery key
    run_id: str
    name: str
    source: str
    value: float | None  # numeric and boolean (1.0 / 0.0) scores
    label: str | None  # categorical scores
    data_type: str  # numeric, boolean or categorical
    comment: str | None
    scored_us: int  # wall time of the call, epoch microseconds: the latest score of a key wins


def _meta(value: dict[str, Any], max_chars: int) -> Snapshot:
    if not value:
        return _EMPTY
    # dict() copies in one C call under the GIL: another thread adding keys meanwhile cannot break it
    copy = dict(value)
    return flat(copy, max_chars) or jsonable(copy, max_chars)


def _captured(value: Any, max_chars: int) -> Snapshot | None:
    if value is None or isinstance(value, Snapshot):
        return value
    return jsonable(value, max_chars)


_INT64 = 2**63
_COUNT_FIELDS = ("http_status", "retries", "request_bytes", "response_bytes", "input_tokens", "output_tokens",
                 "cached_input_tokens", "cache_write_tokens", "reasoning_tokens")
#: a NamedTuple's own ``__new__`` is a Python function; the records are built by ``tuple.__new__`` directly
_new = tuple.__new__


def _count(value: Any, field: str) -> Any:
    """``value`` when it is a count every store can hold (an int from 0 to 2**63-1) or None; else None,
    with a counted warning: a number SQLite or BSON cannot take would otherwise cost the whole run."""
    if value is None or (type(value) is int and 0 <= value < _INT64):
        return value
    _guard.warn("record.out_of_range", "a number is out of range for the stores; recorded as unknown",
                field=field, value=repr(value)[:60])
    return None


def _units(value: Any) -> Any:
    if value is None or (type(value) is float and 0.0 <= value < math.inf):
        return value
    _guard.warn("record.out_of_range", "a number is out of range for the stores; recorded as unknown",
                field="units", value=repr(value)[:60])
    return None


def freeze_call(call: Any, max_chars: int) -> FinishedCall:
    """The frozen copy of a :class:`~agentmeter._model.Call` handle. Numbers are checked here, once:
    out-of-range sizes, tokens, units, retries or HTTP statuses become unknown (counted warning
    ``record.out_of_range``). Never raises."""
    counts = (call.http_status, call.retries, call.request_bytes, call.response_bytes, call.input_tokens,
              call.output_tokens, call.cached_input_tokens, call.cache_write_tokens, call.reasoning_tokens)
    # one pass for the usual case (every count None or a plain int in range), field by field otherwise
    for v in counts:
        if v is not None and not (type(v) is int and 0 <= v < _INT64):
            counts = tuple(map(_count, counts, _COUNT_FIELDS))
            break
    units = call.units
    if units is not None and not (type(units) is float and 0.0 <= units < math.inf):
        units = _units(units)
    metadata = call.metadata
    return _new(FinishedCall, (
        call.call_id, call.run_id, call.step_id, call.provider, call.operation, call.model, call.start_us,
        call.start_ns, call.end_us, call.end_ns, call.status, call.error_type, call.error_message, counts[0],
        counts[1], call.first_token_ns, counts[2], counts[3], counts[4], counts[5], counts[6], counts[7], counts[8],
        units, (flat(dict(metadata), max_chars) or _meta(metadata, max_chars)) if metadata else _EMPTY,
    ))


def freeze_step(step: Any, max_chars: int) -> FinishedStep:
    """The frozen copy of a :class:`~agentmeter._model.Step` handle. Never raises."""
    metadata, inputs, output = step.metadata, step.inputs, step.output
    return _new(FinishedStep, (
        step.step_id, step.run_id, step.parent_step_id, step.name, step.kind, step.start_us, step.start_ns,
        step.end_us, step.end_ns, step.status, step.error_type, step.error_message,
        _meta(metadata, max_chars) if metadata else _EMPTY,
        inputs if inputs is None or type(inputs) is Snapshot else _captured(inputs, max_chars),
        output if output is None or type(output) is Snapshot else _captured(output, max_chars),
        step.captured,
    ))


def freeze_run(run: Any, max_chars: int) -> FinishedRun:
    """The frozen copy of an ended :class:`~agentmeter._model.Run` (``end_us``/``end_ns`` set).

    Its ``steps`` and ``calls`` are frozen already (each when it ended); steps and calls still open are
    frozen as they are now (their owners may still be running, on another thread). Never raises.
    """
    open_steps = tuple([freeze_step(s, max_chars) for s in list(run.open_steps.values())]) if run.open_steps else ()
    open_calls = tuple([freeze_call(c, max_chars) for c in list(run.open_calls.values())]) if run.open_calls else ()
    return FinishedRun(
        run.run_id, run.name, run.agent, run.start_us, run.start_ns, run.parent_run_id, run.implicit,
        run.end_us, run.end_ns, run.status, run.error_type, run.error_message, tuple(run.tags),
        _meta(run.metadata, max_chars), _captured(run.inputs, max_chars), _captured(run.output, max_chars),
        run.captured, tuple(run.steps), tuple(run.calls), open_steps, open_calls,
        run.session_id, run.user_id, run.version,
    )
