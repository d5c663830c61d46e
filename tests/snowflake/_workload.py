"""A reproducible workload tracked through the public API, and the numbers expected from it in Python.

Runs span several UTC days (a stepping clock), three agents (one of them None), successes, errors and
cancellations, priced, unpriced and model-less calls, and tokens known and unknown.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from agentmeter import _clock, track_call, track_run, track_step
from agentmeter._percentile import percentile_cont

PRICES = {
    "gpt-test": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
    "mini-test": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
}
MODELS = ("gpt-test", "mini-test", "unpriced-test", None)
AGENTS = ("researcher", "writer", None)


class Boom(Exception):
    pass


class SteppingClock:
    """Wall and monotonic time advancing by a random step per reading; ``jump`` skips ahead."""

    def __init__(self, seed: int, start_us: int = 1_767_225_600_000_000) -> None:  # 2026-01-01
        self._rng = random.Random(seed)
        self._now_us = start_us

    def wall_us(self) -> int:
        self._now_us += self._rng.randint(200, 400_000)
        return self._now_us

    def monotonic_ns(self) -> int:
        return self.wall_us() * 1000

    def jump(self, hours: float) -> None:
        self._now_us += int(hours * 3_600_000_000)


@contextmanager
def stepping_clock(seed: int = 11) -> Iterator[SteppingClock]:
    clock = SteppingClock(seed)
    _clock.set_clock(clock.wall_us, clock.monotonic_ns)
    try:
        yield clock
    finally:
        _clock.set_clock()


def track_workload(n_runs: int = 30, seed: int = 7) -> None:
    """Track ``n_runs`` runs with the real decorators and context managers (export per configuration)."""
    rng = random.Random(seed)
    with stepping_clock(seed) as clock:
        for i in range(n_runs):
            if i % 7 == 6:
                clock.jump(20)  # next UTC day now and then
            agent = AGENTS[i % len(AGENTS)]
            try:
                with track_run("research", agent=agent, tags=["e2e", f"batch-{i % 2}"], metadata={"i": i}):
                    with track_step("search", kind="tool"), track_call("tavily", "search") as call:
                        call.record_usage(units=1)
                        call.set_metadata(result_count=rng.randint(0, 5))
                    for _ in range(rng.randint(0, 3)):
                        with track_step("summarize", kind="llm"):
                            model = rng.choice(MODELS)
                            with track_call("openai", "chat.completions", model=model) as call:
                                known = rng.random() < 0.8
                                call.record_usage(
                                    input_tokens=rng.randint(10, 4000) if known else None,
                                    output_tokens=rng.randint(1, 900) if known else None,
                                )
                                call.set_http_status(200)
                    if rng.random() < 0.2:
                        raise Boom(f"run {i} failed: it's a 'quoted' failure")
                    if rng.random() < 0.05:
                        raise KeyboardInterrupt
            except Boom:
                pass
            except KeyboardInterrupt:
                pass


def expected(documents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The dashboard's headline numbers, computed in Python from the documents."""
    runs = {d["run_id"]: d for d in documents}.values()  # a replayed document counts once
    calls = {c["call_id"]: c for d in runs for c in d["calls"]}.values()
    durations = [r["duration_ms"] for r in runs]
    cost_by_model: dict[str | None, float] = defaultdict(float)
    tokens_by_model: dict[str | None, int] = defaultdict(int)
    for c in calls:
        if c["priced"]:
            cost_by_model[c["model"]] += c["cost_usd"]
        if c["total_tokens"] is not None:
            tokens_by_model[c["model"]] += c["total_tokens"]
    n = len(runs)
    return {
        "runs": n,
        "success_rate": sum(r["status"] == "success" for r in runs) / n,
        "errors": sum(r["status"] == "error" for r in runs),
        "cancelled": sum(r["status"] == "cancelled" for r in runs),
        "p50_ms": percentile_cont(durations, 0.5),
        "p95_ms": percentile_cont(durations, 0.95),
        "steps": sum(len(r["steps"]) for r in runs),
        "calls": len(calls),
        "input_tokens": sum(c["input_tokens"] or 0 for c in calls),
        "output_tokens": sum(c["output_tokens"] or 0 for c in calls),
        "total_tokens": sum(c["total_tokens"] or 0 for c in calls),
        "cost_by_model": dict(cost_by_model),
        "tokens_by_model": dict(tokens_by_model),
        "days": sorted({r["started_at"][:10] for r in runs}),
    }
