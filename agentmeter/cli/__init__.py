"""The ``agentmeter`` command line. Each command lives in its own module with ``register(subparsers)``;
heavy libraries are imported only inside the command that needs them."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._extras import MissingExtra
from .._version import __version__

__all__ = ["main"]

#: command modules, in the order ``agentmeter --help`` lists them
COMMANDS = ("dashboard", "demo", "report", "reprice", "sql", "stream")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentmeter",
        description="Agent metrics: runs, steps and API calls with latency, tokens and cost.",
    )
    parser.add_argument("--version", action="version", version=f"agentmeter {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except MissingExtra as exc:  # one line naming the extra to install, no traceback
        print(f"agentmeter {args.command}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # bad arguments found while running: a clear message, no traceback
        from .._scrub import scrub

        print(f"agentmeter {args.command}: error: {scrub(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
