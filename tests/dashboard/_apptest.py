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


#: each view's lazy tabs below its headline: view -> (the tabs' key, their labels, the first open by default)
SECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Health": ("health_section", ("Recent failures", "Errors by step", "Errors by provider and model")),
    "Performance": ("performance_section", ("Slowest runs", "Step latency by step name",
                                            "API latency by provider and model")),
    "Usage": ("usage_section", ("Tokens by model", "Calls by provider", "By agent")),
    "Cost": ("cost_section", ("By model", "By agent", "By provider", "Most expensive runs", "Unpriced calls")),
    "Sessions": ("sessions_section", ("Costliest sessions", "Latest sessions")),
    "Versions": ("versions_section", ("Latency and success rate", "Side by side")),
    "Scores": ("scores_section", ("Over time", "Summary")),
    "Run explorer": ("run_section", ("About this run", "Errors", "Steps", "API calls", "Captured values")),
}


def open_section(at: AppTest, label: str, view: str | None = None) -> AppTest:
    """Open the tab ``label`` of the view shown (or of ``view``) and rerun: the tab's state set as the
    browser sets it when the tab is clicked (AppTest has no click for tabs)."""
    key, labels = SECTIONS[view or str(at.session_state["view"])]
    assert label in labels, (label, labels)
    at.session_state[key] = label
    return at.run()


def tab_labels(at: AppTest) -> list[str]:
    """The labels of the tabs on the page."""
    return [t.label for t in at.tabs]
