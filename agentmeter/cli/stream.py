"""``agentmeter stream``: send run documents from MongoDB to Kinesis Firehose (one run, or a backfill)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._config import default_db_path
from .._extras import require
from .._scrub import scrub
from ._common import parse_since

__all__ = ["register"]

EXIT_OK, EXIT_FAILED, EXIT_NOT_CONFIGURED = 0, 1, 2


def register(sub: Any) -> None:
    p = sub.add_parser(
        "stream",
        help="send run documents from MongoDB to Kinesis Firehose (one run, or a backfill of recent runs)",
        description="Send run documents from MongoDB (AGENTMETER_MONGODB_URI) to Kinesis Firehose "
        "(AGENTMETER_FIREHOSE_STREAM) as agent_run, run_step and api_call records, and the scores given "
        "in the window (or the run's scores) as run_score records. Exits 2 without doing "
        "anything when either is not configured, 1 when some run could not be sent.",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run-id", default=None, help="send this one run (even if the checkpoint has it)")
    which.add_argument("--since", default=None,
                       help="backfill runs started in this window: 30m, 24h, 7d, 2w or all (default 24h)")
    p.add_argument("--limit", type=int, default=None, help="at most the N most recent runs of the window")
    p.add_argument("--checkpoint", default=None,
                   help="file of runs already sent, to resume and skip them "
                   "(default: stream-<stream name>.checkpoint beside the local store)")
    p.add_argument("--no-checkpoint", action="store_true", help="neither read nor write a checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _checkpoint_path(args: argparse.Namespace, stream: str) -> Path | None:
    if args.no_checkpoint:
        return None
    if args.checkpoint:
        return Path(args.checkpoint).expanduser()
    return default_db_path().parent / f"stream-{stream}.checkpoint"


def run(args: argparse.Namespace) -> int:
    require("this command", "mongodb", "pymongo")
    require("this command", "firehose", "boto3", "botocore")
    # pymongo, boto3: only for this command
    from ..streamer import MetadataStreamer, StreamerNotConfigured, StreamSummary

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a positive integer, got {args.limit}")
    since = parse_since(args.since if args.since is not None else "24h")  # ValueError -> exit 2
    from pymongo.errors import PyMongoError  # optional extra [mongodb]

    try:
        streamer = MetadataStreamer.from_env()
    except PyMongoError as exc:  # e.g. a mongodb+srv:// address that does not resolve
        print(f"agentmeter stream: nothing sent; cannot use AGENTMETER_MONGODB_URI: {type(exc).__name__}: "
              f"{scrub(str(exc)[:1000])[:300]}", file=sys.stderr)
        return EXIT_FAILED
    except StreamerNotConfigured as exc:
        print("agentmeter stream: nothing sent.", file=sys.stderr)
        for line in scrub(str(exc)).splitlines():
            print(f"  {line}", file=sys.stderr)
        print("  See docs/sinks.md for the configuration.", file=sys.stderr)
        return EXIT_NOT_CONFIGURED
    path = _checkpoint_path(args, streamer.sink.stream_name)
    if path is not None:
        streamer = MetadataStreamer(streamer.collection, streamer.sink, path, scores=streamer.scores)

    from rich.console import Console  # rich: only for this command
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn("streaming runs"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, disable=args.quiet, transient=True) as bar:
            task = bar.add_task("stream", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            summary: StreamSummary
            if args.run_id:
                summary = streamer.send_run(args.run_id, progress)
            else:
                summary = streamer.backfill(since=since, limit=args.limit, progress=progress)
    except LookupError as exc:
        print(f"agentmeter stream: {exc.args[0]}", file=sys.stderr)
        return EXIT_FAILED
    except PyMongoError as exc:
        print(f"agentmeter stream: cannot read MongoDB: {type(exc).__name__}: {scrub(str(exc)[:1000])[:300]}",
              file=sys.stderr)
        return EXIT_FAILED
    finally:
        streamer.sink.close()

    print(
        f"sent {summary.sent}, skipped {summary.skipped}, failed {summary.failed} "
        f"({summary.records} records in {summary.calls} PutRecordBatch calls to "
        f"{streamer.sink.stream_name}, {summary.seconds:.1f} s)"
    )
    scored = summary.scores_sent + summary.scores_skipped + summary.scores_failed
    if scored:
        print(f"scores: sent {summary.scores_sent}, skipped {summary.scores_skipped}, "
              f"failed {summary.scores_failed}")
    if path is not None:
        print(f"checkpoint: {path}")
    if summary.failed or summary.scores_failed:
        shown = ", ".join(summary.failed_ids[:10]) + (" ..." if len(summary.failed_ids) > 10 else "")
        print(f"failed runs (run again to retry them): {shown}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
