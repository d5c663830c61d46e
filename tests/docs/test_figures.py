"""Figures in docs/ are the committed benchmark results, rendered (``python -m tests.docs.figures``)."""

from __future__ import annotations

import pytest

from tests.docs.figures import FIGURES, current


@pytest.mark.parametrize(("page", "name", "render"), FIGURES, ids=[f"{p}:{n}" for p, n, _ in FIGURES])
def test_figures_match_the_results(page: str, name: str, render: object) -> None:
    assert current(page, name) == render(), (  # type: ignore[operator]
        f"{page} ({name}) differs from benchmarks/results: run `python -m tests.docs.figures`")
