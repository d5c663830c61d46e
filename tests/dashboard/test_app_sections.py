"""Each view's sections below its headline are lazy tabs: a closed tab runs no query and draws nothing,
opening it runs its queries and draws it, and it stays open across the page's other reruns. Under AppTest,
on a real local store whose query calls are counted (a tab is opened as the browser does it: its key's
state set to its label; the real clicks in Chromium: test_browser.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentmeter.queries.local import LocalSource

from ._apptest import SECTIONS, VIEWS, app, open_section
from .test_app_controls import page_problems

Docs = list[dict[str, Any]]

#: the source methods only a tab's section calls (the headline's tiles and time chart call others)
QUERIES: dict[str, dict[str, set[str]]] = {
    "Health": {"Recent failures": {"recent_failures"}, "Errors by step": {"step_errors"},
               "Errors by provider and model": {"call_errors"}},
    "Performance": {"Slowest runs": {"slowest_runs"}, "Step latency by step name": {"step_latency"},
                    "API latency by provider and model": {"api_latency"}},
    "Usage": {"Tokens by model": {"tokens_by_model"}, "Calls by provider": {"calls_by_provider"},
              "By agent": {"agent_kpis"}},
    "Cost": {"By model": {"cost_by_model"}, "By agent": {"cost_by_agent"}, "By provider": {"cost_by_provider"},
             "Most expensive runs": {"expensive_runs"}, "Unpriced calls": {"unpriced_calls"}},
    "Run explorer": {"About this run": {"run_scores"}},
}


class CountingSource(LocalSource):
    """The local store, noting the name of every public method the page calls on it."""

    def __init__(self, db: Path) -> None:
        super().__init__(db)
        self.called: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if not name.startswith("_") and callable(value) and name != "called":
            object.__getattribute__(self, "called").append(name)
        return value


def drawn(at: Any) -> dict[str, int]:
    """Tab label -> how many elements the tab holds."""
    return {t.label: len(t.children) for t in at.tabs}


@pytest.mark.parametrize("view", VIEWS)
def test_only_the_open_tab_runs_its_queries_and_is_drawn(view: str,
                                                         scored: tuple[Path, Docs, list[dict[str, Any]]]) -> None:
    source = CountingSource(scored[0])
    key, labels = SECTIONS[view]
    at = app(source)
    at.session_state["view"] = view
    queries = QUERIES.get(view, {})
    for i, label in enumerate(labels):
        source.called.clear()
        if i == 0:
            at.run()
            assert at.session_state[key] == label  # the first tab is open when the view opens
        else:
            open_section(at, label)
        assert page_problems(at) == [], (view, label)
        assert [t.label for t in at.tabs] == list(labels)
        shown = drawn(at)
        assert shown[label] > 0 and all(n == 0 for lab, n in shown.items() if lab != label), (label, shown)
        called = set(source.called)
        assert queries.get(label, set()) <= called, (label, called)  # opened the first time: not cached yet
        for other in labels:
            if other != label:
                assert not queries.get(other, set()) & called, (label, other, called)
    # a rerun for anything else (here a filter) keeps the open tab open and drawn
    at.sidebar.multiselect(key="statuses").set_value(["success", "error"]).run()
    assert page_problems(at) == []
    assert at.session_state[key] == labels[-1] and drawn(at)[labels[-1]] > 0
