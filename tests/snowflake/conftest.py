"""Fixtures for the Snowflake tests: fakesnow in-process, with the rendered script deployed."""

from __future__ import annotations

from collections.abc import Iterator

import fakesnow
import pytest
import requests
import snowflake.connector

from agentmeter.snowflake_sql import SnowflakeNames, render

from .._servers import fake_aws_env, running_moto_server
from ._fakesnow import NAMES, NOP_REGEXES, Snowflake

REGION = "us-east-1"


@pytest.fixture
def names() -> SnowflakeNames:
    return NAMES


@pytest.fixture
def sf(names: SnowflakeNames) -> Iterator[Snowflake]:
    """fakesnow with the whole rendered script deployed."""
    with fakesnow.patch(nop_regexes=NOP_REGEXES):
        conn = snowflake.connector.connect()
        env = Snowflake(conn, names, render(names))
        env.deploy()
        try:
            yield env
        finally:
            conn.close()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's threaded HTTP server on loopback (Firehose and S3); yields its URL."""
    with running_moto_server() as url:
        yield url


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials so boto3's standard chain never looks further (no instance metadata calls)."""
    fake_aws_env(monkeypatch, REGION)


@pytest.fixture
def firehose_stream(moto_url: str, aws_env: None, names: SnowflakeNames) -> str:
    """A DirectPut delivery stream writing to ``s3://<names.bucket>/<names.prefix>`` on the moto server."""
    import boto3

    requests.post(f"{moto_url}/moto-api/reset", timeout=10)
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    s3.create_bucket(Bucket=names.bucket)
    stream = "agentmeter-e2e"
    boto3.client("firehose", region_name=REGION, endpoint_url=moto_url).create_delivery_stream(
        DeliveryStreamName=stream,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose-agentmeter",
            "BucketARN": f"arn:aws:s3:::{names.bucket}",
            "Prefix": names.prefix,
            "ErrorOutputPrefix": "firehose-errors/",
            "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 60},
        },
    )
    return stream
