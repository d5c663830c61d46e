"""Case 9, the whole pipeline against OpenTelemetry (issue 15's table), in same-run ratios.

Every figure is measured in one run, agentmeter and OpenTelemetry taking turns, so the ratios hold on a
noisy machine:

* **run of ten steps + flush into the local store**, per step: ``K`` runs of ten ``@track_step`` calls,
  then ``flush()`` into a fresh SQLite store; against an OpenTelemetry SDK root span with ten child spans
  (``TracerProvider`` + ``BatchSpanProcessor`` + ``InMemorySpanExporter``), ``force_flush()``-ed the same
  way. Wall time, so the exporter's threads count.
* **the same, each step also with one ``track_call``** (tokens and metadata recorded), against OpenTelemetry
  steps each holding a child span with two attributes.
* **exporter drain**: CPU seconds of the local store's ``write`` for frozen runs of ten steps, batches of
  100 (what the exporter's writer does; the caller excluded): the fast path (rows straight from the frozen
  run) and the document path (documents built, then written) in the same run; and the same for steps
  each holding one priced call (tokens, metadata), counted in step records (a step and its call).
* **tracked step alone** (inside a run, the exporter idle) against one OpenTelemetry span: min and median
  of the samples, and the median's ratio to the minimum (how much the exporter's threads disturb it).
* **whole process** ``python -c 'import agentmeter'`` against ``python -c 'import opentelemetry.sdk.trace'``,
  taking turns.
* **JSON encoders** on three typical values: the standard library, orjson and (if installed) msgspec.

Run alone: ``python benchmarks/bench_pipeline.py [--quick]``; ``--callgrind`` counts instructions instead
(``valgrind --tool=callgrind``, which load does not change): per step on the caller's side and per step
record in the local store's write (a few minutes; not part of ``make bench``).
"""

# ruff: noqa: B023  (the stage timings call each lambda at once, inside the loop that binds its variables)
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import emit, quiet_env, summary

#: (figure, today as issue 15 measured it, target, how the target reads)
TABLE = (
    ("e2e_steps", "run of ten steps + flush into the local store, per span, vs OTel in-memory span",
     "1.0-1.45x", 0.5, "<= 0.5x"),
    ("e2e_calls", "same, each step also with one track_call (tokens, metadata), vs OTel spans with 2 attributes",
     "not measured", 0.5, "<= 0.5x"),
    ("drain", "exporter drain, step records per CPU-second, one core, caller excluded", "35-55k", 150_000,
     ">= 150k"),
    ("step_alone", "tracked step alone vs OTel span", "0.20-0.23x", 0.2, "<= 0.2x, median within 1.3x of min"),
    ("import", "whole process `python -c 'import agentmeter'` vs `import opentelemetry.sdk.trace`", "1.10x", 0.8,
     "<= 0.8x"),
)


def work(query: str, k: int = 3) -> str:
    return query[:k]


# -- the child: everything measured in one interpreter ---------------------------------------------


def child(rounds: int, runs: int) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import agentmeter
    from agentmeter.sinks import SQLiteSink

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")

    def otel_run(calls: bool) -> None:
        with tracer.start_as_current_span("run"):
            for _ in range(10):
                with tracer.start_as_current_span("step"):
                    work("what is the capital of France?", 3)
                    if calls:
                        with tracer.start_as_current_span("call") as span:
                            span.set_attribute("input_tokens", 120)
                            span.set_attribute("output_tokens", 30)

    folder = Path(tempfile.mkdtemp(prefix="am-bench-pipe-"))
    step = agentmeter.track_step(work)

    @agentmeter.track_run("agent")
    def am_run(calls: bool) -> None:
        for _ in range(10):
            with agentmeter.track_step("step"):
                work("what is the capital of France?", 3)
                if calls:
                    with agentmeter.track_call("openai", "chat", model="gpt-4o-mini") as call:
                        call.record_usage(input_tokens=120, output_tokens=30)
                        call.set_metadata(finish_reason="stop")

    out: dict[str, Any] = {"e2e_steps": {"agentmeter": [], "otel": []}, "e2e_calls": {"agentmeter": [], "otel": []}}
    for r in range(rounds):
        for kind, calls in (("e2e_steps", False), ("e2e_calls", True)):
            agentmeter.configure(sinks=[SQLiteSink(folder / f"{kind}-{r}.db")], spool_dir=str(folder / "spool"),
                                 prices={"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}})
            am_run(calls)  # warm: the store's schema, the price table
            agentmeter.flush(timeout=None)
            t0 = time.perf_counter()
            for _ in range(runs):
                am_run(calls)
            agentmeter.flush(timeout=None)
            out[kind]["agentmeter"].append((time.perf_counter() - t0) / (runs * 10) * 1e6)
            otel_run(calls)
            provider.force_flush()
            exporter.clear()
            t0 = time.perf_counter()
            for _ in range(runs):
                otel_run(calls)
            provider.force_flush()
            out[kind]["otel"].append((time.perf_counter() - t0) / (runs * 10) * 1e6)
            exporter.clear()
    out["drain"] = _drain(folder, rounds, runs)
    out["step_alone"] = _step_alone(step, tracer, rounds, provider, exporter)
    agentmeter.shutdown(timeout=5)
    return out


def _drain(folder: Path, rounds: int, runs: int) -> dict[str, list[float]]:
    import agentmeter
    from agentmeter._config import settings_from_env
    from agentmeter.export._documents import Documents, Entry, EntryDocument
    from agentmeter.sinks import SQLiteSink
    from agentmeter.sinks._base import Sink, WriteResult

    class Recorder(Sink):
        name = "recorder"
        writes_runs = True

        def __init__(self) -> None:
            self.runs: list[Any] = []

        def write(self, documents: Any) -> WriteResult:
            self.runs.extend(d.run for d in documents)
            return WriteResult()

    recorder = Recorder()
    prices = {"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}
    agentmeter.configure(sinks=[recorder], sync_export=True, prices=prices)  # the frozen runs, nothing written
    step = agentmeter.track_step(work)

    @agentmeter.track_run("agent")
    def agent(calls: bool) -> None:
        for _ in range(10):
            if not calls:
                step("what is the capital of France?", 3)
                continue
            with agentmeter.track_step("step"):
                work("what is the capital of France?", 3)
                with agentmeter.track_call("openai", "chat", model="gpt-4o-mini") as call:
                    call.record_usage(input_tokens=120, output_tokens=30)
                    call.set_metadata(finish_reason="stop")

    for _ in range(runs):
        agent(False)
    frozen = list(recorder.runs)
    recorder.runs.clear()
    for _ in range(runs):
        agent(True)
    with_calls = list(recorder.runs)
    documents = Documents(settings_from_env(prices=prices))
    out: dict[str, list[float]] = {"fast": [], "document": [], "fast_calls": [], "document_calls": []}
    for r in range(rounds):
        for mode in out:
            runs_ = with_calls if mode.endswith("_calls") else frozen
            sink = SQLiteSink(folder / f"drain-{mode}-{r}.db")
            sink.write([])
            t0 = time.process_time()
            for i in range(0, len(runs_), 100):
                entries = [Entry(run) for run in runs_[i:i + 100]]
                sink.write([EntryDocument(e, documents) for e in entries] if mode.startswith("fast")
                           else [documents.document(e) for e in entries])
            out[mode].append(len(runs_) * 10 / (time.process_time() - t0))
            sink.close()
    out["stages_us"] = _stages(folder, frozen, documents, rounds)  # type: ignore[assignment]
    return out


def _stages(folder: Path, frozen: list[Any], documents: Any, rounds: int) -> dict[str, dict[str, float]]:
    """Where a step record's microseconds go in the local store's write, stage by stage (CPU, best of
    ``rounds``), for the fast path and the document path."""
    from agentmeter import contract
    from agentmeter.export._documents import json_safe
    from agentmeter.sinks import SQLiteSink

    per = len(frozen) * 10 / 1e6
    best: dict[str, dict[str, float]] = {"fast": {}, "document": {}}

    def timed(path: str, stage: str, fn: Callable[[], Any]) -> Any:
        t0 = time.process_time()
        value = fn()
        us = (time.process_time() - t0) / per
        best[path][stage] = min(best[path].get(stage, us), us)
        return value

    for r in range(rounds):
        sink = SQLiteSink(folder / f"stages-{r}.db")
        sink.write([])
        runs_t = sink._tables[0]
        pricer = documents.pricer()
        parts = timed("fast", "run fields (contract.run_fields: no calls to sum)",
                      lambda: [contract.run_fields(run, 65536, True, 0, 0, contract.NO_CALLS, 0) for run in frozen])
        run_rows = timed("fast", "run rows (column order, JSON columns)",
                         lambda: [runs_t.row(fields, 1) for fields in parts])
        step_rows = timed("fast", "step rows written out from the frozen steps (timestamps, duration, metadata)",
                          lambda: [row for run in frozen
                                   for row in sink._steps(run, run.steps, {}, True, 1, None, sink._rollup)])
        conn = sink._connect()
        timed("fast", "SQL: rows grouped by types (null pattern), multi-row upserts, one transaction per batch",
              lambda: [sink._transaction(conn, [run_rows[i:i + 100], step_rows[i * 10:(i + 100) * 10], [], []])
                       for i in range(0, len(frozen), 100)])
        docs = timed("document", "run_document", lambda: [contract.run_document(run, pricer, 65536) for run in frozen])
        timed("document", "json_safe (orjson, strict; NaN looked for in the number columns)",
              lambda: [json_safe(doc) for doc in docs])
        records = timed("document", "document_records", lambda: [contract.document_records(doc) for doc in docs])
        timed("document", "row encoders", lambda: [[t.row(item, 1) for t, items in zip(sink._tables, rec, strict=True)
                                                    for item in items] for rec in records])
        sink.close()
    sql = next(k for k in best["fast"] if k.startswith("SQL"))
    best["document"]["SQL (the same statements)"] = best["fast"][sql]
    return best


def _step_alone(step: Callable[..., Any], tracer: Any, rounds: int, provider: Any,
                exporter: Any) -> dict[str, list[float]]:
    import agentmeter
    from agentmeter.sinks import MemorySink

    memory = MemorySink()
    agentmeter.configure(sinks=[memory])
    out: dict[str, list[float]] = {"agentmeter": [], "otel": []}
    n = 2000

    def otel_span() -> None:
        with tracer.start_as_current_span("step"):
            work("what is the capital of France?", 3)

    for _ in range(rounds * 3):
        with agentmeter.track_run("agent"):
            t0 = time.perf_counter()
            for _ in range(n):
                step("what is the capital of France?", 3)
            out["agentmeter"].append((time.perf_counter() - t0) / n * 1e6)
        agentmeter.flush(timeout=None)
        memory.clear()  # each side drops what it exported, so neither heap grows over the rounds
        with tracer.start_as_current_span("run"):
            t0 = time.perf_counter()
            for _ in range(n):
                otel_span()
            out["otel"].append((time.perf_counter() - t0) / n * 1e6)
        provider.force_flush()
        exporter.clear()
    return out


# -- measured from outside ----------------------------------------------------------------------------


def _imports(python: str, repeats: int) -> dict[str, list[float]]:
    env = quiet_env()
    out: dict[str, list[float]] = {"agentmeter": [], "otel": []}
    for _ in range(repeats):
        for name, stmt in (("agentmeter", "import agentmeter"), ("otel", "import opentelemetry.sdk.trace")):
            t0 = time.perf_counter()
            subprocess.run([python, "-c", stmt], env=env, check=True, capture_output=True)
            out[name].append((time.perf_counter() - t0) * 1e3)
    return out


def _json_encoders() -> dict[str, dict[str, float]]:
    encoders: dict[str, Callable[[Any], Any]] = {
        "json (standard library)": json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode,
    }
    try:
        import orjson

        encoders["orjson"] = lambda v: orjson.dumps(v).decode()
    except ImportError:
        pass
    try:
        import msgspec

        enc = msgspec.json.Encoder()
        encoders["msgspec"] = lambda v: enc.encode(v).decode()
    except ImportError:
        pass
    values = {
        "call metadata (2 keys)": {"result_count": 5, "finish_reason": "stop"},
        "tags (2)": ["prod", "eu"],
        "captured payload (20 items)": {"query": "what is the capital of France, in détail?", "k": 5,
                                        "items": [{"id": i, "score": i / 7, "text": "x" * 40} for i in range(20)]},
    }
    out: dict[str, dict[str, float]] = {}
    for label, value in values.items():
        n = 2000 if "payload" in label else 20000
        out[label] = {name: min(timeit.repeat(lambda f=f, v=value: f(v), number=n, repeat=5)) / n * 1e9
                      for name, f in encoders.items()}
    return out


def run(python: str = sys.executable, quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    rounds, runs = (2, 200) if quick else (5, 500)
    log(f"  pipeline: {rounds} rounds of {runs} runs, in one interpreter")
    proc = subprocess.run([python, os.path.abspath(__file__), "--child", "--rounds", str(rounds), "--runs", str(runs)],
                          env=quiet_env(), capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"case": "pipeline", "error": proc.stderr[-2000:]}
    data = json.loads(lines[-1])
    log("  pipeline: import time")
    data["import"] = _imports(python, 3 if quick else 11)
    log("  pipeline: JSON encoders")
    data["json_ns"] = _json_encoders()
    return {"case": "pipeline", "params": {"rounds": rounds, "runs": runs, "python": python}, "samples": data,
            "rows": rows(data)}


def _ratio(samples: dict[str, list[float]]) -> float:
    return statistics.median(samples["agentmeter"]) / statistics.median(samples["otel"])


def rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's table: one row per figure, with the measured value and whether the target is met."""
    out = []
    for key, label, today, limit, target in TABLE:
        samples = data.get(key)
        if not samples:
            continue
        if key == "drain":
            samples = {k: v for k, v in samples.items() if k != "stages_us"}
            now = statistics.median(samples["fast"])
            doc = statistics.median(samples["document"])
            text = f"{now / 1000:.0f}k (document path, same run: {doc / 1000:.0f}k)"
            if samples.get("fast_calls"):
                text += (f"; steps each with one call: {statistics.median(samples['fast_calls']) / 1000:.0f}k "
                         f"(document path {statistics.median(samples['document_calls']) / 1000:.0f}k)")
            met = now >= limit
        elif key == "step_alone":
            now = _ratio(samples)
            spread = statistics.median(samples["agentmeter"]) / min(samples["agentmeter"])
            text = f"{now:.2f}x ({statistics.median(samples['agentmeter']):.2f} us), median {spread:.2f}x min"
            met = now <= limit and spread <= 1.3
        else:
            now = _ratio(samples)
            text = (f"{now:.2f}x ({statistics.median(samples['agentmeter']):.1f} vs "
                    f"{statistics.median(samples['otel']):.1f} {'ms' if key == 'import' else 'us'})")
            met = now <= limit
        out.append({"figure": label, "today": today, "now": text, "target": target, "met": met, "value": now,
                    "summary": {k: summary(v) for k, v in samples.items()}})
    return out


def render(result: dict[str, Any], markdown: bool = False) -> str:
    if "error" in result:
        return f"pipeline: ERROR {result['error']}"
    lines = ["| figure | today (issue 15) | now | target | met |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['figure']} | {r['today']} | {r['now']} | {r['target']} | {'yes' if r['met'] else 'no'} |")
    stages = result["samples"].get("drain", {}).get("stages_us")
    if stages:
        lines += ["", "| where a step record's exporter time goes (CPU, best of the rounds) | us |", "|---|---:|"]
        for path, rows_ in stages.items():
            lines += [f"| {path} path: {stage} | {us:.2f} |" for stage, us in rows_.items()]
            lines.append(f"| **{path} path, sum** | **{sum(rows_.values()):.2f}** |")
    enc = result["samples"].get("json_ns", {})
    if enc:
        names = list(next(iter(enc.values())))
        lines += ["", "| JSON encoding, ns per value | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        lines += [f"| {label} | " + " | ".join(f"{v[n]:,.0f}" for n in names) + " |" for label, v in enc.items()]
    return "\n".join(lines)


PIPELINE_START, PIPELINE_END = "<!-- pipeline:start -->", "<!-- pipeline:end -->"


def update_docs(path: Path, result: dict[str, Any], machine: dict[str, Any]) -> None:
    """Put the table between the pipeline markers of ``path`` (appended if they are missing)."""
    text = path.read_text() if path.exists() else ""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = (f"Run of {when}: {machine.get('nproc')} CPUs ({machine.get('cpu_model')}), load average "
            f"{machine.get('loadavg_at_start')} at the start; a shared machine, so only the same-run ratios "
            "mean anything.")
    block = f"{PIPELINE_START}\n{head}\n\n{render(result)}\n{PIPELINE_END}"
    if PIPELINE_START in text and PIPELINE_END in text:
        text = text[: text.index(PIPELINE_START)] + block + text[text.index(PIPELINE_END) + len(PIPELINE_END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


# -- instruction counts (valgrind --tool=callgrind): what load does not change ------------------------------

#: workload -> what one unit is (the count is divided by the units of the difference of two sizes)
CALLGRIND = {
    "caller_step": "a tracked step (decorated) inside a run of many, exporter into a sink that drops",
    "caller_run10": "a step of a run of ten (with track_step), exporter into a sink that drops",
    "caller_run10_calls": "a step of a run of ten, each with one track_call (tokens, metadata), same sink",
    "store_steps": "a step record written into the local store (runs of ten, batches of 100)",
    "store_calls": "a step record and its priced call written into the local store (same batches)",
}


def cg_workload(kind: str, n: int) -> None:
    """The body callgrind counts: ``n`` units of ``kind`` after a fixed set-up (see :func:`callgrind`)."""
    import agentmeter
    from agentmeter.sinks import SQLiteSink
    from agentmeter.sinks._base import Sink, WriteResult

    class Drop(Sink):
        name = "drop"
        writes_runs = True

        def __init__(self) -> None:
            self.runs: list[Any] = []

        def write(self, documents: Any) -> WriteResult:
            if kind.startswith("store"):
                self.runs.extend(d.run for d in documents)
            return WriteResult()

    drop = Drop()
    prices = {"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}
    agentmeter.configure(sinks=[drop], prices=prices, sync_export=kind.startswith("store"))
    step = agentmeter.track_step(work)

    @agentmeter.track_run("agent")
    def run10(calls: bool) -> None:
        for _ in range(10):
            with agentmeter.track_step("step"):
                work("what is the capital of France?", 3)
                if calls:
                    with agentmeter.track_call("openai", "chat", model="gpt-4o-mini") as call:
                        call.record_usage(input_tokens=120, output_tokens=30)
                        call.set_metadata(finish_reason="stop")

    for _ in range(20):  # warm: the model, the pricer, the statements
        run10(kind.endswith("calls"))
    agentmeter.flush(timeout=None)
    if kind.startswith("caller"):
        # the set-up's objects (the modules...) leave the collector's view: a full collection then costs what
        # the workload keeps, not whether one of them happens to fall between the two sizes
        gc.collect()
        gc.freeze()
    if kind == "caller_step":
        with agentmeter.track_run("agent"):
            for _ in range(n):
                step("what is the capital of France?", 3)
    elif kind.startswith("caller"):
        for _ in range(n // 10):
            run10(kind.endswith("calls"))
    else:  # the same 700 frozen runs made whatever n is: only the writes differ
        from agentmeter._config import settings_from_env
        from agentmeter.export._documents import Documents, Entry, EntryDocument

        drop.runs.clear()
        for _ in range(700):
            run10(kind.endswith("calls"))
        runs = drop.runs[-700:]
        documents = Documents(settings_from_env(prices=prices))
        sink = SQLiteSink(Path(tempfile.mkdtemp(prefix="am-bench-cg-")) / "store.db")
        sink.write([EntryDocument(Entry(run), documents) for run in runs[600:]])  # a store that holds 100 runs
        gc.collect()
        gc.freeze()  # as above
        for i in range(0, n // 10, 100):
            sink.write([EntryDocument(Entry(run), documents) for run in runs[i:i + 100]])
    agentmeter.flush(timeout=None)


def callgrind(python: str = sys.executable, log: Callable[[str], None] = print) -> dict[str, float]:
    """Instructions per unit of each workload (:data:`CALLGRIND`): callgrind counts the whole process at
    two sizes, and the difference is divided by the units between them (start-up and set-up cancel out)."""
    import re
    import shutil

    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    out: dict[str, float] = {}
    small, large = 1000, 5000
    for kind in CALLGRIND:
        counts = []
        for n in (small, large):
            with tempfile.TemporaryDirectory() as tmp:
                proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
                                       python, os.path.abspath(__file__), "--cg-workload", kind, str(n)],
                                      env=quiet_env(), capture_output=True, text=True, timeout=1800)
            found = re.search(r"Collected : (\d+)", proc.stderr)
            if proc.returncode != 0 or found is None:
                raise SystemExit(f"callgrind failed on {kind}: {proc.stderr[-2000:]}")
            counts.append(int(found.group(1)))
        out[kind] = (counts[1] - counts[0]) / (large - small)
        log(f"  {kind}: {out[kind]:,.0f} instructions per unit")
    return out


def render_callgrind(counts: dict[str, float]) -> str:
    lines = ["| instructions per unit (valgrind --tool=callgrind) | unit | count |", "|---|---|---:|"]
    lines += [f"| {kind} | {CALLGRIND[kind]} | {count:,.0f} |" for kind, count in counts.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--callgrind", action="store_true",
                   help="count instructions per step of the caller and of the store write (needs valgrind)")
    p.add_argument("--cg-workload", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        emit(child(args.rounds, args.runs))
        return {}
    if args.cg_workload:
        cg_workload(args.cg_workload[0], int(args.cg_workload[1]))
        return {}
    if args.callgrind:
        counts = callgrind()
        print(render_callgrind(counts))
        return {"callgrind": counts}
    result = run(quick=args.quick)
    print(render(result))
    return result


if __name__ == "__main__":
    main()
