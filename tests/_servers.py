"""Loopback plumbing the test folders share: a free port, moto's HTTP server, fake AWS credentials."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

#: what boto3 needs to sign requests to moto without looking any further (no instance metadata calls)
FAKE_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


def free_port() -> int:
    """A loopback port nobody listened on a moment ago (for a server to start on, or to find nobody)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_moto_server() -> Iterator[str]:
    """moto's threaded HTTP server on loopback; yields its URL and stops it afterwards."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def fake_aws_env(monkeypatch: pytest.MonkeyPatch, region: str) -> None:
    """Fake credentials and ``region`` so boto3's standard chain never looks further."""
    for key, value in {**FAKE_AWS_ENV, "AWS_DEFAULT_REGION": region, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
