"""FirehoseSink against moto's HTTP server (Firehose -> S3), with a fault proxy for 503s and partial failures."""

from __future__ import annotations

import json
from typing import Any

import pytest

import agentmeter
from agentmeter.sinks import FirehoseSink, MemorySink, sinks_from_names
from agentmeter.sinks.firehose import MAX_BYTES_PER_CALL, MAX_RECORD_BYTES, MAX_RECORDS_PER_CALL
from tests._servers import free_port
from tests.sinks._fault_proxy import FaultProxy
from tests.sinks.conftest import REGION, Landing


def _sink(landing: Landing, url: str | None = None, **kw: Any) -> FirehoseSink:
    kw.setdefault("backoff_initial", 0.001)
    kw.setdefault("backoff_max", 0.005)
    return FirehoseSink(landing.stream, region=REGION, endpoint_url=url or landing.url, **kw)


def _track_runs(n: int, steps: int = 2, calls: int = 2, payload: str = "") -> None:
    for i in range(n):
        with agentmeter.track_run(f"research-{i}", agent="researcher", tags=["t"], metadata={"i": i}) as run:
            run.set_output({"summary": payload or f"answer {i}"})
            for j in range(steps):
                with agentmeter.track_step(f"step-{j}", kind="tool"):
                    for k in range(calls):
                        with agentmeter.track_call("openai", "chat.completions", model="gpt-test") as call:
                            call.record_usage(input_tokens=10 * k + 1, output_tokens=k)
                            call.set_metadata(finish_reason="stop")


def _by_id(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["record_type"], row["record_id"])
        assert key not in out, f"record delivered twice: {key}"
        out[key] = row
    return out


def _expected(memory: MemorySink) -> dict[tuple[str, str], dict[str, Any]]:
    records = memory.records()
    return _by_id([*records.agent_runs, *records.run_steps, *records.api_calls])


def test_runs_land_in_s3_as_ndjson_matching_the_three_record_kinds(landing: Landing) -> None:
    memory = MemorySink()
    agentmeter.configure(sinks=[_sink(landing), memory], flush_interval=3600, capture=True)
    _track_runs(5)
    assert agentmeter.flush(timeout=30).ok

    landed = _by_id(landing.rows())
    expected = _expected(memory)
    assert landed == expected  # field by field, every kind
    kinds = [k for k, _ in landed]
    assert kinds.count("agent_run") == 5 and kinds.count("run_step") == 10 and kinds.count("api_call") == 20
    for row in landed.values():
        assert row["schema_version"] == 1 and row["record_id"] == row[
            {"agent_run": "run_id", "run_step": "step_id", "api_call": "call_id"}[row["record_type"]]]


def test_records_of_a_run_keep_their_order_run_then_steps_then_calls(landing: Landing) -> None:
    sink = _sink(landing)
    agentmeter.configure(sinks=[sink], flush_interval=3600)
    _track_runs(3, steps=3, calls=1)
    assert agentmeter.flush(timeout=30).ok
    rows = landing.rows()
    order = {"agent_run": 0, "run_step": 1, "api_call": 2}
    for run_id in {r["run_id"] for r in rows}:
        mine = [r for r in rows if r["run_id"] == run_id]
        assert [order[r["record_type"]] for r in mine] == sorted(order[r["record_type"]] for r in mine)
        ids = [r["record_id"] for r in mine if r["record_type"] == "run_step"]
        assert ids == sorted(ids)


def test_a_503_is_retried_and_every_record_lands_once(landing: Landing, fault_proxy: FaultProxy) -> None:
    memory = MemorySink()
    sink = _sink(landing, fault_proxy.url, max_attempts=3)
    agentmeter.configure(sinks=[sink, memory], flush_interval=3600)
    fault_proxy.plan.extend(["503", "503"])  # two throttled tries, the third succeeds
    _track_runs(4)
    result = agentmeter.flush(timeout=30)
    assert result.ok, result

    assert _by_id(landing.rows()) == _expected(memory)
    assert [c["action"] for c in fault_proxy.calls] == ["503", "503", "ok"]
    assert fault_proxy.calls[0]["records"] == fault_proxy.calls[2]["records"] == 4 * (1 + 2 + 4)
    assert sink.stats["retries"] == 2 and sink.stats["throttled"] == 2


def test_a_partial_failure_resends_only_the_failed_records(landing: Landing, fault_proxy: FaultProxy) -> None:
    memory = MemorySink()
    sink = _sink(landing, fault_proxy.url, max_attempts=3)
    agentmeter.configure(sinks=[sink, memory], flush_interval=3600)
    # first try: every third record fails; second try (only those): the first of them fails again
    fault_proxy.plan.extend([("partial", lambda i: i % 3 != 0), ("partial", lambda i: i != 0)])
    _track_runs(6)
    assert agentmeter.flush(timeout=30).ok

    total = 6 * 7
    first_failed = len(range(0, total, 3))
    assert [c["records"] for c in fault_proxy.calls] == [total, first_failed, 1]
    assert _by_id(landing.rows()) == _expected(memory)  # each record exactly once
    assert sink.stats["retries"] == 2 and sink.stats["partial_failures"] == 2


def test_exhausted_attempts_go_back_to_the_exporter_and_replay_sends_only_the_rest(
    landing: Landing, fault_proxy: FaultProxy
) -> None:
    memory = MemorySink()
    sink = _sink(landing, fault_proxy.url, max_attempts=2)
    # the lane's own retries are a second chance; make them immediate
    agentmeter.configure(sinks=[sink, memory], flush_interval=3600, max_attempts=2, retry_initial=0,
                         retry_max=0)
    # sink try 1: half fail; sink try 2: still failing -> reported failed; lane retry: everything passes
    fault_proxy.plan.extend([("partial", lambda i: i % 2 == 0), ("partial", lambda i: False)])
    _track_runs(2, steps=1, calls=1)
    result = agentmeter.flush(timeout=30)
    assert result.ok, result
    assert [c["records"] for c in fault_proxy.calls] == [6, 3, 3]  # the replay sends only what failed
    assert _by_id(landing.rows()) == _expected(memory)


def test_a_dead_endpoint_fails_fast_and_the_exporter_spools(landing: Landing) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on
    sink = _sink(landing, dead, max_attempts=2)
    agentmeter.configure(sinks=[sink], flush_interval=3600, max_attempts=1)
    _track_runs(2)
    result = agentmeter.flush(timeout=30)
    assert result.sinks["firehose"].spooled == 2 and result.sinks["firehose"].delivered == 0
    # every write (the first, and the exporter's replay probes) made max_attempts tries, then gave up
    assert sink.stats["calls"] >= 2 and sink.stats["calls"] == 2 * (sink.stats["calls"] - sink.stats["retries"])
    assert sink.stats["failed_records"] == 7 * sink.stats["calls"]  # 2 runs x 7 records per write


def test_an_unknown_stream_is_reported_failed_without_retrying(landing: Landing) -> None:
    sink = FirehoseSink("no-such-stream", region=REGION, endpoint_url=landing.url, backoff_initial=0.001)
    docs = [_doc("r1")]
    result = sink.write(docs)
    assert set(result.failed) == {0} and "ResourceNotFound" in result.failed[0]
    assert sink.stats["calls"] == 1 and sink.stats["retries"] == 0


def _doc(run_id: str, output: Any = None) -> dict[str, Any]:
    from agentmeter.testing import capture_runs

    with capture_runs(capture=True, capture_max_chars=4_000_000) as captured, agentmeter.track_run("r") as run:
        run.set_output(output)
    doc = dict(captured.runs[0])
    doc["run_id"] = run_id
    return doc


def test_an_oversized_record_is_shrunk_and_flagged_never_dropped(landing: Landing) -> None:
    sink = _sink(landing)
    huge = _doc("run-huge", {"text": "x" * (MAX_RECORD_BYTES + 50_000)})
    result = sink.write([huge])
    assert result.ok
    (body,) = landing.objects()
    assert len(body) <= MAX_RECORD_BYTES
    (row,) = [json.loads(line) for line in body.splitlines()]
    assert row["record_id"] == "run-huge" and row["truncated"] is True
    assert row["output"]["text"].endswith("...[truncated]")


def test_calls_are_packed_to_the_limits(landing: Landing, fault_proxy: FaultProxy) -> None:
    sink = _sink(landing, fault_proxy.url)
    docs = [_doc(f"run-{i:04d}", {"text": "y" * 300_000}) for i in range(30)]  # ~300 KB each
    small = [_doc(f"small-{i:04d}") for i in range(1200)]
    assert sink.write(docs + small).ok
    sizes = [(c["records"], c["bytes"]) for c in fault_proxy.calls]
    assert all(n <= MAX_RECORDS_PER_CALL for n, _ in sizes)
    # base64 in transit: 4 bytes per 3 of data
    assert all(b * 3 / 4 <= MAX_BYTES_PER_CALL for _, b in sizes)
    assert len(sizes) == 5  # 13 + 13 + (4 + 496) + 500 + 204: greedy, in order, 13 x 300 KB per 4 MiB
    assert len(landing.rows()) == 1230


def test_from_env_reads_the_documented_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMETER_FIREHOSE_STREAM", "my-stream")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AGENTMETER_FIREHOSE_ENDPOINT_URL", "http://127.0.0.1:4566")
    sink = FirehoseSink.from_env()
    assert (sink.stream_name, sink.region, sink.endpoint_url) == ("my-stream", "eu-west-1", "http://127.0.0.1:4566")
    (built,) = sinks_from_names(["firehose"])
    assert isinstance(built, FirehoseSink)
    monkeypatch.delenv("AGENTMETER_FIREHOSE_STREAM")
    with pytest.raises(ValueError, match="AGENTMETER_FIREHOSE_STREAM"):
        FirehoseSink.from_env()


def test_import_agentmeter_does_not_import_boto3() -> None:
    import subprocess
    import sys

    code = ("import sys, agentmeter, agentmeter.sinks, agentmeter.cli; "
            "assert 'boto3' not in sys.modules and 'pymongo' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
