"""Tables of figures in docs/ rendered from the committed benchmark results, so a page and the results
cannot disagree (``tests/docs/test_figures.py`` compares them). After a benchmark run that rewrote
``benchmarks/results/`` (``make bench BENCH_ARGS=--write-docs``), rewrite the pages with::

    python -m tests.docs.figures
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def _num(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def firehose_table() -> str:
    """docs/sinks.md, "Measured": records per PutRecordBatch call and fill, per profile and path."""
    data = json.loads((RESULTS / "firehose.json").read_text())
    lines = ["| records | path | records per call | limit-bound | fill | runs/s |", "|---|---|---|---|---|---|"]
    previous = None
    for case in data["cases"]:
        profile = "" if case["profile"] == previous else f"{case['profile']}, {case['runs']:,} runs"
        previous = case["profile"]
        rate = _num(case["runs_per_s"], 0) if "runs_per_s" in case else ""
        lines.append(f"| {profile} | {case['path']} | {_num(case['records_per_call'])} | "
                     f"{_num(case['limit_bound_records_per_call'])} | {case['fill'] * 100:.1f} % | {rate} |")
    return "\n".join(lines)


def dashboard_table() -> str:
    """docs/dashboard.md, "Speed": best time of each view's queries per filter, in seconds."""
    data = json.loads((RESULTS / "dashboard.json").read_text())
    filters = list(dict.fromkeys(r["filters"] for r in data["results"]))
    views = list(dict.fromkeys(r["view"] for r in data["results"]))
    best = {(r["view"], r["filters"]): r["best_s"] for r in data["results"]}
    lines = ["| view | " + " | ".join(filters) + " |", "|---|" + "---|" * len(filters)]
    for view in views:
        cells = [f"{best[view, f]:.3f}" if (view, f) in best else "-" for f in filters]
        lines.append(f"| {view} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dashboard_pages_table() -> str:
    """docs/dashboard.md, "Speed": each view's page in Chromium, cold and warm, beside the same run's query
    time and the load average when it was measured."""
    data = json.loads((RESULTS / "dashboard_browser.json").read_text())
    lines = ["| view | range | queries (s) | page cold (s) | load | page warm (s) | load |",
             "|---|---|---|---|---|---|---|"]
    for r in data["results"]:
        queries = "-" if r["queries_best_s"] is None else f"{r['queries_best_s']:.2f}"
        lines.append(f"| {r['view']} | {r['range']} | {queries} | {r['cold_s']:.2f} | {r['cold_load']:.1f} | "
                     f"{r['warm_best_s']:.2f} | {r['warm_load']:.1f} |")
    return "\n".join(lines)


#: (page, name between the markers, renderer)
FIGURES: list[tuple[str, str, Callable[[], str]]] = [
    ("docs/sinks.md", "firehose", firehose_table),
    ("docs/dashboard.md", "dashboard", dashboard_table),
    ("docs/dashboard.md", "dashboard-pages", dashboard_pages_table),
]


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- figures:{name}:start[^>]*-->\n)(.*?)(\n<!-- figures:{name}:end -->)", re.S)


def current(page: str, name: str) -> str:
    match = _pattern(name).search((ROOT / page).read_text())
    if match is None:
        raise LookupError(f"{page} has no <!-- figures:{name}:start --> ... <!-- figures:{name}:end --> markers")
    return match.group(2)


def write() -> None:
    for page, name, render in FIGURES:
        path = ROOT / page
        table = render()
        text, count = _pattern(name).subn(lambda m, t=table: m.group(1) + t + m.group(3), path.read_text())
        if count != 1:
            raise LookupError(f"{page}: figures:{name} markers not found once")
        path.write_text(text)


if __name__ == "__main__":
    write()
