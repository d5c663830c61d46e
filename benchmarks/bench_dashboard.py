"""Benchmark: time of each dashboard view's queries on a local store of one million API calls.

    .venv/bin/python benchmarks/bench_dashboard.py [--calls 1000000] [--db PATH] [--repeat 3] [--write-cost]
                                                   [--browser | --browser-only] [--warm-repeat 3]

Builds the store once (rows written directly with the SQLite sink's schema, in bulk: 10 calls and 4 steps
per run, 30 days, 6 agents, 3 providers, 8 models, ~8% failed runs, ~15% unpriced calls; runs in sessions of
1-10 runs of one user (10% in none), 200 users, each agent's version of the day with a canary of the next,
tags, scores on about half the runs (numeric, boolean, categorical), prompt-cache tokens on 30% of the chat
calls), then runs each view's queries exactly as the dashboard does on a cold cache (all of a view's Source
methods, KPI strip included; Sessions, Versions and Scores; the run list under every sort; all time, a 7-day
agent filter, the last hour, a status filter) and reports the best and median of ``--repeat`` timings, with
the load average. Target: every view under one second. A store left by an earlier run is reused when its
build (``STORE_BUILD``) and columns are current; its indexes are brought up to date first, as the SQLite sink
does.

``--write-cost`` also measures what the indexes cost the writer: SQLiteSink.write in exporter-sized batches
(100 runs), step and call records/s, previous index set vs current, in a fresh store and on top of the
1M-call store, alternating in each repetition (the exporter must keep >= 50,000 step records/s).
Writes a table to stdout and JSON to ``benchmarks/results/dashboard.json``.

``--browser`` (``make bench`` passes it) then times every view's page in headless Chromium (playwright with
Debian's /usr/bin/chromium) against ``agentmeter dashboard`` on the same store: the views are read from the
page's navigation, each opened cold (fresh server and browser profile) and warm (a second visit), all time
and a Custom range of the data's last 7 days typed into the date input, until the page is ready (see
:data:`PAGE_READY`); targets warm <= 1 s, cold <= 2 s. The table puts the same run's query time and the load
average beside each figure; JSON in ``benchmarks/results/dashboard_browser.json``. ``--browser-only`` skips
the query filters the pages do not use and leaves dashboard.json alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from _common import write_json

from agentmeter.queries import rollups
from agentmeter.queries.base import RUN_ORDERS, Filters, Source
from agentmeter.queries.local import LocalSource
from agentmeter.sinks.sqlite import create_schema, table_columns

ROOT = Path(__file__).resolve().parent
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
DAYS = 30
AGENTS = ["researcher", "planner", "writer", "triage", "support", "coder"]
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("openai", "o3-mini"), ("openai", "unpriced-ft"),
          ("anthropic", "claude-sonnet"), ("anthropic", "claude-haiku"), ("tavily", None), ("openai", "text-emb")]
STEPS = [("plan", "plan"), ("search", "tool"), ("summarize", "llm"), ("answer", "llm")]
#: the store's build: a store left by an earlier build (PRAGMA user_version) is rebuilt, not reused.
#: 2: sessions (1-10 runs each), users, versions, tags, scores and cache tokens
STORE_BUILD = 2
USERS = 200
#: (first day, version) of each agent's releases; from CANARY_DAY a share of runs already has the next one
RELEASES = [(0, "1.0"), (11, "1.1"), (22, "2.0")]
CANARY_DAY, CANARY_SHARE = 18, 0.1
#: a run's tags: (tags, probability)
TAGS = [('["prod"]', 0.6), ('["staging"]', 0.2), ('["prod", "eval"]', 0.05), ("[]", 0.15)]
#: the share of runs with no session (and, of those, with no user either), and of calls reading a prompt cache
NO_SESSION_SHARE, CACHED_SHARE = 0.1, 0.3


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _version(rng: random.Random, day: int) -> str | None:
    """The agent version a run started on ``day`` carries (a few runs carry none)."""
    if rng.random() < 0.03:
        return None
    current = [v for d, v in RELEASES if d <= day][-1]
    if day >= CANARY_DAY and current != RELEASES[-1][1] and rng.random() < CANARY_SHARE:
        return RELEASES[-1][1]
    return current


def _tags(rng: random.Random) -> str:
    x = rng.random()
    for tags, p in TAGS:
        if x < p:
            return tags
        x -= p
    return "[]"


def _scores(rng: random.Random, run_id: str, t: datetime) -> list[dict[str, Any]]:
    """Scores of one run: an eval's numeric quality on 40%, a user's thumbs (boolean) on 10%, a reviewer's
    category on 5%."""
    out = []
    scored = _iso(t + timedelta(minutes=5))
    if rng.random() < 0.4:
        out.append(("quality", "eval", "numeric", round(rng.betavariate(5, 2), 3), None))
    if rng.random() < 0.1:
        out.append(("thumbs_up", "user", "boolean", 1.0 if rng.random() < 0.8 else 0.0, None))
    if rng.random() < 0.05:
        out.append(("verdict", "review", "categorical", None, rng.choice(["correct", "partial", "wrong"])))
    return [{"score_id": f"{run_id}:{n}:{src}", "run_id": run_id, "name": n, "source": src, "data_type": dt,
             "value": v, "label": lab, "comment": None, "scored_at": scored, "event_id": f"e{run_id}{n}",
             "host": "bench", "pid": 1, "sdk_version": "0"} for n, src, dt, v, lab in out]


def build_store(path: Path, calls: int, seed: int = 7) -> dict[str, int]:
    """Write ``calls`` API calls (10 per run, 4 steps per run) into a fresh store at ``path``: runs in
    sessions of 1-10 consecutive runs of one user (10% of runs in none), ``USERS`` users, the agent's
    version of the day (``RELEASES``, a canary share of the next one), tags, scores on about half the runs,
    prompt-cache tokens on ``CACHED_SHARE`` of the chat calls (and summed onto their step and run)."""
    rng = random.Random(seed)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    create_schema(conn)
    tables = ("agent_runs", "run_steps", "api_calls", "run_scores")
    cols = {t: [c.name for c in table_columns(t)] for t in tables}
    sql = {t: f"INSERT INTO {t} ({', '.join(c)}) VALUES ({', '.join('?' for _ in c)})" for t, c in cols.items()}
    n_runs = max(1, calls // 10)
    span_us = DAYS * 86400 * 1_000_000
    buf: dict[str, list[dict[str, Any]]] = {t: [] for t in cols}
    counts = {t: 0 for t in cols}

    def flush() -> None:
        # rows are dicts by column name: columns the contract adds later stay null instead of shifting
        conn.execute("BEGIN")
        for t, rows in buf.items():
            conn.executemany(sql[t], [tuple({"schema_version": 1, **r}.get(c) for c in cols[t]) for r in rows])
            counts[t] += len(rows)
            rows.clear()
        conn.execute("COMMIT")

    offsets = sorted(rng.randrange(span_us) for _ in range(n_runs))
    call_no = 0
    session: str | None = None
    user: str | None = None
    session_left = 0
    n_sessions = 0
    for i, off in enumerate(offsets):
        run_id = f"r{i:09d}"
        agent = AGENTS[i % len(AGENTS)]
        t0 = START + timedelta(microseconds=off)
        if session_left == 0:  # the next session (or a run in none)
            if rng.random() < NO_SESSION_SHARE:
                session, session_left = None, 1
                user = f"user-{rng.randrange(USERS):03d}" if rng.random() < 0.5 else None
            else:
                n_sessions += 1
                session, session_left = f"sess-{n_sessions:06d}", rng.randint(1, 10)
                user = f"user-{rng.randrange(USERS):03d}"
        session_left -= 1
        failed = rng.random() < 0.08
        cursor = t0
        run_cost, run_in, run_out, run_cached, run_written, unpriced, run_calls = 0.0, 0, 0, 0, 0, 0, 0
        for s, (sname, kind) in enumerate(STEPS):
            step_id = f"{run_id}s{s}"
            s0 = cursor
            s_cost, s_in, s_out, s_cached, s_written, s_calls = 0.0, 0, 0, 0, 0, 0
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
                cached = written = None
                if tin is not None and model != "text-emb":
                    cached = rng.randrange(tin // 2, tin) if rng.random() < CACHED_SHARE else 0
                    written = rng.randrange(100, 1000) if provider == "anthropic" and rng.random() < 0.1 else 0
                priced = model not in ("unpriced-ft",) and rng.random() > 0.08
                cost = (tin or 0) * 2.5e-6 + (tout or 0) * 1e-5 + (0.008 if provider == "tavily" else 0)
                status = "error" if failed and s == 3 and c == n_calls - 1 else "success"
                buf["api_calls"].append({
                    "call_id": f"{step_id}c{c}", "run_id": run_id, "step_id": step_id, "agent": agent,
                    "provider": provider, "operation": "search" if provider == "tavily" else "chat.completions",
                    "model": model, "status": status,
                    "error_type": "RateLimitError" if status == "error" else None,
                    "error_message": "429 slow down" if status == "error" else None,
                    "http_status": 429 if status == "error" else 200, "retries": 0,
                    "started_at": _iso(c0), "ended_at": _iso(cursor), "duration_ms": round(dur, 3),
                    "request_bytes": 900, "response_bytes": 2400, "input_tokens": tin, "output_tokens": tout,
                    "cached_input_tokens": cached, "cache_write_tokens": written,
                    "total_tokens": (tin + tout) if tin is not None and tout is not None else None,
                    "units": 1.0 if provider == "tavily" else None, "cost_usd": cost if priced else None,
                    "priced": 1 if priced else 0, "price_source": "genai-prices" if priced else None,
                    "metadata": "{}",
                })
                call_no += 1
                s_calls += 1
                if priced:
                    s_cost += cost
                else:
                    unpriced += 1
                s_in += tin or 0
                s_out += tout or 0
                s_cached += cached or 0
                s_written += written or 0
            s_status = "error" if failed and s == 3 else "success"
            buf["run_steps"].append({
                "step_id": step_id, "run_id": run_id, "agent": agent, "name": sname, "kind": kind,
                "status": s_status, "error_type": "RateLimitError" if s_status == "error" else None,
                "error_message": "429 slow down" if s_status == "error" else None,
                "started_at": _iso(s0), "ended_at": _iso(cursor),
                "duration_ms": round((cursor - s0).total_seconds() * 1000, 3), "metadata": "{}",
                "call_count": s_calls, "input_tokens": s_in, "output_tokens": s_out, "total_tokens": s_in + s_out,
                "cached_input_tokens": s_cached, "cache_write_tokens": s_written, "cost_usd": s_cost, "truncated": 0,
            })
            run_cost += s_cost
            run_calls += s_calls
            run_in += s_in
            run_out += s_out
            run_cached += s_cached
            run_written += s_written
        buf["agent_runs"].append({
            "run_id": run_id, "name": "research", "agent": agent, "session_id": session, "user_id": user,
            "version": _version(rng, (t0 - START).days), "status": "error" if failed else "success",
            "error_type": "RateLimitError" if failed else None, "error_message": "429 slow down" if failed else None,
            "started_at": _iso(t0), "ended_at": _iso(cursor),
            "duration_ms": round((cursor - t0).total_seconds() * 1000, 3), "tags": _tags(rng), "metadata": "{}",
            "implicit": 0, "host": "bench", "pid": 1, "sdk_version": "0", "step_count": len(STEPS),
            "call_count": run_calls, "error_step_count": 1 if failed else 0, "error_call_count": 1 if failed else 0,
            "input_tokens": run_in, "output_tokens": run_out, "cached_input_tokens": run_cached,
            "cache_write_tokens": run_written, "total_tokens": run_in + run_out, "cost_usd": run_cost,
            "unpriced_call_count": unpriced, "truncated": 0, "sampled": 1,
        })
        buf["run_scores"].extend(_scores(rng, run_id, cursor))
        if len(buf["api_calls"]) >= 50_000:
            flush()
    flush()
    conn.execute(f"PRAGMA user_version = {STORE_BUILD}")
    conn.execute("ANALYZE")
    conn.close()
    return counts


def views(source: Source, f: Filters) -> dict[str, Callable[[], Any]]:
    """Each view's queries, as agentmeter/dashboard/views.py and rollup_views.py run them on a cold cache, every
    tab's (the page runs its headline's and its open tab's only, the other tabs' when they are opened; every
    view draws the KPI strip, so every view runs ``kpis``; Sessions and Versions read the runs' dimensions,
    as a frame, and group them with :func:`agentmeter.queries.rollups.rollup`). ``sort: <order>`` is the run
    explorer with its list sorted by ``order`` (the run list of 200 and the match count)."""
    def rollup(by: str) -> Any:
        if not hasattr(source, "dimension_frame"):  # an agentmeter without it (a before/after comparison)
            return rollups.rollup(source.dimension_runs(f), source.latest_scores(), by)
        return rollups.rollup(source.dimension_frame(f), source.latest_scores(), by)

    out: dict[str, Callable[[], Any]] = {
        "health": lambda: (source.kpis(f), source.status_over_time(f), source.step_errors(f),
                           source.call_errors(f), source.recent_failures(f, 20)),
        "performance": lambda: (source.kpis(f), source.latency_over_time(f), source.step_latency(f),
                                source.api_latency(f), source.slowest_runs(f, 20)),
        "usage": lambda: (source.kpis(f), source.cache_tokens(f), source.runs_per_agent(f),
                          source.calls_by_provider(f), source.tokens_by_model(f), source.agent_kpis(f)),
        "cost": lambda: (source.kpis(f), source.cost_over_time(f), source.cost_by_model(f),
                         source.cost_by_provider(f), source.cost_by_agent(f), source.cache_tokens(f),
                         source.expensive_runs(f, 20), source.unpriced_calls(f)),
        "sessions": lambda: (source.kpis(f), rollup("session")),
        "versions": lambda: (source.kpis(f), rollup("version"), source.scores(f)),
        "scores": lambda: (source.kpis(f), source.scores(f)),
        "run explorer": lambda: (source.kpis(f), source.count_runs(f), source.search_runs(f, "", 200),
                                 source.run_detail("r000050000"), source.run_scores("r000050000")),
        "filter sidebar": lambda: (source.agents(), source.has_runs(),
                                   *(source.filter_values(name) for name in FILTER_CONTROLS)),
    }
    for order in RUN_ORDERS:
        if order != "newest":
            out[f"sort: {order}"] = lambda order=order: (source.count_runs(f),
                                                         source.search_runs(f, "", 200, order))
    return out


#: the filters the sidebar lists the values of (agentmeter/dashboard/app.py's FILTER_CONTROLS)
FILTER_CONTROLS = ("models", "tags", "sessions", "users", "versions")


def ensure_store(path: Path, calls: int, rebuild: bool) -> float | None:
    """Build the store unless one with the current columns exists; bring its indexes up to date (as the
    SQLite sink does when it opens a store). Returns the build time, or None when reused."""
    if not rebuild and path.exists():
        with sqlite3.connect(path, isolation_level=None) as conn:
            current = conn.execute("PRAGMA user_version").fetchone()[0] == STORE_BUILD and all(
                [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] == [c.name for c in table_columns(t)]
                for t in ("agent_runs", "run_steps", "api_calls", "run_scores")
            )
            if current:
                create_schema(conn)
                conn.execute("ANALYZE")
        if current:
            return None
    t = time.perf_counter()
    counts = build_store(path, calls)
    built = time.perf_counter() - t
    print(f"built {path}: {counts} in {built:.1f} s")
    return built


# -- write cost of the indexes ---------------------------------------------------------------------------

#: the index set before the dashboard's covering ("rollup") indexes, to compare write speed with
PREVIOUS_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_runs_started ON agent_runs (started_at)",
    "CREATE INDEX IF NOT EXISTS ix_runs_agent ON agent_runs (agent, started_at)",
    "CREATE INDEX IF NOT EXISTS ix_runs_status ON agent_runs (status, started_at)",
    "CREATE INDEX IF NOT EXISTS ix_steps_run ON run_steps (run_id)",
    "CREATE INDEX IF NOT EXISTS ix_steps_started ON run_steps (started_at)",
    "CREATE INDEX IF NOT EXISTS ix_calls_run ON api_calls (run_id)",
    "CREATE INDEX IF NOT EXISTS ix_calls_started ON api_calls (started_at)",
    "CREATE INDEX IF NOT EXISTS ix_calls_provider ON api_calls (provider, model)",
    "CREATE INDEX IF NOT EXISTS ix_calls_model ON api_calls (model)",
)


def _documents(runs: int, steps: int, calls_per_step: int) -> list[dict[str, Any]]:
    """Run documents tracked through the public API (captured in memory, not written)."""
    from agentmeter import track_call, track_run, track_step
    from agentmeter.testing import capture_runs

    models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", None]
    with capture_runs() as cap:
        for i in range(runs):
            with track_run("bench", agent=AGENTS[i % len(AGENTS)]):
                for s in range(steps):
                    with track_step(STEPS[s % len(STEPS)][0]):
                        for c in range(calls_per_step):
                            with track_call("openai", "chat.completions", model=models[(i + c) % 4]) as h:
                                h.record_usage(input_tokens=100 + c, output_tokens=20)
    return cap.runs


def _set_indexes(path: Path, indexes: tuple[str, ...]) -> None:
    """Give the store at ``path`` exactly ``indexes`` (plus the primary keys)."""
    with sqlite3.connect(path, isolation_level=None) as conn:
        wanted = {stmt.split()[5] for stmt in indexes if stmt.startswith("CREATE INDEX IF NOT EXISTS")}
        existing = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        for (name,) in existing.fetchall():
            if name not in wanted:
                conn.execute(f"DROP INDEX {name}")
        for stmt in indexes:
            conn.execute(stmt)


def _write_rate(path: Path, indexes: tuple[str, ...], docs: list[dict[str, Any]], batch: int = 100) -> float:
    """Seconds for SQLiteSink.write of ``docs`` in exporter-sized batches (the first document opens the
    store outside the timing)."""
    from agentmeter.sinks import sqlite as sqlite_sink

    saved = sqlite_sink._INDEXES
    sqlite_sink._INDEXES = indexes
    try:
        sink = sqlite_sink.SQLiteSink(path)
        sink.write(docs[:1])
        t = time.perf_counter()
        for i in range(1, len(docs), batch):
            sink.write(docs[i:i + batch])
        elapsed = time.perf_counter() - t
        sink.close()
    finally:
        sqlite_sink._INDEXES = saved
    return elapsed


def write_cost(big_store: Path, repeat: int) -> list[dict[str, Any]]:
    """Step and call records/s written by SQLiteSink with the previous and the current index sets, into a
    fresh store and into a copy of the 1M-call store; the two sets alternate in every repetition."""
    import shutil
    import statistics
    import tempfile

    from agentmeter.sinks.sqlite import _INDEXES

    workloads = {"steps only (10 steps/run)": (_documents(3000, 10, 0), "run_steps"),
                 "calls (4 steps, 2 calls/step)": (_documents(1500, 4, 2), "api_calls")}
    sets = {"previous": PREVIOUS_INDEXES, "current": _INDEXES}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=big_store.parent) as tmp:
        bases = {}
        for label, indexes in sets.items():
            bases[label] = Path(tmp) / f"base-{label}.db"
            shutil.copy(big_store, bases[label])
            _set_indexes(bases[label], indexes)
        samples: dict[tuple[str, str, str], list[float]] = {}
        for _ in range(repeat):
            for where in ("fresh store", "1M-call store"):
                for wname, (docs, table) in workloads.items():
                    n = sum(len(d["steps" if table == "run_steps" else "calls"]) for d in docs[1:])
                    for label, indexes in sets.items():
                        target = Path(tmp) / "target.db"
                        for suffix in ("", "-wal", "-shm"):
                            Path(f"{target}{suffix}").unlink(missing_ok=True)
                        if where != "fresh store":
                            shutil.copy(bases[label], target)
                        rate = n / _write_rate(target, indexes, docs)
                        samples.setdefault((where, wname, label), []).append(rate)
        for (where, wname, label), rates in samples.items():
            rows.append({"store": where, "workload": wname, "indexes": label,
                         "median_records_per_s": statistics.median(rates), "samples": rates})
    return rows


#: the page targets of issue 19 (seconds, 1M calls, measured in Chromium)
WARM_TARGET_S = 1.0
COLD_TARGET_S = 2.0


# -- page times in Chromium ------------------------------------------------------------------------------

#: page ready: the frontend has seen the script finish (stApp's data-test-script-state, what Streamlit's own
#: browser tests wait on), the view's header and a tile are drawn, no element of an earlier run is left
#: (stale), no skeleton, the running indicator is gone (or fading out: it lingers 200 ms), every chart drawn,
#: and the open tab of the view's sections drawn (a lazy tab's panel is filled by the run: only the open one
#: has a panel)
PAGE_READY = """([view, tile, value]) => {
    const heads = [...document.querySelectorAll('h2')].map(h => h.innerText.trim());
    const tiles = [...document.querySelectorAll('[data-testid="stMetric"]')].filter(m =>
        m.querySelector('[data-testid="stMetricLabel"]')?.innerText.trim() === tile);
    const running = [...document.querySelectorAll('[data-testid="stStatusWidget"]')].some(w =>
        !w.className.includes('StatusWidget-exit') && w.querySelector('[data-testid="stStatusWidgetRunningIcon"]'));
    return document.querySelector('[data-testid="stApp"]')?.dataset.testScriptState === 'notRunning'
        && heads.includes(view)
        && tiles.some(m => value === null
                           || m.querySelector('[data-testid="stMetricValue"]')?.innerText.trim() === value)
        && !document.querySelector('[data-testid="stSkeleton"], [data-stale="true"]')
        && !running
        && [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].every(c => c.querySelector('canvas, svg'))
        && [...document.querySelectorAll('[data-testid="stMain"] [role="tabpanel"]')].every(p =>
            p.querySelector('[data-testid="stElementContainer"]'));
}"""


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _runs_between(db: Path, since: str | None, until: str | None) -> int:
    """How many runs started in [since, until): what the Runs tile (Matching runs in the Run explorer) reads."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM agent_runs WHERE started_at >= ? AND started_at < ?",
                                (since or "", until or "~")).fetchone()[0])


def _chromium_helpers() -> Any:
    """tests/_chromium.py (the server and browser helpers the Chromium tests use), from the repository's root."""
    sys.path.insert(0, str(ROOT.parent))
    import tests._chromium as helpers

    return helpers


#: the page's own milestones, in ms since navigation started (performance.now()), recorded by the page
TIMELINE = """
window.__agentmeter_timeline = {};
(() => {
  const tl = window.__agentmeter_timeline;
  const mark = (k) => { if (!(k in tl)) tl[k] = performance.now(); };
  const Socket = window.WebSocket;
  window.WebSocket = function (...args) {
    const ws = new Socket(...args);
    ws.addEventListener('open', () => mark('ws_open'));
    ws.addEventListener('message', () => { tl.last_message = performance.now(); });
    return ws;
  };
  window.WebSocket.prototype = Socket.prototype;
  Object.assign(window.WebSocket, Socket);
  const watch = () => {
    const state = document.querySelector('[data-testid="stApp"]')?.dataset.testScriptState;
    if (state === 'running') mark('script_started');
    if (tl.script_started !== undefined && state === 'notRunning') mark('script_finished');
    if (document.querySelector('[data-testid="stMetricValue"]')) mark('first_tile');
    if (!('script_finished' in tl) || !('first_tile' in tl)) requestAnimationFrame(watch);
  };
  requestAnimationFrame(watch);
})();
"""
#: what the timeline reports per page (seconds since navigation started)
MILESTONES = ("dom_content_loaded", "ws_open", "script_started", "last_message", "script_finished", "first_tile")


def _cpu_probe(page: Any) -> Any:
    """A DevTools session on ``page`` collecting its performance metrics from now on (None if refused)."""
    try:
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
    except Exception:  # not Chromium: no CPU figure rather than no benchmark
        return None
    return cdp


def _main_thread_cpu(cdp: Any) -> float | None:
    """Seconds the page's main thread has spent in tasks since :func:`_cpu_probe` (Chromium's TaskDuration):
    the browser's share of a page, less sensitive to the machine's load than its wall-clock time."""
    if cdp is None:
        return None
    try:
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    except Exception:  # the page went away
        return None
    value = metrics.get("TaskDuration")
    return round(float(value), 3) if isinstance(value, (int, float)) else None


def _timeline(page: Any) -> dict[str, float | None]:
    marks = page.evaluate("""() => ({...window.__agentmeter_timeline,
        dom_content_loaded: performance.getEntriesByType('navigation')[0]?.domContentLoadedEventEnd})""")
    return {k: (round(marks[k] / 1000, 3) if isinstance(marks.get(k), (int, float)) else None) for k in MILESTONES}


#: a bare Streamlit page in the same harness: a header and one tile (the floor no view goes below)
FLOOR_APP = """import streamlit as st

st.set_page_config(page_title="floor", layout="wide")
st.header("Floor")
st.metric("Runs", {runs!r})
"""


def _ready(page: Any, view: str, tile: str, value: str | None, timeout_s: float = 120) -> None:
    page.wait_for_function(PAGE_READY, arg=[view, tile, value], timeout=timeout_s * 1000, polling=50)


def _choose(page: Any, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def _type_date(page: Any, end: str, day: date) -> None:
    page.get_by_role("spinbutton", name=f"year, From - to (UTC) {end} date").click()
    page.keyboard.type(f"{day:%Y%m%d}")


#: the navigation's entries: the sidebar's View radio
NAV = '[data-testid="stSidebar"] [role="radiogroup"][aria-label="View"] [data-testid="stRadioOption"]'


def page_views(browser: Any, url: str) -> list[str]:
    """The views the page's navigation offers (the sidebar's View radio), in its order."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(url)
    page.wait_for_selector(NAV, timeout=120_000)
    names = [t.strip() for t in page.locator(NAV).all_inner_texts()]
    page.close()
    return [n for n in names if n]


def browser_pages(db: Path, first: date, last: date, warm_repeat: int, logs: Path) -> list[dict[str, Any]]:
    """Seconds until each view's page is ready in Chromium, cold and warm, all time and ``first``..``last``.

    Per view, a fresh ``agentmeter dashboard`` process: cold all time = opening ``?view=<view>`` (empty
    caches: the source is opened, every query runs); cold range = then choosing Custom, typing the dates and
    leaving the field (timed from leaving it: every query of the view runs again for the new range); warm = the same
    two again in a new page of the same browser profile (a second visit: Streamlit's query cache is shared
    by sessions, the browser has cached Streamlit's scripts), best and median of ``warm_repeat``. First the
    floor: a bare Streamlit page (:data:`FLOOR_APP`) served with the same options, cold and warm. Each
    page records its own timeline (:data:`TIMELINE`, the all-time visits' in the rows).
    """
    import tempfile
    from urllib.parse import quote

    helpers = _chromium_helpers()

    def runs(first: date | None, last: date | None) -> str:
        """The tile's text for the runs started from ``first`` to ``last`` (whole UTC days)."""
        since = _iso(datetime.combine(first, datetime.min.time(), timezone.utc)) if first else None
        until = _iso(datetime.combine(last, datetime.min.time(), timezone.utc) + timedelta(days=1)) if last else None
        return f"{_runs_between(db, since, until):,}"

    today = datetime.now(timezone.utc).date()
    # the Custom range opens on the last 7 days up to today (a rerun of its own before the dates are typed)
    all_runs, range_runs, default_runs = runs(None, None), runs(first, last), runs(today - timedelta(days=7), today)
    rows: list[dict[str, Any]] = []
    probes: dict[int, Any] = {}  # the CPU probe of each open page (see _cpu_probe)

    def open_page(url: str, context: Any, view: str, tile: str) -> tuple[Any, float, dict[str, float | None]]:
        """A new page of ``context`` on ``?view=<view>``, ready: (the page, seconds, its timeline with the
        page's main-thread CPU seconds until then)."""
        page = context.new_page()
        page.add_init_script(TIMELINE)
        probes[id(page)] = _cpu_probe(page)
        t = time.perf_counter()
        page.goto(f"{url}/?view={quote(view)}")
        _ready(page, view, tile, all_runs)
        seconds = time.perf_counter() - t
        return page, seconds, {**_timeline(page), "main_thread_cpu": _main_thread_cpu(probes[id(page)])}

    def record(view: str, label: str, cold: tuple[float, float, dict[str, Any]], warm: list[tuple[Any, ...]],
               i: int, started: float) -> None:
        best = min(warm, key=lambda w: w[i])
        times = sorted(w[i] for w in warm)
        rows.append({"view": view, "range": label, "cold_s": cold[i], "cold_load": cold[-1],
                     "warm_best_s": times[0], "warm_median_s": times[len(times) // 2], "warm_load": warm[-1][-1],
                     "server_start_s": started, **({"cold_timeline": cold[2], "warm_timeline": best[2]}
                                                   if i == 0 else {})})

    with helpers.chromium() as browser:
        # the floor: a bare Streamlit page (a header, one tile) served and opened exactly as the views are
        floor_dir = Path(tempfile.mkdtemp(prefix="bench-dash-floor-"))
        floor = floor_dir / "floor.py"
        floor.write_text(FLOOR_APP.format(runs=all_runs))
        with helpers.serve(helpers.streamlit_command(floor), logs=logs) as server:
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            visits = []
            for _ in range(1 + warm_repeat):
                page, seconds, marks = open_page(server.url, context, "Floor", "Runs")
                probes.pop(id(page), None)
                page.close()
                visits.append((seconds, 0.0, marks, _load()))
            context.close()
        record("Floor (bare Streamlit page)", "all time", visits[0], visits[1:], 0, server.started_s)
        print(f"{'floor':<14} cold {visits[0][0]:.2f} s, warm {min(v[0] for v in visits[1:]):.2f} s, "
              f"load {_load()}", flush=True)
        with helpers.serve(db=db, logs=logs) as server:
            names = page_views(browser, server.url)
        print(f"views in the navigation: {', '.join(names)}", flush=True)
        for view in names:
            tile = "Matching runs" if view == "Run explorer" else "Runs"

            def visit(url: str, context: Any, view: str = view, tile: str = tile) -> tuple[Any, ...]:
                """(all time, range, timeline, load average) for one visit of ``view`` in a new page."""
                page, whole, marks = open_page(url, context, view, tile)
                _choose(page, "Time range", "Custom")
                _ready(page, view, tile, default_runs)
                _type_date(page, "start", first)
                _type_date(page, "end", last)
                page.keyboard.press("Tab")
                probe = probes.pop(id(page))
                cpu = _main_thread_cpu(probe)
                t = time.perf_counter()
                page.locator("h1").first.click()  # leaving the field commits the dates: one rerun
                _ready(page, view, tile, range_runs)
                ranged = time.perf_counter() - t
                after = _main_thread_cpu(probe)
                marks = {**marks, "range_main_thread_cpu": None if cpu is None or after is None else
                         round(after - cpu, 3)}
                page.close()
                return whole, ranged, marks, _load()

            with helpers.serve(db=db, logs=logs) as server:
                # cold: a new browser profile too (nothing cached); warm: the same profile again, as a
                # returning user's browser has Streamlit's scripts in its cache
                context = browser.new_context(viewport={"width": 1440, "height": 1000})
                cold = visit(server.url, context)
                warm = [visit(server.url, context) for _ in range(warm_repeat)]
                context.close()
            for label, i in (("all time", 0), (f"{first:%Y-%m-%d} to {last:%Y-%m-%d}", 1)):
                record(view, label, cold, warm, i, server.started_s)
            r = rows[-2:]
            print(f"{view:<14} cold {r[0]['cold_s']:.2f} / {r[1]['cold_s']:.2f} s, "
                  f"warm {r[0]['warm_best_s']:.2f} / {r[1]['warm_best_s']:.2f} s (all time / range), "
                  f"load {_load()}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/agentmeter_bench_dashboard.db"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the store even if it exists")
    parser.add_argument("--write-cost", action="store_true",
                        help="also measure SQLiteSink write speed with the previous and the current indexes")
    parser.add_argument("--browser", action="store_true",
                        help="also time every view's page in Chromium (cold and warm, all time and the last 7 days "
                             "of the data); writes benchmarks/results/dashboard_browser.json")
    parser.add_argument("--browser-only", action="store_true", help="only the Chromium page times")
    parser.add_argument("--warm-repeat", type=int, default=3, help="warm visits per view in Chromium")
    args = parser.parse_args(argv)
    if args.browser_only:
        args.browser = True

    built = ensure_store(args.db, args.calls, args.rebuild)
    source = LocalSource(args.db)
    filters = {
        "all time, all agents": Filters(),
        "7 days, 2 agents": Filters(since=_iso(START + timedelta(days=DAYS - 7)), agents=("planner", "writer")),
        "last hour": Filters(since=_iso(START + timedelta(days=DAYS, hours=-1))),
        "status=error": Filters(statuses=("error",)),
    }
    # the Chromium range: the last 7 days of the data (the store's runs span DAYS days from START)
    last_day = (START + timedelta(days=DAYS - 1)).date()
    first_day = last_day - timedelta(days=6)
    page_range = f"{first_day:%Y-%m-%d} to {last_day:%Y-%m-%d}"
    if args.browser:
        filters[page_range] = Filters(since=_iso(datetime.combine(first_day, datetime.min.time(), timezone.utc)),
                                      until=_iso(datetime.combine(last_day, datetime.min.time(), timezone.utc)
                                                 + timedelta(days=1)))
    if args.browser_only:
        filters = {k: v for k, v in filters.items() if k in ("all time, all agents", page_range)}
    results: list[dict[str, Any]] = []
    load_at_start = _load()
    for fname, f in filters.items():
        for view in views(source, f):
            times = []
            for _ in range(args.repeat):
                fresh = LocalSource(args.db)  # no memoized summary carried over between repetitions
                t = time.perf_counter()
                views(fresh, f)[view]()
                times.append(time.perf_counter() - t)
            times.sort()
            results.append({"view": view, "filters": fname, "best_s": times[0], "median_s": times[len(times) // 2],
                            "load": _load()})
    print(f"\n{'view':<16} {'filters':<22} {'best (s)':>9} {'median (s)':>11} {'load':>5}  target < 1 s")
    for r in results:
        ok = "ok" if r["best_s"] < 1.0 else "SLOW"
        print(f"{r['view']:<16} {r['filters']:<22} {r['best_s']:>9.3f} {r['median_s']:>11.3f} {r['load']:>5.2f}  {ok}")
    with sqlite3.connect(args.db) as conn:
        sizes = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                 for t in ("agent_runs", "run_steps", "api_calls", "run_scores")}
        sizes.update({f"distinct {c}": conn.execute(f"SELECT count(DISTINCT {c}) FROM agent_runs").fetchone()[0]
                      for c in ("session_id", "user_id", "version")})
        sizes["calls with cache tokens"] = conn.execute(
            "SELECT count(*) FROM api_calls WHERE cached_input_tokens > 0 OR cache_write_tokens > 0").fetchone()[0]
    out: dict[str, Any] = {
        "benchmark": "dashboard view queries, local SQLite store",
        "rows": sizes, "store_build": STORE_BUILD, "repeat": args.repeat, "store_build_s": built,
        "loadavg_at_start": load_at_start,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "sqlite": sqlite3.sqlite_version},
        "results": results,
        "all_under_1s": all(r["best_s"] < 1.0 for r in results),
    }
    if args.browser:
        browser_main(args, results, first_day, last_day, page_range, sizes)
        if args.browser_only:
            return 0
    if args.write_cost:
        out["write_cost"] = write_cost(args.db, args.repeat)
        print(f"\n{'store':<15} {'workload':<30} {'indexes':<9} {'records/s (median)':>19}")
        for r in out["write_cost"]:
            print(f"{r['store']:<15} {r['workload']:<30} {r['indexes']:<9} {r['median_records_per_s']:>19,.0f}")
    print(f"\nwrote {write_json('dashboard.json', out)}")
    return 0


def _pair(cold: float | None, warm: float | None) -> str:
    return " / ".join("-" if v is None else f"{v:.2f}" for v in (cold, warm))


def browser_main(args: argparse.Namespace, queries: list[dict[str, Any]], first: date, last: date, page_range: str,
                 sizes: dict[str, int]) -> None:
    """The Chromium half: page times beside the same run's query times; table on stdout, JSON file."""
    from _common import RESULTS

    load_before = _load()
    rows = browser_pages(args.db, first, last, args.warm_repeat, RESULTS / "logs" / "dashboard_browser")
    # the same run's query times (best of --repeat), by the bench's view name, for the same filters
    best = {(r["view"], r["filters"]): r["best_s"] for r in queries}
    for row in rows:
        fname = "all time, all agents" if row["range"] == "all time" else page_range
        row["queries_best_s"] = best.get((row["view"].lower(), fname))
        row["cold_ok"] = row["cold_s"] <= COLD_TARGET_S
        row["warm_ok"] = row["warm_best_s"] <= WARM_TARGET_S
    print(f"\n{'view':<14} {'range':<26} {'queries':>8} {'cold':>6} {'load':>5} {'warm':>6} {'load':>5}"
          f"  targets: warm <= {WARM_TARGET_S:g} s, cold <= {COLD_TARGET_S:g} s")
    for r in rows:
        q = "-" if r["queries_best_s"] is None else f"{r['queries_best_s']:.2f}"
        ok = "ok" if r["cold_ok"] and r["warm_ok"] else "SLOW"
        print(f"{r['view']:<14} {r['range']:<26} {q:>8} {r['cold_s']:>6.2f} {r['cold_load']:>5.2f} "
              f"{r['warm_best_s']:>6.2f} {r['warm_load']:>5.2f}  {ok}")
    print("\nwhere an all-time page's time goes (s since navigation started, as the page saw it; cold / warm):")
    columns = (*MILESTONES, "main_thread_cpu")
    print(f"{'view':<28} {'server':>6}  " + "  ".join(f"{m:>17}" for m in columns) + f"  {'ready':>11}")
    for r in rows:
        if r["range"] != "all time":
            continue
        marks = "  ".join(f"{_pair(r['cold_timeline'].get(m), r['warm_timeline'].get(m)):>17}" for m in columns)
        print(f"{r['view']:<28} {r['server_start_s']:>6.2f}  {marks}  {_pair(r['cold_s'], r['warm_best_s']):>11}")
    out = {
        "benchmark": "dashboard pages in Chromium (playwright, /usr/bin/chromium), local SQLite store",
        "rows": sizes, "warm_repeat": args.warm_repeat, "query_repeat": args.repeat,
        "targets_s": {"warm": WARM_TARGET_S, "cold": COLD_TARGET_S},
        "ready": "the view's header and tiles drawn with the expected run count, no skeleton, no stale element, "
                 "no running indicator, every chart's canvas/svg drawn",
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "nproc": os.cpu_count(),
                    "sqlite": sqlite3.sqlite_version, "loadavg_at_start": load_before},
        "results": rows,
        "all_within_targets": all(r["cold_ok"] and r["warm_ok"] for r in rows if not r["view"].startswith("Floor")),
        "timeline": "cold_timeline / warm_timeline (all time; warm: the best visit): seconds since navigation "
                    "started when the page saw DOMContentLoaded, the websocket open, the script start, the last "
                    "message, the script finished, the first tile drawn; main_thread_cpu: the seconds Chromium's "
                    "main thread spent in tasks until the page was ready (DevTools TaskDuration), "
                    "range_main_thread_cpu: those of the range's rerun",
    }
    print(f"\nwrote {write_json('dashboard_browser.json', out)}")


if __name__ == "__main__":
    sys.exit(main())
