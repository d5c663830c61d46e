"""Fixtures for the sink tests: moto's HTTP server (Firehose -> S3), a fault proxy in front of it, and a
MongoDB URI (a wire-protocol test server driven by real pymongo, or a real server when
``AGENTMETER_TEST_MONGODB_URI`` is set)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

import agentmeter
from tests._servers import fake_aws_env, running_moto_server
from tests.sinks._fault_proxy import FaultProxy
from tests.sinks._mini_mongod import MiniMongod

REGION = "us-east-1"
BUCKET = "agentmeter-test-landing"
PREFIX = "agentmeter/"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's threaded HTTP server on loopback; yields its URL."""
    with running_moto_server() as url:
        yield url


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials so boto3's standard chain never looks further (no instance metadata calls)."""
    fake_aws_env(monkeypatch, REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


class Landing:
    """A delivery stream writing to an S3 bucket on the moto server, and a reader for what landed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stream = f"agentmeter-{uuid.uuid4().hex[:8]}"
        self.prefix = f"{PREFIX}{self.stream}/"
        self.s3 = boto3.client("s3", region_name=REGION, endpoint_url=url)
        firehose = boto3.client("firehose", region_name=REGION, endpoint_url=url)
        try:
            self.s3.create_bucket(Bucket=BUCKET)
        except self.s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        firehose.create_delivery_stream(
            DeliveryStreamName=self.stream,
            DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/firehose-agentmeter",
                "BucketARN": f"arn:aws:s3:::{BUCKET}",
                "Prefix": self.prefix,
                "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 60},
            },
        )

    def objects(self) -> list[bytes]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=self.prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return [self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in sorted(keys)]

    def rows(self) -> list[dict[str, Any]]:
        """Every record that landed, parsed from newline-delimited JSON (each object must end in a newline)."""
        out = []
        for body in self.objects():
            assert body.endswith(b"\n"), "an S3 object does not end with a newline"
            out.extend(json.loads(line) for line in body.decode("utf-8").splitlines())
        return out


@pytest.fixture
def landing(moto_server: str) -> Landing:
    return Landing(moto_server)


@pytest.fixture
def fault_proxy(moto_server: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(int(moto_server.rsplit(":", 1)[1]))
    try:
        yield proxy
    finally:
        proxy.close()


# -- MongoDB ------------------------------------------------------------------------------------------------
class MongoTarget:
    """Where the MongoDB tests write: a URI, a database name of their own, and a way to inject faults."""

    def __init__(self, uri: str, mini: MiniMongod | None) -> None:
        self.uri = uri
        self.mini = mini
        self.database = f"agentmeter_test_{uuid.uuid4().hex[:8]}"
        self.sinks: list[Any] = []  # sinks a test made; closed before the server stops

    def close_sinks(self) -> None:
        agentmeter.shutdown(timeout=2)
        for sink in self.sinks:
            sink.close()

    def client(self) -> Any:
        from pymongo import MongoClient

        return MongoClient(self.uri, serverSelectionTimeoutMS=3000)

    def fail_next(self, command: str, times: int, **data: Any) -> None:
        """Make the next ``times`` ``command`` commands fail (MongoDB's failCommand fail point)."""
        client = self.client()
        try:
            client.admin.command("configureFailPoint", "failCommand", mode={"times": times},
                                 data={"failCommands": [command], **data})
        finally:
            client.close()

    def clear_faults(self) -> None:
        client = self.client()
        try:
            client.admin.command("configureFailPoint", "failCommand", mode="off")
        finally:
            client.close()


@pytest.fixture(params=["mockupdb"] + (["real"] if os.environ.get("AGENTMETER_TEST_MONGODB_URI") else []))
def mongo(request: pytest.FixtureRequest) -> Iterator[MongoTarget]:
    """A MongoDB for the sink tests: always the wire-protocol test server, plus a real server when
    ``AGENTMETER_TEST_MONGODB_URI`` is set. The real server must be a replica set (one member is enough:
    pymongo retries writes only on replica sets) that allows test commands, for the failCommand fail point:
    ``mongod --replSet rs0 --setParameter enableTestCommands=1``, then ``rs.initiate()``."""
    if request.param == "real":
        target = MongoTarget(os.environ["AGENTMETER_TEST_MONGODB_URI"], None)
        try:
            yield target
        finally:
            target.close_sinks()
            target.clear_faults()
            client = target.client()
            client.drop_database(target.database)
            client.close()
        return
    mini = MiniMongod()
    target = MongoTarget(mini.uri, mini)
    try:
        yield target
    finally:
        target.close_sinks()  # close the sinks' clients before the server goes away
        mini.stop()
