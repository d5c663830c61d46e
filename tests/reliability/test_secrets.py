"""No secret is stored or logged (issue 14, attack 3).

End to end, as a user runs it: a real process, the real SQLite store read back as a file, and the process's
own stdout and stderr. Capture stays off: error messages, metadata, tags and log lines must be scrubbed
whatever the capture setting.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from .conftest import run_python

OPENAI_KEY = "sk-proj-Zq8vJ1wXk2LmN3oP4qRs5tUv6wXy7zAB"
DB_PASSWORD = "hunter2pass"
MONGO_PASSWORD = "S3cretPassw0rd"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
ANTHROPIC_KEY = "sk-ant-api03-" + "x9Y8w7V6u5T4s3R2q1P0o9N8m7L6k5J4"
SECRETS = (OPENAI_KEY, DB_PASSWORD, MONGO_PASSWORD, AWS_KEY_ID, GITHUB_TOKEN, JWT, ANTHROPIC_KEY)

_FAILING_RUN = r"""
import sys
import agentmeter
from agentmeter import track_call, track_run, track_step
from agentmeter.sinks import Sink, SQLiteSink

OPENAI_KEY, DB_PASSWORD, AWS_KEY_ID, GITHUB_TOKEN, JWT, ANTHROPIC_KEY = sys.argv[3:9]


class DownSink(Sink):
    # a sink whose driver puts its connection string, password included, in every error
    name = "warehouse"

    def write(self, documents):
        raise ConnectionError(f"cannot reach postgres://loader:{DB_PASSWORD}@db.internal:5432/metrics")


agentmeter.configure(sinks=[SQLiteSink(sys.argv[1]), DownSink()], spool_dir=sys.argv[2], max_attempts=1)
try:
    with track_run("leaky", tags=["env:prod", "team:search"],
                   metadata={"openai_key": OPENAI_KEY, "aws_access_key_id": AWS_KEY_ID, "auth": "x",
                             "x_auth": GITHUB_TOKEN, "pwd": DB_PASSWORD, "passphrase": "correct horse",
                             "note": f"called with Authorization: Bearer {OPENAI_KEY}",
                             "headers": [["X-Api-Key", ANTHROPIC_KEY], ["Accept", "json"]],
                             "client": f"Client(api_key='{ANTHROPIC_KEY}')",
                             "session": f"jwt {JWT}", "max_tokens": 512}):
        with track_step("connect"):
            with track_call("postgres", "connect"):
                raise ConnectionError(
                    f"POST /v1/chat failed with Authorization: Bearer {OPENAI_KEY} "
                    f"after postgres://u:{DB_PASSWORD}@h/db refused"
                )
except ConnectionError:
    pass
result = agentmeter.flush(timeout=30)
print("FLUSHED", result.sinks["sqlite"].delivered, "SPOOLED", result.sinks["warehouse"].spooled)
"""


def _stored_text(db: Path) -> str:
    """Every value of every row of the store, as one string."""
    with sqlite3.connect(db) as conn:
        parts = []
        for table in ("agent_runs", "run_steps", "api_calls"):
            for row in conn.execute(f"SELECT * FROM {table}"):  # fixed table names
                parts.extend(str(v) for v in row)
    return "\n".join(parts)


def test_a_failing_run_stores_and_logs_no_secret_with_capture_off(tmp_path: Path, record_fault: Any) -> None:
    db = tmp_path / "store.db"
    out = run_python(_FAILING_RUN, str(db), str(tmp_path / "spool"), OPENAI_KEY, DB_PASSWORD, AWS_KEY_ID,
                     GITHUB_TOKEN, JWT, ANTHROPIC_KEY)
    assert out.returncode == 0, out.stderr
    assert "FLUSHED 1 SPOOLED 1" in out.stdout, out.stdout + out.stderr  # the down sink's copy is on disk
    spool_files = sorted((tmp_path / "spool").glob("spool.db*"))  # the spooled copy too (WAL included)
    assert spool_files
    stored = _stored_text(db) + "".join(f.read_bytes().decode("utf-8", "replace") for f in spool_files)
    leaked_store = [s for s in SECRETS if s in stored]
    leaked_logs = [s for s in SECRETS if s in out.stdout + out.stderr]
    with sqlite3.connect(db) as conn:
        message, tags, metadata = conn.execute("SELECT error_message, tags, metadata FROM agent_runs").fetchone()
        call_message = conn.execute("SELECT error_message FROM api_calls").fetchone()[0]
    spooled = int(out.stdout.split("SPOOLED ")[1].split()[0])
    record_fault(case="attack 3: secrets in an error message, metadata and a sink's error (capture off)",
                 agent="sync", runs=1, user_exceptions=0, lost=0, duplicates=0, redeliveries=0, spooled=spooled,
                 dropped=0, result="pass: no secret in the store or the logs" if not leaked_store + leaked_logs
                 else f"FAIL: {len(leaked_store)} secrets stored, {len(leaked_logs)} logged")
    assert not leaked_store, leaked_store
    assert not leaked_logs, leaked_logs
    # what is not secret survives, so the error is still useful
    assert "POST /v1/chat failed with Authorization: Bearer [REDACTED]" in message, message
    assert "postgres://u:[REDACTED]@h/db refused" in message, message
    assert call_message == message
    assert json.loads(tags) == ["env:prod", "team:search"]
    meta = json.loads(metadata)
    assert meta["max_tokens"] == 512  # a token count is not a secret
    assert meta["openai_key"] == meta["pwd"] == meta["auth"] == meta["passphrase"] == "[REDACTED]"
    assert meta["headers"] == [["X-Api-Key", "[REDACTED]"], ["Accept", "json"]]
    assert meta["client"] == "Client(api_key='[REDACTED]')"
    assert meta["note"] == "called with Authorization: Bearer [REDACTED]"
    assert "sink write failed" in out.stdout + out.stderr  # the sink's error was logged, scrubbed
    assert "postgres://loader:[REDACTED]@db.internal:5432/metrics" in out.stdout + out.stderr


_BAD_MONGO_URI = r"""
import agentmeter
from agentmeter import track_run
with track_run("r"):
    pass
print("ENABLED", agentmeter._state.settings().enabled)
"""


@pytest.mark.parametrize("how", ["environment", "configure"])
def test_a_mistyped_mongodb_uri_never_logs_its_password(tmp_path: Path, how: str) -> None:
    uri = f"mongdb://admin:{MONGO_PASSWORD}@db.example.com:27017/agents"  # "mongdb": a typo
    env = {"AGENTMETER_SINKS": "sqlite,mongodb", "AGENTMETER_MONGODB_URI": uri,
           "AGENTMETER_DB": str(tmp_path / "a.db"), "AGENTMETER_SPOOL_DIR": str(tmp_path / "spool")}
    code = _BAD_MONGO_URI
    if how == "configure":
        code = ("import sys, agentmeter\nfrom agentmeter.sinks import MongoDBSink\ntry:\n"
                "    MongoDBSink(uri=sys.argv[1])\nexcept ValueError as exc:\n    print('REFUSED', exc)\n")
    out = run_python(code, uri, env=env)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert MONGO_PASSWORD not in text, text
    assert "mongdb://admin:[REDACTED]@db.example.com" in text, text  # still says what was wrong


_SECRET_TAGS = r"""
import sys
import agentmeter
from agentmeter import track_run
from agentmeter.sinks import SQLiteSink

OPENAI_KEY, AWS_KEY_ID, GITHUB_TOKEN = sys.argv[3:6]
agentmeter.configure(sinks=[SQLiteSink(sys.argv[1])], spool_dir=sys.argv[2])
with track_run("tagged", tags=[f"key={OPENAI_KEY}", f"aws:{AWS_KEY_ID}", "env:prod"]) as run:
    run.add_tags(f"gh:{GITHUB_TOKEN}")
print("FLUSHED", agentmeter.flush(timeout=30).sinks["sqlite"].delivered)
"""


def test_tags_holding_secrets_are_stored_scrubbed(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    out = run_python(_SECRET_TAGS, str(db), str(tmp_path / "spool"), OPENAI_KEY, AWS_KEY_ID, GITHUB_TOKEN)
    assert out.returncode == 0 and "FLUSHED 1" in out.stdout, out.stderr
    with sqlite3.connect(db) as conn:
        (tags,) = conn.execute("SELECT tags FROM agent_runs").fetchone()
    assert [s for s in (OPENAI_KEY, AWS_KEY_ID, GITHUB_TOKEN) if s in tags] == []
    assert "env:prod" in tags and "key=[REDACTED]" in tags


@pytest.mark.parametrize("uri", [f"mongdb://admin:{MONGO_PASSWORD}@db.example.com/agents",
                                 f"mongodb://admin:{MONGO_PASSWORD}@db.example.com:port/agents"])
def test_the_dashboard_reports_a_bad_mongodb_uri_without_its_password(uri: str) -> None:
    from agentmeter.queries import SourceUnavailable, open_source

    with pytest.raises(SourceUnavailable) as caught:
        open_source("mongodb", environ={"AGENTMETER_MONGODB_URI": uri})
    shown = f"{caught.value} {caught.value.hint}"
    assert "AGENTMETER_MONGODB_URI cannot be used" in shown and MONGO_PASSWORD not in shown
