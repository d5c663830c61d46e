"""The local store's row writers for the fast path: each finished step and call of a frozen run written
out as the row of its table, as :func:`agentmeter.contract.step_row` and :func:`agentmeter.contract.call_row`
would make it, by functions generated once per sink from the tables' columns (no loop over columns, no
dict per row). A plain row carries, after its values, the key of its null pattern (which of its nullable
columns are null): ``SQLiteSink._upsert`` groups rows by it instead of by the types of every column.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from .. import _clock
from .._capture import Snapshot
from .._json import dumps_bytes  # .decode() written out: no Python call per value
from .._record import FinishedCall, FinishedRun, FinishedStep
from .._status import RUNNING
from ..contract import Price
from ..pricing import OVERRIDE

__all__ = ["NO_RATES", "ROLLUP", "calls_function", "rollup_function", "steps_function"]


#: a finished step's columns when it made no call and nothing of it was captured (most steps): written
#: straight from the frozen step, as :func:`agentmeter.contract.step_row` would make them. A column not
#: named here (a new one in the contract) sends every step through ``step_row``, so it still flows through.
_PLAIN_STEP = {
    "schema_version": "sv", "step_id": "s_step_id", "run_id": "s_run_id", "parent_step_id": "s_parent_step_id",
    "agent": "agent", "name": "s_name", "kind": "s_kind", "status": "s_status", "error_type": "s_error_type",
    "error_message": "s_error_message", "started_at": "iso(s_start_us)", "ended_at": "iso(s_end_us)",
    "duration_ms": "ms3(s_end_ns - s_start_ns)",
    "metadata": "('{}' if not m.value else dumps(m.value).decode())",  # "metadata or {}", then encoded
    "call_count": "0", "input_tokens": "None", "output_tokens": "None", "cached_input_tokens": "None",
    "cache_write_tokens": "None", "reasoning_tokens": "None", "total_tokens": "None", "cost_usd": "None",
    "inputs": "None", "output": "None", "truncated": "(1 if m.truncated else 0)",
}

#: a finished step's columns when it made calls (and nothing of it was captured): the plain ones, with the
#: call count and the sums of its call rows (``r``, see :func:`rollup_function`) in place of the nulls
_STEP_WITH_CALLS = {
    **_PLAIN_STEP, "call_count": "len(cs)", "input_tokens": "r[0]", "output_tokens": "r[1]",
    "cached_input_tokens": "r[2]", "cache_write_tokens": "r[3]", "reasoning_tokens": "r[4]",
    "total_tokens": "r[5]", "cost_usd": "r[6]",
}

#: the columns whose sums a run and a step carry, in the order of :func:`rollup_function`' result
ROLLUP = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens",
           "total_tokens", "cost_usd")


def _unpack(prefix: str, fields: tuple[str, ...]) -> str:
    """``s_step_id, s_run_id, ...,``: the targets of unpacking a frozen record into locals."""
    return "".join(f"{prefix}_{f}, " for f in fields).rstrip()


#: the plain step row's columns that may be null (the others are never): whether each is null is the key of
#: the row's null pattern, cheaper than the types of all its columns (``_upsert``); ``agent`` is the run's
_NULLABLE_KEY = ("agent is None, s_step_id is None, s_run_id is None, s_parent_step_id is None, s_name is None, "
                 "s_kind is None, s_status is None, s_error_type is None, s_error_message is None")

#: whether each of a step's sums (``r``, see :func:`rollup_function`) is null, after its other columns' key
_SUMS_KEY = ", ".join(f"r[{i}] is None" for i in range(len(ROLLUP)))

StepsFunction = Callable[[FinishedRun, tuple[FinishedStep, ...], Mapping[str | None, Any], bool, Any,
                          Callable[[FinishedStep], list[Any]], Callable[[list[list[Any]]], tuple[Any, ...]]],
                         list[list[Any]]]


def steps_function(names: list[str]) -> StepsFunction:
    """``steps(run, steps, call rows by step, sampled, schema_version, general, rollup)``: the rows of
    ``steps``, each finished one that captured nothing written out from :data:`_PLAIN_STEP` (or
    :data:`_STEP_WITH_CALLS`, its call rows summed by ``rollup``), the others (captured payloads, still open)
    made by ``general``."""
    if not names or any(n not in _PLAIN_STEP for n in names):
        return lambda run, steps, by_step, sampled, sv, general, rollup: [general(s) for s in steps]
    source = (
        "def steps(run, steps, by_step, sampled, sv, general, rollup):\n"
        "    agent = run.agent\n"
        "    out = []\n"
        "    for s in steps:\n"
        f"        {_unpack('s', FinishedStep._fields)} = s\n"  # one unpacking, not an attribute read per column
        "        m = s_metadata\n"
        "        if (s_end_ns is None or s_end_us is None or s_status == RUNNING\n"
        "                or m.__class__ is not Snapshot or (s_captured and sampled)):\n"
        "            out.append(general(s))\n"
        "            continue\n"
        "        cs = by_step.get(s_step_id)\n"
        "        if cs is None:  # the row, then the key of its null pattern (only these columns may be null)\n"
        f"            out.append([{', '.join(_PLAIN_STEP[n] for n in names)}, ({_NULLABLE_KEY})])\n"
        "        else:\n"
        "            r = rollup(cs)\n"
        f"            out.append([{', '.join(_STEP_WITH_CALLS[n] for n in names)},\n"
        f"                        ({_NULLABLE_KEY}, {_SUMS_KEY})])\n"
        "    return out\n"
    )
    namespace: dict[str, Any] = {"iso": _clock.iso_utc, "ms3": _clock.ms3, "dumps": dumps_bytes, "RUNNING": RUNNING,
                                 "Snapshot": Snapshot}
    exec(compile(source, "<agentmeter step rows>", "exec"), namespace)
    return cast(StepsFunction, namespace["steps"])


#: a finished call's columns, written straight from the frozen call as :func:`agentmeter.contract.call_row`
#: would make them (``p``: its price; ``mv``: its metadata, a dict). A column not named here sends every
#: call through ``call_row``.
_PLAIN_CALL = {
    "schema_version": "sv", "call_id": "c_call_id", "run_id": "c_run_id", "step_id": "c_step_id",
    "agent": "agent", "provider": "c_provider", "operation": "c_operation", "model": "c_model",
    "status": "c_status", "error_type": "c_error_type", "error_message": "c_error_message",
    "http_status": "c_http_status", "retries": "c_retries", "started_at": "started", "ended_at": "iso(c_end_us)",
    "duration_ms": "ms3(c_end_ns - c_start_ns)",
    "time_to_first_token_ms": "(None if c_first_token_ns is None else ms3(c_first_token_ns - c_start_ns))",
    "request_bytes": "c_request_bytes", "response_bytes": "c_response_bytes", "input_tokens": "c_input_tokens",
    "output_tokens": "c_output_tokens", "cached_input_tokens": "c_cached_input_tokens",
    "cache_write_tokens": "c_cache_write_tokens", "reasoning_tokens": "c_reasoning_tokens",
    "total_tokens": ("(None if c_input_tokens is None and c_output_tokens is None "
                     "else (c_input_tokens or 0) + (c_output_tokens or 0))"),
    "units": "c_units", "cost_usd": "p.cost_usd", "priced": "(1 if p.priced else 0)", "price_source": "p.source",
    "metadata": "('{}' if not mv else dumps(mv).decode())",  # "metadata or {}", then encoded
}

#: whether each column of a plain call row that may be null is: the key of the row's null pattern (see
#: ``_upsert``; ``time_to_first_token_ms`` and ``total_tokens`` follow from the tokens and the first token)
_CALL_NULLABLE_KEY = (
    "agent is None, c_call_id is None, c_run_id is None, c_step_id is None, c_provider is None, "
    "c_operation is None, c_model is None, c_status is None, c_error_type is None, c_error_message is None, "
    "c_http_status is None, c_retries is None, c_first_token_ns is None, c_request_bytes is None, "
    "c_response_bytes is None, c_input_tokens is None, c_output_tokens is None, c_cached_input_tokens is None, "
    "c_cache_write_tokens is None, c_reasoning_tokens is None, c_units is None, p.cost_usd is None, "
    "p.source is None"
)

CallsFunction = Callable[[FinishedRun, list[FinishedCall], Callable[[Mapping[str, Any]], Any], Any,
                          Callable[[FinishedCall], list[Any]], Mapping[tuple[Any, Any, Any], tuple[float, ...]]],
                         list[list[Any]]]


class _NoRates(dict[tuple[Any, Any, Any], tuple[float, ...]]):
    """The token rates of a pricer that has none (see :class:`agentmeter.pricing.TokenRates`): every call
    asks the pricer."""

    def __missing__(self, name: tuple[Any, Any, Any]) -> tuple[float, ...]:
        return ()


NO_RATES: Mapping[tuple[Any, Any, Any], tuple[float, ...]] = _NoRates()


def calls_function(names: list[str]) -> CallsFunction:
    """``calls(run, calls, pricer, schema_version, general, rates)``: the rows of ``calls``, each finished one
    whose metadata was not truncated written out from :data:`_PLAIN_CALL`, the others made by ``general``.
    A call whose output tokens are known and whose name has token ``rates``
    (:class:`agentmeter.pricing.TokenRates`) is priced from them as the pricer would price it; the others
    by the pricer, from the columns it reads (no row dict is built)."""
    if not names or any(n not in _PLAIN_CALL for n in names):
        return lambda run, calls, pricer, sv, general, rates: [general(c) for c in calls]
    source = (
        "def calls(run, calls, pricer, sv, general, rates):\n"
        "    agent = run.agent\n"
        "    out = []\n"
        "    for c in calls:\n"
        f"        {_unpack('c', FinishedCall._fields)} = c\n"
        "        m = c_metadata\n"
        "        if (c_end_ns is None or c_end_us is None or c_status == RUNNING or m.__class__ is not Snapshot\n"
        "                or m.truncated or m.value.__class__ is not dict):\n"
        "            out.append(general(c))\n"
        "            continue\n"
        "        mv = m.value\n"
        "        started = iso(c_start_us)\n"
        # the override's cost written out (pricing._override_cost: the same operations in the same order)
        "        if c_output_tokens is not None and (rt := rates[c_provider, c_model, c_operation]):\n"
        "            ti = c_input_tokens or 0\n"
        "            ca = min(c_cached_input_tokens or 0, ti)\n"
        "            wr = min(c_cache_write_tokens or 0, ti - ca)\n"
        "            p = new_price(Price, (round((0.0 + ((ti - ca - wr) * rt[0] + ca * rt[1] + wr * rt[2])\n"
        "                                         + (c_output_tokens or 0) * rt[3]) / 1e6, 10), True, OVERRIDE))\n"
        "        else:\n"
        "            p = pricer({'provider': c_provider, 'operation': c_operation, 'model': c_model,\n"
        "                        'status': c_status, 'http_status': c_http_status, 'started_at': started,\n"
        "                        'input_tokens': c_input_tokens, 'output_tokens': c_output_tokens,\n"
        "                        'cached_input_tokens': c_cached_input_tokens,\n"
        "                        'cache_write_tokens': c_cache_write_tokens, 'units': c_units, 'metadata': mv})\n"
        "        cost = p[0]\n"
        "        if cost is not None and cost - cost != 0:  # NaN or infinity: SQLite would store it as NULL\n"
        "            raise ValueError('non-finite cost')\n"
        f"        out.append([{', '.join(_PLAIN_CALL[n] for n in names)}, ({_CALL_NULLABLE_KEY})])\n"
        "    return out\n"
    )
    namespace: dict[str, Any] = {"iso": _clock.iso_utc, "ms3": _clock.ms3, "dumps": dumps_bytes, "RUNNING": RUNNING,
                                 "Snapshot": Snapshot, "new_price": tuple.__new__, "Price": Price,
                                 "OVERRIDE": OVERRIDE}
    exec(compile(source, "<agentmeter call rows>", "exec"), namespace)
    return cast(CallsFunction, namespace["calls"])


def rollup_function(names: list[str]) -> Callable[[list[list[Any]]], tuple[Any, ...]]:
    """``rollup(call rows)``: the sums :func:`agentmeter.contract.run_parts` makes of call rows (each token
    column summed over the known values, null when none is; the cost of the priced calls rounded to 10
    digits, null when none is priced), from rows of the api_calls table in ``names`` order. Raises
    ``ValueError`` on a cost that is not finite (SQLite would store NULL: the run takes the document path,
    which stores what it always stored)."""
    at = [names.index(n) for n in ROLLUP]
    priced = names.index("priced")
    tokens, cost = at[:-1], at[-1]
    i0, i1, i2, i3, i4, i5 = tokens

    def rollup(rows: list[list[Any]]) -> tuple[Any, ...]:
        if len(rows) == 1:  # most steps: one call (the same sums: sum of one int is that int)
            r = rows[0]
            c = r[cost]
            if not r[priced] or c is None:
                return r[tokens[0]], r[tokens[1]], r[tokens[2]], r[tokens[3]], r[tokens[4]], r[tokens[5]], None
            c = round(0.0 + c if c.__class__ is float else sum([c]), 10)  # sum([c]) of a float: 0.0 + c
            if c - c != 0:
                raise ValueError("non-finite cost")
            return r[tokens[0]], r[tokens[1]], r[tokens[2]], r[tokens[3]], r[tokens[4]], r[tokens[5]], c
        # one pass over the rows (not a comprehension per column: each is a function call in Python 3.11);
        # a token sum is the known values added in order from 0, as sum() adds them (ints: exact)
        s0 = s1 = s2 = s3 = s4 = s5 = None
        costs = []
        for r in rows:
            v = r[i0]
            if v is not None:
                s0 = (0 if s0 is None else s0) + v
            v = r[i1]
            if v is not None:
                s1 = (0 if s1 is None else s1) + v
            v = r[i2]
            if v is not None:
                s2 = (0 if s2 is None else s2) + v
            v = r[i3]
            if v is not None:
                s3 = (0 if s3 is None else s3) + v
            v = r[i4]
            if v is not None:
                s4 = (0 if s4 is None else s4) + v
            v = r[i5]
            if v is not None:
                s5 = (0 if s5 is None else s5) + v
            if r[priced] and r[cost] is not None:
                costs.append(r[cost])
        total = round(sum(costs), 10) if costs else None  # sum(): the costs' float sum, as run_parts makes it
        if total is not None and total - total != 0:  # a sum past a float's range: the document path
            raise ValueError("non-finite cost")
        return s0, s1, s2, s3, s4, s5, total

    return rollup
