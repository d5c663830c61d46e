"""Fixtures for the Snowflake tests: fakesnow in-process, with the rendered script deployed."""

from __future__ import annotations

from collections.abc import Iterator

import fakesnow
import pytest
import snowflake.connector

from agentmeter.snowflake_sql import SnowflakeNames, render

from ._fakesnow import NAMES, NOP_REGEXES, Snowflake


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
