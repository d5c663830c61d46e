"""Firehose packing and streamer throughput, against moto's HTTP server on loopback.

Two figures per record-size profile:

* **fill**: mean records per ``PutRecordBatch`` under sustained load, as a fraction of the limit-bound
  optimum: the records per call that the fewest calls allowed by the limits (500 records, 4 MiB per
  call) would give for exactly the same records in the same order (``len(pack(all sizes))`` calls;
  greedy packing in order is optimal). Measured on both paths: the exporter's lane (runs tracked through
  the public API as fast as the caller can; each ``write`` gets ``batch_size`` runs) at the default and a
  larger ``batch_size``, and the metadata streamer (a backfill from MongoDB, which carries the last
  partly filled call over to the next documents). Target: at least 95 %.
* **streamer throughput**: run documents per second from a MongoDB collection (mongomock, in process)
  to moto's Firehose, records landing in moto's S3.

Every case checks that every record landed in S3 exactly once before it reports a figure.

Run: ``python benchmarks/bench_firehose.py [--quick]``; writes ``benchmarks/results/firehose.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import machine, write_json

TARGET_FILL = 0.95
REGION = "us-east-1"

#: name -> (runs, most steps per run, most calls per step, captured output characters per run and step).
#: Shapes vary run to run (seeded): 1..steps steps of 0..calls calls, so record counts per run differ.
PROFILES: dict[str, tuple[int, int, int, int]] = {
    "typical (1-4 steps x 0-3 calls, no capture)": (4000, 4, 3, 0),
    "captured 20 KB per run and step": (600, 3, 2, 20_000),
    "captured 300 KB per run": (120, 2, 1, 300_000),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Moto:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = _free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.port}"
        import boto3

        self.s3 = boto3.client("s3", region_name=REGION, endpoint_url=self.url)
        self.firehose = boto3.client("firehose", region_name=REGION, endpoint_url=self.url)
        self.s3.create_bucket(Bucket="bench")

    def stream(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        self.firehose.create_delivery_stream(
            DeliveryStreamName=name, DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={"RoleARN": "arn:aws:iam::123456789012:role/x",
                                                "BucketARN": "arn:aws:s3:::bench", "Prefix": f"{name}/"},
        )
        return name

    def landed(self, stream: str) -> list[str]:
        ids: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=f"{stream}/"):
            for obj in page.get("Contents", []):
                body = self.s3.get_object(Bucket="bench", Key=obj["Key"])["Body"].read()
                ids.extend(json.loads(line)["record_id"] for line in body.splitlines())
        return ids

    def stop(self) -> None:
        self.server.stop()


def _track(runs: int, steps: int, calls: int, chars: int) -> None:
    import random

    import agentmeter

    rng = random.Random(42)
    text = "x" * chars
    for i in range(runs):
        with agentmeter.track_run(f"run-{i}", agent="bench") as run:
            if chars:
                run.set_output(text)
            for j in range(rng.randint(1, steps)):
                with agentmeter.track_step(f"step-{j}", kind="tool") as step:
                    if chars:
                        step.set_output(text)
                    for _k in range(rng.randint(0, calls)):
                        with agentmeter.track_call("openai", "chat.completions", model="gpt-4o-mini") as call:
                            call.record_usage(input_tokens=120, output_tokens=40)


def _check(condition: bool, message: str) -> None:
    """A figure that lost or duplicated data must not be reported (kept under ``python -O`` too)."""
    if not condition:
        raise SystemExit(f"bench_firehose: {message}")


def _fill(sink: Any, sizes: list[int]) -> dict[str, Any]:
    from agentmeter.sinks.firehose import MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL, pack

    calls = sink.stats["calls"]
    records = sink.stats["records"]
    ideal_calls = len(pack(sizes))
    mean_size = sum(sizes) / len(sizes)
    return {
        "records": records,
        "calls": calls,
        "mean_record_bytes": round(mean_size, 1),
        "records_per_call": round(records / calls, 1),
        "limit_bound_records_per_call": round(len(sizes) / ideal_calls, 1),
        "uniform_size_bound": min(MAX_RECORDS_PER_CALL, int(MAX_BYTES_PER_CALL // mean_size)),
        "fill": round(ideal_calls / calls, 4),
    }


def exporter_case(moto: Moto, profile: tuple[int, int, int, int], batch_size: int) -> dict[str, Any]:
    """Runs tracked through the public API while the exporter ships them to Firehose."""
    import agentmeter
    from agentmeter.sinks import FirehoseSink, MemorySink
    from agentmeter.sinks.firehose import document_payloads

    runs, steps, calls, chars = profile
    stream = moto.stream()
    sink = FirehoseSink(stream, region=REGION, endpoint_url=moto.url)
    memory = MemorySink()
    with tempfile.TemporaryDirectory() as tmp:
        agentmeter.configure(sinks=[sink, memory], batch_size=batch_size, capture=bool(chars),
                             capture_max_chars=max(chars * 2, 1000), spool_dir=tmp, max_queue_runs=100_000,
                             max_queue_bytes=2**31 - 1, write_timeout=600)
        t0 = time.perf_counter()
        _track(runs, steps, calls, chars)
        result = agentmeter.flush(timeout=600)
        seconds = time.perf_counter() - t0
        agentmeter.shutdown(timeout=10)
    _check(result.ok, f"exporter did not deliver everything: {result}")
    sizes = [len(data) for doc in memory.documents for _rid, data in document_payloads(doc)]
    landed = moto.landed(stream)
    _check(len(landed) == len(set(landed)) == len(sizes), "records lost or duplicated")
    return {"path": f"exporter, batch_size={batch_size}", "runs": runs, "seconds": round(seconds, 2),
            **_fill(sink, sizes), "_docs": memory.documents}


def streamer_case(moto: Moto, documents: list[dict[str, Any]]) -> dict[str, Any]:
    """A backfill of the same documents from a MongoDB collection (mongomock) to Firehose."""
    import mongomock

    from agentmeter.sinks import FirehoseSink
    from agentmeter.sinks.firehose import document_payloads
    from agentmeter.sinks.mongodb import to_bson
    from agentmeter.streamer import MetadataStreamer

    coll = mongomock.MongoClient(tz_aware=True)["agentmeter"]["agent_metadata"]
    coll.insert_many([to_bson(d) for d in documents])
    stream = moto.stream()
    sink = FirehoseSink(stream, region=REGION, endpoint_url=moto.url)
    with tempfile.TemporaryDirectory() as tmp:
        summary = MetadataStreamer(coll, sink, os.path.join(tmp, "cp")).backfill(since=None)
    _check(summary.ok and summary.sent == len(documents), f"streamer did not send everything: {summary}")
    sizes = [len(data) for doc in documents for _rid, data in document_payloads(doc)]
    landed = moto.landed(stream)
    _check(len(landed) == len(set(landed)) == len(sizes), "records lost or duplicated")
    return {"path": "streamer (backfill)", "runs": len(documents), "seconds": round(summary.seconds, 2),
            "runs_per_s": round(summary.runs_per_second, 1), **_fill(sink, sizes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the runs (a smoke run)")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    for var in [v for v in os.environ if v.startswith("AGENTMETER_")]:
        del os.environ[var]

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = Moto()
    rows: list[dict[str, Any]] = []
    try:
        for name, profile in PROFILES.items():
            if args.quick:
                profile = (max(profile[0] // 10, 10), *profile[1:])
            docs: list[dict[str, Any]] = []
            for batch_size in (100, 1000):
                row = exporter_case(moto, profile, batch_size)
                docs = row.pop("_docs")
                rows.append({"profile": name, **row})
            rows.append({"profile": name, **streamer_case(moto, docs)})
    finally:
        moto.stop()

    print(f"{'profile':<48} {'path':<28} {'runs':>5} {'rec/call':>9} {'bound':>7} {'fill':>7} {'runs/s':>8}")
    for r in rows:
        print(f"{r['profile']:<48} {r['path']:<28} {r['runs']:>5} {r['records_per_call']:>9} "
              f"{r['limit_bound_records_per_call']:>7} {r['fill']:>7.1%} {r.get('runs_per_s', ''):>8}")
    streamer_rows = [r for r in rows if r["path"].startswith("streamer")]
    verdict = all(r["fill"] >= TARGET_FILL for r in streamer_rows)
    print(f"streamer fill >= {TARGET_FILL:.0%} on every profile: {'yes' if verdict else 'NO'}")
    path = write_json("firehose-quick.json" if args.quick else "firehose.json", {
        "benchmark": "firehose", "target_fill": TARGET_FILL, "quick": args.quick, "machine": machine(),
        "cases": rows, "streamer_meets_target": verdict,
        "note": "fill = fewest calls the limits allow for the same records in order / calls made; "
                "moto's HTTP server on loopback, so runs/s measures our side plus moto, not AWS latency",
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
