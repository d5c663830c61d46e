"""Property: for any record sizes (up to and past 1,000 KiB), packing respects every PutRecordBatch limit,
loses and duplicates nothing, and keeps each run's records in order."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentmeter import contract
from agentmeter.sinks.firehose import (
    MAX_BYTES_PER_CALL,
    MAX_RECORD_BYTES,
    MAX_RECORDS_PER_CALL,
    document_payloads,
    encode_record,
    pack,
)

KIB = 1024


def _document(run_id: str, output_chars: int, step_chars: list[int], call_meta: list[int]) -> dict[str, Any]:
    """A run document of the contract's shape whose captured values have the given sizes."""
    base = {k: None for k in (c.name for c in contract.TABLES["agent_runs"]) if k not in ("record_type", "record_id")}
    doc: dict[str, Any] = {
        **base, "schema_version": 1, "run_id": run_id, "name": "r", "status": "success", "tags": [],
        "metadata": {}, "truncated": False, "output": {"text": "o" * output_chars} if output_chars else None,
        "started_at": "2026-11-26T08:00:00.000000Z", "ended_at": "2026-11-26T08:00:01.000000Z",
    }
    doc["steps"] = [
        {"step_id": f"{run_id}-s{j:03d}", "run_id": run_id, "name": f"s{j}", "kind": "tool", "status": "success",
         "metadata": {}, "inputs": {"q": "\u00e9" * n}, "output": None, "truncated": False}
        for j, n in enumerate(step_chars)
    ]
    doc["calls"] = [
        {"call_id": f"{run_id}-c{j:03d}", "run_id": run_id, "step_id": None, "provider": "openai",
         "metadata": {"blob": "\u0001" * n}, "cost_usd": None, "priced": False}
        for j, n in enumerate(call_meta)
    ]
    return doc


sizes_chars = st.one_of(
    st.integers(0, 2_000),
    st.integers(100 * KIB, 600 * KIB),
    st.integers(MAX_RECORD_BYTES - 2_000, MAX_RECORD_BYTES + 300 * KIB),  # at and past the limit
)
documents = st.lists(
    st.tuples(sizes_chars, st.lists(sizes_chars, max_size=4), st.lists(st.integers(0, 400 * KIB), max_size=4)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(documents)
def test_packed_calls_respect_every_limit_and_lose_nothing(specs: list[Any]) -> None:
    docs = [_document(f"run-{i:03d}", *spec) for i, spec in enumerate(specs)]
    payloads: list[tuple[str, bytes]] = []
    for doc in docs:
        payloads.extend(document_payloads(doc))
    calls = pack([len(data) for _, data in payloads])

    for call in calls:
        assert 1 <= len(call) <= MAX_RECORDS_PER_CALL
        assert sum(len(payloads[i][1]) for i in call) <= MAX_BYTES_PER_CALL
        assert all(len(payloads[i][1]) <= MAX_RECORD_BYTES for i in call)
    sent = [i for call in calls for i in call]
    assert sent == list(range(len(payloads)))  # every record once, in order
    # greedy in order is optimal: no call could have taken the next record too
    for call, nxt in itertools.pairwise(calls):
        size = sum(len(payloads[i][1]) for i in call)
        assert len(call) == MAX_RECORDS_PER_CALL or size + len(payloads[nxt[0]][1]) > MAX_BYTES_PER_CALL

    rows = [json.loads(data) for _, data in payloads]
    expected = contract.document_records(docs[0])  # shape check on the first document
    assert [r["record_id"] for r in rows[: 1 + len(expected.run_steps) + len(expected.api_calls)]] == [
        r["record_id"] for r in (*expected.agent_runs, *expected.run_steps, *expected.api_calls)
    ]
    for doc in docs:  # order within a run: the run, its steps, its calls
        ids = [r["record_id"] for r in rows if r["run_id"] == doc["run_id"]]
        assert ids == [doc["run_id"], *(s["step_id"] for s in doc["steps"]), *(c["call_id"] for c in doc["calls"])]
    originals = []
    for doc in docs:
        r = contract.document_records(doc)
        originals.extend([*r.agent_runs, *r.run_steps, *r.api_calls])
    for row, original, (record_id, data) in zip(rows, originals, payloads, strict=True):
        assert row["record_id"] == record_id == original["record_id"]
        assert data.endswith(b"\n") and data.count(b"\n") == 1
        if len(json.dumps(original, separators=(",", ":"), ensure_ascii=False).encode()) + 1 <= MAX_RECORD_BYTES:
            assert row == original  # records within the limit are sent untouched
        elif row["record_type"] == "api_call":
            assert row["metadata"]["_truncated"] is True
        else:
            assert row["truncated"] is True


@settings(max_examples=25, deadline=None)
# the kinds with captured payloads (a run_score row has none: its comment is cut at 2000 characters)
@given(st.integers(MAX_RECORD_BYTES - 500, 3 * MAX_RECORD_BYTES),
       st.sampled_from([t for t in contract.RECORD_TYPES if t != contract.RUN_SCORE]))
def test_a_record_over_the_limit_is_shrunk_and_flagged(chars: int, record_type: str) -> None:
    row = {"record_type": record_type, "record_id": "x", "schema_version": 1, "run_id": "x",
           "metadata": {"note": "m" * chars}, "output": ["z" * chars], "inputs": None}
    if record_type != "api_call":
        row["truncated"] = False
    data = encode_record(row)
    back = json.loads(data)
    assert len(data) <= MAX_RECORD_BYTES
    assert back["record_id"] == "x" and back["run_id"] == "x"
    if len(json.dumps(row, separators=(",", ":")).encode()) + 1 > MAX_RECORD_BYTES:
        flag = back["metadata"].get("_truncated") if record_type == "api_call" else back["truncated"]
        assert flag is True
    else:
        assert back == row


def test_a_huge_non_payload_field_is_still_made_to_fit() -> None:
    row = {"record_type": "agent_run", "record_id": "r", "schema_version": 1, "run_id": "r",
           "name": "n" * (2 * MAX_RECORD_BYTES), "tags": ["t" * 1000] * 3000, "truncated": False}
    data = encode_record(row)
    back = json.loads(data)
    assert len(data) <= MAX_RECORD_BYTES and back["record_id"] == "r" and back["truncated"] is True
