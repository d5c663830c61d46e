"""Case 1, the hot path: what a decorated call costs the caller, for agentmeter and its peers.

Each library is measured in its own fresh interpreter (so no tracer's global state or background thread
touches another's figures), and the libraries take turns over several rounds, so a burst of load on a
shared machine hits all of them alike. Every sample is one root span (a run) holding ``calls`` child
spans; the figure is microseconds per child span, including the function call itself.

* agentmeter: ``@track_step`` inside a ``@track_run``, a run of ten steps, a step with input capture on;
  exported by the background exporter into an in-memory sink (like OpenTelemetry's in-memory exporter).
* OpenTelemetry SDK: ``TracerProvider`` + ``BatchSpanProcessor`` + ``InMemorySpanExporter``, spans made with
  ``tracer.start_as_current_span`` used as a decorator.
* Langfuse ``@observe`` and LangSmith ``@traceable``: tracing on, endpoint on a closed loopback port.

Run alone: ``python benchmarks/bench_hotpath.py [--rounds 3]`` (peers are skipped if not installed).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    child_json,
    closed_port,
    emit,
    has_module,
    quiet_env,
    summary,
    time_per_call,
)

LIBS = ("agentmeter", "otel", "langfuse", "langsmith")
MODULE_OF = {"agentmeter": "agentmeter", "otel": "opentelemetry.sdk.trace", "langfuse": "langfuse",
             "langsmith": "langsmith"}
#: case key -> (library, label, spans per call)
CASES: dict[str, tuple[str, str, int]] = {
    "baseline": ("agentmeter", "trivial function, undecorated", 1),
    "am_step": ("agentmeter", "agentmeter @track_step inside a run", 1),
    "am_run10": ("agentmeter", "agentmeter run of ten steps (per run)", 11),
    "am_step_capture": ("agentmeter", "agentmeter @track_step, input capture on", 1),
    "am_call": ("agentmeter", "agentmeter @track_call inside a run", 1),
    "otel_span": ("otel", "OpenTelemetry SDK span (BatchSpanProcessor)", 1),
    "otel_run10": ("otel", "OpenTelemetry root + ten spans (per trace)", 11),
    "langfuse_observe": ("langfuse", "Langfuse @observe (captures input/output)", 1),
    "langfuse_observe_nocapture": ("langfuse", "Langfuse @observe, capture off", 1),
    "langsmith_traceable": ("langsmith", "LangSmith @traceable", 1),
}

QUERY = "what is the capital of France?"


def work(query: str, k: int = 3) -> str:
    return query[:k]


# -- children: one per library ----------------------------------------------------------------------


def _measure(cases: dict[str, tuple[Callable[[int], Any], int]], repeats: int,
             between: Callable[[], Any] | None = None) -> dict[str, list[float]]:
    """Interleave the cases sample by sample; each ``fn(n)`` makes n child spans (or n runs)."""
    out: dict[str, list[float]] = {k: [] for k in cases}
    for fn, n in cases.values():  # warm-up: first calls pay for lazy setup
        fn(max(1, n // 10))
        if between:
            between()
    for _ in range(repeats):
        for name, (fn, n) in cases.items():
            sample = time_per_call(lambda fn=fn, n=n: fn(n), 1, 1)[0] / n
            out[name].append(sample)
            if between:
                between()
    return out


def _baseline(n: int) -> None:
    q = QUERY
    for _ in range(n):
        work(q, 3)


def child_agentmeter(calls: int, repeats: int) -> dict[str, Any]:
    import agentmeter
    from agentmeter.sinks import MemorySink

    sink = MemorySink()
    agentmeter.configure(sinks=[sink], spool_dir=tempfile.mkdtemp(prefix="am-bench-spool-"))
    step = agentmeter.track_step(work)
    step_capture = agentmeter.track_step("work", capture=True)(work)
    call = agentmeter.track_call("custom", "work")(work)

    def in_run(fn: Callable[..., Any]) -> Callable[[int], None]:
        @agentmeter.track_run("bench")
        def loop(n: int) -> None:
            q = QUERY
            for _ in range(n):
                fn(q, 3)
        return loop

    @agentmeter.track_run("agent")
    def run10() -> None:
        q = QUERY
        for _ in range(10):
            step(q, 3)

    def runs10(n: int) -> None:
        for _ in range(n):
            run10()

    def between() -> None:
        agentmeter.flush()
        sink.clear()

    samples = _measure({
        "baseline": (_baseline, calls),
        "am_step": (in_run(step), calls),
        "am_run10": (runs10, max(1, calls // 10)),
        "am_step_capture": (in_run(step_capture), calls),
        "am_call": (in_run(call), calls),
    }, repeats, between)
    stats = agentmeter.stats()
    return {"samples": samples, "stats": {k: getattr(stats, k) for k in ("runs_finished", "runs_exported",
                                                                 "runs_dropped", "internal_errors")}}


def child_otel(calls: int, repeats: int) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    span = tracer.start_as_current_span("work")(work)
    made = [0]

    def loop(n: int) -> None:
        with tracer.start_as_current_span("bench"):
            q = QUERY
            for _ in range(n):
                span(q, 3)
        made[0] += n + 1

    @tracer.start_as_current_span("agent")
    def run10() -> None:
        q = QUERY
        for _ in range(10):
            span(q, 3)

    def runs10(n: int) -> None:
        for _ in range(n):
            run10()
        made[0] += 11 * n

    exported = [0]

    def between() -> None:
        provider.force_flush()
        exported[0] += len(exporter.get_finished_spans())
        exporter.clear()

    samples = _measure({
        "baseline": (_baseline, calls),
        "otel_span": (loop, calls),
        "otel_run10": (runs10, max(1, calls // 10)),
    }, repeats, between)
    provider.shutdown()
    return {"samples": samples, "stats": {"spans_made": made[0], "spans_exported": exported[0]}}


def child_langfuse(calls: int, repeats: int) -> dict[str, Any]:
    import logging

    logging.disable(logging.CRITICAL)  # the dead endpoint makes the exporter log every failed batch
    from langfuse import Langfuse, observe

    Langfuse()  # reads LANGFUSE_* from the environment: keys and a closed loopback base URL
    obs = observe(name="work")(work)
    obs_nocap = observe(name="work", capture_input=False, capture_output=False)(work)

    def in_run(fn: Callable[..., Any]) -> Callable[[int], None]:
        @observe(name="bench")
        def loop(n: int) -> None:
            q = QUERY
            for _ in range(n):
                fn(q, 3)
        return loop

    samples = _measure({
        "baseline": (_baseline, calls),
        "langfuse_observe": (in_run(obs), calls),
        "langfuse_observe_nocapture": (in_run(obs_nocap), calls),
    }, repeats)
    return {"samples": samples}


def child_langsmith(calls: int, repeats: int) -> dict[str, Any]:
    import logging

    logging.disable(logging.CRITICAL)
    from langsmith import traceable

    tr = traceable(name="work")(work)

    @traceable(name="bench")
    def loop(n: int) -> None:
        q = QUERY
        for _ in range(n):
            tr(q, 3)

    samples = _measure({"baseline": (_baseline, calls), "langsmith_traceable": (loop, calls)}, repeats)
    return {"samples": samples}


CHILDREN = {"agentmeter": child_agentmeter, "otel": child_otel, "langfuse": child_langfuse,
            "langsmith": child_langsmith}


def peer_env(port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    return quiet_env(
        LANGFUSE_PUBLIC_KEY="pk-lf-bench", LANGFUSE_SECRET_KEY="sk-lf-bench", LANGFUSE_BASE_URL=url,
        LANGFUSE_HOST=url, LANGFUSE_TRACING_ENABLED="true",
        LANGSMITH_TRACING="true", LANGSMITH_TRACING_V2="true", LANGSMITH_ENDPOINT=url,
        LANGSMITH_API_KEY="ls-bench", LANGSMITH_PROJECT="bench",
        LANGCHAIN_TRACING_V2="true", LANGCHAIN_ENDPOINT=url, LANGCHAIN_API_KEY="ls-bench",
        OTEL_SDK_DISABLED="false",
    )


# -- parent -----------------------------------------------------------------------------------------


def run(python: str = sys.executable, rounds: int = 3, repeats: int = 5, calls: int = 2000,
        libs: tuple[str, ...] = LIBS, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every case; libraries take turns, one fresh interpreter per library per round."""
    present = [lib for lib in libs if has_module(python, MODULE_OF[lib])]
    missing = [lib for lib in libs if lib not in present]
    samples: dict[str, list[float]] = {k: [] for k in CASES}
    baseline_by_lib: dict[str, list[float]] = {lib: [] for lib in present}
    errors: dict[str, str] = {}
    extra: dict[str, Any] = {}
    port = closed_port()
    for r in range(rounds):
        for lib in present:
            log(f"  hot path: round {r + 1}/{rounds}, {lib}")
            res = child_json([python, os.path.abspath(__file__), "--child", lib, "--calls", str(calls),
                              "--repeats", str(repeats)], timeout=600, env=peer_env(port))
            if "error" in res:
                errors[lib] = res["error"]
                continue
            for case, vals in res["samples"].items():
                if case == "baseline":
                    baseline_by_lib[lib].extend(vals)
                    if lib != "agentmeter":
                        continue
                samples[case].extend(vals)
            if "stats" in res:
                extra.setdefault(lib, []).append(res["stats"])
    return summarize(samples, baseline_by_lib, errors, missing, extra,
                     {"rounds": rounds, "repeats": repeats, "calls": calls, "python": python})


def summarize(samples: dict[str, list[float]], baseline_by_lib: dict[str, list[float]], errors: dict[str, str],
              missing: list[str], extra: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    cases = {}
    otel = summary(samples["otel_span"])
    for key, (lib, label, spans) in CASES.items():
        s = summary(samples[key])
        row: dict[str, Any] = {"library": lib, "label": label, "unit": "us per call", "spans_per_call": spans,
                               **s, "samples": samples[key]}
        if s["n"] and spans > 1:
            row["us_per_span_median"] = s["median"] / spans
            row["us_per_span_min"] = s["min"] / spans
        if s["n"] and otel["n"]:
            row["ratio_to_otel_span_median"] = s["median"] / spans / otel["median"]
            row["ratio_to_otel_span_min"] = s["min"] / spans / otel["min"]
        cases[key] = row
    target: dict[str, Any] = {"name": "tracked step <= 0.25 x OpenTelemetry span", "limit": 0.25}
    if cases["am_step"]["n"] and otel["n"]:
        target["measured_median"] = cases["am_step"]["ratio_to_otel_span_median"]
        target["measured_min"] = cases["am_step"]["ratio_to_otel_span_min"]
        target["met"] = target["measured_median"] <= 0.25
    return {
        "case": "hot_path",
        "params": params,
        "cases": cases,
        "baseline_by_library": {lib: summary(v) for lib, v in baseline_by_lib.items()},
        "target": target,
        "missing_peers": missing,
        "errors": errors,
        "child_stats": extra,
    }


def _child_main(lib: str, calls: int, repeats: int) -> None:
    gc.collect()
    result = CHILDREN[lib](calls, repeats)
    emit(result)
    sys.stdout.flush()
    # Peers with a dead endpoint may spend a long time at exit (that is case 3); the samples are out.
    os._exit(0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", choices=LIBS)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--calls", type=int, default=2000)
    args = p.parse_args(argv)
    if args.child:
        _child_main(args.child, args.calls, args.repeats)
    result = run(rounds=args.rounds, repeats=args.repeats, calls=args.calls)
    for row in result["cases"].values():
        if row["n"]:
            ratio = row.get("ratio_to_otel_span_median")
            print(f"{row['label']:<50} min {row['min']:8.2f} us  median {row['median']:8.2f} us"
                  + (f"  x{ratio:.3f} OTel" if ratio is not None else ""))
    for lib, err in result["errors"].items():
        print(f"{lib}: ERROR {err}")
    return result


if __name__ == "__main__":
    main()
