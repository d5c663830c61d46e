"""Issue 16, must show: a score sent from a second process for a run the first process already exported lands
once, and a second score with the same key replaces it, in every sink: the local store, MongoDB (the
wire-protocol test server, real pymongo) and Firehose -> moto's S3 -> the pipe's COPY on fakesnow -> the
RUN_SCORES view. The runs carry their session, user and version into every sink too."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from pymongo import MongoClient

import agentmeter
from agentmeter import track_run
from agentmeter.sinks import MongoDBSink, SQLiteSink
from agentmeter.sinks.firehose import FirehoseSink
from agentmeter.snowflake_sql import SnowflakeNames
from tests._servers import FAKE_AWS_ENV
from tests.sinks._mini_mongod import MiniMongod

from ._fakesnow import Snowflake, mirror_prefix
from .conftest import REGION

ROOT = Path(__file__).resolve().parents[2]

_SCORER = r'''
import sys
import agentmeter
run_id, value = sys.argv[1], sys.argv[2]
agentmeter.score(run_id, "helpfulness", float(value), comment=f"from the feedback endpoint: {value}")
agentmeter.score(run_id, "thumbs", value > "0.5")
result = agentmeter.flush(timeout=60)
assert result.ok, result
'''


@pytest.fixture
def mini() -> Any:
    server = MiniMongod()
    try:
        yield server
    finally:
        server.stop()


def _score_in_another_process(tmp_path: Path, env: dict[str, str], run_id: str, value: str) -> None:
    script = tmp_path / "scorer.py"
    script.write_text(_SCORER)
    out = subprocess.run([sys.executable, str(script), run_id, value], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""  # agentmeter prints nothing


def test_a_score_from_another_process_lands_once_and_a_later_one_replaces_it_in_every_sink(
    sf: Snowflake, names: SnowflakeNames, moto_url: str, firehose_stream: str, mini: MiniMongod, tmp_path: Path
) -> None:
    db, database = tmp_path / "store.db", "agentmeter_scores"
    firehose = FirehoseSink(firehose_stream, region=REGION, endpoint_url=moto_url)
    mongo = MongoDBSink(mini.uri, database=database)
    agentmeter.configure(sinks=[SQLiteSink(db), mongo, firehose], spool_dir=str(tmp_path / "spool-1"))
    with track_run("chat", agent="support", session="conv-7", user="u-42", version="1.4.0") as run:
        pass
    assert agentmeter.flush().ok  # the first process exported the run
    agentmeter.shutdown()
    mongo.close()

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("AGENTMETER_")}
    env.update(FAKE_AWS_ENV)
    env.update({
        "PYTHONPATH": str(ROOT), "AGENTMETER_RAISE_INTERNAL": "1", "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true", "AGENTMETER_SINKS": "sqlite,mongodb,firehose",
        "AGENTMETER_DB": str(db), "AGENTMETER_SPOOL_DIR": str(tmp_path / "spool-2"),
        "AGENTMETER_MONGODB_URI": mini.uri, "AGENTMETER_MONGODB_DATABASE": database,
        "AGENTMETER_FIREHOSE_STREAM": firehose_stream, "AGENTMETER_FIREHOSE_ENDPOINT_URL": moto_url,
    })
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    folder = tmp_path / "stage"
    sf.point_stage_at(folder)

    for value in ("0.25", "0.75"):  # the second call of the same keys replaces the first
        _score_in_another_process(tmp_path, env, run.run_id, value)
        mirror_prefix(s3, names.bucket, names.prefix, folder)
        sf.run_pipe()
        want = {("helpfulness", float(value), f"from the feedback endpoint: {value}"),
                ("thumbs", 1.0 if value > "0.5" else 0.0, None)}

        with sqlite3.connect(db) as conn:
            local = conn.execute("SELECT run_id, name, value, comment FROM run_scores").fetchall()
        assert {r[0] for r in local} == {run.run_id} and {r[1:] for r in local} == want and len(local) == 2

        client: Any = MongoClient(mini.uri, serverSelectionTimeoutMS=3000)
        try:
            stored = list(client[database]["run_scores"].find({}))
            run_doc = client[database]["agent_metadata"].find_one({"_id": run.run_id})
        finally:
            client.close()
        assert len(stored) == 2 and {s["run_id"] for s in stored} == {run.run_id}
        assert {(s["name"], s["value"], s["comment"]) for s in stored} == want

        view = sf.query(f"SELECT run_id, name, value, comment FROM {sf.table('RUN_SCORES')}")
        assert len(view) == 2 and {r["run_id"] for r in view} == {run.run_id}
        assert {(r["name"], r["value"], r["comment"]) for r in view} == want
    raw = sf.query(f"SELECT COUNT(*) AS n FROM {sf.table('AGENTMETER_RAW')} "
                   "WHERE record:record_type::VARCHAR = 'run_score'")
    assert raw[0]["n"] == 4  # both calls landed in the raw table; the view keeps the latest of each key

    # the run itself, with its session, user and version, in every sink
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT session_id, user_id, version FROM agent_runs").fetchall() == [
            ("conv-7", "u-42", "1.4.0")]
    assert run_doc is not None and (run_doc["session_id"], run_doc["user_id"], run_doc["version"]) == (
        "conv-7", "u-42", "1.4.0")
    (typed,) = sf.query(f"SELECT session_id, user_id, version FROM {sf.table('AGENT_RUNS')}")
    assert typed == {"session_id": "conv-7", "user_id": "u-42", "version": "1.4.0"}
