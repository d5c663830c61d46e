"""Benchmark: time of each dashboard view's queries on a local store of one million API calls.

    .venv/bin/python benchmarks/bench_dashboard.py [--calls 1000000] [--db PATH] [--repeat 3]

Builds the store once (rows written directly with the SQLite sink's schema, in bulk: 10 calls and 4 steps
per run, 30 days, 6 agents, 3 providers, 8 models, ~8% failed runs, ~15% unpriced calls), then runs each
view's queries exactly as the dashboard does (all of a view's Source methods, unfiltered and with a 7-day
agent filter) and reports the best of ``--repeat`` timings. Target: every view under one second.
Writes a table to stdout and JSON to ``benchmarks/results/dashboard.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from agentmeter.queries.base import Filters, Source
from agentmeter.queries.local import LocalSource
from agentmeter.sinks.sqlite import create_schema, table_columns

ROOT = Path(__file__).resolve().parent
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
DAYS = 30
AGENTS = ["researcher", "planner", "writer", "triage", "support", "coder"]
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("openai", "o3-mini"), ("openai", "unpriced-ft"),
          ("anthropic", "claude-sonnet"), ("anthropic", "claude-haiku"), ("tavily", None), ("openai", "text-emb")]
STEPS = [("plan", "plan"), ("search", "tool"), ("summarize", "llm"), ("answer", "llm")]


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_store(path: Path, calls: int, seed: int = 7) -> dict[str, int]:
    """Write ``calls`` API calls (10 per run, 4 steps per run) into a fresh store at ``path``."""
    rng = random.Random(seed)
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    create_schema(conn)
    cols = {t: [c.name for c in table_columns(t)] for t in ("agent_runs", "run_steps", "api_calls")}
    sql = {t: f"INSERT INTO {t} ({', '.join(c)}) VALUES ({', '.join('?' for _ in c)})" for t, c in cols.items()}
    n_runs = max(1, calls // 10)
    span_us = DAYS * 86400 * 1_000_000
    buf: dict[str, list[tuple[Any, ...]]] = {t: [] for t in cols}
    counts = {t: 0 for t in cols}

    def flush() -> None:
        conn.execute("BEGIN")
        for t, rows in buf.items():
            conn.executemany(sql[t], [(1, *r) for r in rows])  # schema_version first
            counts[t] += len(rows)
            rows.clear()
        conn.execute("COMMIT")

    offsets = sorted(rng.randrange(span_us) for _ in range(n_runs))
    call_no = 0
    for i, off in enumerate(offsets):
        run_id = f"r{i:09d}"
        agent = AGENTS[i % len(AGENTS)]
        t0 = START + timedelta(microseconds=off)
        failed = rng.random() < 0.08
        cursor = t0
        run_cost, run_in, run_out, unpriced, run_calls = 0.0, 0, 0, 0, 0
        for s, (sname, kind) in enumerate(STEPS):
            step_id = f"{run_id}s{s}"
            s0 = cursor
            s_cost, s_in, s_out, s_calls = 0.0, 0, 0, 0
            n_calls = 3 if s < 2 else 2
            if call_no + n_calls > calls:
                n_calls = max(0, calls - call_no)
            for c in range(n_calls):
                provider, model = MODELS[rng.randrange(len(MODELS))]
                dur = rng.lognormvariate(6.0, 0.6)
                c0 = cursor
                cursor = c0 + timedelta(milliseconds=dur)
                tin = rng.randrange(200, 4000) if provider != "tavily" else None
                tout = rng.randrange(20, 800) if provider != "tavily" else None
                priced = model not in ("unpriced-ft",) and rng.random() > 0.08
                cost = (tin or 0) * 2.5e-6 + (tout or 0) * 1e-5 + (0.008 if provider == "tavily" else 0)
                status = "error" if failed and s == 3 and c == n_calls - 1 else "success"
                buf["api_calls"].append((
                    f"{step_id}c{c}", run_id, step_id, agent, provider,
                    "search" if provider == "tavily" else "chat.completions", model, status,
                    "RateLimitError" if status == "error" else None, "429 slow down" if status == "error" else None,
                    429 if status == "error" else 200, 0, _iso(c0), _iso(cursor), round(dur, 3), None, 900, 2400,
                    tin, tout, None, None, (tin + tout) if tin is not None and tout is not None else None,
                    1.0 if provider == "tavily" else None, cost if priced else None, 1 if priced else 0,
                    "genai-prices" if priced else None, "{}",
                ))
                call_no += 1
                s_calls += 1
                if priced:
                    s_cost += cost
                else:
                    unpriced += 1
                s_in += tin or 0
                s_out += tout or 0
            s_status = "error" if failed and s == 3 else "success"
            buf["run_steps"].append((
                step_id, run_id, None, agent, sname, kind, s_status,
                "RateLimitError" if s_status == "error" else None, "429 slow down" if s_status == "error" else None,
                _iso(s0), _iso(cursor), round((cursor - s0).total_seconds() * 1000, 3), "{}", s_calls,
                s_in, s_out, None, None, s_in + s_out, s_cost, None, None, 0,
            ))
            run_cost += s_cost
            run_calls += s_calls
            run_in += s_in
            run_out += s_out
        buf["agent_runs"].append((
            run_id, None, "research", agent, "error" if failed else "success",
            "RateLimitError" if failed else None, "429 slow down" if failed else None,
            _iso(t0), _iso(cursor), round((cursor - t0).total_seconds() * 1000, 3), "[]", "{}", 0, "bench", 1,
            "0", len(STEPS), run_calls, 1 if failed else 0, 1 if failed else 0, run_in, run_out, None, None,
            run_in + run_out, run_cost, unpriced, None, None, 0,
        ))
        if len(buf["api_calls"]) >= 50_000:
            flush()
    flush()
    conn.execute("ANALYZE")
    conn.close()
    return counts


def views(source: Source, f: Filters) -> dict[str, Callable[[], Any]]:
    """Each view's queries, as the dashboard runs them (see dashboard/views.py)."""
    return {
        "health": lambda: (source.kpis(f), source.status_over_time(f), source.recent_failures(f)),
        "performance": lambda: (source.latency_over_time(f), source.step_latency(f), source.api_latency(f),
                                source.slowest_runs(f)),
        "usage": lambda: (source.runs_per_agent(f), source.calls_by_provider(f), source.tokens_by_model(f)),
        "cost": lambda: (source.cost_over_time(f), source.cost_by_model(f), source.cost_by_provider(f),
                         source.cost_by_agent(f), source.expensive_runs(f), source.unpriced_calls(f)),
        "run explorer": lambda: (source.search_runs(f), source.run_detail("r000050000")),
        "filter sidebar": lambda: (source.agents(), source.has_runs()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/agentmeter_bench_dashboard.db"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the store even if it exists")
    args = parser.parse_args(argv)

    built = None
    if args.rebuild or not args.db.exists():
        t = time.perf_counter()
        counts = build_store(args.db, args.calls)
        built = time.perf_counter() - t
        print(f"built {args.db}: {counts} in {built:.1f} s")
    source = LocalSource(args.db)
    filters = {
        "all time, all agents": Filters(),
        "7 days, 2 agents": Filters(since=_iso(START + timedelta(days=DAYS - 7)), agents=("planner", "writer")),
        "status=error": Filters(statuses=("error",)),
    }
    results: list[dict[str, Any]] = []
    for fname, f in filters.items():
        for view in views(source, f):
            times = []
            for _ in range(args.repeat):
                fresh = LocalSource(args.db)  # no memoized summary carried over between repetitions
                t = time.perf_counter()
                views(fresh, f)[view]()
                times.append(time.perf_counter() - t)
            times.sort()
            results.append({"view": view, "filters": fname, "best_s": times[0], "median_s": times[len(times) // 2]})
    print(f"\n{'view':<16} {'filters':<22} {'best (s)':>9} {'median (s)':>11}  target < 1 s")
    for r in results:
        ok = "ok" if r["best_s"] < 1.0 else "SLOW"
        print(f"{r['view']:<16} {r['filters']:<22} {r['best_s']:>9.3f} {r['median_s']:>11.3f}  {ok}")
    with sqlite3.connect(args.db) as conn:
        sizes = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                 for t in ("agent_runs", "run_steps", "api_calls")}
    out = {
        "benchmark": "dashboard view queries, local SQLite store",
        "rows": sizes, "repeat": args.repeat, "store_build_s": built,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "sqlite": sqlite3.sqlite_version},
        "results": results,
        "all_under_1s": all(r["best_s"] < 1.0 for r in results),
    }
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "dashboard.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {ROOT / 'results' / 'dashboard.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
