"""Reliability benchmark: the caller's latency with a hung sink, recovery after a million steps with the sink
down, and memory over a million steps with every sink down, against a healthy sink.

Issue 14 cases (``--cases latency,recovery``):

* ``latency``: a hung sink (every write blocks forever) and a tight loop of runs of 10 steps on the caller's
  thread; each run's wall time is measured (``perf_counter_ns`` around the call), and p50, p99, p99.9 and
  max are reported, also net of the time the OS kept the caller's thread waiting for a CPU (its run-queue
  delay, from ``/proc/self/task/<tid>/schedstat``: on a shared machine that is other processes' doing), with
  the resident memory growth, the caller's hand-offs to the manager, the yields at the hard cap, the drops.
  Target: p99.9 under 1 ms, RSS growth within the queue budget (64 MiB), nothing dropped.
* ``recovery``: ``--steps`` steps (runs of 10) while the sink refuses every connection, then the sink comes
  back (the local SQLite store) and ``flush()`` replays the spool: what was produced, what the store
  holds, what the spool dropped by its size limit (``spool_max_bytes``, the only documented loss), and the
  replay time. Target: stored + spool drops == produced.

The throughput cases:

Each case runs in a fresh interpreter (so resident memory is its own) and tracks ``--steps`` steps as runs
of 10 steps each, in a tight loop on the caller's thread:

* ``healthy``: the local SQLite store (the default sink), working;
* ``refused``: the same sink name, but every write connects to a closed loopback port (a back end that is
  down: connection refused at once). Everything goes through retries, then the spool;
* ``hung``: every write blocks forever (a back end that accepts and never answers). The lane's
  ``write_timeout`` (1 s here) marks it hung and everything goes to the spool.

Reported per case: the caller's cost per step (wall time of the loop / steps; the background threads
compete for the GIL, so their work is in this figure), resident memory at the start of the loop and at its
end (and the peak), and what became of the runs (delivered, spooled, dropped). Cases alternate
(healthy, refused, hung, healthy, ...) for ``--repeats`` rounds; the medians are compared.

Targets (issue 8): with every sink down, resident memory grows by at most 64 MiB over the million steps,
and the caller's cost per step stays within 20% of the healthy figure.

Run: ``python benchmarks/bench_reliability.py [--steps 1000000] [--repeats 2]``; writes a table to stdout
and ``benchmarks/results/reliability.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import ROOT, closed_port, machine, quiet_env, write_json

STEPS_PER_RUN = 10
CASES = ("healthy", "refused", "hung")
ISSUE14 = ("latency", "recovery")

_CHILD = r"""
import gc, json, os, resource, socket, sys, threading, time
import psutil
import agentmeter
from agentmeter import track_run, track_step
from agentmeter.sinks import Sink, SQLiteSink

case, workdir, steps, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

class Refused(Sink):
    name = "sqlite"
    def write(self, documents):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # refused: raises

class Hung(Sink):
    name = "sqlite"
    def write(self, documents):
        threading.Event().wait()

sink = {"healthy": lambda: SQLiteSink(os.path.join(workdir, "store.db")), "refused": Refused,
        "hung": Hung}[case]()
agentmeter.configure(sinks=[sink], spool_dir=os.path.join(workdir, "spool"), spool_max_bytes=8 << 30,
                     write_timeout=1.0, exit_timeout=2.0)

@track_step
def step(i):
    return i

@track_run(agent="bench")
def run(n):
    for i in range(n):
        step(i)

proc = psutil.Process()
for _ in range(200):  # warm up: imports, first connections, caches
    run(10)
agentmeter.flush(timeout=60)
gc.collect()
rss0 = proc.memory_info().rss
runs = steps // 10
rss_samples = []
t0 = time.perf_counter()
for k in range(runs):
    run(10)
    if k % 2000 == 0:
        rss_samples.append(proc.memory_info().rss)
elapsed = time.perf_counter() - t0
rss1 = proc.memory_info().rss
rss_samples.append(rss1)
stats = agentmeter.stats()
result = agentmeter.flush(timeout=600) if case != "hung" else agentmeter.flush(timeout=5)
after = agentmeter.stats().sinks["sqlite"]
print(json.dumps({
    "case": case, "steps": runs * 10, "runs": runs, "seconds": elapsed,
    "us_per_step": elapsed / (runs * 10) * 1e6,
    "rss_start_mib": rss0 / 2**20, "rss_end_mib": rss1 / 2**20, "rss_peak_mib": max(rss_samples) / 2**20,
    "rss_growth_mib": (max(rss_samples) - rss0) / 2**20,
    "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "queued_at_end_of_loop": stats.sinks["sqlite"].queued,
    "delivered": after.delivered, "spooled": after.spooled, "dropped": after.dropped,
    "pending_after_flush": after.pending, "caller_spills": agentmeter._guard.counters["queue.caller_spills"],
    "spool_bytes": agentmeter.stats().spool_bytes,
}))
sys.stdout.flush()
os._exit(0)  # the hung sink would hold exit for exit_timeout: not part of this measurement
"""


_LATENCY = r"""
import gc, json, os, sys, threading, time
import psutil
import agentmeter
from agentmeter import _guard, track_run, track_step
from agentmeter.sinks import Sink

workdir, runs = sys.argv[1], int(sys.argv[2])

class Hung(Sink):
    name = "hung"
    def write(self, documents):
        threading.Event().wait()

agentmeter.configure(sinks=[Hung()], spool_dir=os.path.join(workdir, "spool"), spool_max_bytes=8 << 30,
                     write_timeout=1.0, exit_timeout=2.0)

@track_step
def step(i):
    return i

@track_run(agent="bench")
def run(n):
    for i in range(n):
        step(i)

proc = psutil.Process()
for _ in range(200):
    run(10)
# steady state: the first batch is stuck in the hung write (marked hung after write_timeout, 1 s) and the
# exporter has loaded what it loads once (pricing data, the spool connection): not part of the figures
time.sleep(3)
gc.collect()
rss0 = proc.memory_info().rss
# the OS's view of this thread: the time it waited for a CPU (run queue), to tell a busy machine's
# preemption apart from waiting inside the process (the GIL, agentmeter's hand-off to its manager)
schedstat = open(f"/proc/self/task/{threading.get_native_id()}/schedstat")
def run_delay():
    schedstat.seek(0)
    return int(schedstat.read().split()[1])
lat, own = [], []
peak = rss0
clock = time.perf_counter_ns
# the garbage collector's pauses on any thread (a full collection walks every queued run): the longest
# ones are the max, whoever triggers them
gc_pauses = {0: [], 1: [], 2: []}
gc_start = [0]
def on_gc(phase, info):
    if phase == "start":
        gc_start[0] = clock()
    else:
        gc_pauses[info["generation"]].append(clock() - gc_start[0])
gc.callbacks.append(on_gc)
t0 = clock()
for k in range(runs):
    r = run_delay()
    a = clock()
    run(10)
    d = clock() - a
    lat.append(d)
    own.append(max(0, d - (run_delay() - r)))
    if k % 1000 == 0:
        peak = max(peak, proc.memory_info().rss)
elapsed = (clock() - t0) / 1e9
gc.callbacks.remove(on_gc)
peak = max(peak, proc.memory_info().rss)
lat.sort()
own.sort()
def q(values, p):
    return values[min(len(values) - 1, int(p * len(values)))] / 1000
st = agentmeter.stats().sinks["hung"]
print(json.dumps({"case": "latency", "runs": runs, "steps": runs * 10, "seconds": elapsed,
                  "p50_us": q(lat, 0.5), "p99_us": q(lat, 0.99), "p999_us": q(lat, 0.999), "max_us": lat[-1] / 1000,
                  "off_cpu_excluded": {"p50_us": q(own, 0.5), "p99_us": q(own, 0.99), "p999_us": q(own, 0.999),
                                       "max_us": own[-1] / 1000},
                  "loadavg": os.getloadavg(),
                  "gc": {f"gen{g}": {"n": len(v), "max_us": max(v, default=0) / 1000} for g, v in gc_pauses.items()},
                  "rss_growth_mib": (peak - rss0) / 2**20, "queued": st.queued, "spooled": st.spooled,
                  "dropped": st.dropped, "caller_yields": _guard.counters["queue.caller_yields"],
                  "caller_handoffs": _guard.counters["queue.caller_handoffs"],
                  "caller_spills": _guard.counters["queue.caller_spills"]}))
sys.stdout.flush()
os._exit(0)  # the hung sink would hold exit for exit_timeout: not part of this measurement
"""

_RECOVERY = r"""
import json, os, socket, sqlite3, sys, time
import agentmeter
from agentmeter import _guard, track_run, track_step
from agentmeter.sinks import Sink, SQLiteSink

workdir, steps, port, spool_max = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
db = os.path.join(workdir, "store.db")

class Flaky(SQLiteSink):
    down = True
    def write(self, documents):
        if self.down:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()  # refused: raises
        return super().write(documents)

sink = Flaky(db, name="store")
agentmeter.configure(sinks=[sink], spool_dir=os.path.join(workdir, "spool"), spool_max_bytes=spool_max)

@track_step
def step(i):
    return i

@track_run(agent="bench")
def run(n):
    for i in range(n):
        step(i)

runs = steps // 10
t0 = time.perf_counter()
for _ in range(runs):
    run(10)
loop_s = time.perf_counter() - t0
down = agentmeter.flush(timeout=600).sinks["store"]
sink.down = False
t1 = time.perf_counter()
back = agentmeter.flush(timeout=1800).sinks["store"]
while back.pending and time.perf_counter() - t1 < 1800:
    back = agentmeter.flush(timeout=1800).sinks["store"]
replay_s = time.perf_counter() - t1
stats = agentmeter.stats()
with sqlite3.connect(db) as conn:
    stored = conn.execute("SELECT count(*) FROM agent_runs").fetchone()[0]
    stored_steps = conn.execute("SELECT count(*) FROM run_steps").fetchone()[0]
print(json.dumps({"case": "recovery", "runs": runs, "steps": runs * 10, "loop_s": loop_s,
                  "spooled_while_down": down.spooled, "pending_while_down": down.pending,
                  "replay_s": replay_s, "stored_runs": stored, "stored_steps": stored_steps,
                  "spool_dropped": stats.spool_dropped, "queue_dropped": _guard.counters["queue.dropped"],
                  "caller_handoffs": _guard.counters["queue.caller_handoffs"],
                  "caller_yields": _guard.counters["queue.caller_yields"],
                  "dropped": stats.sinks["store"].dropped, "pending_after": back.pending,
                  "lost_beyond_spool_limit": runs - stored - stats.spool_dropped,
                  "spool_max_bytes": spool_max}))
sys.stdout.flush()
os._exit(0)
"""


def run_issue14(case: str, steps: int, spool_max: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"am-rel-{case}-") as workdir:
        if case == "latency":
            cmd = [sys.executable, "-c", _LATENCY, workdir, str(max(1, steps // 50))]
        else:
            cmd = [sys.executable, "-c", _RECOVERY, workdir, str(steps), str(closed_port()), str(spool_max)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=7200, cwd=ROOT,
                             env=quiet_env(PYTHONPATH=str(ROOT)))
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode != 0 or not lines:
            return {"case": case, "error": res.stderr.strip()[-1500:]}
        return dict(json.loads(lines[-1]))


def run_case(case: str, steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"am-rel-{case}-") as workdir:
        res = subprocess.run([sys.executable, "-c", _CHILD, case, workdir, str(steps), str(closed_port())],
                             capture_output=True, text=True, timeout=3600, cwd=ROOT,
                             env=quiet_env(PYTHONPATH=str(ROOT)))
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode != 0 or not lines:
            return {"case": case, "error": res.stderr.strip()[-1500:]}
        return dict(json.loads(lines[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cases", default=",".join(ISSUE14 + CASES),
                        help="comma-separated: latency, recovery, healthy, refused, hung")
    parser.add_argument("--spool-max-bytes", type=int, default=8 << 30,
                        help="spool limit of the recovery case (its drops are the documented loss)")
    args = parser.parse_args()
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    issue14: dict[str, dict[str, Any]] = {}
    for case in (c for c in ISSUE14 if c in chosen):
        out = run_issue14(case, args.steps, args.spool_max_bytes)
        print(f"{case}: {json.dumps(out)}", file=sys.stderr)
        issue14[case] = out
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in CASES if c in chosen}
    for r in range(args.repeats if samples else 0):
        for case in samples:
            out = run_case(case, args.steps)
            print(f"round {r + 1} {case}: {json.dumps(out)}", file=sys.stderr)
            samples[case].append(out)
    summary: dict[str, dict[str, Any]] = {}
    for case, outs in samples.items():
        good = [o for o in outs if "error" not in o]
        if not good:
            summary[case] = {"error": outs[0].get("error")}
            continue
        summary[case] = {
            "us_per_step_median": statistics.median(o["us_per_step"] for o in good),
            "us_per_step_all": [round(o["us_per_step"], 3) for o in good],
            "rss_growth_mib_max": max(o["rss_growth_mib"] for o in good),
            "rss_start_mib": statistics.median(o["rss_start_mib"] for o in good),
            "delivered": good[-1]["delivered"], "spooled": good[-1]["spooled"], "dropped": good[-1]["dropped"],
            "caller_spills": good[-1]["caller_spills"], "spool_mib": good[-1]["spool_bytes"] / 2**20,
        }
    healthy = summary.get("healthy", {}).get("us_per_step_median")
    verdicts: dict[str, dict[str, bool]] = {}
    for case in ("refused", "hung"):
        s = summary.get(case, {})
        if healthy and "us_per_step_median" in s:
            s["ratio_to_healthy"] = s["us_per_step_median"] / healthy
            verdicts[case] = {"rss_growth_ok": s["rss_growth_mib_max"] <= 64,
                              "cost_ok": s["ratio_to_healthy"] <= 1.20}
    lat = issue14.get("latency", {})
    if "p999_us" in lat:
        net = lat["off_cpu_excluded"]
        verdicts["latency"] = {"p999_under_1ms": lat["p999_us"] < 1000,
                               "p999_net_of_run_queue_under_1ms": net["p999_us"] < 1000,
                               "rss_growth_ok": lat["rss_growth_mib"] <= 64, "nothing_dropped": lat["dropped"] == 0}
        print(f"\nlatency, hung sink, {lat['runs']:,} runs of 10 steps in a tight loop: p50 {lat['p50_us']:.0f} us, "
              f"p99 {lat['p99_us']:.0f} us, p99.9 {lat['p999_us']:.0f} us, max {lat['max_us']:.0f} us; net of the "
              f"time the OS kept the caller waiting for a CPU: p99 {net['p99_us']:.0f} us, p99.9 "
              f"{net['p999_us']:.0f} us, max {net['max_us']:.0f} us (load {lat['loadavg'][0]:.1f}); "
              f"RSS +{lat['rss_growth_mib']:.1f} MiB; spooled {lat['spooled']:,}, dropped {lat['dropped']:,}, "
              f"caller hand-offs {lat['caller_handoffs']:,}, yields at the cap {lat['caller_yields']:,}")
        gcs = lat.get("gc", {})
        if gcs:
            print("  garbage collections in the loop: " + ", ".join(
                f"gen{g} {gcs[f'gen{g}']['n']} (longest {gcs[f'gen{g}']['max_us']:,.0f} us)" for g in range(3)))
    rec = issue14.get("recovery", {})
    if "stored_runs" in rec:
        verdicts["recovery"] = {"nothing_lost_beyond_spool_limit": rec["lost_beyond_spool_limit"] == 0}
        print(f"recovery, {rec['steps']:,} steps with the sink down, then back: stored {rec['stored_runs']:,} of "
              f"{rec['runs']:,} runs ({rec['stored_steps']:,} steps), spool limit drops {rec['spool_dropped']:,}, "
              f"lost beyond them {rec['lost_beyond_spool_limit']:,}; loop {rec['loop_s']:.1f} s, "
              f"replay {rec['replay_s']:.1f} s")
    if summary:
        print(f"\n{args.steps:,} tracked steps (runs of {STEPS_PER_RUN}), median of {args.repeats} runs per case\n")
        header = f"{'case':<9} {'us/step':>8} {'ratio':>6} {'RSS growth MiB':>15} {'delivered':>10} " \
                 f"{'spooled':>9} {'dropped':>8} {'caller spills':>14}"
        print(header)
        print("-" * len(header))
        for case in samples:
            s = summary[case]
            if "error" in s:
                print(f"{case:<9} error: {s['error'][:200]}")
                continue
            ratio = s.get("ratio_to_healthy")
            ratio_text = "-" if ratio is None else f"{ratio:.2f}"
            print(f"{case:<9} {s['us_per_step_median']:>8.2f} {ratio_text:>6} "
                  f"{s['rss_growth_mib_max']:>15.1f} {s['delivered']:>10} {s['spooled']:>9} {s['dropped']:>8} "
                  f"{s['caller_spills']:>14}")
    print("\ntargets:", json.dumps(verdicts))
    write_json("reliability.json", {"machine": machine(), "steps": args.steps, "repeats": args.repeats,
                                    "summary": summary, "issue14": issue14, "verdicts": verdicts,
                                    "samples": samples})


if __name__ == "__main__":
    main()
