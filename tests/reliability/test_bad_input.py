"""Bad input never escapes: it is stored safely (repr, truncated with a flag, scrubbed), counted, never raised."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import agentmeter
from agentmeter import _guard, track_call, track_run, track_step
from agentmeter.sinks import SQLiteSink

SECRET = "sk-live-0123456789abcdefSECRET"


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class BadDump:
    def model_dump(self) -> Any:
        raise ValueError("dump exploded")


def _recursive() -> Any:
    a: list[Any] = [1]
    a.append(a)
    d: dict[str, Any] = {"self": None}
    d["self"] = d
    return {"list": a, "dict": d}


CASES: dict[str, tuple[Any, str]] = {
    # name: (value passed as an argument and returned, counter that must move)
    "non_serializable": ({"lock": threading.Lock(), "obj": object(), "fn": print}, "capture.repr"),
    "unprintable": (Unprintable(), "capture.repr"),
    "bad_model_dump": (BadDump(), "capture.repr"),
    "recursive": (_recursive(), "capture.recursive"),
    "huge_10mb_text": ("x" * (10 * 1024 * 1024 + 1), "capture.truncated"),
    "huge_10mb_bytes": (b"\x00" * (10 * 1024 * 1024 + 1), "capture.bytes"),
    "nan_inf": ([float("nan"), float("inf"), -float("inf")], "capture.non_finite"),
    "invalid_unicode": ("bad \udcff surrogate \ud800", "capture.invalid_unicode"),
    "huge_int": (10**5000, "capture.big_int"),
    "non_string_keys": ({1: "a", (1, 2): "b", None: "c", 2.5: "d"}, "capture.non_string_key"),
    "secret_args": ({"api_key": SECRET, "nested": {"password": SECRET}}, "capture.redacted"),
    "secret_headers": ({"headers": {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET}},
                       "capture.redacted"),
    "secret_header_pairs": ({"headers": [("authorization", f"Bearer {SECRET}"), ("accept", "json")]},
                            "capture.redacted"),
    "secret_in_text": (f"calling with Authorization: Bearer {SECRET}", "capture.redacted"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_stored_safely_counted_and_never_raised(case: str, tmp_path: Path,
                                                             record_fault: Any) -> None:
    value, counter = CASES[case]
    db = tmp_path / "store.db"
    agentmeter.configure(sinks=[SQLiteSink(db)], spool_dir=str(tmp_path / "spool"), capture=True,
                         capture_max_chars=4096)

    @track_run(metadata={"case": case, 7: "int key"})  # type: ignore[dict-item]
    def agent(payload: Any) -> Any:
        with track_step("tool", kind="tool"), track_call("http", "get") as call:
            call.set_metadata(request_headers={"Authorization": f"Bearer {SECRET}"}, payload=payload)
        return payload

    before = _guard.counters[counter]
    raised = None
    try:
        assert agent(value) is value  # the same object comes back, untouched
    except Exception as exc:  # pragma: no cover - this is the failure being tested for
        raised = exc
    result = agentmeter.flush(timeout=60)
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT inputs, output, truncated, metadata FROM agent_runs").fetchone()
        call_meta = conn.execute("SELECT metadata FROM api_calls").fetchone()[0]
    stored = json.dumps([row, call_meta])
    moved = _guard.counters[counter] - before
    ok = raised is None and result.ok and row is not None and SECRET not in stored and moved > 0
    record_fault(case=f"bad input: {case}", agent="sync", runs=1, user_exceptions=int(raised is not None),
                 lost=0 if row is not None else 1, duplicates=0, redeliveries=0, spooled=0, dropped=0,
                 result="pass (stored, counted)" if ok else "FAIL")
    assert raised is None
    assert result.ok, result
    inputs = json.loads(row[0])
    assert "payload" in inputs and json.loads(row[1]) is not None
    assert SECRET not in stored
    assert len(stored) < 100_000  # size-capped
    assert moved > 0, f"{counter} did not count the bad input"
    if case.startswith("huge_10mb_text"):
        assert row[2] == 1  # truncated flag
    assert json.loads(row[3])["7"] == "int key"
    assert _guard.counters["warnings.metadata.key"] >= 1


def test_bad_names_errors_and_usage_never_break_the_store(tmp_path: Path) -> None:
    """Invalid Unicode outside captured values (run names, tags, exception messages) and NaN usage."""
    db = tmp_path / "store.db"
    agentmeter.configure(sinks=[SQLiteSink(db)], spool_dir=str(tmp_path / "spool"))
    def bad_run() -> None:
        with track_run("run-\udcff", agent="agent-\ud800", tags=["tag-\udc80"]):
            with track_call("p", "op") as call:
                call.record_usage(input_tokens=-1, output_tokens=float("nan"))  # type: ignore[arg-type]
                call.record_usage(units=float("inf"))
            raise OSError("no such file: b'\\xff' -> \udcff")  # surrogateescape'd file name

    with pytest.raises(OSError, match="no such file"):
        bad_run()
    result = agentmeter.flush(timeout=30)
    assert result.ok, result
    with sqlite3.connect(db) as conn:
        name, status, message = conn.execute("SELECT name, status, error_message FROM agent_runs").fetchone()
        tokens = conn.execute("SELECT input_tokens, output_tokens, units FROM api_calls").fetchone()
    assert status == "error" and name.startswith("run-") and "no such file" in message
    assert tokens == (None, None, None)
    assert _guard.counters["warnings.document.repaired"] == 1
    assert _guard.counters["warnings.usage.input_tokens"] == 1
