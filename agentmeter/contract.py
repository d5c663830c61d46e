"""The data contract every sink follows: the run **document**, the **score document** and the **four record
kinds**.

Three pure functions define it:

* :func:`run_document` turns a finished run into one JSON-safe ``dict`` (what MongoDB stores in
  ``agent_metadata``, what the spool keeps, what the exporter hands to every sink);
* :func:`score_document` turns a score (``agentmeter.score``) into its document: an envelope whose
  ``run_id`` is the delivery key ``score:<event_id>`` (unique per call, so the exporter, the spool and the
  sinks never confuse it with the scored run's document), holding the ``run_scores`` row under ``score``;
* :func:`document_records` turns a document into rows for the tables ``agent_runs``, ``run_steps``,
  ``api_calls`` and ``run_scores`` (what SQLite stores and what Firehose ships to Snowflake).

A score is idempotent by (run, name, source): its ``score_id`` is derived from them, and of the rows with
one ``score_id`` the one with the latest ``scored_at`` (then ``event_id``) wins, in every sink.

The tables' columns are declared once, in :data:`TABLES`; the SQLite DDL, the Snowflake views and
``docs/data_model_erd.md`` (:mod:`agentmeter.contract_erd`) follow from them. Every Firehose record carries
``record_type``, ``record_id`` (its own id, the de-duplication key) and ``schema_version``; the local store's
rows leave out the first two.
"""

from __future__ import annotations

import operator
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

from . import _clock
from ._capture import Snapshot, jsonable
from ._record import FinishedCall, FinishedRun, FinishedScore, FinishedStep
from ._status import CANCELLED, ERROR, RUNNING
from ._tables import AGENT_RUN, API_CALL, RECORD_TYPES, RUN_SCORE, RUN_STEP, SCHEMA_VERSION, TABLES, Column
from ._version import __version__

__all__ = [
    "AGENT_RUN",
    "API_CALL",
    "NO_CALLS",
    "RECORD_TYPES",
    "RUN_SCORE",
    "RUN_STEP",
    "SCHEMA_VERSION",
    "TABLES",
    "Column",
    "Price",
    "Records",
    "call_row",
    "calls_by_step",
    "document_records",
    "is_score",
    "run_document",
    "run_fields",
    "run_parts",
    "score_document",
    "score_id",
    "step_row",
    "unpriced",
]


class Price(NamedTuple):
    cost_usd: float | None
    priced: bool
    source: str | None = None


#: Given an api_call row (tokens, model, provider, units, started_at), return its price.
Pricer = Callable[[Mapping[str, Any]], Price]


def _unpriced(_call: Mapping[str, Any]) -> Price:
    return Price(None, False, None)


class Records(NamedTuple):
    agent_runs: list[dict[str, Any]]
    run_steps: list[dict[str, Any]]
    api_calls: list[dict[str, Any]]
    run_scores: list[dict[str, Any]]


_HOST = socket.gethostname()
_by_step_id = operator.itemgetter("step_id")
_by_call_id = operator.itemgetter("call_id")


def _json(value: Any, max_chars: int) -> tuple[Any, bool]:
    if value is None:
        return None, False
    if not value and type(value) is dict:  # most metadata is empty
        return {}, False
    if isinstance(value, Snapshot):  # captured on the caller's thread already
        return value.value, value.truncated
    snap = jsonable(value, max_chars)
    return snap.value, snap.truncated


def _total(a: int | None, b: int | None) -> int | None:
    if a is None and b is None:
        return None
    return (a or 0) + (b or 0)


def _sum_known(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _span_times(start_us: int, start_ns: int, end_us: int | None, end_ns: int | None) -> dict[str, Any]:
    if end_ns is None or end_us is None:
        return {"started_at": _clock.iso_utc(start_us), "ended_at": None, "duration_ms": None}
    return {
        "started_at": _clock.iso_utc(start_us),
        "ended_at": _clock.iso_utc(end_us),
        "duration_ms": _clock.ms3(end_ns - start_ns),
    }


def _call_row(call: FinishedCall, run: FinishedRun, pricer: Pricer, max_chars: int) -> dict[str, Any]:
    end_us, end_ns = call.end_us, call.end_ns
    status, error_type, error_message = call.status, call.error_type, call.error_message
    if status == RUNNING:  # never finished: close it at the run's end
        end_us, end_ns = run.end_us, run.end_ns
        status, error_type, error_message = CANCELLED, "Unfinished", f"still open when run {run.name!r} ended"
    metadata, truncated = _json(call.metadata, max_chars)
    iso = _clock.iso_utc
    ended = end_us is not None and end_ns is not None
    row: dict[str, Any] = {
        "call_id": call.call_id,
        "run_id": call.run_id,
        "step_id": call.step_id,
        "agent": run.agent,
        "provider": call.provider,
        "operation": call.operation,
        "model": call.model,
        "status": status,
        "error_type": error_type,
        "error_message": error_message,
        "http_status": call.http_status,
        "retries": call.retries,
        "started_at": iso(call.start_us),
        "ended_at": iso(end_us) if ended else None,  # type: ignore[arg-type]
        "duration_ms": _clock.ms3(end_ns - call.start_ns) if ended else None,  # type: ignore[operator]
        "time_to_first_token_ms": (
            _clock.ms3(call.first_token_ns - call.start_ns) if call.first_token_ns is not None else None
        ),
        "request_bytes": call.request_bytes,
        "response_bytes": call.response_bytes,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
        "cached_input_tokens": call.cached_input_tokens,
        "cache_write_tokens": call.cache_write_tokens,
        "reasoning_tokens": call.reasoning_tokens,
        "total_tokens": _total(call.input_tokens, call.output_tokens),
        "units": call.units,
        "cost_usd": None,
        "priced": False,
        "price_source": None,
        "metadata": metadata or {},
    }
    price = pricer(row)
    row["cost_usd"] = price.cost_usd
    row["priced"] = price.priced
    row["price_source"] = price.source
    if truncated:  # a new dict: the frozen record's own is never changed
        row["metadata"] = {**row["metadata"], "_truncated": True}
    return row


_NO_CALLS: Final = {"input_tokens": None, "output_tokens": None, "cached_input_tokens": None,
                     "cache_write_tokens": None, "reasoning_tokens": None, "total_tokens": None, "cost_usd": 0}


def _rollup(calls: list[dict[str, Any]]) -> dict[str, Any]:
    if not calls:
        return _NO_CALLS
    costs = [c["cost_usd"] for c in calls if c["priced"] and c["cost_usd"] is not None]
    return {
        "input_tokens": _sum_known([c["input_tokens"] for c in calls]),
        "output_tokens": _sum_known([c["output_tokens"] for c in calls]),
        "cached_input_tokens": _sum_known([c["cached_input_tokens"] for c in calls]),
        "cache_write_tokens": _sum_known([c["cache_write_tokens"] for c in calls]),
        "reasoning_tokens": _sum_known([c["reasoning_tokens"] for c in calls]),
        "total_tokens": _sum_known([c["total_tokens"] for c in calls]),
        # cost: 0 for a run without calls (nothing billed); null when there are calls and none is priced
        "cost_usd": round(sum(costs), 10) if costs or not calls else None,
    }


def _step_row(step: FinishedStep, run: FinishedRun, calls: list[dict[str, Any]], max_chars: int,
              sampled: bool = True) -> dict[str, Any]:
    end_us, end_ns = step.end_us, step.end_ns
    status, error_type, error_message = step.status, step.error_type, step.error_message
    if status == RUNNING:
        end_us, end_ns = run.end_us, run.end_ns
        status, error_type, error_message = CANCELLED, "Unfinished", f"still open when run {run.name!r} ended"
    metadata, t1 = _json(step.metadata, max_chars)
    if step.captured and sampled:
        inputs, t2 = _json(step.inputs, max_chars)
        output, t3 = _json(step.output, max_chars)
    else:
        inputs = output = None
        t2 = t3 = False
    iso = _clock.iso_utc
    row = {
        "step_id": step.step_id,
        "run_id": step.run_id,
        "parent_step_id": step.parent_step_id,
        "agent": run.agent,
        "name": step.name,
        "kind": step.kind,
        "status": status,
        "error_type": error_type,
        "error_message": error_message,
        "started_at": iso(step.start_us),
        "ended_at": None if end_us is None or end_ns is None else iso(end_us),
        "duration_ms": None if end_us is None or end_ns is None else _clock.ms3(end_ns - step.start_ns),
        "metadata": metadata or {},
        "call_count": len(calls),
        **(_rollup(calls) if calls else _STEP_NO_CALLS),
        "inputs": inputs,
        "output": output,
        "truncated": t1 or t2 or t3,
    }
    return row


#: a step's token and cost columns when it made no call (cost unknown: null, unlike a run's 0)
_STEP_NO_CALLS: Final = {**_NO_CALLS, "cost_usd": None}


def run_document(
    run: FinishedRun, pricer: Pricer | None = None, max_chars: int = 65536, *, sampled: bool = True
) -> dict[str, Any]:
    """The run document: the run's fields and rollups, with ``steps`` and ``calls`` as lists of rows.

    ``run`` is the frozen record of a finished run (:mod:`agentmeter._record`). Steps and calls that never
    finished are recorded with status ``cancelled`` and error type ``Unfinished``, ending when the run
    ended. ``pricer`` prices each call (the exporter passes the configured one); without it every call is
    unpriced. Pure: no I/O, and the same run always gives the same document. ``sampled=False`` (the
    sampler's decision, see ``sample_rate``) leaves out the captured ``inputs`` and ``output`` of the run and
    its steps; every count, latency, token and cost stays.
    """
    fields, step_rows, call_rows = run_parts(run, pricer, max_chars, sampled=sampled)
    fields["steps"] = step_rows
    fields["calls"] = call_rows
    return fields


def run_parts(
    run: FinishedRun, pricer: Pricer | None = None, max_chars: int = 65536, *, sampled: bool = True,
    steps: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """:func:`run_document` in three parts: the run's fields (no ``steps`` nor ``calls``), its step rows and
    its call rows (each sorted by id). With ``steps=False`` the step rows are left to the caller (an empty
    list): see :func:`step_row`."""
    price = pricer or _unpriced
    call_rows = sorted([_call_row(c, run, price, max_chars) for c in run.calls + run.open_calls], key=_by_call_id)
    step_rows: list[dict[str, Any]] = []
    if steps:
        by_step = calls_by_step(call_rows)
        no_calls: list[dict[str, Any]] = []
        step_rows = sorted(
            [_step_row(s, run, by_step.get(s.step_id, no_calls), max_chars, sampled)
             for s in run.steps + run.open_steps],
            key=_by_step_id,
        )
    fields = run_fields(run, max_chars, sampled, len(call_rows),
                        sum(1 for c in call_rows if c["status"] == "error"), _rollup(call_rows),
                        sum(1 for c in call_rows if not c["priced"]))
    return fields, step_rows, call_rows


def run_fields(run: FinishedRun, max_chars: int, sampled: bool, call_count: int, error_call_count: int,
               rollup: Mapping[str, Any], unpriced_call_count: int) -> dict[str, Any]:
    """The run's fields (no ``steps`` nor ``calls``), given what its call rows sum up to (``rollup``: the
    token sums and the cost, as :func:`run_parts` makes them). The local store calls it with the sums of
    the call rows it wrote straight from the frozen calls."""
    all_steps = run.steps + run.open_steps
    metadata, t1 = _json(run.metadata, max_chars)
    inputs, t2 = _json(run.inputs, max_chars) if run.captured and sampled else (None, False)
    output, t3 = _json(run.output, max_chars) if run.captured and sampled else (None, False)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.run_id,
        "parent_run_id": run.parent_run_id,
        "name": run.name,
        "agent": run.agent,
        "session_id": run.session_id,
        "user_id": run.user_id,
        "version": run.version,
        "status": run.status if run.status != RUNNING else CANCELLED,
        "error_type": run.error_type,
        "error_message": run.error_message,
        **_span_times(run.start_us, run.start_ns, run.end_us, run.end_ns),
        "tags": list(run.tags),
        "metadata": metadata or {},
        "implicit": run.implicit,
        "host": _HOST,
        "pid": os.getpid(),
        "sdk_version": __version__,
        "step_count": len(all_steps),
        "call_count": call_count,
        # a step still open is recorded cancelled: only finished steps can have failed
        "error_step_count": sum(1 for s in all_steps if s.status == ERROR),
        "error_call_count": error_call_count,
        **rollup,
        "unpriced_call_count": unpriced_call_count,
        "inputs": inputs,
        "output": output,
        "truncated": t1 or t2 or t3,
        "sampled": sampled,
    }


def calls_by_step(call_rows: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    """Call rows grouped by their step id, each group in the order given."""
    by_step: dict[str | None, list[dict[str, Any]]] = {}
    for row in call_rows:
        by_step.setdefault(row["step_id"], []).append(row)
    return by_step


#: a run's sums when it made no call (see :func:`run_fields`)
NO_CALLS: Final = _NO_CALLS
#: the pricer that prices nothing (what :func:`run_parts` uses without one)
unpriced: Final = _unpriced
#: a step's row: ``step_row(step, run, its call rows, max_chars, sampled)`` (see :func:`run_document`)
step_row = _step_row
#: a call's row: ``call_row(call, run, pricer, max_chars)`` (see :func:`run_document`)
call_row = _call_row


#: the namespace of score ids (uuid5 of run id, name and source)
_SCORE_NAMESPACE: Final = uuid.UUID("6f1d9c2e-3b7a-5e41-9c0d-a9e5b2f4c810")
#: the prefix of a score document's delivery key (its ``run_id``)
SCORE_KEY_PREFIX: Final = "score:"


def score_id(run_id: str, name: str, source: str) -> str:
    """The id of the score of ``run_id`` named ``name`` from ``source``: the same in every process."""
    return str(uuid.uuid5(_SCORE_NAMESPACE, f"{run_id}\x1f{name}\x1f{source}"))


def is_score(document: Mapping[str, Any]) -> bool:
    """Whether ``document`` is a score document (else it is a run document)."""
    return document.get("record_type") == RUN_SCORE


def score_document(score: FinishedScore) -> dict[str, Any]:
    """The document of a score: ``{"schema_version", "record_type": "run_score", "run_id": "score:<event_id>",
    "score": <run_scores row without record_type, record_id, schema_version>}``. Pure."""
    return {
        "schema_version": SCHEMA_VERSION,
        "record_type": RUN_SCORE,
        "run_id": SCORE_KEY_PREFIX + score.event_id,
        "score": {
            "score_id": score_id(score.run_id, score.name, score.source),
            "run_id": score.run_id,
            "name": score.name,
            "source": score.source,
            "data_type": score.data_type,
            "value": score.value,
            "label": score.label,
            "comment": score.comment,
            "scored_at": _clock.iso_utc(score.scored_us),
            "event_id": score.event_id,
            "host": _HOST,
            "pid": os.getpid(),
            "sdk_version": __version__,
        },
    }


def document_records(document: Mapping[str, Any]) -> Records:
    """The rows a document becomes in ``agent_runs``, ``run_steps``, ``api_calls`` and ``run_scores``. Pure.

    Accepts a document as :func:`run_document` or :func:`score_document` made it, or as read back from
    MongoDB (an ``_id`` key is ignored, BSON datetimes become ISO strings).
    """
    if is_score(document):
        row = document["score"]
        return Records([], [], [], [{"record_type": RUN_SCORE, "record_id": row["score_id"],
                                     "schema_version": document["schema_version"], **row}])
    run = {k: _iso(v) for k, v in document.items() if k not in ("steps", "calls", "_id")}
    run_row = {"record_type": AGENT_RUN, "record_id": run["run_id"], **run}
    steps = [
        {"record_type": RUN_STEP, "record_id": s["step_id"], "schema_version": run["schema_version"], **s}
        for s in document.get("steps", ())
    ]
    calls = [
        {"record_type": API_CALL, "record_id": c["call_id"], "schema_version": run["schema_version"], **c}
        for c in document.get("calls", ())
    ]
    return Records([run_row], steps, calls, [])


def _iso(value: Any) -> Any:
    if hasattr(value, "tzinfo") and hasattr(value, "isoformat"):  # a datetime read back from BSON
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value
