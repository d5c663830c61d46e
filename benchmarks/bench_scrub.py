"""The scrubber's cost: nanoseconds per string, clean and dirty, and per key-name check.

``agentmeter._scrub.scrub`` runs on every captured string, every error message and every log line;
``is_secret_key`` on every key of a captured mapping. Clean text must cost next to nothing (one C-speed
scan for the few substrings every pattern needs); dirty text pays for the regular expressions. The 0.1.0
check (one ``Bearer|Basic|Token`` regex) is timed beside it as the baseline.

Run alone: ``python benchmarks/bench_scrub.py [--repeats 7] [--calls 200000]``; writes
``benchmarks/results/scrub.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import machine, summary, time_per_call, write_json

from agentmeter._scrub import _is_secret_key, is_secret_key, scrub

TEXTS = {
    "short (< 8 chars)": "ok",
    "clean sentence (41 chars)": "searching the web for acme corp revenue",
    "clean error with ':' (36 chars)": "KeyError: 'revenue' in the response",
    "clean with a trigger word (52 chars)": "max_tokens=512 exceeded: the model returned 600 tokens",
    "clean 1 KB of prose": ("The agent looked up the company, read three pages and wrote a summary. " * 15)[:1024],
    "dirty: Bearer token (60 chars)": "Authorization: Bearer sk-proj-Zq8vJ1wXk2LmN3oP4qRs5tUv6wX",
    "dirty: URL password (45 chars)": "connect to postgres://u:hunter2pass@h/db failed",
    "dirty: JSON with a password (70 chars)": '{"user": "bob", "password": "hunter2", "max_tokens": 512, "x": 1}',
}
KEYS = {"key check: ordinary key (cached)": "query", "key check: token count (cached)": "input_tokens",
        "key check: secret (cached)": "openai_api_key"}
_OLD_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.I)


def _old(text: str) -> str:
    return _OLD_BEARER.sub(lambda m: m.group(1) + " [REDACTED]", text) if _OLD_BEARER.search(text) else text


def measure(repeats: int, calls: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for label, text in TEXTS.items():
        n = max(calls // (1 + len(text) // 64), 1000)
        new = [us * 1000 for us in time_per_call(lambda t=text: scrub(t), n, repeats)]
        old = [us * 1000 for us in time_per_call(lambda t=text: _old(t), n, repeats)]
        rows[label] = {"scrub_ns": summary(new), "baseline_0_1_0_ns": summary(old), "chars": len(text),
                       "changed": scrub(text) != text}
    for label, key in KEYS.items():
        is_secret_key(key)
        cached = [us * 1000 for us in time_per_call(lambda k=key: is_secret_key(k), calls, repeats)]
        uncached = [us * 1000 for us in time_per_call(lambda k=key: _is_secret_key.__wrapped__(k), calls // 4,
                                                      repeats)]
        rows[label] = {"scrub_ns": summary(cached), "uncached_ns": summary(uncached), "chars": len(key),
                       "changed": is_secret_key(key)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    rows = measure(args.repeats, args.calls)
    print(f"{'case':42} {'scrub ns (min/median)':>24} {'0.1.0 / uncached ns':>22}")
    for label, row in rows.items():
        new = row["scrub_ns"]
        other = row.get("baseline_0_1_0_ns") or row["uncached_ns"]
        print(f"{label:42} {new['min']:>11.0f} / {new['median']:<10.0f} "
              f"{other['min']:>10.0f} / {other['median']:<9.0f}")
    path = write_json("scrub.json", {"machine": machine(), "python": sys.version.split()[0], "cases": rows})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
