"""``agentmeter dashboard``: start Streamlit on the dashboard shipped in the package."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from .._config import default_db_path
from .._extras import require

__all__ = ["build_command", "port_problem", "register", "run"]

SOURCES = ("local", "mongodb", "snowflake")


def register(sub: Any) -> None:
    p = sub.add_parser("dashboard", help="open the Streamlit dashboard (health, performance, usage, cost, runs)")
    p.add_argument("--source", choices=SOURCES, default=None,
                   help="where to read runs (default: $AGENTMETER_DASHBOARD_SOURCE or local)")
    p.add_argument("--db", default=None,
                   help="local SQLite store (default: $AGENTMETER_DB or ~/.agentmeter/agentmeter.db)")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.set_defaults(func=run)


def build_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The streamlit command line and environment for ``args`` (pure; for tests and ``run``)."""
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    from ..dashboard import script_path  # the dashboard package: only for this command

    app = script_path()
    env = dict(os.environ)
    source = args.source or env.get("AGENTMETER_DASHBOARD_SOURCE") or "local"
    if source not in SOURCES:
        raise ValueError(f"AGENTMETER_DASHBOARD_SOURCE must be one of {', '.join(SOURCES)}; got {source!r}")
    env["AGENTMETER_DASHBOARD_SOURCE"] = source
    if args.db:
        env["AGENTMETER_DB"] = str(Path(args.db).expanduser().resolve())
    cmd = [
        # Streamlit's ``streamlit run``, after the page's modules are imported in the server's process
        # (agentmeter/dashboard/_serve.py): the first visitor does not wait for pandas and Altair
        sys.executable, "-m", "agentmeter.dashboard._serve", "run", str(app),
        "--server.port", str(args.port), "--server.address", args.host,
        "--server.headless", "true" if args.headless else "false",
        "--browser.gatherUsageStats", "false",
        "--theme.base", "light", "--client.toolbarMode", "minimal",
        # the shipped app never changes under the server: no thread watching (or polling) its files
        "--server.fileWatcherType", "none",
        # a click or a drag on a chart sets sidebar widgets through st.session_state by design (see
        # agentmeter/dashboard/drill.py): no warning in the server's log each time it does
        "--global.disableWidgetStateDuplicationWarning", "true",
    ]
    return cmd, env


def _bind(info: tuple[Any, ...]) -> OSError | None:
    family, kind, proto, _, address = info
    try:
        with socket.socket(family, kind, proto) as probe:
            # as the server will: an old connection in TIME_WAIT does not make the port busy
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        return exc
    return None


def _free_port_after(host: str, port: int) -> int | None:
    for candidate in range(port + 1, min(port + 50, 65536)):
        if port_problem(host, candidate) is None:
            return candidate
    return None


def port_problem(host: str, port: int) -> str | None:
    """Why Streamlit could not listen on ``host:port`` (a sentence for the user), or None when it can.

    Tries to bind every address ``host`` resolves to, as the server does; a port another process listens
    on is busy. The port may still be taken between this check and the server's start.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve --host {host}: {exc.strerror}"
    failures = [(info, _bind(info)) for info in infos]
    if any(exc is not None and exc.errno == errno.EADDRINUSE for _, exc in failures):
        return f"port {port} on {host} is in use (another dashboard or server is listening there)"
    if all(exc is not None for _, exc in failures):
        first = failures[0][1]
        reason = first.strerror if first is not None and first.strerror else str(first)
        return (f"cannot listen on {host}:{port}: {reason}; --host must be an address of this machine "
                "(127.0.0.1, 0.0.0.0 for every interface, or a local interface's address)")
    return None


def run(args: argparse.Namespace) -> int:
    try:
        import streamlit  # noqa: F401
    except ImportError:
        print("The dashboard needs Streamlit: pip install 'agentmeter[dashboard]'", file=sys.stderr)
        return 1
    cmd, env = build_command(args)
    if env["AGENTMETER_DASHBOARD_SOURCE"] != "local":  # the driver of the source (a missing one: one line, exit 1)
        from ..queries import SOURCE_EXTRAS  # the query layer: only for this command

        source = env["AGENTMETER_DASHBOARD_SOURCE"]
        extra, driver = SOURCE_EXTRAS[source]
        require(f"the {source} source", extra, driver)

    problem = port_problem(args.host, args.port)
    if problem is not None:
        suggestion = _free_port_after(args.host, args.port) if "in use" in problem else None
        hint = f"; start it on another port with --port {suggestion}" if suggestion else ""
        print(f"agentmeter dashboard: {problem}{hint}", file=sys.stderr)
        return 1
    where = (f"local store {env.get('AGENTMETER_DB') or default_db_path()}"
             if env["AGENTMETER_DASHBOARD_SOURCE"] == "local" else env["AGENTMETER_DASHBOARD_SOURCE"])
    print(f"agentmeter dashboard on http://{args.host}:{args.port} ({where}); Ctrl+C to stop", flush=True)
    if os.name == "posix":
        # become Streamlit: signals (Ctrl+C, a supervisor's SIGTERM) reach the server itself, and stopping
        # this command never leaves an orphaned server behind
        os.execve(sys.executable, cmd, env)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
