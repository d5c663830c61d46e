"""Shared helpers for the benchmark scripts: timing loops, statistics, the machine, closed ports, JSON.

Nothing here imports agentmeter or a peer library: each case imports what it measures itself, so import
costs and global state never leak from one case into another.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: Where results go: ``benchmarks/results/`` (committed) only when asked (``run.py --write-docs`` sets
#: AGENTMETER_BENCH_RESULTS for itself and the scripts it runs); otherwise a scratch folder git ignores.
RESULTS = Path(os.environ.get("AGENTMETER_BENCH_RESULTS") or HERE / "results" / "scratch")


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """min / median / max of a list of samples (any unit), plus how many there were."""
    if not samples:
        return {"min": None, "median": None, "max": None, "n": 0}
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples), "n": len(samples)}


def time_per_call(fn: Callable[[], Any], calls: int, repeats: int) -> list[float]:
    """Microseconds per call of ``fn``: ``repeats`` samples, each the mean over ``calls`` calls.

    The garbage collector stays on (it is part of what a tracer costs a real program) but starts each
    sample from a clean heap.
    """
    out = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter_ns() - t0) / calls / 1000.0)
    return out


def closed_port() -> int:
    """A loopback TCP port nothing listens on (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def peer_versions(python: str) -> dict[str, str | None]:
    """Installed versions of agentmeter and the peers in the interpreter ``python``."""
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        "for d in ('agentmeter', 'opentelemetry-sdk', 'langfuse', 'langsmith'):\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: out[d] = None\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    try:
        return dict(json.loads(res.stdout))
    except ValueError:
        return {}


def has_module(python: str, module: str) -> bool:
    res = subprocess.run(
        [python, "-c", f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"],
        capture_output=True, timeout=60, check=False,
    )
    return res.returncode == 0


def child_json(cmd: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a child that prints one JSON object on its last stdout line; return it (or an error dict)."""
    try:
        res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    if res.returncode != 0 or not lines:
        return {"error": f"exit {res.returncode}: {res.stderr.strip()[-800:]}"}
    try:
        return dict(json.loads(lines[-1]))
    except ValueError:
        return {"error": f"bad output: {lines[-1][:300]}"}


def quiet_env(**extra: str) -> dict[str, str]:
    """The environment for a benchmark child: no proxies, no user AGENTMETER_* settings, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTMETER_", "LANGFUSE_", "LANGSMITH_",
                                                                   "LANGCHAIN_", "OTEL_"))}
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(k, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
    return path


def emit(data: dict[str, Any]) -> None:
    """Print one JSON object as the last line of stdout (how children answer the runner)."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()
