"""Case 2, import time: ``import agentmeter`` in a fresh interpreter against the peers' imports.

Each sample is a new ``python -c`` process that times only the import statement (interpreter start-up is
not counted); the modules take turns so load bursts hit all of them alike. A separate check lists which
heavy libraries ``import agentmeter`` pulled into ``sys.modules`` (it must pull none of them); the check
says which of those libraries were installed in that interpreter, since a missing library proves nothing.

Run alone: ``python benchmarks/bench_import.py [--repeats 9]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import child_json, has_module, quiet_env, summary

TARGETS = {
    "agentmeter": "import agentmeter",
    "otel_sdk_trace": "import opentelemetry.sdk.trace",
    "langfuse": "import langfuse",
    "langsmith": "from langsmith import traceable",
}
LABELS = {
    "agentmeter": "import agentmeter",
    "otel_sdk_trace": "import opentelemetry.sdk.trace",
    "langfuse": "import langfuse",
    "langsmith": "from langsmith import traceable",
    "agentmeter_first": "import agentmeter + first tracked step",
    "otel_first": "import OTel SDK + provider + first span",
}
#: Import and set-up until the first span has ended (what a program pays before its first traced call).
FIRST_SPAN = {
    "agentmeter_first": (
        "import agentmeter\n"
        "from agentmeter.sinks import MemorySink\n"
        "agentmeter.configure(sinks=[MemorySink()], spool_dir=__import__('tempfile').mkdtemp())\n"
        "@agentmeter.track_step\n"
        "def work(q):\n    return q\n"
        "work('x')"
    ),
    "otel_first": (
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import BatchSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "provider = TracerProvider()\n"
        "provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))\n"
        "tracer = provider.get_tracer('bench')\n"
        "@tracer.start_as_current_span('work')\n"
        "def work(q):\n    return q\n"
        "work('x')"
    ),
}
HEAVY = ("pymongo", "boto3", "botocore", "snowflake", "streamlit", "openai", "tavily", "pandas", "numpy",
         "httpx", "requests", "genai_prices", "opentelemetry")
#: The issue's list: importing agentmeter must import none of these.
FORBIDDEN = ("pymongo", "boto3", "snowflake", "streamlit", "openai", "tavily")

_TIMER = (  # json is imported after the clock stops: agentmeter's exporter would otherwise get it free
    "import time\n"
    "t0 = time.perf_counter()\n"
    "{stmt}\n"
    "t1 = time.perf_counter()\n"
    "import json\n"
    "print(json.dumps({{'ms': (t1 - t0) * 1000}}))\n"
)
_MODULES = (
    "import sys, json\n"
    "before = set(sys.modules)\n"
    "import agentmeter\n"
    "heavy = {heavy!r}\n"
    "new = set(sys.modules) - before\n"
    "print(json.dumps({{'imported': sorted(h for h in heavy if any(m == h or m.startswith(h + '.') for m in new)),"
    " 'module_count': len(new)}}))\n"
)


def run(python: str = sys.executable, repeats: int = 9, check_python: str | None = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time each import ``repeats`` times; check ``import agentmeter`` in ``check_python`` (default: ``python``)."""
    # Bytecode: pip compiles a wheel's modules at install, but an editable checkout under
    # PYTHONDONTWRITEBYTECODE=1 would recompile agentmeter's sources in every sample. Every library is
    # therefore measured with bytecode from one private cache, filled by a discarded warm-up round.
    env = quiet_env(PYTHONPYCACHEPREFIX=tempfile.mkdtemp(prefix="am-bench-pyc-"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    statements = {**TARGETS, **FIRST_SPAN}
    present = {k: has_module(python, stmt.split()[1]) for k, stmt in TARGETS.items()}
    present["agentmeter_first"] = present["agentmeter"]
    present["otel_first"] = present["otel_sdk_trace"]
    samples: dict[str, list[float]] = {k: [] for k in statements}
    errors: dict[str, str] = {}
    log(f"  import: {repeats} fresh interpreters per module (after a warm-up that compiles bytecode)")
    for r in range(repeats + 1):
        for key, stmt in statements.items():
            if not present[key]:
                continue
            res = child_json([python, "-X", "frozen_modules=on", "-c", _TIMER.format(stmt=stmt)], 120, env)
            if "error" in res:
                errors[key] = res["error"]
            elif r > 0:
                samples[key].append(float(res["ms"]))
    cases = {}
    for key in statements:
        otel = summary(samples["otel_first" if key.endswith("_first") else "otel_sdk_trace"])
        s = summary(samples[key])
        row: dict[str, Any] = {"label": LABELS[key], "unit": "ms", **s, "samples": samples[key]}
        if s["n"] and otel["n"]:
            row["ratio_to_otel_median"] = s["median"] / otel["median"]
            row["ratio_to_otel_min"] = s["min"] / otel["min"]
        cases[key] = row

    check_py = check_python or python
    check = child_json([check_py, "-c", _MODULES.format(heavy=HEAVY)], 120, env)
    installed = {h: has_module(check_py, h) for h in FORBIDDEN}
    pulled = [h for h in check.get("imported", []) if h in FORBIDDEN]
    target: dict[str, Any] = {"name": "import agentmeter <= 0.5 x import opentelemetry.sdk.trace", "limit": 0.5}
    if "ratio_to_otel_median" in cases["agentmeter"]:
        target["measured_median"] = cases["agentmeter"]["ratio_to_otel_median"]
        target["measured_min"] = cases["agentmeter"]["ratio_to_otel_min"]
        target["met"] = target["measured_median"] <= 0.5
    return {
        "case": "import",
        "params": {"repeats": repeats, "python": python},
        "cases": cases,
        "target": target,
        "heavy_modules_check": {
            "python": check_py,
            "imported_by_import_agentmeter": check.get("imported"),
            "modules_added": check.get("module_count"),
            "forbidden_installed": installed,
            "forbidden_imported": pulled,
            "met": not pulled and "error" not in check,
            "error": check.get("error"),
        },
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--check-python", default=None, help="interpreter for the heavy-module check")
    args = p.parse_args(argv)
    result = run(repeats=args.repeats, check_python=args.check_python)
    for row in result["cases"].values():
        if row["n"]:
            print(f"{row['label']:<36} min {row['min']:7.1f} ms  median {row['median']:7.1f} ms")
    print("heavy modules:", result["heavy_modules_check"])
    return result


if __name__ == "__main__":
    main()
