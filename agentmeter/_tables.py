"""The tables of the data contract: every column of ``agent_runs``, ``run_steps``, ``api_calls`` and
``run_scores``, declared once (:mod:`agentmeter.contract` re-exports them; the SQLite DDL, the Snowflake views
and ``docs/data_model_erd.md`` follow from them)."""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = ["AGENT_RUN", "API_CALL", "RECORD_TYPES", "RUN_SCORE", "RUN_STEP", "SCHEMA_VERSION", "TABLES", "Column"]

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
