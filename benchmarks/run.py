"""Run every benchmark in one go, print one table of min and median, write JSON (and the docs table).

``make bench`` calls this with the peers' virtualenv (``benchmarks/.venv-peers``: agentmeter plus
opentelemetry-sdk, langfuse and langsmith, never in the package's dependencies). Cases 1-4 run in that
interpreter, so agentmeter and the peers share one Python and one run; cases 5-7 are the other benchmark
scripts in this folder (``bench_firehose.py``, ``bench_reliability.py``, ``bench_dashboard.py``,
``bench_integrations.py``), run if present with the project's interpreter (they need moto, pandas...), and
their JSON files are merged into the result (``bench_dashboard.py --browser`` also times the pages in
Chromium; ``--quick`` leaves that out).

    python benchmarks/run.py [--quick] [--only hotpath,import,exit,throughput,others] [--write-docs]

Writes ``benchmarks/results/latest.json`` (everything) and one file per case (``hotpath.json``...).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if "--write-docs" in sys.argv:  # committed results are rewritten only when asked (before _common loads)
    os.environ["AGENTMETER_BENCH_RESULTS"] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

import bench_exit
import bench_hotpath
import bench_import
import bench_pipeline
import bench_throughput
from _common import HERE, RESULTS, ROOT, machine, peer_versions, quiet_env, write_json
from report import render_markdown, render_terminal, update_docs

#: The other engineers' scripts: (file, case number, title, timeout in seconds, extra arguments)
OTHERS = (
    ("bench_firehose.py", 5, "Firehose packing (moto HTTP server)", 300, []),
    # one round (not the script's default two) keeps make bench under 15 minutes; still a million steps
    ("bench_reliability.py", 6, "Memory over 1M steps, sinks healthy and down", 480, ["--repeats", "1"]),
    # queries, then every view's page in Chromium (cold and warm, all time and a 7-day range), same run
    ("bench_dashboard.py", 7, "Dashboard queries and pages (Chromium) on 1M API calls", 1200, ["--browser"]),
    ("bench_integrations.py", 8, "Integration overhead (OpenAI, Tavily)", 300, []),
)
QUICK_ARGS = {
    "bench_reliability.py": ["--steps", "100000", "--repeats", "1"],
    "bench_dashboard.py": ["--calls", "100000"],
}


def log(msg: str) -> None:
    print(msg, flush=True)


def run_others(python: str, quick: bool, timeout_scale: float, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for script, number, title, timeout, extra in OTHERS:
        path = HERE / script
        key = script.removeprefix("bench_").removesuffix(".py")
        if not path.exists():
            out[key] = {"case": number, "title": title, "status": "absent"}
            continue
        if key in skip:
            out[key] = {"case": number, "title": title, "status": "skipped"}
            continue
        args = QUICK_ARGS.get(script, []) if quick else extra
        before = {p: p.stat().st_mtime for p in RESULTS.glob("*.json")}
        log(f"({number}) {title}: {python} {script} {' '.join(args)}")
        t0 = time.monotonic()
        status, rc = "ok", None
        log_path = logs / f"{key}.log"
        try:
            with log_path.open("w") as fh:
                proc = subprocess.run([python, str(path), *args], stdout=fh, stderr=subprocess.STDOUT,
                                      # this checkout's agentmeter, whatever the interpreter has installed
                                      # and where to write (quiet_env drops every AGENTMETER_ variable)
                                      cwd=ROOT, env=quiet_env(PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]),
                                                              AGENTMETER_BENCH_RESULTS=str(RESULTS)),
                                      timeout=timeout * timeout_scale, check=False)
            rc = proc.returncode
            if rc != 0:
                status = "failed"
        except subprocess.TimeoutExpired:
            status = "timed out"
        elapsed = time.monotonic() - t0
        produced = {}
        for p in RESULTS.glob("*.json"):
            if p.name in _OWN_FILES or before.get(p) == p.stat().st_mtime:
                continue
            try:
                produced[p.name] = json.loads(p.read_text())
            except ValueError:
                produced[p.name] = {"error": "unreadable JSON"}
        tail = log_path.read_text(errors="replace").splitlines()[-25:]
        out[key] = {"case": number, "title": title, "status": status, "returncode": rc,
                    "elapsed_s": elapsed, "python": python, "args": args, "results": produced,
                    "log": str(log_path.relative_to(ROOT)), "log_tail": tail}
        log("\n".join("    " + ln for ln in tail[-12:]))
        log(f"    -> {status} in {elapsed:.0f} s; {', '.join(produced) or 'no JSON written'}")
    return out


_OWN_FILES = {"latest.json", "hotpath.json", "import.json", "exit.json", "throughput.json", "pipeline.json"}


def project_python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats: a smoke run of the harness")
    p.add_argument("--only", default=None,
                   help="cases to run (default: all; with --quick, all but the other scripts, cases 5-8, "
                        "which take minutes each: name them with --only to run them too)")
    p.add_argument("--python", default=sys.executable, help="interpreter with agentmeter and the peers")
    p.add_argument("--project-python", default=None,
                   help="interpreter for the other scripts and the heavy-import check (default .venv)")
    p.add_argument("--skip", default="", help="other scripts not to run, by name (e.g. dashboard)")
    p.add_argument("--exit-cap", type=float, default=60.0, help="seconds before a peer's exit is killed")
    p.add_argument("--write-docs", action="store_true", help="put the table into docs/performance.md")
    args = p.parse_args(argv)
    only = set((args.only or ("hotpath,import,exit,throughput,pipeline" if args.quick
                              else "hotpath,import,exit,throughput,pipeline,others")).split(","))
    proj = args.project_python or project_python()
    q = args.quick
    started = time.monotonic()
    info = machine()
    result: dict[str, Any] = {
        "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": info,
        "versions": peer_versions(args.python),
        "python": args.python,
        "project_python": proj,
        "quick": q,
        "cases": {},
    }
    log(f"machine: {info['nproc']} CPUs, {info['cpu_model']}, Python {info['python']}, "
        f"load {info['loadavg_at_start']}")
    log(f"versions: {result['versions']}")
    cases = result["cases"]
    if "hotpath" in only:
        log("(1) hot path")
        cases["hotpath"] = bench_hotpath.run(args.python, rounds=2 if q else 5, repeats=3 if q else 5,
                                             calls=1000 if q else 2000, log=log)
        write_json("hotpath.json", cases["hotpath"])
    if "import" in only:
        log("(2) import time")
        cases["import"] = bench_import.run(args.python, repeats=3 if q else 11, check_python=proj, log=log)
        write_json("import.json", cases["import"])
    if "exit" in only:
        log("(3) exit with a dead back end")
        cases["exit"] = bench_exit.run(args.python, repeats=1 if q else 3, peer_repeats=1,
                                       cap=min(args.exit_cap, 20.0) if q else args.exit_cap, log=log)
        write_json("exit.json", cases["exit"])
    if "throughput" in only:
        log("(4) export throughput")
        cases["throughput"] = bench_throughput.run(args.python, repeats=1 if q else 3, log=log)
        write_json("throughput.json", cases["throughput"])
    if "pipeline" in only:
        log("(9) the whole pipeline against OpenTelemetry (issue 15's table)")
        cases["pipeline"] = bench_pipeline.run(args.python, quick=q, log=log)
        write_json("pipeline.json", cases["pipeline"])
    if "others" in only:
        log("(5-8) the other benchmark scripts")
        result["others"] = run_others(proj, q, 1.0, frozenset(filter(None, args.skip.split(","))))
    result["elapsed_s"] = time.monotonic() - started
    # a partial run (--only) leaves the committed latest.json and the main table of the docs alone
    full = {"hotpath", "import", "exit", "throughput"} <= only
    if full or not args.write_docs:
        write_json("latest.json", result)
    print()
    print(render_terminal(result))
    if "pipeline" in cases:
        print()
        print(bench_pipeline.render(cases["pipeline"]))
    log(f"\nwrote {RESULTS / 'latest.json'} in {result['elapsed_s']:.0f} s")
    if args.write_docs:
        if full:
            update_docs(ROOT / "docs" / "performance.md", render_markdown(result))
        if "pipeline" in cases:
            bench_pipeline.update_docs(ROOT / "docs" / "performance.md", cases["pipeline"], result["machine"])
        log(f"updated {ROOT / 'docs' / 'performance.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
