"""FirehoseSink against moto's HTTP server (Firehose -> S3), with a fault proxy for 503s and partial failures.

The sink makes each PutRecordBatch call once per write; the exporter owns the retries. Calls are counted
at the fault proxy."""

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

#: the exporter's retry policy in these tests: three attempts per batch, waits of a few milliseconds
RETRIES = {"max_attempts": 3, "retry_initial": 0.01, "retry_max": 0.02}


def _sink(landing: Landing, url: str | None = None, **kw: Any) -> FirehoseSink:
    return FirehoseSink(landing.stream, region=REGION, endpoint_url=url or landing.url, **kw)


def _configure(*sinks: Any, **kw: Any) -> None:
    """Configure the exporter, then flush once with nothing queued: the lane then schedules its own spool
    check ``flush_interval`` (an hour) ahead, so during the test only ``flush()`` replays the spool and the
    calls counted at the proxy do not depend on thread timing."""
    agentmeter.configure(sinks=list(sinks), flush_interval=3600, **kw)
    assert agentmeter.flush(timeout=30).ok


def _exporter_retries(name: str = "firehose") -> int:
    return agentmeter.stats().sinks[name].retries


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


def test_one_write_makes_each_call_once_and_reports_what_failed(landing: Landing, fault_proxy: FaultProxy) -> None:
    sink = _sink(landing, fault_proxy.url)
    docs = [_doc(f"run-{i}") for i in range(4)]  # one record each

    fault_proxy.plan.append("503")
    throttled = sink.write(docs)
    assert len(fault_proxy.calls) == 1  # no retry inside the sink, none in botocore
    assert set(throttled.failed) == {0, 1, 2, 3} and not throttled.rejected
    assert all("ServiceUnavailableException" in reason for reason in throttled.failed.values())
    assert sink.stats["throttled"] == 1 and sink.stats["records"] == 0

    fault_proxy.plan.append(("partial", lambda i: i != 2))  # FailedPutCount 1: the third record
    partial = sink.write(docs)
    assert len(fault_proxy.calls) == 2
    assert set(partial.failed) == {2} and not partial.rejected
    assert sink.stats["partial_failures"] == 1 and sink.stats["records"] == 3
    assert sink.stats["failed_records"] == 4 + 1
    assert sorted(r["record_id"] for r in landing.rows()) == ["run-0", "run-1", "run-3"]


def test_a_503_is_retried_by_the_exporter_and_every_record_lands_once(
    landing: Landing, fault_proxy: FaultProxy
) -> None:
    memory = MemorySink()
    sink = _sink(landing, fault_proxy.url)
    _configure(sink, memory, **RETRIES)
    fault_proxy.plan.extend(["503", "503"])  # two throttled attempts, the third succeeds
    _track_runs(4)
    result = agentmeter.flush(timeout=30)
    assert result.ok, result

    assert _by_id(landing.rows()) == _expected(memory)
    assert [c["action"] for c in fault_proxy.calls] == ["503", "503", "ok"]
    assert fault_proxy.calls[0]["records"] == fault_proxy.calls[2]["records"] == 4 * (1 + 2 + 4)
    assert sink.stats["throttled"] == 2 and _exporter_retries() == 2


def test_a_partial_failure_resends_only_the_failed_records(landing: Landing, fault_proxy: FaultProxy) -> None:
    memory = MemorySink()
    sink = _sink(landing, fault_proxy.url)
    _configure(sink, memory, **RETRIES)
    # attempt 1: every third record fails; attempt 2 (the exporter's retry, only those): the first fails again
    fault_proxy.plan.extend([("partial", lambda i: i % 3 != 0), ("partial", lambda i: i != 0)])
    _track_runs(6)
    assert agentmeter.flush(timeout=30).ok

    total = 6 * 7
    first_failed = len(range(0, total, 3))
    assert [c["records"] for c in fault_proxy.calls] == [total, first_failed, 1]
    assert _by_id(landing.rows()) == _expected(memory)  # each record exactly once
    assert _exporter_retries() == 2 and sink.stats["partial_failures"] == 2


def test_a_dead_endpoint_sees_max_attempts_calls_per_batch(landing: Landing, fault_proxy: FaultProxy) -> None:
    sink = _sink(landing, fault_proxy.url)
    _configure(sink, **RETRIES)
    fault_proxy.default = "503"  # throttled for good
    _track_runs(2)
    result = agentmeter.flush(timeout=30)
    assert result.sinks["firehose"].spooled == 2 and result.sinks["firehose"].delivered == 0
    # max_attempts (3) calls for the batch, then flush() tries the spool once: one more call
    assert [c["records"] for c in fault_proxy.calls] == [14] * (3 + 1)
    assert _exporter_retries() == 2 and sink.stats["throttled"] == 4


def test_exhausted_attempts_are_spooled_and_the_replay_sends_only_the_rest(
    landing: Landing, fault_proxy: FaultProxy
) -> None:
    memory = MemorySink()
    sink = _sink(landing, fault_proxy.url)
    _configure(sink, memory, **RETRIES)
    # attempt 1: half the records land; attempts 2 and 3: throttled -> spooled; flush's replay: throttled
    fault_proxy.plan.extend([("partial", lambda i: i % 2 == 0), "503", "503", "503"])
    _track_runs(2, steps=1, calls=1)  # 3 records per run
    result = agentmeter.flush(timeout=30)
    assert result.sinks["firehose"].spooled == 2 and result.sinks["firehose"].delivered == 0
    assert [c["records"] for c in fault_proxy.calls] == [6, 3, 3, 3]  # retries send only what failed

    later = agentmeter.flush(timeout=30)  # the endpoint is back: flush replays the spool
    assert later.ok and later.sinks["firehose"].delivered == 2, later
    assert [c["records"] for c in fault_proxy.calls] == [6, 3, 3, 3, 3]  # the replay: only what was left
    assert _by_id(landing.rows()) == _expected(memory)


def test_a_refused_connection_fails_fast_and_the_exporter_spools(landing: Landing) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on
    sink = _sink(landing, dead)
    _configure(sink, max_attempts=2, retry_initial=0.01, retry_max=0.02)
    _track_runs(2)
    result = agentmeter.flush(timeout=30)
    assert result.sinks["firehose"].spooled == 2 and result.sinks["firehose"].delivered == 0
    # two attempts for the batch, and flush()'s one try of the spool: one call each
    assert sink.stats["calls"] == 2 + 1 and _exporter_retries() == 1
    assert sink.stats["failed_records"] == 14 * sink.stats["calls"]  # 2 runs x 7 records per write


def test_an_unknown_stream_is_reported_failed_in_one_call(landing: Landing) -> None:
    sink = FirehoseSink("no-such-stream", region=REGION, endpoint_url=landing.url)
    docs = [_doc("r1")]
    result = sink.write(docs)
    assert set(result.failed) == {0} and "ResourceNotFound" in result.failed[0]
    assert sink.stats["calls"] == 1 and sink.stats["failed_records"] == 1


def test_close_during_a_write_stops_it_before_its_next_call(landing: Landing, fault_proxy: FaultProxy) -> None:
    sink = _sink(landing, fault_proxy.url)
    docs = [_doc(f"run-{i:04d}") for i in range(1200)]  # one record each: calls of 500, 500 and 200
    fault_proxy.on_put = sink.close  # from the proxy's thread, as the first call arrives (shutdown does so)
    result = sink.write(docs)
    assert [c["records"] for c in fault_proxy.calls] == [500]  # the call in flight, and no other
    assert set(result.failed) == set(range(500, 1200))
    assert all(reason == "sink closed during the write" for reason in result.failed.values())

    fault_proxy.on_put = None
    assert sink.write(docs[500:]).ok  # a closed sink reconnects on its next write
    assert [c["records"] for c in fault_proxy.calls] == [500, 500, 200]
    assert sorted(r["record_id"] for r in landing.rows()) == [d["run_id"] for d in docs]


@pytest.mark.parametrize("removed", ["max_attempts", "backoff_initial", "backoff_max"])
def test_the_removed_retry_parameters_are_refused(removed: str) -> None:
    untyped: Any = FirehoseSink  # called as code written for the old signature would call it
    with pytest.raises(TypeError, match=removed):
        untyped("s", region=REGION, **{removed: 3})
    with pytest.raises(TypeError, match="positional"):
        untyped("s", REGION, None, 3)  # max_attempts was the 4th parameter, positional


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
