"""The Run explorer: the runs that match the filters (their true count, sorted and filtered by the store),
and one run in detail: who and what it was for (session, user, version, tags, metadata), its scores, its
captured input and output, its errors with the step they happened in, and its timeline.

User text goes only to tables, code blocks and option lists (shown as text), or through
:func:`~.format.literal` into markdown.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pandas as pd
import streamlit as st

from ..queries.base import Filters, Source
from . import charts
from .format import fmt_count, fmt_ms, fmt_usd, is_missing, literal
from .sections import lazy_tabs
from .table import table as _table
from .views import CAPTURE_SHOWN, _chart, cached, cached_values

__all__ = ["OPEN_RUN", "RUN_LIST_LIMIT", "RUN_SORTS", "run_explorer"]

#: session_state key: a run id to open (set by a click on a run in any table, see :mod:`.drill`)
OPEN_RUN = "open_run"


#: the Run explorer's sort choices: label -> the order name of :meth:`Source.search_runs`
RUN_SORTS = {"Newest first": "newest", "Oldest first": "oldest", "Slowest first": "slowest",
             "Fastest first": "fastest", "Most expensive first": "costliest", "Errors first": "status",
             "By error type": "error_type", "By model": "model", "By tag": "tag", "By session": "session",
             "By user": "user", "By version": "version"}
#: runs listed at most
RUN_LIST_LIMIT = 200


def _capture(label: str, value: Any) -> bool:
    """A captured value (JSON text) as a code block: a string as it is, anything else as indented JSON; cut
    to ``CAPTURE_SHOWN`` characters. False when there is nothing to show."""
    if is_missing(value):
        return False
    parsed = json.loads(value)
    text = parsed if isinstance(parsed, str) else json.dumps(parsed, indent=2, ensure_ascii=False)
    if len(text) > CAPTURE_SHOWN:
        text = text[:CAPTURE_SHOWN] + f"\n... ({len(text) - CAPTURE_SHOWN:,} more characters not shown)"
    st.caption(label)
    st.code(text, language=None if isinstance(parsed, str) else "json", wrap_lines=True)
    return True


def _about(run: pd.Series) -> pd.DataFrame:
    """The run's identity, tags and metadata as key / value rows (values as text)."""
    def when(t: Any) -> str | None:
        return None if is_missing(t) else f"{t:%Y-%m-%d %H:%M:%S.%f}"

    rows = [("Name", run["name"]), ("Agent", run["agent"]), ("Run id", run["run_id"]),
            ("Parent run", run["parent_run_id"]), ("Session", run["session_id"]), ("User", run["user_id"]),
            ("Version", run["version"]), ("Started (UTC)", when(run["started_at"])),
            ("Ended (UTC)", when(run["ended_at"]))]
    tags = json.loads(run["tags"]) if not is_missing(run["tags"]) else []
    rows.append(("Tags", ", ".join(str(t) for t in tags) if tags else "(none)"))
    metadata = json.loads(run["metadata"]) if not is_missing(run["metadata"]) else {}
    for key, value in (metadata.items() if isinstance(metadata, dict) else [("metadata", metadata)]):
        rows.append((f"metadata · {key}", value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)))
    return pd.DataFrame([(k, None if v is None or is_missing(v) else str(v)) for k, v in rows],
                        columns=["key", "value"])


def _failures(detail_steps: pd.DataFrame, detail_calls: pd.DataFrame) -> pd.DataFrame:
    """Every failed step and call, each with the step it happened in."""
    names = dict(zip(detail_steps["step_id"], detail_steps["name"], strict=True))
    rows = []
    for s in detail_steps[detail_steps["error_type"].notna()].itertuples():
        rows.append({"where": "step", "step": s.name, "error_type": s.error_type, "error_message": s.error_message})
    for c in detail_calls[detail_calls["error_type"].notna()].itertuples():
        what = f"call {c.provider} {c.operation}" + (f" · {c.model}" if isinstance(c.model, str) else "")
        rows.append({"where": what, "step": names.get(c.step_id, "(run)"), "error_type": c.error_type,
                     "error_message": c.error_message})
    return pd.DataFrame(rows, columns=["where", "step", "error_type", "error_message"])


def _pick_key(sort: str, prefix: str) -> str:
    """The run picker's key: a new sort or search is a new picker, which opens the first run of its list."""
    return "run_pick" if (sort, prefix) == ("Newest first", "") else f"run_pick:{RUN_SORTS[sort]}:{prefix}"


def _list_filters(source: Source, f: Filters) -> Filters:
    """The sidebar's filters narrowed by the explorer's own: error type, least duration, least cost."""
    left, mid, right = st.columns(3)
    error_types = left.multiselect("Error type", cached_values(source, "error_types"), key="run_error_types",
                                   placeholder="Any error type")
    seconds = mid.number_input("At least (seconds)", min_value=0.0, value=None, step=1.0, key="run_min_seconds",
                               placeholder="any duration")
    usd = right.number_input("Costing at least (USD)", min_value=0.0, value=None, step=0.01, format="%.4f",
                             key="run_min_cost", placeholder="any cost")
    return dataclasses.replace(f, error_types=tuple(error_types),
                               min_duration_ms=None if seconds is None else float(seconds) * 1000.0,
                               min_cost_usd=None if usd is None else float(usd))


def _shown_runs(found: pd.DataFrame) -> pd.DataFrame:
    """The run list as shown: tags as comma-separated text."""
    tags = [", ".join(str(t) for t in json.loads(v)) if not is_missing(v) else None for v in found["tags"]]
    return found.assign(tags=tags)


def run_explorer(source: Source, f: Filters, bucket: str) -> None:
    left, right = st.columns([2, 1])
    prefix = left.text_input("Run id starts with", key="run_id_prefix", placeholder="e.g. 0199a3c2-").strip()
    sort = right.selectbox("Sort", list(RUN_SORTS), key="run_sort") or "Newest first"
    f = _list_filters(source, f)
    total = cached(source, "count_runs", f, prefix)
    found = cached(source, "search_runs", f, prefix, RUN_LIST_LIMIT, RUN_SORTS[sort])
    st.metric("Matching runs", fmt_count(total))
    if len(found) < total:
        st.caption(f"{total:,} runs match; showing the first {len(found):,} ({sort.lower()}). Narrow the "
                   "filters or type more of the run id to see others.")
    opened = st.session_state.pop(OPEN_RUN, None)
    if found.empty and opened is None:
        st.info("No run matches. Widen the time range, clear the filters, or check the id.")
        return
    key = _pick_key(sort, prefix)
    clicked = _table(_shown_runs(found), key="run_list", select=True)
    if clicked is not None and clicked < len(found) and st.session_state.get("_run_list_clicked") != clicked:
        opened = str(found["run_id"].iloc[clicked])  # a click on a row of the list opens that run
    st.session_state["_run_list_clicked"] = clicked
    labels = {
        r.run_id: f"{r.run_id} · {r.agent or '-'} · {r.status} · {r.started_at:%Y-%m-%d %H:%M:%S}"
        for r in found.itertuples()
    }
    if opened is not None:
        st.session_state[key] = st.session_state["_opened_run"] = opened
    pinned = st.session_state.get("_opened_run")
    if pinned is not None and pinned not in labels and st.session_state.get(key) == pinned:
        labels = {pinned: f"{pinned} (opened)", **labels}  # opened from another view: maybe not in this list
    run_id = st.selectbox("Run", list(labels), format_func=labels.__getitem__, key=key)
    detail = source.run_detail(run_id) if run_id else None
    if detail is None:
        st.warning("That run is no longer in the store.")
        return
    run = detail.run.iloc[0]
    cols = st.columns(5)
    cols[0].metric("Status", literal(run["status"]))
    cols[1].metric("Duration", fmt_ms(run["duration_ms"]))
    cols[2].metric("Steps · calls", f"{fmt_count(run['step_count'])} · {fmt_count(run['call_count'])}")
    cols[3].metric("Run tokens", fmt_count(run["total_tokens"]))
    cols[4].metric("Run cost", fmt_usd(run["cost_usd"]))
    if not is_missing(run["error_type"]):
        st.error(f"**This run ended with status {literal(run['status'])}:**")
        st.code(f"{run['error_type']}: {run['error_message'] or ''}", language=None, wrap_lines=True)
    _chart(charts.waterfall(detail.steps, detail.calls, run["started_at"]))
    lazy_tabs("run_section", {
        "About this run": lambda: _about_section(source, run_id, run),
        "Errors": lambda: _errors_section(detail.steps, detail.calls),
        "Steps": lambda: _table(detail.steps, ["name", "kind", "status", "duration_ms", "call_count", "total_tokens",
                                               "cost_usd", "error_type", "error_message", "metadata", "started_at"]),
        "API calls": lambda: _table(detail.calls, [
            "provider", "operation", "model", "status", "duration_ms", "input_tokens", "output_tokens",
            "total_tokens", "cost_usd", "priced", "http_status", "error_type", "error_message", "metadata",
            "started_at"]),
        "Captured values": lambda: _captured_section(run, detail.steps),
    })


def _about_section(source: Source, run_id: str, run: pd.Series) -> None:
    """Who and what the run was for, and its scores."""
    _table(_about(run))
    scores = source.run_scores(run_id)
    if not scores.empty:
        st.subheader("Scores")
        _table(scores, ["name", "source", "value", "label", "comment", "scored_at"])


def _errors_section(steps: pd.DataFrame, calls: pd.DataFrame) -> None:
    failures = _failures(steps, calls)
    if failures.empty:
        st.caption("No step or API call of this run failed.")
    else:
        _table(failures)


def _captured_section(run: pd.Series, steps: pd.DataFrame) -> None:
    """The run's captured input and output, then its steps' (when any)."""
    shown = _capture("Input", run["inputs"])
    shown = _capture("Output", run["output"]) or shown
    if bool(run["truncated"]):
        st.caption("A captured value was cut to the capture size limit (capture_max_chars).")
    step_captures = [(s.name, s.inputs, s.output) for s in steps.itertuples()
                     if not is_missing(s.inputs) or not is_missing(s.output)]
    if not shown and not step_captures:
        st.caption("Nothing captured: turn capture on with configure(capture=True) or track_run(capture=True).")
    for name, inputs, output in step_captures:
        st.caption("Step")
        st.code(str(name), language=None)
        _capture("Input", inputs)
        _capture("Output", output)
