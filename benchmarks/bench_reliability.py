"""Reliability benchmark: one million tracked steps with every sink down, against a healthy sink.

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
    "delivered": after["delivered"], "spooled": after["spooled"], "dropped": after["dropped"],
    "pending_after_flush": after["pending"], "caller_spills": agentmeter._guard.counters["queue.caller_spills"],
    "spool_bytes": agentmeter.stats().spool_bytes,
}))
sys.stdout.flush()
os._exit(0)  # the hung sink would hold exit for exit_timeout: not part of this measurement
"""


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
    args = parser.parse_args()
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in CASES}
    for r in range(args.repeats):
        for case in CASES:
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
    verdicts = {}
    for case in ("refused", "hung"):
        s = summary.get(case, {})
        if healthy and "us_per_step_median" in s:
            s["ratio_to_healthy"] = s["us_per_step_median"] / healthy
            verdicts[case] = {"rss_growth_ok": s["rss_growth_mib_max"] <= 64,
                              "cost_ok": s["ratio_to_healthy"] <= 1.20}
    print(f"\n{args.steps:,} tracked steps (runs of {STEPS_PER_RUN}), median of {args.repeats} runs per case\n")
    header = f"{'case':<9} {'us/step':>8} {'ratio':>6} {'RSS growth MiB':>15} {'delivered':>10} " \
             f"{'spooled':>9} {'dropped':>8} {'caller spills':>14}"
    print(header)
    print("-" * len(header))
    for case in CASES:
        s = summary[case]
        if "error" in s:
            print(f"{case:<9} error: {s['error'][:200]}")
            continue
        ratio = s.get("ratio_to_healthy")
        ratio_text = "-" if ratio is None else f"{ratio:.2f}"
        print(f"{case:<9} {s['us_per_step_median']:>8.2f} {ratio_text:>6} "
              f"{s['rss_growth_mib_max']:>15.1f} {s['delivered']:>10} {s['spooled']:>9} {s['dropped']:>8} "
              f"{s['caller_spills']:>14}")
    print("\ntargets: RSS growth <= 64 MiB, cost ratio <= 1.20:", json.dumps(verdicts))
    write_json("reliability.json", {"machine": machine(), "steps": args.steps, "repeats": args.repeats,
                                    "summary": summary, "verdicts": verdicts, "samples": samples})


if __name__ == "__main__":
    main()
