"""Case 4, export throughput into the local SQLite store with the exporter thread.

Two measurements, each in a fresh interpreter, each ``runs`` runs of ``steps`` steps (default 4,000 x 10):

* **concurrent**: the caller tracks runs as fast as it can while the exporter writes them; the figure is
  runs and step records per second from the first run to the end of ``flush()``, and the caller's cost
  per step while the exporter runs (to compare with the hot-path figure measured with an idle exporter).
* **drain**: the sink is held shut (an event-gated wrapper) while the runs are tracked, then opened; the
  figure is runs and step records per second from opening to the end of ``flush()``: the exporter alone.

Every measurement counts the rows that reached the store (and what was spooled or dropped), so a fast
figure that lost data cannot pass. The drain run also splits the exporter's time into building documents,
turning documents into rows, and the SQLite write.

Run alone: ``python benchmarks/bench_throughput.py [--repeats 3] [--runs 4000]``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import child_json, emit, quiet_env, summary

TARGET_STEPS_PER_S = 50_000


def work(query: str, k: int = 3) -> str:
    return query[:k]


class _Timer:
    """Wraps a function and adds up the time spent in it (on whichever thread calls it)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


def child(mode: str, runs: int, steps: int, breakdown: bool) -> dict[str, Any]:
    import agentmeter
    from agentmeter import contract
    from agentmeter.export import _documents
    from agentmeter.sinks import SQLiteSink

    folder = Path(tempfile.mkdtemp(prefix="am-bench-tp-"))
    db = folder / "store.db"
    gate = threading.Event()
    gate.set()  # open for the warm-up; the drain mode shuts it before the timed part
    timers: dict[str, _Timer] = {}
    if breakdown:
        for name in ("run_document", "json_safe"):
            if hasattr(_documents, name):
                timers[name] = _Timer(getattr(_documents, name))
                setattr(_documents, name, timers[name])
        timers["document_records"] = _Timer(contract.document_records)
        contract.document_records = timers["document_records"]  # type: ignore[assignment]

    write_timer = _Timer(lambda: None)

    class Store(SQLiteSink):
        def write(self, documents: Any) -> Any:
            gate.wait()
            t0 = time.perf_counter()
            try:
                return super().write(documents)
            finally:
                write_timer.seconds += time.perf_counter() - t0
                write_timer.calls += 1

    sink = Store(db, name="sqlite")
    sink.write([])  # create the schema now, not inside the timed part
    agentmeter.configure(sinks=[sink], spool_dir=str(folder / "spool"))
    step = agentmeter.track_step(work)

    @agentmeter.track_run("agent")
    def agent() -> None:
        for _ in range(steps):
            step("what is the capital of France?", 3)

    for _ in range(20):  # warm-up runs, flushed before timing
        agent()
    agentmeter.flush(timeout=None)
    for t in (*timers.values(), write_timer):
        t.seconds, t.calls = 0.0, 0
    if mode == "drain":
        gate.clear()

    t0 = time.perf_counter()
    for _ in range(runs):
        agent()
    t_caller = time.perf_counter() - t0
    t_open = time.perf_counter()
    gate.set()
    result = agentmeter.flush(timeout=None)
    t_end = time.perf_counter()
    elapsed = (t_end - t0) if mode == "concurrent" else (t_end - t_open)

    with sqlite3.connect(db) as conn:
        n_runs = conn.execute("SELECT count(*) FROM agent_runs").fetchone()[0] - 20
        n_steps = conn.execute("SELECT count(*) FROM run_steps").fetchone()[0] - 20 * steps
    stats = agentmeter.stats()
    out: dict[str, Any] = {
        "elapsed_s": elapsed,
        "caller_s": t_caller,
        "caller_us_per_step": t_caller / (runs * steps) * 1e6,
        "runs_per_s": n_runs / elapsed,
        "step_records_per_s": n_steps / elapsed,
        "rows_per_s": (n_runs + n_steps) / elapsed,
        "runs_in_store": n_runs,
        "steps_in_store": n_steps,
        "spooled": result.spooled if hasattr(result, "spooled") else None,
        "dropped": stats.runs_dropped,
        "sink_writes": write_timer.calls,
        "sink_write_s": write_timer.seconds,
    }
    if breakdown:
        out["breakdown_s"] = {name: t.seconds for name, t in timers.items()}
        out["breakdown_s"]["sqlite_write_total"] = write_timer.seconds
    return out


def run(python: str = sys.executable, repeats: int = 3, runs: int = 4000, steps: int = 10,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    env = quiet_env()
    samples: dict[str, list[dict[str, Any]]] = {"concurrent": [], "drain": []}
    errors: list[str] = []
    for i in range(repeats):
        for mode in samples:
            log(f"  throughput: {mode} ({i + 1}/{repeats})")
            res = child_json([python, os.path.abspath(__file__), "--child", mode, "--runs", str(runs),
                              "--steps", str(steps)] + (["--breakdown"] if mode == "drain" else []), 600, env)
            if "error" in res:
                errors.append(f"{mode}: {res['error']}")
            else:
                samples[mode].append(res)
    cases: dict[str, Any] = {}
    for mode, rows in samples.items():
        label = "while the caller tracks (concurrent)" if mode == "concurrent" else "exporter alone (drain)"
        cases[f"{mode}_steps_per_s"] = {"label": f"step records/s, {label}", "unit": "step records/s",
                                        **summary([r["step_records_per_s"] for r in rows])}
        cases[f"{mode}_runs_per_s"] = {"label": f"runs/s, {label}", "unit": "runs/s",
                                       **summary([r["runs_per_s"] for r in rows])}
    cases["concurrent_caller_us_per_step"] = {
        "label": "caller's cost per step while the exporter runs", "unit": "us per step",
        **summary([r["caller_us_per_step"] for r in samples["concurrent"]])}
    complete = all(r["steps_in_store"] == runs * steps for rows in samples.values() for r in rows)
    best = max((r["step_records_per_s"] for rows in samples.values() for r in rows), default=0.0)
    drain_median = cases["drain_steps_per_s"]["median"]
    conc_median = cases["concurrent_steps_per_s"]["median"]
    breakdown = _breakdown(samples["drain"], runs, steps)
    target = {"name": f">= {TARGET_STEPS_PER_S:,} step records/s into the local store", "limit": TARGET_STEPS_PER_S,
              "measured_median_drain": drain_median, "measured_median_concurrent": conc_median,
              "measured_best": best, "all_rows_stored": complete,
              "met": bool(drain_median) and complete and drain_median >= TARGET_STEPS_PER_S}
    return {"case": "export_throughput", "params": {"runs": runs, "steps_per_run": steps, "repeats": repeats,
                                                    "python": python},
            "cases": cases, "target": target, "breakdown_us_per_step_record": breakdown,
            "samples": samples, "errors": errors}


def _breakdown(rows: list[dict[str, Any]], runs: int, steps: int) -> dict[str, float]:
    """Exporter time per step record, split by stage (median over the drain samples)."""
    if not rows or "breakdown_s" not in rows[0]:
        return {}
    out: dict[str, float] = {}
    per = runs * steps / 1e6
    for key in rows[0]["breakdown_s"]:
        out[key] = summary([r["breakdown_s"][key] / per for r in rows])["median"]
    out["elapsed"] = summary([r["elapsed_s"] / per for r in rows])["median"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", choices=("concurrent", "drain"))
    p.add_argument("--runs", type=int, default=4000)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--breakdown", action="store_true")
    args = p.parse_args(argv)
    if args.child:
        emit(child(args.child, args.runs, args.steps, args.breakdown))
        return {}
    result = run(repeats=args.repeats, runs=args.runs, steps=args.steps)
    for row in result["cases"].values():
        if row["n"]:
            print(f"{row['label']:<60} min {row['min']:10.1f}  median {row['median']:10.1f} {row['unit']}")
    print("exporter us per step record:", {k: round(v, 2) for k, v in result["breakdown_us_per_step_record"].items()})
    print(result["target"])
    for e in result["errors"]:
        print("ERROR", e)
    return result


if __name__ == "__main__":
    main()
