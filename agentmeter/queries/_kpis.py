"""The headline numbers (:data:`~agentmeter.queries.base.KPIS`): one definition for every source and for
``agentmeter report``.

Every KPI is a count or a sum over the runs that match the filters (cheap on any store: ``agent_runs`` is
much smaller than ``api_calls``), a ratio of two of them, or a run-duration percentile. The SQL sources
select :func:`select_list` (written in their :class:`~agentmeter.queries._dialect.Dialect`), MongoDB's
frames compute the same counts and sums in pandas from :data:`STATUS_COUNTS` and :data:`SUMS`, and all of
them finish a row with :func:`finish`. Imports no pandas, so the report works with a bare install.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ._dialect import SQLITE, Dialect
from .base import Filters

__all__ = [
    "MEASURED", "RATES", "SELECTED", "SPAN", "STATUS_COUNTS", "SUMS", "finish", "select_list", "sqlite_query",
]

#: KPI -> the run status it counts
STATUS_COUNTS: Final = (("success_runs", "success"), ("error_runs", "error"), ("cancelled_runs", "cancelled"))
#: KPI -> the ``agent_runs`` column it sums (0 when nothing is known)
SUMS: Final = (
    ("steps", "step_count"), ("calls", "call_count"), ("error_steps", "error_step_count"),
    ("error_calls", "error_call_count"), ("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
    ("total_tokens", "total_tokens"), ("cost_usd", "cost_usd"), ("unpriced_calls", "unpriced_call_count"),
)
#: KPI -> (numerator, denominator): a fraction 0..1, None when the denominator is 0
RATES: Final = (
    ("success_rate", "success_runs", "runs"), ("error_rate", "error_runs", "runs"),
    ("step_error_rate", "error_steps", "steps"), ("call_error_rate", "error_calls", "calls"),
)
#: the measured KPIs, in the order of :func:`select_list`
MEASURED: Final = ("runs", *(k for k, _ in STATUS_COUNTS), *(k for k, _ in SUMS))
#: the percentiles of the run duration, as KPI -> q
PERCENTILES: Final = (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99))


#: the first and last run start of the runs measured (null when there is none)
SPAN: Final = ("first_started_at", "last_started_at")


def select_list(d: Dialect) -> str:
    """The SQL that measures :data:`MEASURED` and then :data:`SPAN` over ``agent_runs`` rows (no
    percentiles)."""
    parts = ["COUNT(*)"]
    parts += [d.count_if.format(f"status = '{status}'") for _, status in STATUS_COUNTS]
    parts += [d.total.format(column) for _, column in SUMS]
    parts += ["MIN(started_at)", "MAX(started_at)"]
    return ", ".join(parts)


#: how many values :func:`select_list` selects
SELECTED: Final = len(MEASURED) + len(SPAN)


def finish(selected: Sequence[Any], percentiles: Sequence[float | None]) -> dict[str, Any]:
    """The KPI row from the values :func:`select_list` selects (:data:`MEASURED`, in order, None counting
    as 0; then :data:`SPAN`) and the p50, p95 and p99 run durations."""
    measured, span = selected[: len(MEASURED)], selected[len(MEASURED):]
    row: dict[str, Any] = dict(zip(SPAN, list(span) or [None, None], strict=True))
    for name, value in zip(MEASURED, measured, strict=True):
        row[name] = (float(value or 0) if name == "cost_usd" else int(value or 0))
    for name, num, den in RATES:
        row[name] = row[num] / row[den] if row[den] else None
    for (name, _), value in zip(PERCENTILES, percentiles, strict=True):
        row[name] = None if value is None else float(value)
    return row


def sqlite_query(f: Filters, by_agent: bool = False, durations: str = "group_concat(duration_ms)",
                 ) -> tuple[str, list[Any]]:
    """The KPI query of the local store: :func:`select_list` and then ``durations``, by default the
    durations as one ``group_concat`` (PERCENTILE_CONT is computed by the caller; the local source selects
    them as integer microseconds, see :data:`agentmeter.queries.local.MICROS`). With ``by_agent`` one row
    per agent, the agent first, ordered by agent (null first)."""
    where, params = SQLITE.where(f, SQLITE.runs)
    key = "agent, " if by_agent else ""
    group = " GROUP BY agent ORDER BY agent" if by_agent else ""
    return f"SELECT {key}{select_list(SQLITE)}, {durations} FROM {SQLITE.runs}{where}{group}", params
