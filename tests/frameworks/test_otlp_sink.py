"""OpenTelemetry out: OTLPSink delivering to an OTLP/HTTP receiver on loopback, and through an outage."""

from __future__ import annotations

from pathlib import Path

import agentmeter
from agentmeter import track_call, track_run, track_step

from .._servers import free_port
from .conftest import need

need("opentelemetry.exporter.otlp.proto.http")
need("opentelemetry.proto")
from agentmeter.sinks import MemorySink, OTLPSink  # noqa: E402

from ._collector import Collector  # noqa: E402

PRICES = {"gpt-4o-mini": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}


def _agent(i: int) -> None:
    with track_run("research", agent="analyst", metadata={"session_id": f"s{i}"}):
        with track_step("search", kind="tool"), track_call("tavily", "search") as c:
            c.record_usage(units=1)
        with track_step("think", kind="llm"), track_call("openai", "chat.completions", model="gpt-4o-mini") as c:
            c.record_usage(input_tokens=1000, output_tokens=100, cached_input_tokens=200)


def test_runs_arrive_as_genai_spans_with_cost_and_stable_ids(tmp_path: Path) -> None:
    memory = MemorySink()
    with Collector() as collector:
        agentmeter.configure(sinks=[OTLPSink(collector.endpoint, service_name="desk"), memory], prices=PRICES,
                             spool_dir=str(tmp_path / "spool"))
        _agent(1)
        assert agentmeter.flush(timeout=20).ok
        (doc,) = memory.documents
        spans = {s["name"]: s for s in collector.spans}
        assert set(spans) == {"invoke_agent analyst", "execute_tool search", "think", "tavily search",
                              "chat gpt-4o-mini"}
        run, tool, think, search, chat = (spans[n] for n in ("invoke_agent analyst", "execute_tool search", "think",
                                                             "tavily search", "chat gpt-4o-mini"))
        assert run["trace_id"] == doc["run_id"].replace("-", "") and run["parent"] is None
        assert {s["trace_id"] for s in collector.spans} == {run["trace_id"]}
        assert tool["parent"] == think["parent"] == run["span_id"]
        assert search["parent"] == tool["span_id"] and chat["parent"] == think["span_id"]
        assert run["resource"]["service.name"] == "desk" and run["scope"] == "agentmeter"
        ra, ca = run["attributes"], chat["attributes"]
        assert (ra["gen_ai.operation.name"], ra["gen_ai.agent.name"], ra["gen_ai.conversation.id"]) == (
            "invoke_agent", "analyst", "s1")
        assert ra["agentmeter.cost_usd"] == doc["cost_usd"] == ca["agentmeter.cost_usd"] > 0
        assert ra["agentmeter.usage.input_tokens"] == 1000 and not any(k.startswith("gen_ai.usage") for k in ra)
        assert (ca["gen_ai.operation.name"], ca["gen_ai.provider.name"], ca["gen_ai.response.model"]) == (
            "chat", "openai", "gpt-4o-mini")
        assert (ca["gen_ai.usage.input_tokens"], ca["gen_ai.usage.output_tokens"]) == (1000, 100)
        assert ca["gen_ai.usage.cache_read.input_tokens"] == 200 and ca["agentmeter.priced"] is True
        assert chat["kind"] == 3 and run["kind"] == 1  # SPAN_KIND_CLIENT, SPAN_KIND_INTERNAL
        assert tool["attributes"]["gen_ai.tool.name"] == "search"
        assert "gen_ai.operation.name" not in search["attributes"] and search["attributes"]["agentmeter.units"] == 1
        assert run["end"] - run["start"] == round(doc["duration_ms"] * 1e6)
        # a re-send (a retry, a replay from the spool) carries the same ids: the receiver can de-duplicate
        OTLPSink(collector.endpoint).write([doc])
        ids = [(s["trace_id"], s["span_id"]) for s in collector.spans]
        assert len(ids) == 10 and len(set(ids)) == 5


def test_an_error_run_is_an_error_span() -> None:
    from agentmeter.contract import run_document
    from agentmeter.sinks.otlp import document_spans
    from agentmeter.testing import capture_runs

    with capture_runs() as captured:
        try:
            with track_run("fails"), track_step("tool", kind="tool"):
                raise ValueError("bad input")
        except ValueError:
            pass
    (doc,) = captured.runs
    spans = document_spans(doc)
    assert {s.status.status_code.name for s in spans} == {"ERROR"}
    assert {s.attributes["error.type"] for s in spans} == {"ValueError"}
    assert spans[0].status.description == "bad input"
    assert run_document  # the contract is what the sink reads


def test_runs_survive_a_receiver_outage_through_the_spool(tmp_path: Path) -> None:
    port = free_port()
    sink = OTLPSink(f"http://127.0.0.1:{port}/v1/traces", timeout=0.5)
    agentmeter.configure(sinks=[sink], max_attempts=2, retry_initial=0, retry_max=0,
                         spool_dir=str(tmp_path / "spool"), flush_interval=60)
    for i in range(3):
        _agent(i)
    down = agentmeter.flush(timeout=30)
    assert not down.ok and down.sinks["otlp"].spooled == 3 and down.sinks["otlp"].delivered == 0
    with Collector(port) as collector:  # the receiver is back
        up = agentmeter.flush(timeout=30)
        assert up.ok, up
        runs = [s for s in collector.spans if s["parent"] is None]
        assert len(runs) == 3 and len(collector.spans) == 15
        assert sorted(r["attributes"]["gen_ai.conversation.id"] for r in runs) == ["s0", "s1", "s2"]
    assert agentmeter.stats().sinks["otlp"].replayed == 3


def test_bad_settings_fail_at_configuration_and_the_sink_has_a_name() -> None:
    import pytest

    from agentmeter.sinks import sinks_from_names

    with pytest.raises(ValueError, match="endpoint"):
        OTLPSink("collector:4318")
    with pytest.raises(ValueError, match="timeout"):
        OTLPSink("http://127.0.0.1:4318/v1/traces", timeout=0)
    (sink,) = sinks_from_names(["otlp"])
    assert isinstance(sink, OTLPSink) and sink.name == "otlp"


def test_session_user_and_version_are_span_attributes_and_scores_stay_out(tmp_path: Path) -> None:
    memory = MemorySink()
    with Collector() as collector:
        agentmeter.configure(sinks=[OTLPSink(collector.endpoint, service_name="desk"), memory],
                             spool_dir=str(tmp_path / "spool"))
        with track_run("chat", agent="analyst", session="conv-3", user="u-9", version="1.4.0") as run:
            pass
        agentmeter.score(run.run_id, "thumbs", True)  # the OTLP sink does not take scores: never sent there
        result = agentmeter.flush(timeout=20)
        assert result.ok and result.sinks["otlp"].delivered == 1 and result.sinks["memory"].delivered == 2
        (span,) = collector.spans
        attrs = span["attributes"]
        assert (attrs["gen_ai.conversation.id"], attrs["session.id"], attrs["user.id"]) == ("conv-3", "conv-3", "u-9")
        assert attrs["agentmeter.version"] == "1.4.0"
        assert len(memory.scores) == 1
