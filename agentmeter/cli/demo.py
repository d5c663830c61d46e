"""``agentmeter demo``: run the bundled company-research agent, then print the report.

Offline by default (no API keys needed): the real tavily and openai clients talk to local stub servers.
Runs go to the local store (``--db``, ``$AGENTMETER_DB`` or ``~/.agentmeter/agentmeter.db``) and to any
sinks configured with ``AGENTMETER_SINKS``.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["register"]

DEFAULT_RUNS = 20
#: the demo's runs: the agent's release, and the users who take turns asking (five runs per session)
DEMO_VERSION = "company-research 1.0"
DEMO_USERS = ("ana", "ben", "chloe")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the bundled research agent (offline without API keys) and print the report",
        description="Run the bundled company-research agent N times, record every run, and print the report. "
        "Without TAVILY_API_KEY it runs offline against local stub servers.",
    )
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"agent runs (default {DEFAULT_RUNS})")
    p.add_argument("--companies", nargs="+", metavar="NAME", default=None,
                   help="companies to research, in turn (default: six fictional companies)")
    p.add_argument("--db", default=None,
                   help="SQLite store (default: $AGENTMETER_DB or ~/.agentmeter/agentmeter.db)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the stub servers' variation (offline mode; default: random, printed)")
    p.add_argument("--offline", action="store_true",
                   help="use the local stub servers even when API keys are set")
    p.set_defaults(func=run)


def _sinks(db: str | None) -> tuple[list[Any], Path, bool]:
    """The sinks to write to, the SQLite file the report reads, and whether that file is a temporary copy."""
    from .. import _state  # the SDK loads with the command, not with `agentmeter --help`
    from ..sinks import SQLiteSink  # the SDK loads with the command, not with `agentmeter --help`

    configured = list(_state.settings().sinks or ())
    if db is not None:
        store = SQLiteSink(db)
        return [store, *(s for s in configured if not isinstance(s, SQLiteSink))], store.path, False
    if not configured:
        store = SQLiteSink()
        return [store], store.path, False
    for sink in configured:
        if isinstance(sink, SQLiteSink):
            return configured, sink.path, False
    # Only remote sinks configured: keep a temporary local copy so the report can be printed.
    copy = SQLiteSink(Path(tempfile.mkdtemp(prefix="agentmeter-demo-")) / "demo.db", name="demo-report")
    return [*configured, copy], copy.path, True


def command_name() -> str:
    """How to type ``agentmeter`` so that it runs this installation: the bare name when PATH finds this
    one, else the script's path (relative when under the working folder: ``.venv/bin/agentmeter`` after
    ``make demo``), else ``python -m agentmeter`` with this interpreter."""
    script = Path(sys.executable).parent / "agentmeter"  # the console script beside this venv's python
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m agentmeter"
    found = shutil.which("agentmeter")
    if found is not None and Path(found).resolve() == script.resolve():
        return "agentmeter"
    relative = os.path.relpath(script)
    if relative.startswith(".."):
        return shlex.quote(str(script))
    return shlex.quote(relative if os.sep in relative else f".{os.sep}{relative}")


def _check_args(args: argparse.Namespace) -> list[str]:
    from ..demo import DEFAULT_COMPANIES  # the demo loads with the command

    if args.runs < 1:
        raise ValueError(f"--runs must be at least 1, got {args.runs}")
    companies = [" ".join(c.split()) for c in (args.companies or DEFAULT_COMPANIES)]
    if not all(companies):
        raise ValueError("--companies must be non-empty names")
    return companies


def run(args: argparse.Namespace) -> int:
    from rich.console import Console  # rich: ~30 ms, only for this command
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import agentmeter  # the SDK loads with the command, not with `agentmeter --help`

    from .. import _state  # the SDK loads with the command, not with `agentmeter --help`
    from ..demo import TAVILY_PRICES, load_agent, open_clients  # the demo (tavily, openai) loads with the command
    from .report import render, summarize  # rich and the query layer: only after the demo ran

    companies = _check_args(args)
    console = Console()
    sinks, db, temporary = _sinks(args.db)
    # Your own prices (configure(prices=...)) win; Tavily's list price is added when none is set for it.
    # The agent's release, for the Versions view (AGENTMETER_VERSION or your configure(version=...) wins).
    agentmeter.configure(sinks=sinks, prices={**TAVILY_PRICES, **_state.settings().prices},
                         version=_state.settings().version or DEMO_VERSION)
    module = load_agent()
    ok = failed = 0
    errors: dict[str, int] = {}
    started = time.monotonic()
    try:
        with open_clients(offline=args.offline, seed=args.seed) as clients:
            console.print(clients.describe())
            agent = module.CompanyResearcher(clients.tavily, clients.openai)
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[status]}"), TimeElapsedColumn())
            with Progress(*columns, console=console) as progress:
                task = progress.add_task("researching", total=args.runs, status="")
                for i in range(args.runs):
                    company = companies[i % len(companies)]
                    progress.update(task, description=f"researching {company:<18.18}")
                    try:
                        # five runs per session (a chat), three users taking turns
                        agent.research(company, session=f"demo-session-{i // 5 + 1}", user=DEMO_USERS[i % 3])
                        ok += 1
                    except Exception as exc:  # a failed run is part of the demo: it is recorded as such
                        failed += 1
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    progress.update(task, advance=1, status=f"[green]{ok} ok[/] [red]{failed} failed[/]")
    finally:
        result = agentmeter.flush(timeout=30)
    elapsed = time.monotonic() - started
    why = f" ({', '.join(f'{n} {t}' for t, n in sorted(errors.items()))})" if errors else ""
    console.print(f"{args.runs} runs in {elapsed:.1f} s: {ok} succeeded, {failed} failed{why}.")
    if not result.ok:
        console.print(f"[yellow]Not every run reached every sink: {dict(result.sinks)} "
                      "(undelivered runs are kept in the spool and retried later).[/]")
    since = f"{math.ceil(elapsed) + 2}s"  # this demo's runs only
    try:
        summary = summarize(db, since=since, agent=module.AGENT)
    except FileNotFoundError:
        console.print(f"[red]No run reached the local store {db}: nothing to report.[/]")
        return 1
    render(summary, db, since)
    if temporary:
        console.print(f"Runs were sent to: {', '.join(s.name for s in sinks[:-1])}. The report above was "
                      f"read from a temporary local copy ({db}).")
    else:
        opt = "" if args.db is None else f" --db {shlex.quote(str(db))}"
        name = command_name()
        console.print(f"\nEvery run in the store: [bold]{name} report{opt}[/]\n"
                      f"Open the dashboard:     [bold]{name} dashboard{opt}[/]", markup=True, highlight=False,
                      soft_wrap=True)
    return 0 if summary["total"]["runs"] else 1
