"""How the dashboard writes numbers, durations, money, column names and escaped text."""

from __future__ import annotations

import html
import math
import re

import pandas as pd
import pytest
from markdown_it import MarkdownIt

from agentmeter.dashboard.format import (
    column_name,
    duration_unit,
    fmt_count,
    fmt_ms,
    fmt_pct,
    fmt_usd,
    is_missing,
    literal,
    money_decimals,
)


@pytest.mark.parametrize("missing", [None, math.nan, pd.NA, pd.NaT, float("nan")])
def test_missing_values_read_as_a_dash(missing: object) -> None:
    assert is_missing(missing)
    for fmt in (fmt_count, fmt_pct, fmt_ms, fmt_usd):
        assert fmt(missing) == "-"


@pytest.mark.parametrize(("ms", "shown"), [
    (0.036, "0.036 ms"), (32.14, "32.14 ms"), (329.7, "329.7 ms"), (999.94, "999.9 ms"),
    (1234.5, "1.234 s"), (12_345, "12.35 s"), (59_000, "59.00 s"), (150_000, "2.500 min"),
    (45 * 60_000, "45.00 min"), (5_400_000, "1.500 h"), (90_000_000, "25.0 h"),
])
def test_durations_scale_from_ms_to_s_min_and_h(ms: float, shown: str) -> None:
    assert fmt_ms(ms) == shown


def test_duration_unit_of_axes_and_columns() -> None:
    assert duration_unit(850) == ("ms", 1.0)
    assert duration_unit(45_000) == ("s", 1000.0)
    assert duration_unit(600_000) == ("min", 60_000.0)
    assert duration_unit(None) == ("ms", 1.0)


def test_money_has_the_precision_its_amounts_need() -> None:
    assert [fmt_usd(v) for v in (1234.5, 12.34567, 0.03239, 0.0001234, 0)] == [
        "$1,234.50", "$12.3457", "$0.03239", "$0.0001234", "$0"]
    assert money_decimals([4.4, 0.0381]) == 4  # $0.0381 to three significant digits
    assert money_decimals([0.000311, 0.008]) == 6
    assert money_decimals([120.0, 3.5]) == 2
    assert money_decimals([0, None, math.nan]) == 2


def test_counts_rates_and_column_names() -> None:
    assert fmt_count(2196585) == "2,196,585" and fmt_pct(0.875) == "87.50%"
    assert column_name("cost_usd") == "Cost (USD)" and column_name("p95_ms") == "p95"
    assert column_name("started_at") == "Started (UTC)" and column_name("some_new_col") == "Some new col"


_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])


@pytest.mark.parametrize("text", [
    "![x](http://127.0.0.1:9/beacon.png)", '<img src="http://127.0.0.1:9/i.png">', "**bold** _em_ ~~gone~~",
    ":red[red] :smile: $x^2$", "# heading", "> quote", "- item", "1. first", "| a | b |", "`code`",
    "[link](http://example.com)", "&lt;img&gt; &amp;", "back\\slash", "SNOWFLAKE_ACCOUNT and snake_case_name",
])
def test_literal_markdown_reads_exactly_as_written(text: str) -> None:
    rendered = _MD.render(literal(text))
    assert "<img" not in rendered and "<a " not in rendered and "<strong>" not in rendered and "<em>" not in rendered
    assert "<h1>" not in rendered and "<blockquote>" not in rendered and "<li>" not in rendered
    shown = html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()
    assert shown.replace("\u2060", "") == text  # reads as written (a word joiner after a URL scheme)


def test_literal_keeps_urls_from_becoming_links_without_changing_what_is_read() -> None:
    text = "see http://evil.example/x, www.evil.example and me@evil.example"
    escaped = literal(text)
    assert "http://" not in escaped and "www." not in escaped and "@evil" not in escaped
    rendered = html.unescape(re.sub(r"<[^>]+>", "", _MD.render(escaped))).strip()
    assert rendered.replace("\u2060", "") == text  # only invisible word joiners were added
    assert literal("line one\nline two") == "line one line two"


def test_a_time_axis_over_a_few_minutes_ticks_once_per_minute() -> None:
    # the demo's 70 s of runs: Vega would tick every 10 seconds, each labelled with the same "%H:%M"
    from agentmeter.dashboard import charts
    from agentmeter.dashboard.rollup_views import _score_chart

    starts = pd.to_datetime(pd.Series(["2026-01-01T10:00:00Z", "2026-01-01T10:01:00Z", "2026-01-01T10:02:00Z"]),
                            utc=True)
    per = pd.DataFrame({"bucket": starts, "mean": [0.5, 0.7, 0.9], "count": [3, 4, 5]})
    spec = _score_chart(per, "quality", "minute").to_dict()
    axes = [layer["encoding"]["x"]["axis"] for layer in spec["layer"]]
    every_minute = 3  # as many ticks as buckets: Vega puts them a bucket (a minute) apart
    assert all(axis["tickCount"] == every_minute and axis["format"] == "%H:%M" for axis in axes), axes
    runs = pd.DataFrame({"bucket": starts, "status": "success", "runs": [1, 2, 3]})
    assert charts.stacked_over_time(runs, "status", "runs", "Runs", bucket="minute").to_dict()[
        "encoding"]["x"]["axis"]["tickCount"] == every_minute
    # over many buckets Vega's own ticks are whole minutes or more: left to Vega
    many = pd.Series(pd.date_range("2026-01-01T10:00:00Z", periods=charts.FEW_BUCKETS + 1, freq="min"))
    assert "tickCount" not in charts.time_axis(many, "minute").to_dict()
