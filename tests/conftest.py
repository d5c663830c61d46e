"""Test-suite wiring: SDK bugs fail tests, no test touches ~/.agentmeter, and every test starts clean."""

from __future__ import annotations

import os

# Must be set before agentmeter is imported anywhere: internal errors re-raise under our own tests.
os.environ["AGENTMETER_RAISE_INTERNAL"] = "1"

from collections.abc import Iterator
from pathlib import Path

import pytest

import agentmeter
from agentmeter import _guard, _state
from agentmeter._config import Settings


@pytest.fixture(autouse=True)
def _isolated_agentmeter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point the default store and spool at a temporary folder and reset agentmeter around each test."""
    for var in list(os.environ):
        if var.startswith("AGENTMETER_") and var != "AGENTMETER_RAISE_INTERNAL" and not var.startswith(
            "AGENTMETER_TEST_"
        ):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AGENTMETER_DB", str(tmp_path / "agentmeter.db"))
    monkeypatch.setenv("AGENTMETER_SPOOL_DIR", str(tmp_path / "spool"))
    old = _state.reset(Settings(spool_dir=str(tmp_path / "spool")))
    if old is not None:
        old.shutdown(timeout=1)
    _guard.counters.clear()
    _guard.reset_rate_limit()
    yield
    exporter = _state.reset()
    if exporter is not None:
        exporter.shutdown(timeout=2)
    agentmeter._state._settings = None
    # Internal errors on the caller's thread re-raise under this suite; on the exporter's threads they are
    # only counted (a worker must survive), so a test that leaves any behind fails here.
    errors = {k: v for k, v in _guard.counters.items() if k.startswith("internal_errors.")}
    assert not errors, f"agentmeter internal errors during the test: {errors}"
