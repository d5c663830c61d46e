"""A view's sections below its headline: lazy tabs. Only the open tab's section runs (its queries) and is
sent to the browser; the others are a label until clicked. A click on a tab reruns the page with that tab
open, and its key keeps it open across the page's other reruns (a filter, a click on a bar, a brush).

Tabs rather than expanders: the page opens with one section drawn either way, and a tab bar keeps it at
one (an expander left open adds its tables and charts to every later rerun), while every section's name
stays in view on one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import streamlit as st

__all__ = ["lazy_tabs"]


def lazy_tabs(key: str, sections: Mapping[str, Callable[[], object]]) -> str:
    """Tabs labelled with ``sections``' keys (the first open by default); runs only the open tab's function,
    inside it. ``st.session_state[key]`` is the open tab's label (set it to open another). Returns it."""
    labels = list(sections)
    tabs = st.tabs(labels, key=key, on_change="rerun")
    label, tab = next(((lab, t) for lab, t in zip(labels, tabs, strict=True) if t.open), (labels[0], tabs[0]))
    with tab:
        sections[label]()
    return label
