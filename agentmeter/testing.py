"""Helpers for asserting on runs in your own tests.

>>> from agentmeter.testing import capture_runs
>>> with capture_runs() as captured:
...     my_agent("acme")
>>> assert captured.runs[0]["status"] == "success"

:func:`capture_runs` installs an in-memory sink with synchronous export (every run is exported the moment
it finishes, on the calling thread), and optionally deterministic ids and a deterministic clock; on exit
the previous configuration comes back.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import _clock, _guard, _ids, _spans, _state
from ._config import Settings, settings_from_env
from .contract import Records
from .export import FlushResult
from .sinks.memory import MemorySink

__all__ = ["CapturedRuns", "DeterministicClock", "capture_runs", "reset", "sequential_ids"]


class CapturedRuns:
    """What :func:`capture_runs` yields: the documents exported while it was active."""

    def __init__(self, sink: MemorySink) -> None:
        self.sink = sink

    @property
    def runs(self) -> list[dict[str, Any]]:
        """Run documents, oldest first (each with its ``steps`` and ``calls``)."""
        return self.sink.documents

    @property
    def records(self) -> Records:
        """The rows of ``agent_runs``, ``run_steps``, ``api_calls`` and ``run_scores``."""
        return self.sink.records()

    @property
    def scores(self) -> list[dict[str, Any]]:
        """The latest score of each (run, name, source) given with :func:`agentmeter.score`."""
        return self.sink.scores

    @property
    def steps(self) -> list[dict[str, Any]]:
        return [s for doc in self.runs for s in doc["steps"]]

    @property
    def calls(self) -> list[dict[str, Any]]:
        return [c for doc in self.runs for c in doc["calls"]]

    def clear(self) -> None:
        self.sink.clear()


def sequential_ids(prefix: str = "id") -> Callable[[], str]:
    """An id factory giving ``id-000001``, ``id-000002``... (ordered like real ids)."""
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter):06d}"


class DeterministicClock:
    """A clock that advances by ``step_us`` microseconds every time it is read."""

    def __init__(self, start_us: int = 1_767_225_600_000_000, step_us: int = 1000) -> None:
        self._now_us = start_us
        self._step = step_us

    def wall_us(self) -> int:
        self._now_us += self._step
        return self._now_us

    def monotonic_ns(self) -> int:
        return self.wall_us() * 1000


@contextmanager
def capture_runs(
    *, deterministic: bool = False, clock: DeterministicClock | None = None, **settings: Any
) -> Iterator[CapturedRuns]:
    """Capture runs in memory with synchronous export. Extra keywords are settings (``capture=True``...).

    With ``deterministic=True`` ids are ``id-000001``... and the clock advances 1 ms per reading.
    """
    from .pricing import load_library  # genai-prices: only when a test resets pricing

    load_library()  # on the caller's thread, as configure() does
    sink = MemorySink()
    previous: Settings = _state.settings()
    new = settings_from_env(sinks=[sink], sync_export=True, **settings)
    old_processor = _state.replace(new)
    if deterministic or clock is not None:
        clk = clock or DeterministicClock()
        _ids.set_id_factory(sequential_ids())
        _clock.set_clock(clk.wall_us, clk.monotonic_ns)
    try:
        yield CapturedRuns(sink)
    finally:
        if deterministic or clock is not None:
            _ids.set_id_factory(None)
            _clock.set_clock()
        _state.replace(previous)
        if old_processor is not None:
            _state.restore(old_processor)


def reset(*, timeout: float = 2.0, **settings: Any) -> FlushResult | None:
    """Start agentmeter afresh, for test isolation: shut the current processor down (delivering within
    ``timeout``), forget runs still open, clear the counters of :func:`agentmeter.stats` and the log rate
    limits, and install ``settings`` (over the ``AGENTMETER_*`` environment), or, without settings, read
    them again from the environment on next use. Returns the old processor's shutdown result, if any.
    """
    new = settings_from_env(**settings) if settings else None
    old = _state.replace(new, forget_settings=new is None)
    result = old.shutdown(timeout=timeout) if old is not None else None
    _spans.forget_open_runs()
    _guard.counters.clear()
    _guard.reset_rate_limit()
    return result
