"""The dashboard's query interface: :class:`Filters` in, pandas DataFrames with fixed columns out.

Every view of the dashboard asks a :class:`Source` for exactly what it shows, one method per panel. The
local SQLite store, MongoDB and Snowflake each implement :class:`Source`; all of them return frames with
the columns (names, order and kinds) declared here as constants, so sources are interchangeable and tests
can compare them frame by frame. :func:`conform` puts any frame into that shape.

Meaning of the filters (the same in every source):

* ``since`` / ``until``: ISO-8601 UTC strings (``2026-01-01T00:00:00.000000Z``; a shorter ISO prefix such
  as ``2026-01-01`` is accepted and padded, and so is a time with an offset such as ``+00:00``, which is
  converted to UTC) or datetimes; a row is kept when ``since <= started_at < until``, each table using its
  **own** ``started_at`` (runs their start, steps and calls theirs).
* ``agents``: the run's agent (``agent`` is denormalized onto steps and calls); empty = all agents.
* ``statuses``: the **run's** status (``success``, ``error``, ``cancelled``); steps and calls are kept when
  their run has one of these statuses. Empty = all.
* ``models``: runs that made at least one API call to one of these models; steps are kept when their run
  is, calls when their **own** model is one of them (so call views show only those models). Empty = all.
* ``tags``: runs carrying at least one of these tags; steps and calls when their run does. Empty = all.
* ``sessions`` / ``users`` / ``versions`` / ``error_types``: the run's ``session_id`` / ``user_id`` /
  ``version`` / ``error_type`` is one of these; steps and calls when their run's is. Empty = all.
* ``min_duration_ms`` / ``min_cost_usd``: runs at least this long / costly (a run with an unknown duration or
  cost is left out); steps and calls of those runs. None = no bound.

Every value is bound as a query parameter, never formatted into SQL or a query document. Sums of tokens
and cost are ``0`` when nothing is known (never null) in aggregates; per-row values stay null when unknown.
Percentiles are PERCENTILE_CONT (linear interpolation, :func:`agentmeter._percentile.percentile_cont`).
Time buckets are the UTC start of the minute, hour or day, as tz-aware pandas timestamps.

For implementers (see :mod:`agentmeter.queries.local` as the reference; the tests compare every source's
frames with it): pass the result through :func:`conform`; ``ORDER BY`` as each constant says, with NULL
keys **first** in ascending order (Snowflake: ``NULLS FIRST``) and NaN values last in descending order;
``COALESCE`` sums to 0; percentiles with ``PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY duration_ms)`` over
rows whose duration is not null; a status filter on steps or calls is a semi-join
``run_id IN (SELECT run_id FROM agent_runs WHERE status IN (...))``; ``errors`` counts rows whose own
status is ``error``; ``unpriced_calls`` counts calls with ``priced`` false.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ._conform import conform
from ._specs import (
    AGENT_KPIS,
    AGENTS,
    API_LATENCY,
    CACHE_TOKENS,
    CALL_ERRORS,
    CALLS_BY_PROVIDER,
    CALLS_SUMMARY,
    COST_BY_AGENT,
    COST_BY_MODEL,
    COST_BY_PROVIDER,
    COST_OVER_TIME,
    DIMENSION_FIELDS,
    EXPENSIVE_RUNS,
    FRAMES,
    KPIS,
    LATENCY_OVER_TIME,
    RECENT_FAILURES,
    RUN_CALLS,
    RUN_SCORES,
    RUN_SEARCH,
    RUN_STEPS,
    RUN_SUMMARY,
    RUNS_PER_AGENT,
    SCORES,
    SLOWEST_RUNS,
    STATUS_OVER_TIME,
    STEP_ERRORS,
    STEP_LATENCY,
    TOKENS_BY_MODEL,
    UNPRICED_CALLS,
    Spec,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AGENTS",
    "AGENT_KPIS",
    "API_LATENCY",
    "BUCKETS",
    "CACHE_TOKENS",
    "CALLS_BY_PROVIDER",
    "CALLS_SUMMARY",
    "CALL_ERRORS",
    "COST_BY_AGENT",
    "COST_BY_MODEL",
    "COST_BY_PROVIDER",
    "COST_OVER_TIME",
    "EXPENSIVE_RUNS",
    "FILTER_VALUES",
    "FILTER_VALUES_LIMIT",
    "FRAMES",
    "KPIS",
    "LATENCY_OVER_TIME",
    "RECENT_FAILURES",
    "RUNS_PER_AGENT",
    "RUN_CALLS",
    "RUN_DIMENSIONS",
    "RUN_MINIMUMS",
    "RUN_ORDERS",
    "RUN_SCORES",
    "RUN_SEARCH",
    "RUN_STEPS",
    "RUN_SUMMARY",
    "SCORES",
    "SLOWEST_RUNS",
    "STATUSES",
    "STATUS_OVER_TIME",
    "STEP_ERRORS",
    "STEP_LATENCY",
    "TOKENS_BY_MODEL",
    "UNPRICED_CALLS",
    "Filters",
    "RunDetail",
    "Source",
    "SourceUnavailable",
    "Spec",
    "check_bucket",
    "check_filter_name",
    "check_limit",
    "check_order",
    "conform",
    "flat",
    "iso_bound",
    "one_line",
]

#: Run statuses a filter may name.
STATUSES: Final = ("success", "error", "cancelled")
#: :class:`Filters` field -> the agent_runs column it matches exactly
RUN_DIMENSIONS: Final[Mapping[str, str]] = {"sessions": "session_id", "users": "user_id", "versions": "version",
                                             "error_types": "error_type"}
#: :class:`Filters` field -> the agent_runs column it bounds from below (``column >= value``)
RUN_MINIMUMS: Final[Mapping[str, str]] = {"min_duration_ms": "duration_ms", "min_cost_usd": "cost_usd"}
#: what :meth:`Source.filter_values` lists: a filter's name -> what its values are
FILTER_VALUES: Final = ("models", "tags", "sessions", "users", "versions", "error_types")
#: values listed at most per filter (the most recent first, then sorted)
FILTER_VALUES_LIMIT: Final = 500
#: How :meth:`Source.search_runs` may order runs: name -> (key, ascending) pairs, null keys always last.
#: ``status`` ranks error, then cancelled, then success; ``model`` is the run's first model (the smallest
#: model name among its calls), ``tag`` its first tag (as given); ties go newest first.
RUN_ORDERS: Final[Mapping[str, tuple[tuple[str, bool], ...]]] = {
    "newest": (("started_at", False), ("run_id", False)),
    "oldest": (("started_at", True), ("run_id", True)),
    "slowest": (("duration_ms", False), ("run_id", False)),
    "fastest": (("duration_ms", True), ("run_id", False)),
    "costliest": (("cost_usd", False), ("run_id", False)),
    "status": (("status_rank", True), ("started_at", False), ("run_id", False)),
    "error_type": (("error_type", True), ("started_at", False), ("run_id", False)),
    "model": (("first_model", True), ("started_at", False), ("run_id", False)),
    "tag": (("first_tag", True), ("started_at", False), ("run_id", False)),
    "session": (("session_id", True), ("started_at", False), ("run_id", False)),
    "user": (("user_id", True), ("started_at", False), ("run_id", False)),
    "version": (("version", True), ("started_at", False), ("run_id", False)),
}
#: Time bucket sizes of the ``*_over_time`` methods.
BUCKETS: Final = ("minute", "hour", "day")

_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}(:\d{2}(:\d{2}(\.\d{1,6})?)?)?)?Z?")
_ISO_OFFSET = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?[+-]\d{2}:\d{2}")


def iso_bound(value: str | datetime | None) -> str | None:
    """A time bound in the store's fixed-width form ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC).

    Accepts a tz-aware datetime (converted to UTC), a naive datetime (taken as UTC), an ISO string
    prefix (``2026-01-01``, ``2026-01-01T10:00``...) or an ISO time with an offset
    (``datetime.isoformat()``: ``2026-01-01T10:00:00+00:00``, converted to UTC). Raises ``ValueError`` for
    anything else.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    text = str(value).strip()
    if _ISO_OFFSET.fullmatch(text):
        return iso_bound(datetime.fromisoformat(text))
    if not _ISO.fullmatch(text):
        raise ValueError(f"time bound must be an ISO-8601 UTC time like 2026-01-01T00:00:00Z, got {value!r}")
    text = text.rstrip("Z")
    date, _, clock = text.partition("T")
    hms, _, frac = clock.partition(".")
    parts = (hms.split(":") if hms else []) + ["00"] * 3
    return f"{date}T{parts[0]}:{parts[1]}:{parts[2]}.{frac.ljust(6, '0')}Z"


@dataclass(frozen=True)
class Filters:
    """What every view is filtered by (see the module docstring for the exact meaning).

    Construction normalizes: bounds become fixed-width ISO strings, agents and statuses sorted tuples
    without duplicates. Raises ``ValueError`` for a malformed time bound or an unknown status; any agent
    text is accepted (it is only ever bound as a parameter).
    """

    since: str | None = None
    until: str | None = None
    agents: tuple[str, ...] = field(default=())
    statuses: tuple[str, ...] = field(default=())
    models: tuple[str, ...] = field(default=())
    tags: tuple[str, ...] = field(default=())
    sessions: tuple[str, ...] = field(default=())
    users: tuple[str, ...] = field(default=())
    versions: tuple[str, ...] = field(default=())
    error_types: tuple[str, ...] = field(default=())
    min_duration_ms: float | None = None
    min_cost_usd: float | None = None

    def __post_init__(self) -> None:
        for name in RUN_MINIMUMS:
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
                    raise ValueError(f"{name} must be a number >= 0 or None, got {value!r}")
                object.__setattr__(self, name, float(value))
        object.__setattr__(self, "since", iso_bound(self.since))
        object.__setattr__(self, "until", iso_bound(self.until))
        for name in ("agents", *RUN_DIMENSIONS, "models", "tags"):
            values = getattr(self, name)
            if isinstance(values, str):
                raise ValueError(f"{name} must be a list of strings, not one string: {values!r}")
            object.__setattr__(self, name, tuple(sorted({str(v) for v in values})))
        statuses = tuple(sorted({str(s) for s in self.statuses}))
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            raise ValueError(f"statuses must be among {', '.join(STATUSES)}; got {unknown}")
        object.__setattr__(self, "statuses", statuses)


class RunDetail(NamedTuple):
    """One run for the run explorer: ``run`` has one row (:data:`RUN_SUMMARY`), ``steps`` :data:`RUN_STEPS`,
    ``calls`` :data:`RUN_CALLS`."""

    run: pd.DataFrame
    steps: pd.DataFrame
    calls: pd.DataFrame


class SourceUnavailable(Exception):
    """The source cannot be reached or read. The message is one line; ``hint`` says what the user should
    check; ``details`` is the driver's whole story (for an expander), when it has more to say."""

    def __init__(self, message: str, hint: str = "", details: str = "") -> None:
        super().__init__(message)
        self.hint = hint
        self.details = details


def flat(exc: BaseException, limit: int = 300) -> str:
    """The message on one line (lines joined with spaces), cut at ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, cut before a driver's long tail (pymongo's topology dump,
    its timeouts) and at ``limit`` characters."""
    text = (str(exc).strip().splitlines() or [""])[0]
    for tail in (", Timeout:", " (configured timeouts", ", Topology Description"):
        text = text.split(tail, 1)[0]
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class Source(ABC):
    """Where the dashboard reads runs from. Every method returns a fresh DataFrame with exactly the
    columns of its spec constant (see :data:`FRAMES`), in the documented order; an empty store gives
    empty frames with those columns (and a KPI row of zeros). Methods raise :class:`SourceUnavailable`
    when the store cannot be reached; they never modify the store.
    """

    #: ``local``, ``mongodb`` or ``snowflake``
    kind: str = ""

    @abstractmethod
    def describe(self) -> str:
        """Where the data comes from, for the page header (no secrets). Never raises."""

    @abstractmethod
    def check(self) -> None:
        """Connect and read once; raise :class:`SourceUnavailable` with a hint if that fails."""

    @abstractmethod
    def has_runs(self) -> bool:
        """True when the store holds at least one run (ignoring filters)."""

    @abstractmethod
    def agents(self) -> pd.DataFrame:
        """:data:`AGENTS`: every agent name, for the filter."""

    @abstractmethod
    def kpis(self, f: Filters) -> pd.DataFrame:
        """:data:`KPIS`: one row."""

    @abstractmethod
    def agent_kpis(self, f: Filters) -> pd.DataFrame:
        """:data:`AGENT_KPIS`: the KPIs of each agent."""

    @abstractmethod
    def status_over_time(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        """:data:`STATUS_OVER_TIME`."""

    @abstractmethod
    def latency_over_time(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        """:data:`LATENCY_OVER_TIME`."""

    @abstractmethod
    def step_latency(self, f: Filters) -> pd.DataFrame:
        """:data:`STEP_LATENCY`."""

    @abstractmethod
    def api_latency(self, f: Filters) -> pd.DataFrame:
        """:data:`API_LATENCY`."""

    @abstractmethod
    def step_errors(self, f: Filters) -> pd.DataFrame:
        """:data:`STEP_ERRORS`."""

    @abstractmethod
    def call_errors(self, f: Filters) -> pd.DataFrame:
        """:data:`CALL_ERRORS`."""

    @abstractmethod
    def slowest_runs(self, f: Filters, limit: int = 20) -> pd.DataFrame:
        """:data:`SLOWEST_RUNS`."""

    @abstractmethod
    def recent_failures(self, f: Filters, limit: int = 20) -> pd.DataFrame:
        """:data:`RECENT_FAILURES`."""

    @abstractmethod
    def runs_per_agent(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        """:data:`RUNS_PER_AGENT`."""

    @abstractmethod
    def calls_by_provider(self, f: Filters) -> pd.DataFrame:
        """:data:`CALLS_BY_PROVIDER`."""

    @abstractmethod
    def tokens_by_model(self, f: Filters) -> pd.DataFrame:
        """:data:`TOKENS_BY_MODEL`."""

    def cache_tokens(self, f: Filters) -> pd.DataFrame:
        """:data:`CACHE_TOKENS`. Sources of your own may leave it out (no cache figures are shown)."""
        return conform([], CACHE_TOKENS)

    @abstractmethod
    def cost_over_time(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        """:data:`COST_OVER_TIME`."""

    @abstractmethod
    def cost_by_model(self, f: Filters) -> pd.DataFrame:
        """:data:`COST_BY_MODEL`."""

    @abstractmethod
    def cost_by_provider(self, f: Filters) -> pd.DataFrame:
        """:data:`COST_BY_PROVIDER`."""

    @abstractmethod
    def cost_by_agent(self, f: Filters) -> pd.DataFrame:
        """:data:`COST_BY_AGENT`."""

    @abstractmethod
    def expensive_runs(self, f: Filters, limit: int = 20) -> pd.DataFrame:
        """:data:`EXPENSIVE_RUNS`."""

    @abstractmethod
    def unpriced_calls(self, f: Filters) -> pd.DataFrame:
        """:data:`UNPRICED_CALLS`."""

    @abstractmethod
    def search_runs(self, f: Filters, run_id_prefix: str = "", limit: int = 100,
                    order: str = "newest") -> pd.DataFrame:
        """:data:`RUN_SEARCH`: at most ``limit`` runs matching the filters whose run_id starts with
        ``run_id_prefix`` (compared as text, no wildcards), sorted by the store as ``order``
        (:data:`RUN_ORDERS`) says."""

    @abstractmethod
    def count_runs(self, f: Filters, run_id_prefix: str = "") -> int:
        """How many runs :meth:`search_runs` would find without a limit."""

    @abstractmethod
    def run_detail(self, run_id: str) -> RunDetail | None:
        """The run, its steps and its calls; None when no run has this id. Not filtered."""

    def filter_values(self, name: str) -> list[str]:
        """The values the filter ``name`` (one of :data:`FILTER_VALUES`) may pick, sorted: every model of a
        call, tag of a run, or session / user / version / error type of a run (nulls left out; at most
        :data:`FILTER_VALUES_LIMIT`: the most recently seen, or the first in order, as the store finds them
        fastest). Unfiltered. Sources of your own may leave it out
        (no values: the filter stays empty)."""
        check_filter_name(name)
        return []

    def dimension_runs(self, f: Filters) -> list[dict[str, Any]]:
        """One dict per run matching ``f`` with the fields of :data:`agentmeter.queries.rollups.DIMENSION_FIELDS`
        (``started_at`` an ISO string), for the rollups. Sources of your own may leave it out."""
        raise NotImplementedError(f"{type(self).__name__} has no rollups")

    def dimension_frame(self, f: Filters) -> pd.DataFrame:
        """:meth:`dimension_runs` as a frame with the columns of
        :data:`agentmeter.queries.rollups.DIMENSION_FIELDS` (object columns, None for null): what
        :func:`agentmeter.queries.rollups.rollup` groups fastest. Sources of your own may leave it out."""
        from ._rollup_frame import records_frame  # numpy, pandas: the dashboard's extra

        return records_frame(self.dimension_runs(f), DIMENSION_FIELDS)

    def latest_scores(self) -> list[tuple[str, float]]:
        """``(run_id, value)`` of the latest numeric or boolean score of each (run, name, source)."""
        raise NotImplementedError(f"{type(self).__name__} has no scores")

    def run_scores(self, run_id: str) -> pd.DataFrame:
        """:data:`RUN_SCORES` of the run ``run_id`` (empty when it has none). Sources of your own may leave it
        out (the run page then shows no scores)."""
        return conform([], RUN_SCORES)

    def scores(self, f: Filters) -> pd.DataFrame:
        """:data:`SCORES`: every score of the runs matching ``f``. Sources of your own may leave it out."""
        return conform([], SCORES)

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing to close
        """Release connections. Never raises."""


def check_filter_name(name: str) -> str:
    """``name`` when :meth:`Source.filter_values` lists it; raises ``ValueError`` otherwise."""
    if name not in FILTER_VALUES:
        raise ValueError(f"filter must be one of {', '.join(FILTER_VALUES)}; got {name!r}")
    return name


def check_bucket(bucket: str) -> str:
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}; got {bucket!r}")
    return bucket


def check_order(order: str) -> tuple[tuple[str, bool], ...]:
    """The sort keys of ``order``; raises ``ValueError`` for a name not in :data:`RUN_ORDERS`."""
    if order not in RUN_ORDERS:
        raise ValueError(f"order must be one of {', '.join(RUN_ORDERS)}; got {order!r}")
    return RUN_ORDERS[order]


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    return limit
