"""The metadata streamer: MongoDB (mongomock for the query logic) -> FirehoseSink -> moto's HTTP server -> S3."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import mongomock
import pytest

import agentmeter
from agentmeter import contract
from agentmeter.cli import main
from agentmeter.sinks import FirehoseSink
from agentmeter.sinks.mongodb import to_bson
from agentmeter.streamer import Checkpoint, MetadataStreamer, StreamerNotConfigured
from agentmeter.testing import DeterministicClock, capture_runs
from tests.sinks._fault_proxy import FaultProxy
from tests.sinks.conftest import REGION, Landing

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def _documents(n: int, steps: int = 2, calls: int = 3, hours_apart: float = 0.5) -> list[dict[str, Any]]:
    """n run documents, the last one started just before NOW, each ``hours_apart`` earlier than the next."""
    start_us = int((NOW - timedelta(hours=hours_apart * n)).timestamp() * 1e6)
    clock = DeterministicClock(start_us=start_us, step_us=1000)
    docs = []
    with capture_runs(clock=clock) as captured:
        for i in range(n):
            clock._now_us = start_us + int(i * hours_apart * 3600e6)
            with agentmeter.track_run(f"run-{i}", agent="a"):
                for j in range(steps):
                    with agentmeter.track_step(f"s{j}"):
                        for k in range(calls):
                            with agentmeter.track_call("openai", f"op{k}", model="m") as call:
                                call.record_usage(input_tokens=i, output_tokens=k)
        docs = captured.runs
    return docs


def _collection(docs: list[dict[str, Any]]) -> Any:
    coll = mongomock.MongoClient(tz_aware=True)["agentmeter"]["agent_metadata"]
    if docs:
        coll.insert_many([to_bson(d) for d in docs])
    return coll


def _sink(landing: Landing, url: str | None = None) -> FirehoseSink:
    return FirehoseSink(landing.stream, region=REGION, endpoint_url=url or landing.url)


#: the streamer's retry policy in these tests: three attempts per call, waits of a few milliseconds
RETRIES: dict[str, Any] = {"max_attempts": 3, "retry_initial": 0.001, "retry_max": 0.005}


def _expected(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for doc in docs:
        r = contract.document_records(doc)
        for row in (*r.agent_runs, *r.run_steps, *r.api_calls):
            out[row["record_id"]] = row
    return out


def _landed_once(landing: Landing) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in landing.rows():
        assert row["record_id"] not in out, f"sent twice: {row['record_id']}"
        out[row["record_id"]] = row
    return out


def test_backfill_sends_every_document_exactly_once(landing: Landing, tmp_path: Path) -> None:
    docs = _documents(40)
    streamer = MetadataStreamer(_collection(docs), _sink(landing), tmp_path / "cp")
    summary = streamer.backfill(since=None)
    assert (summary.selected, summary.sent, summary.skipped, summary.failed) == (40, 40, 0, 0)
    assert _landed_once(landing) == _expected(docs)  # field by field, from MongoDB's stored form
    assert summary.records == 40 * (1 + 2 + 6) and summary.calls == 1  # 360 records fit one call

    again = streamer.backfill(since=None)  # idempotent: the checkpoint has them all
    assert (again.sent, again.skipped) == (0, 40)
    assert len(landing.rows()) == 40 * 9


def test_since_and_limit_select_the_most_recent_runs(landing: Landing) -> None:
    docs = _documents(10, steps=0, calls=0, hours_apart=1.0)  # started 10h, 9h, ... 1h before NOW
    streamer = MetadataStreamer(_collection(docs), _sink(landing))
    summary = streamer.backfill(since=timedelta(hours=4, minutes=30), now=NOW)
    assert summary.sent == 4
    assert {r["run_id"] for r in landing.rows()} == {d["run_id"] for d in docs[-4:]}

    landing2 = Landing(landing.url)
    limited = MetadataStreamer(_collection(docs), _sink(landing2)).backfill(since=None, limit=3, now=NOW)
    assert limited.sent == 3
    assert {r["run_id"] for r in landing2.rows()} == {d["run_id"] for d in docs[-3:]}


def test_an_interrupted_backfill_resumes_without_resending(landing: Landing, tmp_path: Path) -> None:
    docs = _documents(60, steps=4, calls=4)  # 21 records a run: runs straddle the 500-record calls
    checkpoint = tmp_path / "stream.checkpoint"
    coll = _collection(docs)
    calls = 0

    def interrupt_after_two_calls(done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        MetadataStreamer(coll, _sink(landing), checkpoint).backfill(progress=interrupt_after_two_calls)
    first = landing.rows()
    assert len(first) == 1000  # two full calls went out
    assert len(Checkpoint(checkpoint, landing.stream).ids()) == 1000 // 21

    summary = MetadataStreamer(coll, _sink(landing), checkpoint).backfill()
    assert summary.skipped == 1000 // 21 and summary.sent == 60 - 1000 // 21
    assert _landed_once(landing) == _expected(docs)  # nothing twice, even the run split across calls


def test_failed_runs_are_reported_and_sent_by_the_next_stream(
    landing: Landing, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    docs = _documents(5)
    coll = _collection(docs)
    checkpoint = tmp_path / "cp"
    fault_proxy.plan.extend([("partial", lambda i: i not in (3, 20))] + [("partial", lambda i: False)] * 2)
    summary = MetadataStreamer(coll, _sink(landing, fault_proxy.url), checkpoint, **RETRIES).backfill()
    assert summary.failed == 2 and summary.sent == 3 and not summary.ok
    assert set(summary.failed_ids) == {docs[0]["run_id"], docs[2]["run_id"]}  # records 3 and 20: runs 0 and 2
    # max_attempts calls: the first with every record, the retries with only the two still failing
    assert [c["records"] for c in fault_proxy.calls] == [5 * 9, 2, 2] and summary.calls == 3

    retry = MetadataStreamer(coll, _sink(landing, fault_proxy.url), checkpoint, **RETRIES).backfill()
    assert (retry.sent, retry.skipped, retry.failed) == (2, 3, 0)
    assert retry.records == 2  # only the two records that had failed
    assert [c["records"] for c in fault_proxy.calls] == [5 * 9, 2, 2, 2]
    assert _landed_once(landing) == _expected(docs)


def test_a_throttled_call_is_retried_by_the_streamer(landing: Landing, fault_proxy: FaultProxy) -> None:
    docs = _documents(3)
    fault_proxy.plan.extend(["503", "503"])  # two throttled attempts, the third succeeds
    summary = MetadataStreamer(_collection(docs), _sink(landing, fault_proxy.url), **RETRIES).backfill()
    assert summary.ok and summary.sent == 3 and summary.calls == 3
    assert [c["action"] for c in fault_proxy.calls] == ["503", "503", "ok"]
    assert _landed_once(landing) == _expected(docs)


def test_a_dead_endpoint_gets_max_attempts_calls_then_the_runs_are_reported_failed(
    landing: Landing, fault_proxy: FaultProxy
) -> None:
    docs = _documents(3)
    fault_proxy.default = "503"
    summary = MetadataStreamer(_collection(docs), _sink(landing, fault_proxy.url), **RETRIES).backfill()
    assert (summary.sent, summary.failed) == (0, 3) and summary.calls == 3
    assert [c["records"] for c in fault_proxy.calls] == [3 * 9] * 3


def test_the_default_retry_policy_is_the_exporters() -> None:
    from agentmeter._config import Settings

    streamer = MetadataStreamer(_collection([]), FirehoseSink("s"))
    defaults = Settings()
    assert (streamer.max_attempts, streamer.retry_initial, streamer.retry_max) == (
        defaults.max_attempts, defaults.retry_initial, defaults.retry_max)


@pytest.mark.parametrize(
    ("setting", "value"), [("max_attempts", 0), ("max_attempts", 1.5), ("retry_initial", -1), ("retry_max", "1")]
)
def test_invalid_retry_settings_raise_value_error_naming_them(setting: str, value: Any) -> None:
    with pytest.raises(ValueError, match=setting):
        MetadataStreamer(_collection([]), FirehoseSink("s"), **{setting: value})


def test_send_run_sends_one_run(landing: Landing) -> None:
    docs = _documents(3)
    summary = MetadataStreamer(_collection(docs), _sink(landing)).send_run(docs[1]["run_id"])
    assert summary.sent == 1
    assert {r["run_id"] for r in landing.rows()} == {docs[1]["run_id"]}
    with pytest.raises(LookupError):
        MetadataStreamer(_collection(docs), _sink(landing)).send_run("no-such-run")


# -- the command line -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"AGENTMETER_MONGODB_URI": "mongodb://127.0.0.1:1/"}, ["Firehose is not configured"]),
        ({"AGENTMETER_FIREHOSE_STREAM": "s"}, ["MongoDB is not configured"]),
        ({}, ["MongoDB is not configured", "Firehose is not configured"]),
    ],
)
def test_cli_refuses_clearly_when_unconfigured(
    env: dict[str, str], missing: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["stream", "--since", "24h", "--checkpoint", str(tmp_path / "cp")]) == 2
    err = capsys.readouterr().err
    assert "nothing sent" in err and all(m in err for m in missing)
    assert not (tmp_path / "cp").exists()
    with pytest.raises(StreamerNotConfigured):
        MetadataStreamer.from_env(env)


def test_cli_reports_an_unusable_mongodb_uri_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # refused by pymongo when the client is made (an unescaped password), before any network use
    monkeypatch.setenv("AGENTMETER_MONGODB_URI", "mongodb://user:pa:ss@localhost/agentmeter")
    monkeypatch.setenv("AGENTMETER_FIREHOSE_STREAM", "agentmeter")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert main(["stream", "--since", "24h", "--checkpoint", str(tmp_path / "cp")]) == 1
    err = capsys.readouterr().err
    assert "nothing sent" in err and "AGENTMETER_MONGODB_URI" in err


def test_cli_backfills_and_resumes(
    landing: Landing, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    docs = _documents(12)
    monkeypatch.setenv("AGENTMETER_MONGODB_URI", "mongodb://mongo.example:27017/")
    monkeypatch.setenv("AGENTMETER_FIREHOSE_STREAM", landing.stream)
    monkeypatch.setenv("AGENTMETER_FIREHOSE_ENDPOINT_URL", landing.url)
    monkeypatch.setenv("AWS_REGION", REGION)
    with mongomock.patch(servers=(("mongo.example", 27017),)):
        import pymongo

        pymongo.MongoClient("mongodb://mongo.example:27017/")["agentmeter"]["agent_metadata"].insert_many(
            [to_bson(d) for d in docs]
        )
        cp = str(tmp_path / "cp")
        assert main(["stream", "--since", "all", "--limit", "5", "--checkpoint", cp, "--quiet"]) == 0
        assert "sent 5, skipped 0, failed 0" in capsys.readouterr().out
        assert main(["stream", "--since", "all", "--checkpoint", cp, "--quiet"]) == 0
        assert "sent 7, skipped 5, failed 0" in capsys.readouterr().out
        assert main(["stream", "--run-id", docs[0]["run_id"], "--no-checkpoint", "--quiet"]) == 0
        assert "sent 1, skipped 0, failed 0" in capsys.readouterr().out
        assert main(["stream", "--run-id", "nope", "--quiet", "--no-checkpoint"]) == 1
    rows = landing.rows()
    assert len(rows) == 13 * 9 and {r["run_id"] for r in rows} == {d["run_id"] for d in docs}
    lines = [json.loads(line) for line in Path(cp).read_text().splitlines()]
    assert all(line["stream"] == landing.stream for line in lines)


# -- scores ----------------------------------------------------------------------------------------------
def _score(run_id: str, name: str, value: float, at: datetime, event_id: str) -> dict[str, Any]:
    from agentmeter._record import FinishedScore

    return contract.score_document(
        FinishedScore(event_id, run_id, name, "user", value, None, "numeric", None, int(at.timestamp() * 1e6))
    )


def _scores_collection(coll: Any, scores: list[dict[str, Any]]) -> Any:
    from agentmeter.sinks.mongodb import score_to_bson

    target = coll.database["run_scores"]
    for doc in scores:
        stored = score_to_bson(doc)
        target.replace_one({"_id": stored["_id"]}, stored, upsert=True)  # what the sink leaves: the latest
    return target


def _landed_scores(landing: Landing) -> list[dict[str, Any]]:
    return [r for r in landing.rows() if r["record_type"] == contract.RUN_SCORE]


def test_backfill_sends_the_scores_given_in_its_window_once_and_a_replaced_score_again(
    landing: Landing, tmp_path: Path
) -> None:
    docs = _documents(3)
    coll = _collection(docs)
    old = _score(docs[0]["run_id"], "helpful", 0.0, NOW - timedelta(days=3), "e-old")
    recent = [_score(docs[1]["run_id"], "helpful", 1.0, NOW - timedelta(minutes=30), "e-1"),
              _score(docs[2]["run_id"], "accuracy", 0.25, NOW - timedelta(minutes=10), "e-2")]
    scores = _scores_collection(coll, [old, *recent])
    streamer = MetadataStreamer(coll, _sink(landing), tmp_path / "cp", scores=scores)
    summary = streamer.backfill(since=timedelta(hours=24), now=NOW)
    assert (summary.scores_sent, summary.scores_skipped, summary.scores_failed) == (2, 0, 0)
    assert summary.ok
    assert {(r["run_id"], r["name"], r["value"]) for r in _landed_scores(landing)} == {
        (docs[1]["run_id"], "helpful", 1.0), (docs[2]["run_id"], "accuracy", 0.25)}

    again = streamer.backfill(since=timedelta(hours=24), now=NOW)  # the checkpoint has both events
    assert (again.sent, again.scores_sent, again.scores_skipped) == (0, 0, 2)
    assert len(_landed_scores(landing)) == 2

    # the user changes their mind: a new event of the same (run, name, source) replaces the stored score
    _scores_collection(coll, [_score(docs[1]["run_id"], "helpful", 0.0, NOW - timedelta(minutes=1), "e-3")])
    third = streamer.backfill(since=timedelta(hours=24), now=NOW)
    assert (third.scores_sent, third.scores_skipped) == (1, 1)
    landed = _landed_scores(landing)
    assert [r["value"] for r in landed if r["event_id"] == "e-3"] == [0.0]
    assert len({r["score_id"] for r in landed}) == 2  # one key per (run, name, source): the view keeps the latest


def test_send_run_sends_the_runs_scores_and_no_others(landing: Landing) -> None:
    docs = _documents(2)
    coll = _collection(docs)
    scores = _scores_collection(coll, [_score(docs[0]["run_id"], "helpful", 1.0, NOW, "e-a"),
                                       _score(docs[1]["run_id"], "helpful", 0.0, NOW, "e-b")])
    summary = MetadataStreamer(coll, _sink(landing), scores=scores).send_run(docs[0]["run_id"])
    assert (summary.sent, summary.scores_sent) == (1, 1)
    assert [r["event_id"] for r in _landed_scores(landing)] == ["e-a"]


def test_without_a_scores_collection_only_runs_are_sent(landing: Landing) -> None:
    docs = _documents(2)
    coll = _collection(docs)
    _scores_collection(coll, [_score(docs[0]["run_id"], "helpful", 1.0, NOW, "e-a")])
    summary = MetadataStreamer(coll, _sink(landing)).backfill(since=None)
    assert (summary.sent, summary.scores_sent) == (2, 0)
    assert _landed_scores(landing) == []


def test_cli_streams_scores_and_says_how_many(
    landing: Landing, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    docs = _documents(2)
    monkeypatch.setenv("AGENTMETER_MONGODB_URI", "mongodb://mongo.example:27017/")
    monkeypatch.setenv("AGENTMETER_FIREHOSE_STREAM", landing.stream)
    monkeypatch.setenv("AGENTMETER_FIREHOSE_ENDPOINT_URL", landing.url)
    monkeypatch.setenv("AWS_REGION", REGION)
    with mongomock.patch(servers=(("mongo.example", 27017),)):
        import pymongo

        db = pymongo.MongoClient("mongodb://mongo.example:27017/", tz_aware=True)["agentmeter"]
        db["agent_metadata"].insert_many([to_bson(d) for d in docs])
        _scores_collection(db["agent_metadata"], [_score(docs[0]["run_id"], "helpful", 1.0, NOW, "e-a")])
        cp = str(tmp_path / "cp")
        assert main(["stream", "--since", "all", "--checkpoint", cp, "--quiet"]) == 0
        out = capsys.readouterr().out
        assert "sent 2, skipped 0, failed 0" in out and "scores: sent 1, skipped 0, failed 0" in out
        assert main(["stream", "--since", "all", "--checkpoint", cp, "--quiet"]) == 0
        assert "scores: sent 0, skipped 1, failed 0" in capsys.readouterr().out
    assert [r["event_id"] for r in _landed_scores(landing)] == ["e-a"]
