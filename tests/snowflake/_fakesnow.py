"""Helpers for the Snowflake tests: fakesnow (Snowflake SQL on DuckDB) in-process.

fakesnow has no roles, grants, storage integrations or pipes: exactly those statements are no-ops
(``NOP_REGEXES``); everything else in the rendered script runs for real. The pipe's COPY is then run on
its own, as Snowpipe would run it, against the stage re-pointed at a local folder (COPY from ``s3://``
needs the network).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agentmeter import contract
from agentmeter.snowflake_sql import (
    FILE_FORMAT,
    STAGE_NAME,
    SnowflakeNames,
    pipe_copy_statements,
    split_statements,
)

#: the statements fakesnow cannot run, and only those (anchored at the statement's start)
NOP_REGEXES = [
    r"CREATE\s+ROLE\b",
    r"GRANT\s",
    r"CREATE\s+(OR\s+REPLACE\s+)?STORAGE\s+INTEGRATION\b",
    r"CREATE\s+(OR\s+REPLACE\s+)?PIPE\b",
    r"DESC(RIBE)?\s+(INTEGRATION|PIPE)\b",
]

NAMES = SnowflakeNames(
    bucket="agentmeter-test-bucket",
    database="AM_TEST",
    schema="METRICS",
    prefix="firehose/agentmeter/",
    integration="AM_S3",
    role="AM_LOADER",
    aws_role_arn="arn:aws:iam::123456789012:role/snowflake-agentmeter",
    warehouse="AM_WH",
)


def is_nop(statement: str) -> bool:
    return any(re.match(p, statement, re.IGNORECASE) for p in NOP_REGEXES)


class Snowflake:
    """A fakesnow connection with the agentmeter script deployed, and helpers to load NDJSON files."""

    def __init__(self, conn: Any, names: SnowflakeNames, script: str) -> None:
        self.conn = conn
        self.names = names
        self.script = script
        self.executed: list[str] = []

    def deploy(self) -> None:
        cur = self.conn.cursor()
        for stmt in split_statements(self.script):
            cur.execute(stmt)
            self.executed.append(stmt)

    def point_stage_at(self, folder: Path) -> None:
        """Re-create the stage on a local folder: what the S3 prefix holds, downloaded (see FIELD_NOTES)."""
        n = self.names
        self.conn.cursor().execute(
            f"CREATE OR REPLACE STAGE {n.qualified(STAGE_NAME)} URL = 'file://{folder}/' "
            f"FILE_FORMAT = (FORMAT_NAME = '{n.qualified(FILE_FORMAT)}')"
        )

    def run_pipe(self) -> list[tuple[Any, ...]]:
        """Run the COPY inside the pipe, verbatim, as Snowpipe would; returns COPY's result rows."""
        (copy,) = pipe_copy_statements(self.script)
        cur = self.conn.cursor()
        cur.execute(copy)
        return list(cur.fetchall())

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        cur = self.conn.cursor()
        cur.execute(sql, params)
        cols = [d.name.lower() for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def table(self, name: str) -> str:
        return self.names.qualified(name.upper())



def write_ndjson(path: Path, documents: Iterable[Mapping[str, Any]]) -> Path:
    """The records of ``documents`` as one NDJSON file, as a Firehose object holds them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for doc in documents:
            for rows in contract.document_records(doc):
                for row in rows:
                    fh.write(json.dumps(row, separators=(",", ":")) + "\n")
    return path


def mirror_prefix(s3: Any, bucket: str, prefix: str, folder: Path) -> list[Path]:
    """Download every object under ``s3://bucket/prefix`` into ``folder`` (flat: fakesnow's COPY does not
    recurse), keeping files already there, as a stage keeps its files. Returns the new files."""
    folder.mkdir(parents=True, exist_ok=True)
    new = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            target = folder / obj["Key"][len(prefix):].replace("/", "__")
            if not target.exists():
                target.write_bytes(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                new.append(target)
    return new
