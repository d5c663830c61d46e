"""Benchmark: time the OpenAI and Tavily integrations add to each call, against the same stub server.

    .venv/bin/python benchmarks/bench_integrations.py [--calls 200] [--repeats 7]

One loopback :class:`agentmeter.stubs.StubServer` (no added latency) answers the real clients. For each
case the same client makes ``--calls`` calls per sample, alternating uninstrumented and instrumented
samples (``instrument()`` / ``uninstrument()`` between them, so drift hits both alike), inside a
``track_run`` exported in the background to an in-memory sink (the caller's thread pays what a user pays).
Reported per case: median microseconds per call without and with the integration, the difference, and
the difference as a percentage of the uninstrumented round trip (target: under 5%). Writes
``benchmarks/results/integrations.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import machine, summary, time_per_call, write_json


def cases(openai_url: str, tavily_url: str) -> dict[str, tuple[Callable[[], Any], Any]]:
    import openai
    from tavily import TavilyClient

    import agentmeter.integrations.openai as am_openai
    import agentmeter.integrations.tavily as am_tavily

    client = openai.OpenAI(base_url=openai_url, api_key="sk-bench", max_retries=0)
    tavily = TavilyClient(api_key="tvly-bench", api_base_url=tavily_url)
    messages = [{"role": "user", "content": "Summarize Acme Corp in one paragraph."}]

    def chat() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]

    def chat_stream() -> None:
        for _ in client.chat.completions.create(model="gpt-4o-mini", messages=messages,  # type: ignore[arg-type]
                                                stream=True, stream_options={"include_usage": True}):
            pass

    def embeddings() -> None:
        client.embeddings.create(model="text-embedding-3-small", input="Acme Corp", dimensions=64)

    def search() -> None:
        tavily.search("acme corp funding", include_usage=True)

    return {
        "openai chat.completions": (chat, am_openai),
        "openai chat.completions stream": (chat_stream, am_openai),
        "openai embeddings": (embeddings, am_openai),
        "tavily search": (search, am_tavily),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per sample")
    parser.add_argument("--repeats", type=int, default=7, help="samples per variant")
    args = parser.parse_args()

    import agentmeter
    from agentmeter.sinks.memory import MemorySink
    from agentmeter.stubs import StubServer

    agentmeter.configure(sinks=[MemorySink()])
    results: dict[str, Any] = {}
    with StubServer(seed=0) as server:
        for name, (fn, module) in cases(server.openai_base_url, server.tavily_base_url).items():
            for _ in range(20):  # warm up connections, pydantic models, the price library
                fn()
            plain: list[float] = []
            instrumented: list[float] = []
            for _ in range(args.repeats):
                module.uninstrument()
                with agentmeter.track_run("bench-plain"):
                    plain += time_per_call(fn, args.calls, 1)
                module.instrument()
                with agentmeter.track_run("bench-instrumented"):
                    instrumented += time_per_call(fn, args.calls, 1)
                agentmeter.flush()
            module.uninstrument()
            base, inst = statistics.median(plain), statistics.median(instrumented)
            results[name] = {
                "uninstrumented_us": summary(plain),
                "instrumented_us": summary(instrumented),
                "added_us": inst - base,
                "added_pct": 100.0 * (inst - base) / base,
            }
            server.clear()
    agentmeter.shutdown()

    print(f"{'case':34} {'plain µs':>10} {'instr. µs':>10} {'added µs':>10} {'added %':>8}")
    for name, r in results.items():
        print(f"{name:34} {r['uninstrumented_us']['median']:10.1f} {r['instrumented_us']['median']:10.1f} "
              f"{r['added_us']:10.1f} {r['added_pct']:7.2f}%")
    path = write_json("integrations.json", {
        "benchmark": "bench_integrations",
        "what": "median time per call of the real clients against a loopback stub server, with and without "
                "the agentmeter integration, samples alternated",
        "target": "added time under 5% of the uninstrumented local round trip",
        "calls_per_sample": args.calls,
        "samples": args.repeats,
        "machine": machine(),
        "results": results,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
