"""The column specs of the query interface's frames (re-exported by :mod:`agentmeter.queries.base`, whose
docstring says what the filters and orders mean): one constant per frame, ``((name, kind), ...)``, and
:data:`FRAMES`, method name -> spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "AGENTS",
    "AGENT_KPIS",
    "API_LATENCY",
    "CACHE_TOKENS",
    "CALLS_BY_PROVIDER",
    "CALLS_SUMMARY",
    "CALL_ERRORS",
    "COST_BY_AGENT",
    "COST_BY_MODEL",
    "COST_BY_PROVIDER",
    "COST_OVER_TIME",
    "DIMENSION_FIELDS",
    "EXPENSIVE_RUNS",
    "FRAMES",
    "KPIS",
    "LATENCY_OVER_TIME",
    "RECENT_FAILURES",
    "RUNS_PER_AGENT",
    "RUN_CALLS",
    "RUN_SCORES",
    "RUN_SEARCH",
    "RUN_STEPS",
    "RUN_SUMMARY",
    "SCORES",
    "SLOWEST_RUNS",
    "STATUS_OVER_TIME",
    "STEP_ERRORS",
    "STEP_LATENCY",
    "TOKENS_BY_MODEL",
    "UNPRICED_CALLS",
    "Spec",
]

# Column kinds: str (text, may be null), int (integer, never null), Int (integer, may be null),
# float (may be NaN for null), time (tz-aware UTC timestamp, may be NaT), bool, json (JSON text with sorted
# keys, may be null).
Spec = tuple[tuple[str, str], ...]

#: One row: the headline numbers of Health (and the KPI strip on every view), all over the runs that match
#: (defined once, in :mod:`agentmeter.queries._kpis`). ``success_rate`` and ``error_rate`` are fractions
#: 0..1 of ``runs``, ``step_error_rate`` of ``steps``, ``call_error_rate`` of ``calls`` (NaN when there
#: is none); ``p*_ms`` are run durations; tokens and cost are sums over runs; ``steps``, ``calls``,
#: ``error_steps``, ``error_calls`` and ``unpriced_calls`` sum the runs' ``step_count``, ``call_count``,
#: ``error_step_count``, ``error_call_count`` and ``unpriced_call_count``; ``first_started_at`` and
#: ``last_started_at`` the span of those runs' starts (NaT for no runs).
KPIS: Final[Spec] = (
    ("runs", "int"), ("success_runs", "int"), ("error_runs", "int"), ("cancelled_runs", "int"),
    ("success_rate", "float"), ("error_rate", "float"),
    ("p50_ms", "float"), ("p95_ms", "float"), ("p99_ms", "float"),
    ("input_tokens", "int"), ("output_tokens", "int"), ("total_tokens", "int"),
    ("cost_usd", "float"), ("calls", "int"), ("unpriced_calls", "int"),
    ("steps", "int"), ("error_steps", "int"), ("error_calls", "int"),
    ("step_error_rate", "float"), ("call_error_rate", "float"),
    ("first_started_at", "time"), ("last_started_at", "time"),
)
#: :data:`KPIS` per agent (agent may be null); ordered by agent (nulls first). Only agents with runs.
AGENT_KPIS: Final[Spec] = (("agent", "str"), *KPIS)
#: Runs per bucket and status; ordered by bucket, status. Only non-empty combinations.
STATUS_OVER_TIME: Final[Spec] = (("bucket", "time"), ("status", "str"), ("runs", "int"))
#: Run duration percentiles per bucket; ordered by bucket.
LATENCY_OVER_TIME: Final[Spec] = (
    ("bucket", "time"), ("runs", "int"), ("p50_ms", "float"), ("p95_ms", "float"), ("p99_ms", "float"),
)
#: Step duration by step name; ordered by p95_ms descending, then name.
STEP_LATENCY: Final[Spec] = (
    ("name", "str"), ("steps", "int"), ("errors", "int"), ("mean_ms", "float"),
    ("p50_ms", "float"), ("p95_ms", "float"), ("p99_ms", "float"),
)
#: API call duration by provider and model (model may be null); ordered by p95_ms descending, provider, model.
API_LATENCY: Final[Spec] = (
    ("provider", "str"), ("model", "str"), ("calls", "int"), ("errors", "int"), ("mean_ms", "float"),
    ("p50_ms", "float"), ("p95_ms", "float"), ("p99_ms", "float"),
)
_RUN_ROW: Final[Spec] = (
    ("run_id", "str"), ("name", "str"), ("agent", "str"), ("status", "str"), ("started_at", "time"),
    ("duration_ms", "float"), ("step_count", "int"), ("call_count", "int"), ("total_tokens", "Int"),
    ("cost_usd", "float"),
)
#: The ``limit`` longest runs; ordered by duration_ms descending, run_id.
SLOWEST_RUNS: Final[Spec] = _RUN_ROW
#: The ``limit`` latest runs with status ``error``; ordered by started_at descending, run_id.
RECENT_FAILURES: Final[Spec] = (
    ("run_id", "str"), ("name", "str"), ("agent", "str"), ("started_at", "time"), ("duration_ms", "float"),
    ("error_type", "str"), ("error_message", "str"),
)
#: Runs per bucket and agent (agent may be null); ordered by bucket, agent (nulls first).
RUNS_PER_AGENT: Final[Spec] = (("bucket", "time"), ("agent", "str"), ("runs", "int"))
#: Steps and failed steps per step name; ordered by errors descending, name (nulls first). Counts only
#: (no percentiles), for Health.
STEP_ERRORS: Final[Spec] = (("name", "str"), ("steps", "int"), ("errors", "int"))
#: API calls and failed calls per provider and model; ordered by errors descending, provider, model (nulls
#: first). Derived from :data:`CALLS_SUMMARY` by the sources that have it.
CALL_ERRORS: Final[Spec] = (("provider", "str"), ("model", "str"), ("calls", "int"), ("errors", "int"))
#: Calls per provider; ordered by calls descending, provider.
CALLS_BY_PROVIDER: Final[Spec] = (
    ("provider", "str"), ("calls", "int"), ("errors", "int"), ("total_tokens", "int"), ("cost_usd", "float"),
)
#: Tokens per provider and model; ordered by total_tokens descending, provider, model (nulls first).
TOKENS_BY_MODEL: Final[Spec] = (
    ("provider", "str"), ("model", "str"), ("calls", "int"), ("input_tokens", "int"),
    ("output_tokens", "int"), ("total_tokens", "int"),
)
#: Prompt-cache tokens per provider and model: ``cached_input_tokens`` (read from the provider's cache) and
#: ``cache_write_tokens`` (written to it, billed at the cache-write rate), sums that are 0 when unknown; both
#: are part of the calls' input tokens. Only groups with some cache tokens; ordered by provider, model (nulls
#: first). Its own scan of the calls (the local store reads a partial index holding only the calls with cache
#: tokens, and skips it when no matching run has any), read by the Usage and Cost views.
CACHE_TOKENS: Final[Spec] = (
    ("provider", "str"), ("model", "str"), ("calls", "int"), ("cached_input_tokens", "int"),
    ("cache_write_tokens", "int"),
)
#: Cost of runs per bucket of the run's start (sums of the runs' cost_usd, call_count and
#: unpriced_call_count: cheap on any store, as agent_runs is ~10x smaller than api_calls); ordered by bucket.
COST_OVER_TIME: Final[Spec] = (
    ("bucket", "time"), ("runs", "int"), ("calls", "int"), ("cost_usd", "float"), ("unpriced_calls", "int"),
)
#: Cost per provider and model; ordered by cost_usd descending, provider, model (nulls first).
COST_BY_MODEL: Final[Spec] = (
    ("provider", "str"), ("model", "str"), ("calls", "int"), ("cost_usd", "float"), ("unpriced_calls", "int"),
)
#: Cost per provider; ordered by cost_usd descending, provider.
COST_BY_PROVIDER: Final[Spec] = (
    ("provider", "str"), ("calls", "int"), ("cost_usd", "float"), ("unpriced_calls", "int"),
)
#: Cost of runs per agent (agent may be null), from agent_runs like :data:`COST_OVER_TIME`; ordered by
#: cost_usd descending, agent (nulls first).
COST_BY_AGENT: Final[Spec] = (
    ("agent", "str"), ("runs", "int"), ("calls", "int"), ("cost_usd", "float"), ("unpriced_calls", "int"),
)
#: The ``limit`` costliest runs (runs with null cost excluded); ordered by cost_usd descending, run_id.
EXPENSIVE_RUNS: Final[Spec] = (*_RUN_ROW, ("unpriced_call_count", "int"))
#: Calls without a price, grouped by provider, operation and model; ordered by calls descending,
#: provider, operation, model (nulls first). ``last_seen`` is the latest call's started_at.
UNPRICED_CALLS: Final[Spec] = (
    ("provider", "str"), ("operation", "str"), ("model", "str"), ("calls", "int"), ("total_tokens", "int"),
    ("last_seen", "time"),
)
#: API calls grouped by provider, operation, model and priced, with every measure the call views need:
#: sources may compute :meth:`Source.calls_by_provider`, ``tokens_by_model``, ``cost_by_model``,
#: ``cost_by_provider`` and ``unpriced_calls`` from this one aggregate (one scan of api_calls) with the
#: functions of :mod:`agentmeter.queries.derive`. Order unspecified.
CALLS_SUMMARY: Final[Spec] = (
    ("provider", "str"), ("operation", "str"), ("model", "str"), ("priced", "bool"), ("calls", "int"),
    ("errors", "int"), ("input_tokens", "int"), ("output_tokens", "int"), ("total_tokens", "int"),
    ("cost_usd", "float"), ("last_seen", "time"),
)
#: Runs found by :meth:`Source.search_runs`; ordered as :data:`RUN_ORDERS` says (default ``newest``:
#: started_at descending, run_id descending). ``tags`` is JSON text (a list; null when absent).
RUN_SEARCH: Final[Spec] = (*_RUN_ROW, ("error_type", "str"), ("session_id", "str"), ("user_id", "str"),
                           ("version", "str"), ("tags", "json"))
#: The one run of :meth:`Source.run_detail`. ``tags``, ``metadata`` and the captured ``inputs`` and
#: ``output`` are JSON text (kind ``json``: keys sorted, null when absent).
RUN_SUMMARY: Final[Spec] = (
    ("run_id", "str"), ("parent_run_id", "str"), ("name", "str"), ("agent", "str"), ("session_id", "str"),
    ("user_id", "str"), ("version", "str"), ("status", "str"),
    ("error_type", "str"), ("error_message", "str"), ("started_at", "time"), ("ended_at", "time"),
    ("duration_ms", "float"), ("step_count", "int"), ("call_count", "int"), ("input_tokens", "Int"),
    ("output_tokens", "Int"), ("total_tokens", "Int"), ("cost_usd", "float"), ("unpriced_call_count", "int"),
    ("tags", "json"), ("metadata", "json"), ("inputs", "json"), ("output", "json"), ("truncated", "bool"),
)
#: The run's steps; ordered by started_at, step_id.
RUN_STEPS: Final[Spec] = (
    ("step_id", "str"), ("parent_step_id", "str"), ("name", "str"), ("kind", "str"), ("status", "str"),
    ("error_type", "str"), ("error_message", "str"), ("started_at", "time"), ("ended_at", "time"),
    ("duration_ms", "float"), ("call_count", "int"), ("total_tokens", "Int"), ("cost_usd", "float"),
    ("metadata", "json"), ("inputs", "json"), ("output", "json"), ("truncated", "bool"),
)
#: The run's API calls; ordered by started_at, call_id.
RUN_CALLS: Final[Spec] = (
    ("call_id", "str"), ("step_id", "str"), ("provider", "str"), ("operation", "str"), ("model", "str"),
    ("status", "str"), ("error_type", "str"), ("error_message", "str"), ("http_status", "Int"),
    ("started_at", "time"), ("ended_at", "time"), ("duration_ms", "float"), ("input_tokens", "Int"),
    ("output_tokens", "Int"), ("total_tokens", "Int"), ("cost_usd", "float"), ("priced", "bool"),
    ("metadata", "json"),
)
#: The scores of one run (the stored one per name and source: the latest given); ordered by name, source.
#: ``value`` is the number of a numeric score, 1 or 0 for a boolean one; ``label`` a categorical one's value.
RUN_SCORES: Final[Spec] = (
    ("name", "str"), ("source", "str"), ("data_type", "str"), ("value", "float"), ("label", "str"),
    ("comment", "str"), ("scored_at", "time"),
)
#: The scores of the runs matching the filters, each with its run's start (the time the Scores view
#: buckets by); ordered by started_at, run_id, name, source.
SCORES: Final[Spec] = (
    ("run_id", "str"), ("started_at", "time"), ("name", "str"), ("source", "str"), ("data_type", "str"),
    ("value", "float"), ("label", "str"),
)
#: Agents for the filter (null agent excluded), unfiltered; ordered by agent.
AGENTS: Final[Spec] = (("agent", "str"), ("runs", "int"), ("last_seen", "time"))

#: method name -> column spec, for sources' tests.
FRAMES: Final[Mapping[str, Spec]] = {
    "kpis": KPIS, "agent_kpis": AGENT_KPIS, "status_over_time": STATUS_OVER_TIME,
    "latency_over_time": LATENCY_OVER_TIME,
    "step_latency": STEP_LATENCY, "api_latency": API_LATENCY, "step_errors": STEP_ERRORS,
    "call_errors": CALL_ERRORS, "slowest_runs": SLOWEST_RUNS,
    "recent_failures": RECENT_FAILURES, "runs_per_agent": RUNS_PER_AGENT,
    "calls_by_provider": CALLS_BY_PROVIDER, "tokens_by_model": TOKENS_BY_MODEL, "cache_tokens": CACHE_TOKENS,
    "cost_over_time": COST_OVER_TIME, "cost_by_model": COST_BY_MODEL, "cost_by_provider": COST_BY_PROVIDER,
    "cost_by_agent": COST_BY_AGENT, "expensive_runs": EXPENSIVE_RUNS, "unpriced_calls": UNPRICED_CALLS,
    "search_runs": RUN_SEARCH, "agents": AGENTS,
}

#: the fields of one run, as every source reads them (the rows :mod:`agentmeter.queries.rollups` groups)
DIMENSION_FIELDS: Final = ("run_id", "parent_run_id", "name", "agent", "session_id", "user_id", "version",
                           "status", "started_at", "duration_ms", "call_count", "input_tokens",
                           "output_tokens", "total_tokens", "cost_usd", "unpriced_call_count")
