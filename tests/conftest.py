"""Test-suite wiring: SDK bugs fail tests, no test touches ~/.agentmeter, and every test starts clean."""

from __future__ import annotations

import os

# Must be set before agentmeter is imported anywhere: internal errors re-raise under our own tests.
os.environ["AGENTMETER_RAISE_INTERNAL"] = "1"

from collections.abc import Iterator
from pathlib import Path

import pytest

import agentmeter
from agentmeter import _guard
from agentmeter.testing import reset


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
    reset(timeout=1, spool_dir=str(tmp_path / "spool"))
    yield
    agentmeter.shutdown(timeout=2)
    # Internal errors on the caller's thread re-raise under this suite; on the exporter's threads they are
    # only counted (a worker must survive), so a test that leaves any behind fails here.
    errors = {k: v for k, v in _guard.counters.items() if k.startswith("internal_errors.")}
    reset(timeout=0)  # settings are read from the (restored) environment again
    assert not errors, f"agentmeter internal errors during the test: {errors}"
