"""Case 3, exit with a dead back end: time from the end of the work to the end of the process.

A child process tracks 1,000 runs of 10 steps (10,000 steps) while its back end is unreachable, prints a
line when its work is done, and returns from its main module normally (so each library's exit hooks run).
The parent times from that line to the process's exit, and kills a child that takes longer than the cap.

* agentmeter, ``refused``: a sink whose every write connects to a closed loopback port (refused at once).
* agentmeter, ``hang``: a sink whose write connects to a loopback server that accepts and never answers,
  and waits for the reply with no timeout (a hung back end). Both use the default ``exit_timeout`` (5 s);
  afterwards the parent counts the runs kept in the child's spool (all 1,000 should be there).
* agentmeter, ``daemon``: a healthy local store (SQLite), and a daemon thread still tracking flat out when
  the main module returns (issue 14, attack 9: the exit used to take the full ``exit_timeout`` and warn
  that a sink hung). Target: the exit takes under half the ``exit_timeout`` and the main thread's 1,000 runs
  are in the store (delivered at exit, not only spooled).
* OpenTelemetry SDK (BatchSpanProcessor + OTLP/HTTP exporter), Langfuse ``@observe`` and LangSmith
  ``@traceable``: endpoint on a closed loopback port, defaults otherwise.

Run alone: ``python benchmarks/bench_exit.py [--repeats 3] [--cap 60]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import closed_port, has_module, quiet_env, summary

RUNS, STEPS = 1000, 10
MODES = {
    "agentmeter_refused": ("agentmeter", "agentmeter, sink refused (closed port)"),
    "agentmeter_hang": ("agentmeter", "agentmeter, sink hangs (never answers)"),
    "agentmeter_daemon": ("agentmeter", "agentmeter, local store, daemon thread tracking"),
    "otel_refused": ("opentelemetry.exporter.otlp.proto.http", "OpenTelemetry SDK + OTLP/HTTP, closed port"),
    "langfuse_refused": ("langfuse", "Langfuse @observe, closed port"),
    "langsmith_refused": ("langsmith", "LangSmith @traceable, closed port"),
}


def work(query: str, k: int = 3) -> str:
    return query[:k]


# -- children ---------------------------------------------------------------------------------------


def child_agentmeter(mode: str, port: int, spool: str) -> None:
    import agentmeter
    from agentmeter.sinks import Sink, WriteResult

    class DeadSink(Sink):
        """Connects to the back end on every write, like a real network sink."""

        name = "dead"

        def write(self, documents: Any) -> WriteResult:
            with socket.create_connection(("127.0.0.1", port)) as s:  # refused, or accepted and ignored
                s.sendall(b"PUT /runs\r\n\r\n")
                if not s.recv(1):  # a hung back end: blocks forever (no timeout, like many clients)
                    raise ConnectionError("closed")
            return WriteResult()

    agentmeter.configure(sinks=[DeadSink()], spool_dir=spool)
    step = agentmeter.track_step(work)

    @agentmeter.track_run("agent")
    def agent() -> None:
        for _ in range(STEPS):
            step("what is the capital of France?", 3)

    for _ in range(RUNS):
        agent()
    _done()


def child_agentmeter_daemon(spool: str) -> None:
    import agentmeter
    from agentmeter.sinks import SQLiteSink

    agentmeter.configure(sinks=[SQLiteSink(os.path.join(spool, "store.db"))], spool_dir=spool)
    step = agentmeter.track_step(work)
    started = threading.Event()

    def loop() -> None:  # still tracking when the interpreter exits
        while True:
            with agentmeter.track_run("daemon"):
                step("what is the capital of France?", 3)
                started.set()

    threading.Thread(target=loop, daemon=True).start()
    started.wait(30)

    @agentmeter.track_run("agent")
    def agent() -> None:
        for _ in range(STEPS):
            step("what is the capital of France?", 3)

    for _ in range(RUNS):
        agent()
    _done()


def child_otel(port: int) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")))
    tracer = provider.get_tracer("bench")
    span = tracer.start_as_current_span("work")(work)

    @tracer.start_as_current_span("agent")
    def agent() -> None:
        for _ in range(STEPS):
            span("what is the capital of France?", 3)

    for _ in range(RUNS):
        agent()
    _done()


def child_langfuse() -> None:
    from langfuse import Langfuse, observe

    Langfuse()
    obs = observe(name="work")(work)

    @observe(name="agent")
    def agent() -> None:
        for _ in range(STEPS):
            obs("what is the capital of France?", 3)

    for _ in range(RUNS):
        agent()
    _done()


def child_langsmith() -> None:
    from langsmith import traceable

    tr = traceable(name="work")(work)

    @traceable(name="agent")
    def agent() -> None:
        for _ in range(STEPS):
            tr("what is the capital of France?", 3)

    for _ in range(RUNS):
        agent()
    _done()


def _done() -> None:
    sys.stdout.write("WORK-DONE\n")
    sys.stdout.flush()


# -- parent -----------------------------------------------------------------------------------------


class Blackhole:
    """A loopback server that accepts connections and never answers (a hung back end)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        for c in self.conns:
            c.close()


def one(python: str, mode: str, cap: float, port: int, env: dict[str, str]) -> dict[str, Any]:
    spool = tempfile.mkdtemp(prefix="am-exit-spool-")
    cmd = [python, os.path.abspath(__file__), "--child", mode, "--port", str(port), "--spool", spool]
    t_start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    done = threading.Event()
    marks: list[float] = []
    log_lines: list[str] = []

    def read() -> None:  # the child's logs share stdout: keep draining so it never blocks on the pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "WORK-DONE" and not done.is_set():
                marks.append(time.monotonic())
                done.set()
            elif len(log_lines) < 50:
                log_lines.append(line.rstrip()[:300])
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    done.wait()
    t_done = marks[0] if marks else time.monotonic()
    out: dict[str, Any] = {"work_s": t_done - t_start}
    if not marks:
        proc.kill()
        proc.wait()
        return {**out, "error": f"child failed before finishing its work (exit {proc.returncode})"}
    try:
        proc.wait(timeout=cap)
        out["exit_s"] = time.monotonic() - t_done
        out["killed"] = False
        out["returncode"] = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        out["exit_s"] = cap
        out["killed"] = True
    reader.join(5)
    out["log_lines"] = len(log_lines)
    out["first_log_lines"] = log_lines[:3]
    if mode == "agentmeter_daemon":
        out["stored_runs"] = _count_store(Path(spool) / "store.db")
    elif mode.startswith("agentmeter"):
        out["spooled_runs"] = _count_spool(Path(spool) / "spool.db")
    return out


def _count_store(path: Path) -> int | None:
    try:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT count(*) FROM agent_runs WHERE name = 'agent'").fetchone()[0])
    except sqlite3.Error:
        return None


def _count_spool(path: Path) -> int | None:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT count(*) FROM spool WHERE lane = 'dead'").fetchone()[0])
    except sqlite3.Error:
        return None


def run(python: str = sys.executable, repeats: int = 3, peer_repeats: int = 1, cap: float = 60.0,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    from bench_hotpath import peer_env

    closed = closed_port()
    hole = Blackhole()
    cases: dict[str, Any] = {}
    try:
        for mode, (module, label) in MODES.items():
            if not has_module(python, module):
                cases[mode] = {"label": label, "missing": True, "n": 0}
                continue
            n = repeats if mode.startswith("agentmeter") else peer_repeats
            port = hole.port if mode.endswith("hang") else closed
            env = peer_env(closed) if not mode.startswith("agentmeter") else quiet_env()
            runs = []
            for i in range(n):
                log(f"  exit: {label} ({i + 1}/{n})")
                runs.append(one(python, mode, cap, port, env))
            exits = [r["exit_s"] for r in runs if "exit_s" in r]
            row: dict[str, Any] = {"label": label, "unit": "s", **summary(exits), "runs": runs,
                                   "killed": any(r.get("killed") for r in runs), "cap_s": cap}
            if mode == "agentmeter_daemon":
                row["stored_min"] = min((r.get("stored_runs") or 0) for r in runs) if runs else None
            elif mode.startswith("agentmeter"):
                row["spooled_min"] = min((r.get("spooled_runs") or 0) for r in runs) if runs else None
            cases[mode] = row
    finally:
        hole.close()
    am = [cases[m] for m in ("agentmeter_refused", "agentmeter_hang") if cases.get(m, {}).get("n")]
    deadline = 5.0
    target = {
        "name": f"exit with a dead back end within the exit_timeout ({deadline:.0f} s) with every run spooled",
        "limit_s": deadline,
        "measured_max_s": max((c["max"] for c in am), default=None),
        "spooled_min": min((c["spooled_min"] for c in am), default=None),
        "expected_spooled": RUNS,
    }
    target["met"] = bool(am) and target["measured_max_s"] <= deadline and target["spooled_min"] == RUNS
    daemon = cases.get("agentmeter_daemon", {})
    healthy: dict[str, Any] = {
        "name": f"exit with a healthy local store and a daemon thread tracking: well under the exit_timeout "
                f"({deadline:.0f} s; limit half of it) with every main-thread run stored",
        "limit_s": deadline / 2, "measured_max_s": daemon.get("max"), "stored_min": daemon.get("stored_min"),
        "expected_stored": RUNS,
    }
    healthy["met"] = bool(daemon.get("n")) and healthy["measured_max_s"] <= healthy["limit_s"] \
        and healthy["stored_min"] == RUNS
    return {"case": "exit_dead_backend", "params": {"runs": RUNS, "steps_per_run": STEPS, "repeats": repeats,
                                                    "peer_repeats": peer_repeats, "cap_s": cap},
            "cases": cases, "target": target, "target_daemon": healthy}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", choices=tuple(MODES))
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--spool", default="")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peer-repeats", type=int, default=1)
    p.add_argument("--cap", type=float, default=60.0)
    p.add_argument("--only", default="", help="comma-separated modes")
    args = p.parse_args(argv)
    if args.child:
        if args.child == "agentmeter_daemon":
            child_agentmeter_daemon(args.spool)
        elif args.child.startswith("agentmeter"):
            child_agentmeter(args.child, args.port, args.spool)
        elif args.child == "otel_refused":
            child_otel(args.port)
        elif args.child == "langfuse_refused":
            child_langfuse()
        else:
            child_langsmith()
        return {}  # returning lets the interpreter run its normal exit (atexit hooks): that is what we time
    if args.only:
        for m in list(MODES):
            if m not in args.only.split(","):
                del MODES[m]
    result = run(repeats=args.repeats, peer_repeats=args.peer_repeats, cap=args.cap)
    for row in result["cases"].values():
        if row.get("n"):
            print(f"{row['label']:<48} min {row['min']:6.2f} s  median {row['median']:6.2f} s"
                  + ("  (killed at cap)" if row["killed"] else "")
                  + (f"  spooled {row['spooled_min']}" if "spooled_min" in row else "")
                  + (f"  stored {row['stored_min']}" if "stored_min" in row else ""))
    print(result["target"])
    print(result["target_daemon"])
    return result


if __name__ == "__main__":
    main()
