"""The views by session, by version and of scores. Their numbers come from :mod:`agentmeter.queries.rollups`
(one light row per run matching the filters, as a frame grouped with numpy: the same in every source) and from
:meth:`~agentmeter.queries.base.Source.scores`.

User text (session ids, versions, score names and labels) goes only to tables, charts and option lists,
which Streamlit shows as text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from ..queries.base import Filters, Source
from ..queries.rollups import DIMENSION_FIELDS, rollup
from . import charts, drill
from .format import fmt_count, fmt_usd
from .sections import lazy_tabs
from .table import table as _table
from .views import CACHE_TTL, _empty, cached, kpi_strip

__all__ = ["SESSIONS_SHOWN", "VIEWS", "scores", "sessions", "versions"]

#: sessions listed at most (the latest first)
SESSIONS_SHOWN = 200


def _key(source: Source) -> str:
    return f"{source.kind}:{source.describe()}"


# The views cache what they draw, not the runs they group: a hit unpickles a table of sessions or versions
# instead of one row per matching run, and the grouping (a Python loop over every run) runs once per TTL.
@st.cache_data(ttl=CACHE_TTL, show_spinner=False, max_entries=64)
def _session_tables(_source: Source, source_key: str, f: Filters) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rollup's rows of runs with a session, the sessions' table sorted newest first, all of them)."""
    records = _source.dimension_frame(f)
    frame = rollup(records, _source.latest_scores(), "session")
    frame = frame[frame["key"].notna()]
    runs = records.loc[records["session_id"].notna(), list(DIMENSION_FIELDS)]
    # numbers and times before grouping: pandas groups them in C (a lambda, or the min of text, runs Python
    # once per session: 3 s for 18,000 sessions)
    spans = pd.DataFrame({
        "session_id": runs["session_id"], "duration_ms": pd.to_numeric(runs["duration_ms"], errors="coerce"),
        "started_at": pd.to_datetime(runs["started_at"], utc=True, format="ISO8601"),
    }).groupby("session_id").agg(total_ms=("duration_ms", "sum"), first_started_at=("started_at", "min"),
                                 last_started_at=("started_at", "max"))
    table = frame.rename(columns={"key": "session_id"}).join(spans, on="session_id")
    table = table.assign(error_rate=table["error_runs"] / table["runs"])
    return frame, table.sort_values(["last_started_at", "session_id"], ascending=[False, True])


def sessions(source: Source, f: Filters, bucket: str) -> None:
    kpi_strip(source, f)
    frame, table = _session_tables(source, _key(source), f)
    if _empty(frame, "runs with a session (track_run(session=...))"):
        return
    table = table.head(SESSIONS_SHOWN)
    cols = st.columns(4)
    cols[0].metric("Sessions", fmt_count(len(frame)))
    cols[1].metric("Runs per session", f"{frame['runs'].mean():,.1f}")
    cols[2].metric("Cost per session", fmt_usd(frame["cost_usd"].mean()))
    cols[3].metric("Sessions with errors", fmt_count(int((frame["error_runs"] > 0).sum())))

    def costliest() -> None:
        costly = table.sort_values(["cost_usd", "session_id"], ascending=[False, True]).head(20)
        drill.chart(charts.bar(costly, "session_id", "cost_usd", "Costliest sessions (USD)", label_title="Session",
                               select="session_id"),
                    key="sessions_cost", filter_key="sessions", field="session_id")
        st.caption("Click a bar to filter by its session.")

    def latest() -> None:
        st.caption(f"The {len(table):,} latest sessions of {len(frame):,}.")
        _table(table, ["session_id", "runs", "error_rate", "cost_usd", "total_tokens", "total_ms", "p50_ms",
                       "p95_ms", "users", "first_started_at", "last_started_at"])

    lazy_tabs("sessions_section", {"Costliest sessions": costliest, "Latest sessions": latest})


def _score_means(source: Source, f: Filters, runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean numeric/boolean score per ``column`` value (rows) and score name (columns ``score · name``)."""
    scored = cached(source, "scores", f)
    scored = scored[scored["value"].notna()]
    if scored.empty:
        return pd.DataFrame(index=pd.Index([], name="key"))
    keyed = scored.merge(runs[["run_id", column]], on="run_id", how="inner")
    keyed = keyed.assign(key=keyed[column].astype(object).where(keyed[column].notna(), "(none)"))
    means = keyed.pivot_table(index="key", columns="name", values="value", aggfunc="mean")
    means.columns = [f"score · {c}" for c in means.columns]
    return means


@st.cache_data(ttl=CACHE_TTL, show_spinner=False, max_entries=64)
def _version_table(_source: Source, source_key: str, f: Filters) -> tuple[pd.DataFrame, list[str]]:
    """(one row per version with its scores' means, the names of the score columns)."""
    records = _source.dimension_frame(f)
    frame = rollup(records, _source.latest_scores(), "version")
    table = frame.assign(key=frame["key"].astype(object).where(frame["key"].notna(), "(none)"),
                         cost_per_run_usd=frame["cost_usd"] / frame["runs"])
    if frame.empty:
        return table.rename(columns={"key": "version"}), []
    runs = records[["run_id", "version"]]
    means = _score_means(_source, f, runs, "version")
    return table.join(means, on="key").rename(columns={"key": "version"}), list(means.columns)


def versions(source: Source, f: Filters, bucket: str) -> None:
    kpi_strip(source, f)
    table, score_columns = _version_table(source, _key(source), f)
    if _empty(table, "runs"):
        return

    def bars() -> None:
        left, right = st.columns(2)
        with left:
            drill.chart(charts.bar(table, "version", "p95_ms", "p95 run latency by version", label_title="Version",
                                   select="version"),
                        key="versions_p95", filter_key="versions", field="version")
        with right:
            drill.chart(charts.bar(table, "version", "success_rate", "Success rate by version",
                                   label_title="Version", select="version"),
                        key="versions_success", filter_key="versions", field="version")
        st.caption("Click a bar to filter by its version.")

    def side_by_side() -> None:
        st.caption("Scores: the mean of each numeric or boolean score (the latest given per run, name and source).")
        _table(table, ["version", "runs", "success_rate", "p50_ms", "p95_ms", "cost_usd", "cost_per_run_usd",
                       "total_tokens", "unpriced_calls", *score_columns])

    lazy_tabs("versions_section", {"Latency and success rate": bars, "Side by side": side_by_side})


def _buckets(started: pd.Series, bucket: str) -> pd.Series:
    return started.dt.floor({"minute": "min", "hour": "h", "day": "D"}.get(bucket, "h"))


@st.cache_data(ttl=CACHE_TTL, show_spinner=False, max_entries=64)
def _score_tables(_source: Source, source_key: str, f: Filters, bucket: str
                  ) -> tuple[bool, list[str], pd.DataFrame, dict[str, tuple[pd.DataFrame, pd.DataFrame]]]:
    """(whether no score matches, the score names, the summary table, per name: its mean and count per bucket
    and its labels' counts per bucket). Cached like :func:`_session_tables`: a rerun or a new page reads these
    small tables instead of every matching score, and groups nothing."""
    given = cached(_source, "scores", f)
    names = sorted(str(n) for n in given["name"].dropna().unique())
    summary = []
    per_name: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for name in names:
        rows = given[given["name"] == name]
        numeric = rows["value"].notna()
        summary.append({"name": name, "data_type": ", ".join(sorted(rows["data_type"].dropna().astype(str).unique())),
                        "count": len(rows), "runs": rows["run_id"].nunique(),
                        "mean": rows.loc[numeric, "value"].mean() if numeric.any() else None,
                        "label": ", ".join(f"{k} ({v})" for k, v in sorted(
                            rows["label"].value_counts().items(), key=lambda kv: (-kv[1], str(kv[0]))))})
        rows = rows.assign(bucket=_buckets(rows["started_at"], bucket))
        per = rows[numeric].groupby("bucket").agg(mean=("value", "mean"), count=("value", "size")).reset_index()
        labelled = rows[rows["label"].notna()]
        counts = labelled.groupby(["bucket", "label"]).size().reset_index(name="count")
        per_name[name] = (per, counts)
    return given.empty, names, pd.DataFrame(summary), per_name


def scores(source: Source, f: Filters, bucket: str) -> None:
    kpi_strip(source, f)
    empty, names, summary, per_name = _score_tables(source, _key(source), f, bucket)
    if empty:
        _empty(pd.DataFrame(), "scores (agentmeter.score(run_id, name, value))")
        return

    def over_time() -> None:
        name = st.selectbox("Score", names, key="score_name") or names[0]
        per, counts = per_name[name]
        if not per.empty:
            st.altair_chart(_score_chart(per, name, bucket), width="stretch")
        if not counts.empty:
            st.altair_chart(charts.stacked_over_time(counts, "label", "count", f"{name}: labels given",
                                                     bucket=bucket), width="stretch")
        st.caption("Scores are bucketed by the start of the run they score.")

    def summary_table() -> None:
        _table(summary, ["name", "data_type", "count", "runs", "mean", "label"])

    lazy_tabs("scores_section", {"Over time": over_time, "Summary": summary_table})


def _score_chart(per: pd.DataFrame, name: str, bucket: str) -> Any:
    """Mean score per bucket (a line) over the number of scores (bars)."""
    when = f"{charts.TIME_UNITS.get(bucket, charts.TIME_UNITS['hour'])}(bucket):T"
    fmt = charts.BUCKET_FORMATS.get(bucket, "%Y-%m-%d %H:%M")
    axis = charts.time_axis(per["bucket"], bucket)
    tooltip = [alt.Tooltip(when, title="Time (UTC)", format=fmt), alt.Tooltip("mean:Q", title="Mean", format=",.4~r"),
               alt.Tooltip("count:Q", title="Scores", format=",d")]
    base = alt.Chart(per, title=f"{name}: mean and number of scores").encode(
        x=alt.X(when, title=None, axis=axis), tooltip=tooltip)
    bars = base.mark_bar(opacity=0.3).encode(y=alt.Y("count:Q", title="Scores", axis=alt.Axis(tickMinStep=1)))
    line = base.mark_line(point=True).encode(y=alt.Y("mean:Q", title="Mean score"))
    return alt.layer(bars, line).resolve_scale(y="independent")


VIEWS: dict[str, Callable[[Source, Filters, str], None]] = {
    "Sessions": sessions,
    "Versions": versions,
    "Scores": scores,
}
