"""The exporter's integer arithmetic for timestamps and durations gives what the float formulas give."""

from __future__ import annotations

import math
from datetime import datetime, timezone

from hypothesis import example, given
from hypothesis import strategies as st

from agentmeter import _clock

_NS = st.one_of(st.integers(min_value=0, max_value=10**7), st.integers(min_value=0, max_value=2**53),
                st.integers(min_value=-(2**60), max_value=2**64),
                st.integers(min_value=0, max_value=10**9).map(lambda n: n * 1000 + 500))  # the ties


@given(_NS)
@example(1500)  # a tie: round() decides on the binary value, so ms3 must ask it
@example(2**52 - 1)
@example(2**52)
@example(-1)
@example(-400)  # round gives -0.0 here
def test_ms3_is_round_to_the_microsecond(ns: int) -> None:
    expected = round(ns / 1e6, 3)
    got = _clock.ms3(ns)
    assert got == expected
    assert math.copysign(1.0, got) == math.copysign(1.0, expected)  # -0.0 stays -0.0
    assert repr(got) == repr(expected)


@given(st.integers(min_value=0, max_value=253402300799_999999))  # up to 9999-12-31T23:59:59.999999
def test_iso_utc_formats_epoch_microseconds(epoch_us: int) -> None:
    seconds, micros = divmod(epoch_us, 1_000_000)
    when = datetime.fromtimestamp(seconds, tz=timezone.utc).replace(microsecond=micros)
    assert _clock.iso_utc(epoch_us) == when.strftime("%Y-%m-%dT%H:%M:%S.%fZ").rjust(27, "0")
    assert _clock.parse_iso_utc(_clock.iso_utc(epoch_us)) == when


def test_iso_utc_of_one_second_reuses_its_prefix_and_keeps_the_micros() -> None:
    base = 1_764_000_000 * 1_000_000
    texts = [_clock.iso_utc(base + m) for m in (0, 7, 999_999)]
    assert texts == ["2025-11-24T16:00:00.000000Z", "2025-11-24T16:00:00.000007Z", "2025-11-24T16:00:00.999999Z"]
    assert _clock.iso_utc(base + 1_000_000) == "2025-11-24T16:00:01.000000Z"
