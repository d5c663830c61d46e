"""Render a benchmark result (``benchmarks/results/latest.json``) as a terminal table or Markdown.

``python benchmarks/report.py [results/latest.json] [--write-docs]`` re-renders a stored result.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

Row = tuple[str, str, str, str, str]  # case, min, median, unit, vs / note


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _rows(result: dict[str, Any]) -> Iterator[Row]:
    cases = result.get("cases", {})
    hot = cases.get("hotpath")
    if hot:
        for c in hot["cases"].values():
            if not c.get("n"):
                continue
            spans = c["spans_per_call"]
            note = ""
            if "ratio_to_otel_span_median" in c:
                note = f"{c['ratio_to_otel_span_median']:.3f}x OTel span"
                if spans > 1:
                    note = f"{c['median'] / spans:.2f} us/span, " + note
            unit = "us/run" if spans > 1 else "us/call"
            yield ("1 hot path", c["label"], _f(c["min"]), _f(c["median"]), f"{unit}; {note}")
        for lib in hot.get("missing_peers", []):
            yield ("1 hot path", f"{lib}: not installed", "-", "-", "")
        for lib, err in hot.get("errors", {}).items():
            yield ("1 hot path", f"{lib}: error", "-", "-", err[:80])
    imp = cases.get("import")
    if imp:
        for c in imp["cases"].values():
            if c.get("n"):
                note = f"{c['ratio_to_otel_median']:.2f}x OTel" if "ratio_to_otel_median" in c else ""
                yield ("2 import", c["label"], _f(c["min"], 1), _f(c["median"], 1), f"ms; {note}")
        chk = imp["heavy_modules_check"]
        pulled = chk.get("forbidden_imported")
        installed = [k for k, v in (chk.get("forbidden_installed") or {}).items() if v]
        yield ("2 import", "heavy libraries imported by `import agentmeter`", "", "",
               f"{', '.join(pulled) if pulled else 'none'} (of {len(installed)} installed: {', '.join(installed)})")
    ex = cases.get("exit")
    if ex:
        for c in ex["cases"].values():
            if c.get("missing"):
                yield ("3 exit, dead back end", f"{c['label']}: not installed", "-", "-", "")
            elif c.get("n"):
                note = "s from end of work to exit"
                if c.get("killed"):
                    note += f"; killed at the {c['cap_s']:.0f} s cap (still running)"
                if "spooled_min" in c:
                    note += f"; {c['spooled_min']}/{ex['params']['runs']} runs spooled"
                yield ("3 exit, dead back end", c["label"], _f(c["min"]), _f(c["median"]), note)
    tp = cases.get("throughput")
    if tp:
        for c in tp["cases"].values():
            if c.get("n"):
                yield ("4 throughput", c["label"], _f(c["min"], 1), _f(c["median"], 1), c["unit"])
        b = tp.get("breakdown_us_per_step_record") or {}
        if b:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in b.items() if k != "elapsed")
            yield ("4 throughput", "exporter time per step record (drain)", "", _f(b.get("elapsed")),
                   f"us: {parts}")
    for key, o in (result.get("others") or {}).items():
        label = f"{o['case']} {key}"
        if o["status"] in ("absent", "skipped"):
            yield (label, o["title"], "", "", "script not present" if o["status"] == "absent" else
                   "not run in this run (--skip); its last figures are in benchmarks/results/")
            continue
        verdicts = ", ".join(f"{k.split('.json.', 1)[-1]}={v}" for k, v in _verdicts(o.get("results", {})))
        yield (label, o["title"], "", "", f"{o['status']} in {o.get('elapsed_s', 0):.0f} s; {verdicts or 'see log'}")
        for what, lo, mid, note in _headlines(key, o.get("results", {})):
            yield (label, what, lo, mid, note)


def _headlines(key: str, results: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """A few figures from another script's JSON (its own table is in its log). Never raises."""
    try:
        if key == "reliability":
            for case, c in results["reliability.json"]["summary"].items():
                yield (f"  {case}: caller cost per step / RSS growth", "", _f(c["us_per_step_median"]),
                       f"us/step; RSS +{c['rss_growth_mib_max']:.0f} MiB; delivered {c['delivered']:,}, "
                       f"spooled {c['spooled']:,}, dropped {c['dropped']:,}")
        elif key == "dashboard":
            rows = results["dashboard.json"]["results"]
            worst = max(rows, key=lambda r: r["best_s"])
            yield ("  slowest view (best of repeats)", _f(worst["best_s"], 3), _f(worst["median_s"], 3),
                   f"s: {worst['view']} / {worst['filters']} ({len(rows)} view x filter cases)")
            if "dashboard_browser.json" in results:
                pages = results["dashboard_browser.json"]["results"]
                for kind in ("cold", "warm"):
                    col = "cold_s" if kind == "cold" else "warm_best_s"
                    slow = max(pages, key=lambda r, c=col: r[c])
                    yield (f"  slowest page in Chromium, {kind}", _f(slow[col], 2), "",
                           f"s: {slow['view']} / {slow['range']}, load {slow[kind + '_load']:.1f}")
        elif key == "firehose":
            for c in results["firehose.json"]["cases"]:
                yield (f"  {c['profile'][:28]}, {c['path']}", "", f"{c['fill']:.1%}",
                       f"fill; {c['records_per_call']:.0f} records per PutRecordBatch")
        elif key == "integrations":
            for name, c in results["integrations.json"]["results"].items():
                yield (f"  {name}", "", _f(c["added_us"], 1),
                       f"us added ({c['added_pct']:.1f}% of the local round trip)")
    except (KeyError, TypeError, ValueError):
        return


def _verdicts(data: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Boolean verdicts in another script's JSON (keys like *_ok, met, all_under_1s)."""
    if depth > 3 or not isinstance(data, dict):
        return
    for k, v in data.items():
        name = f"{prefix}{k}"
        if isinstance(v, bool) and re.search(r"ok|met|meets|under|pass|within", str(k)):
            yield name, v
        elif isinstance(v, dict) and k not in ("machine", "samples"):
            yield from _verdicts(v, f"{name}.", depth + 1)


def _targets(result: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    cases = result.get("cases", {})
    hot = cases.get("hotpath", {}).get("target")
    if hot and "measured_median" in hot:
        yield (hot["name"], f"{hot['measured_median']:.3f}x (min/min {hot['measured_min']:.3f}x)",
               "met" if hot["met"] else f"MISSED by {hot['measured_median'] / hot['limit']:.2f}x the limit")
    imp = cases.get("import", {}).get("target")
    if imp and "measured_median" in imp:
        yield (imp["name"], f"{imp['measured_median']:.2f}x (min/min {imp['measured_min']:.2f}x)",
               "met" if imp["met"] else f"MISSED by {imp['measured_median'] / imp['limit']:.2f}x the limit")
    chk = cases.get("import", {}).get("heavy_modules_check")
    if chk:
        yield ("import agentmeter imports none of pymongo, boto3, snowflake, streamlit, openai, tavily",
               ", ".join(chk.get("forbidden_imported") or []) or "none imported", "met" if chk["met"] else "MISSED")
    ex = cases.get("exit", {}).get("target")
    if ex and ex.get("measured_max_s") is not None:
        yield (ex["name"], f"worst {ex['measured_max_s']:.2f} s, {ex['spooled_min']}/{ex['expected_spooled']} spooled",
               "met" if ex["met"] else "MISSED")
    tp = cases.get("throughput", {}).get("target")
    if tp and tp.get("measured_median_concurrent") is not None:
        yield (tp["name"], f"{tp['measured_median_concurrent']:,.0f}/s with the caller running, "
               f"{tp['measured_median_drain']:,.0f}/s exporter alone",
               "met" if tp["met"] else f"MISSED ({tp['measured_median_concurrent'] / tp['limit']:.0%} of target)")


def _header(result: dict[str, Any]) -> str:
    m = result.get("machine", {})
    v = result.get("versions", {})
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    return (f"{result.get('started_utc', '')}: {m.get('nproc')} CPUs ({m.get('cpu_model')}), Python {m.get('python')}, "
            f"load average at start {m.get('loadavg_at_start')}; {vers}"
            + ("; QUICK RUN (few repeats)" if result.get("quick") else ""))


def render_terminal(result: dict[str, Any]) -> str:
    rows = list(_rows(result))
    widths = [max(len(r[i]) for r in [*rows, ("case", "what", "min", "median", "")]) for i in range(4)]
    lines = [_header(result), ""]
    head = ("case", "what", "min", "median", "unit / vs")
    cells = [h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=False))]
    lines.append("  ".join(cells) + "  " + head[4])
    lines.append("-" * (sum(widths) + 30))
    for r in rows:
        lines.append(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2].rjust(widths[2])}  "
                     f"{r[3].rjust(widths[3])}  {r[4]}")
    lines += ["", "Targets:"]
    for name, measured, verdict in _targets(result):
        lines.append(f"  [{verdict}] {name}: {measured}")
    return "\n".join(lines)


def render_markdown(result: dict[str, Any]) -> str:
    lines = [f"Run of {_header(result)}.", "", "| case | what | min | median | unit / compared |",
             "|---|---|---:|---:|---|"]
    for r in _rows(result):
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in r) + " |")
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    for name, measured, verdict in _targets(result):
        lines.append(f"| {name} | {measured} | {verdict} |")
    return "\n".join(lines)


def update_docs(path: Path, table: str) -> None:
    """Replace the text between the bench markers in ``path`` (appended if the markers are missing)."""
    text = path.read_text() if path.exists() else ""
    block = f"{START}\n{table}\n{END}"
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("path", nargs="?", default=str(HERE / "results" / "latest.json"))
    p.add_argument("--write-docs", action="store_true")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    result = json.loads(Path(args.path).read_text())
    print(render_markdown(result) if args.markdown else render_terminal(result))
    if args.write_docs:
        update_docs(HERE.parent / "docs" / "performance.md", render_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
