"""Helpers for driving the Streamlit app under AppTest, shared by the local/MongoDB and Snowflake tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from agentmeter.dashboard import script_path

APP = str(script_path())
VIEWS = ("Health", "Performance", "Usage", "Cost", "Sessions", "Versions", "Scores", "Run explorer")
Seeded = tuple[Path, list[dict[str, Any]]]


def app(source: Any = None) -> AppTest:
    """The app reading ``source``; with None it opens the source the environment names."""
    at = AppTest.from_file(APP, default_timeout=60)
    if source is not None:
        at.session_state["agentmeter_source"] = source
    return at


def metrics(at: AppTest) -> dict[str, str]:
    """The metric tiles shown: label -> displayed value."""
    return {m.label: m.value for m in at.metric}


def number(text: str) -> float:
    """A displayed value as a number (durations in ms)."""
    t = text.replace("$", "").replace(",", "").replace("%", "").strip()
    if t.endswith(" ms"):
        return float(t[:-3])
    if t.endswith(" s"):
        return float(t[:-2]) * 1000
    return float(t)


def check_headline(shown: dict[str, str], want: dict[str, Any], *, error_rate_and_p50: bool = True) -> None:
    """The headline tiles equal the numbers computed in Python (as rounded for display)."""
    assert int(number(shown["Runs"])) == want["runs"]
    assert number(shown["Success rate"]) == pytest.approx(want["success_rate"] * 100, abs=0.0051)
    if error_rate_and_p50:
        assert number(shown["Error rate"]) == pytest.approx(want["error_rate"] * 100, abs=0.0051)
    assert number(shown["p95 latency"]) == pytest.approx(want["p95_ms"], rel=5.1e-4, abs=0.00051)  # 4 digits
    if error_rate_and_p50:
        assert number(shown["p50 latency"]) == pytest.approx(want["p50_ms"], rel=5.1e-4, abs=0.00051)
    assert int(number(shown["Tokens"])) == want["total_tokens"]
    assert number(shown["Cost"]) == pytest.approx(want["cost_usd"], rel=5.1e-4)  # 4 significant digits
    assert int(number(shown["Unpriced calls"])) == want["unpriced_calls"]
