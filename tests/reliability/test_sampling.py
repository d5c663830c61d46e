"""Sampling without lying: sample_rate thins captured payloads; counts, latencies, tokens and cost stay exact."""

from __future__ import annotations

from pathlib import Path

import pytest

import agentmeter
from agentmeter import _guard, track_call, track_run, track_step
from agentmeter.sinks import MemorySink

from .conftest import CountingSink


def _agent(fail: bool = False) -> None:
    @track_run(agent="sampled")
    def run(x: int) -> int:
        with track_step("s", kind="llm"), track_call("openai", "chat", model="gpt-4o-mini") as call:
            call.record_usage(input_tokens=100, output_tokens=20)
        if fail:
            raise ValueError("boom")
        return x * 2

    try:
        run(21)
    except ValueError:
        pass


def test_sample_rate_zero_drops_payloads_but_keeps_every_metric(tmp_path: Path) -> None:
    full, thin = MemorySink("full"), MemorySink("thin")
    prices = {"gpt-4o-mini": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
    agentmeter.configure(sinks=[full], capture=True, spool_dir=str(tmp_path / "a"), prices=prices)
    for _ in range(5):
        _agent()
    assert agentmeter.flush(timeout=30).ok
    agentmeter.configure(sinks=[thin], capture=True, sample_rate=0.0, always_keep_errors=False,
                         spool_dir=str(tmp_path / "b"), prices=prices)
    for _ in range(5):
        _agent()
    assert agentmeter.flush(timeout=30).ok
    kept, dropped = full.documents, thin.documents
    assert len(dropped) == 5 and all(d["sampled"] is False for d in dropped)
    assert all(d["sampled"] is True and d["inputs"] == {"x": 21} and d["output"] == 42 for d in kept)
    for doc in dropped:
        assert doc["inputs"] is None and doc["output"] is None
        assert all(s["inputs"] is None and s["output"] is None for s in doc["steps"])
        # metrics are the same as for a kept run
        ref = kept[0]
        for key in ("step_count", "call_count", "input_tokens", "output_tokens", "total_tokens", "cost_usd",
                    "status", "unpriced_call_count"):
            assert doc[key] == ref[key], key
        assert doc["duration_ms"] is not None and doc["calls"][0]["cost_usd"] == ref["calls"][0]["cost_usd"]
    assert _guard.counters["sampling.payloads_dropped"] == 5


def test_failed_and_slow_runs_keep_their_payloads(tmp_path: Path) -> None:
    sink = MemorySink()
    agentmeter.configure(sinks=[sink], capture=True, sample_rate=0.0, spool_dir=str(tmp_path / "s"))
    _agent(fail=True)
    _agent(fail=False)
    assert agentmeter.flush(timeout=30).ok
    failed, ok = sorted(sink.documents, key=lambda d: d["status"])
    assert failed["status"] == "error" and failed["sampled"] is True and failed["inputs"] == {"x": 21}
    assert ok["sampled"] is False and ok["inputs"] is None
    agentmeter.configure(sinks=[sink], capture=True, sample_rate=0.0, slow_run_ms=0.0,
                         spool_dir=str(tmp_path / "s2"))
    sink.clear()
    _agent()
    assert agentmeter.flush(timeout=30).ok
    assert sink.documents[0]["sampled"] is True  # every run is "slow" at 0 ms


def test_partial_rate_is_proportional_and_every_sink_agrees(tmp_path: Path) -> None:
    a, b = MemorySink("a"), CountingSink("b")
    agentmeter.configure(sinks=[a, b], capture=True, sample_rate=0.3, spool_dir=str(tmp_path / "s"))
    for i in range(600):
        with track_run("r") as run:
            run.set_output(i)
    assert agentmeter.flush(timeout=30).ok
    docs = a.documents
    share = sum(d["sampled"] for d in docs) / len(docs)
    assert 0.2 < share < 0.4, share
    assert len(docs) == 600 == len(b.deliveries)  # every run is exported, sampled or not


@pytest.mark.parametrize("bad", [-0.1, 1.5, "half"])
def test_invalid_sample_rate_is_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        agentmeter.configure(sample_rate=bad)
