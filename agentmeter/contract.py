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
``docs/data_model_erd.md`` (:mod:`agentmeter.contract_erd`) follow from them. Every row carries
``record_type``, ``record_id`` (its own id, the de-duplication key) and ``schema_version``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

from . import _clock
from ._capture import Snapshot, jsonable
from ._record import FinishedCall, FinishedRun, FinishedScore, FinishedStep
from ._status import CANCELLED, RUNNING
from ._version import __version__

__all__ = [
    "AGENT_RUN",
    "API_CALL",
    "RECORD_TYPES",
    "RUN_SCORE",
    "RUN_STEP",
    "SCHEMA_VERSION",
    "TABLES",
    "Column",
    "Price",
    "Records",
    "document_records",
    "is_score",
    "run_document",
    "score_document",
    "score_id",
]

SCHEMA_VERSION: Final = 1
AGENT_RUN: Final = "agent_run"
RUN_STEP: Final = "run_step"
API_CALL: Final = "api_call"
RUN_SCORE: Final = "run_score"
#: record type -> table name
RECORD_TYPES: Final = {AGENT_RUN: "agent_runs", RUN_STEP: "run_steps", API_CALL: "api_calls",
                       RUN_SCORE: "run_scores"}


class Column(NamedTuple):
    name: str
    type: str  # text | integer | real | boolean | timestamp | json
    description: str


_COMMON = (
    Column("record_type", "text", "agent_run, run_step, api_call or run_score"),
    Column("record_id", "text",
           "the row's own id (run_id, step_id, call_id or score_id): the de-duplication key"),
    Column("schema_version", "integer", "version of this contract"),
)
_TIME = (
    Column("started_at", "timestamp", "UTC start, ISO 8601 with microseconds"),
    Column("ended_at", "timestamp", "UTC end, ISO 8601 with microseconds"),
    Column("duration_ms", "real", "duration from a monotonic clock, milliseconds"),
)
_ERROR = (
    Column("status", "text", "success, error or cancelled"),
    Column("error_type", "text", "exception class of a failure, else null"),
    Column("error_message", "text", "exception message (first 2000 characters), else null"),
)
_TOKENS = (
    Column("input_tokens", "integer",
           "input (prompt) tokens, all of them (cache reads and cache writes included); null when unknown"),
    Column("output_tokens", "integer", "output (completion) tokens; null when unknown"),
    Column("cached_input_tokens", "integer", "input tokens served from the provider's cache; null when unknown"),
    Column("cache_write_tokens", "integer",
           "input tokens written to the provider's cache (billed at the cache-write rate); null when unknown"),
    Column("reasoning_tokens", "integer", "output tokens spent on reasoning; null when unknown"),
    Column("total_tokens", "integer", "input + output tokens; null when unknown"),
)

TABLES: Final[dict[str, tuple[Column, ...]]] = {
    "agent_runs": (
        *_COMMON,
        Column("run_id", "text", "time-ordered unique id (UUIDv7)"),
        Column("parent_run_id", "text", "run that started this one (a sub-agent), else null"),
        Column("name", "text", "run name (decorated function or track_run name)"),
        Column("agent", "text", "agent name, else null"),
        Column("session_id", "text", "session (conversation, thread) the run belongs to, else null"),
        Column("user_id", "text", "end user the run served, else null"),
        Column("version", "text", "release of the agent or app (AGENTMETER_VERSION by default), else null"),
        *_ERROR,
        *_TIME,
        Column("tags", "json", "list of tags"),
        Column("metadata", "json", "user metadata (object)"),
        Column("implicit", "boolean", "true when created for a step or call used outside any run"),
        Column("host", "text", "host name of the process"),
        Column("pid", "integer", "process id"),
        Column("sdk_version", "text", "agentmeter version"),
        Column("step_count", "integer", "steps in the run"),
        Column("call_count", "integer", "API calls in the run"),
        Column("error_step_count", "integer", "steps with status error"),
        Column("error_call_count", "integer", "calls with status error"),
        *_TOKENS,
        Column("cost_usd", "real", "sum of priced calls' cost; null when the run has calls and none is priced"),
        Column("unpriced_call_count", "integer", "calls whose cost is unknown (no price for the model)"),
        Column("inputs", "json", "captured arguments (capture is opt-in), else null"),
        Column("output", "json", "captured return value (capture is opt-in), else null"),
        Column("truncated", "boolean", "true when a captured value was cut to fit a size limit"),
        Column("sampled", "boolean",
               "false when sample_rate left out this run's captured inputs/outputs (metrics stay exact)"),
    ),
    "run_steps": (
        *_COMMON,
        Column("step_id", "text", "time-ordered unique id (UUIDv7)"),
        Column("run_id", "text", "run this step belongs to (agent_runs.run_id)"),
        Column("parent_step_id", "text", "enclosing step (run_steps.step_id), else null"),
        Column("agent", "text", "agent of the run (denormalized for queries)"),
        Column("name", "text", "step name"),
        Column("kind", "text", "tool, llm, retrieval, plan, agent or other"),
        *_ERROR,
        *_TIME,
        Column("metadata", "json", "user metadata (object)"),
        Column("call_count", "integer", "API calls made directly in this step"),
        *_TOKENS,
        Column("cost_usd", "real", "sum of this step's priced calls' cost; null when none is priced"),
        Column("inputs", "json", "captured arguments (capture is opt-in), else null"),
        Column("output", "json", "captured return value (capture is opt-in), else null"),
        Column("truncated", "boolean", "true when a captured value was cut to fit a size limit"),
    ),
    "api_calls": (
        *_COMMON,
        Column("call_id", "text", "time-ordered unique id (UUIDv7)"),
        Column("run_id", "text", "run this call belongs to (agent_runs.run_id)"),
        Column("step_id", "text", "step that made the call (run_steps.step_id), else null"),
        Column("agent", "text", "agent of the run (denormalized for queries)"),
        Column("provider", "text", "API provider, e.g. openai, tavily"),
        Column("operation", "text", "operation, e.g. chat.completions, responses, embeddings, search"),
        Column("model", "text", "model that answered (as reported by the API when it says), else null"),
        *_ERROR,
        Column("http_status", "integer", "HTTP status of the final response, else null"),
        Column("retries", "integer", "times the request was re-sent by the client"),
        *_TIME,
        Column("time_to_first_token_ms", "real", "streaming: start to first chunk, milliseconds"),
        Column("request_bytes", "integer", "request body size, else null"),
        Column("response_bytes", "integer", "response body size, else null"),
        *_TOKENS,
        Column("units", "real", "billable non-token units (e.g. search credits), else null"),
        Column("cost_usd", "real", "cost in US dollars; null when unpriced"),
        Column("priced", "boolean", "true when a price was known for this call"),
        Column("price_source", "text", "where the price came from: override, genai-prices, ... or null"),
        Column("metadata", "json", "call details (e.g. result_count, finish_reason)"),
    ),
    "run_scores": (
        *_COMMON,
        Column("score_id", "text", "derived from (run_id, name, source): one score per key, the latest wins"),
        Column("run_id", "text", "run scored (agent_runs.run_id); the run may be stored before or after"),
        Column("name", "text", "what is scored, e.g. helpfulness, thumbs, correctness"),
        Column("source", "text", "who scored: user (the default), eval, human, model, ..."),
        Column("data_type", "text", "numeric, boolean or categorical"),
        Column("value", "real", "the score of a numeric score, 1 or 0 for a boolean one, else null"),
        Column("label", "text", "the value of a categorical score, else null"),
        Column("comment", "text", "free text given with the score, else null"),
        Column("scored_at", "timestamp", "UTC time of the agentmeter.score() call: the latest one wins"),
        Column("event_id", "text", "the call's own id (UUIDv7): breaks a tie of scored_at"),
        Column("host", "text", "host name of the process that scored"),
        Column("pid", "integer", "process id of the process that scored"),
        Column("sdk_version", "text", "agentmeter version"),
    ),
}


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
        "duration_ms": round((end_ns - start_ns) / 1e6, 3),
    }


def _unfinished_fields(run: FinishedRun) -> dict[str, Any]:
    return {
        "status": CANCELLED,
        "error_type": "Unfinished",
        "error_message": f"still open when run {run.name!r} ended",
    }


def _call_row(call: FinishedCall, run: FinishedRun, pricer: Pricer, max_chars: int) -> dict[str, Any]:
    end_us, end_ns = call.end_us, call.end_ns
    status = {"status": call.status, "error_type": call.error_type, "error_message": call.error_message}
    if call.status == RUNNING:  # never finished: close it at the run's end
        end_us, end_ns, status = run.end_us, run.end_ns, _unfinished_fields(run)
    metadata, truncated = _json(call.metadata, max_chars)
    row: dict[str, Any] = {
        "call_id": call.call_id,
        "run_id": call.run_id,
        "step_id": call.step_id,
        "agent": run.agent,
        "provider": call.provider,
        "operation": call.operation,
        "model": call.model,
        **status,
        "http_status": call.http_status,
        "retries": call.retries,
        **_span_times(call.start_us, call.start_ns, end_us, end_ns),
        "time_to_first_token_ms": (
            round((call.first_token_ns - call.start_ns) / 1e6, 3) if call.first_token_ns is not None else None
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
    status = {"status": step.status, "error_type": step.error_type, "error_message": step.error_message}
    if step.status == RUNNING:
        end_us, end_ns, status = run.end_us, run.end_ns, _unfinished_fields(run)
    metadata, t1 = _json(step.metadata, max_chars)
    inputs, t2 = _json(step.inputs, max_chars) if step.captured and sampled else (None, False)
    output, t3 = _json(step.output, max_chars) if step.captured and sampled else (None, False)
    rollup = _rollup(calls)
    return {
        "step_id": step.step_id,
        "run_id": step.run_id,
        "parent_step_id": step.parent_step_id,
        "agent": run.agent,
        "name": step.name,
        "kind": step.kind,
        **status,
        **_span_times(step.start_us, step.start_ns, end_us, end_ns),
        "metadata": metadata or {},
        "call_count": len(calls),
        "input_tokens": rollup["input_tokens"],
        "output_tokens": rollup["output_tokens"],
        "cached_input_tokens": rollup["cached_input_tokens"],
        "cache_write_tokens": rollup["cache_write_tokens"],
        "reasoning_tokens": rollup["reasoning_tokens"],
        "total_tokens": rollup["total_tokens"],
        "cost_usd": rollup["cost_usd"] if calls else None,
        "inputs": inputs,
        "output": output,
        "truncated": t1 or t2 or t3,
    }


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
    price = pricer or _unpriced
    all_calls = run.calls + run.open_calls
    all_steps = run.steps + run.open_steps
    call_rows = sorted((_call_row(c, run, price, max_chars) for c in all_calls), key=lambda r: r["call_id"])
    by_step: dict[str | None, list[dict[str, Any]]] = {}
    for row in call_rows:
        by_step.setdefault(row["step_id"], []).append(row)
    step_rows = sorted(
        (_step_row(s, run, by_step.get(s.step_id, []), max_chars, sampled) for s in all_steps),
        key=lambda r: r["step_id"],
    )
    metadata, t1 = _json(run.metadata, max_chars)
    inputs, t2 = _json(run.inputs, max_chars) if run.captured and sampled else (None, False)
    output, t3 = _json(run.output, max_chars) if run.captured and sampled else (None, False)
    rollup = _rollup(call_rows)
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
        "step_count": len(step_rows),
        "call_count": len(call_rows),
        "error_step_count": sum(1 for s in step_rows if s["status"] == "error"),
        "error_call_count": sum(1 for c in call_rows if c["status"] == "error"),
        **rollup,
        "unpriced_call_count": sum(1 for c in call_rows if not c["priced"]),
        "inputs": inputs,
        "output": output,
        "truncated": t1 or t2 or t3,
        "sampled": sampled,
        "steps": step_rows,
        "calls": call_rows,
    }


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
