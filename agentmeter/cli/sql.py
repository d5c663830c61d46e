"""``agentmeter sql``: print the Snowflake setup script (Snowpipe, tables, views) rendered with your names."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sql",
        help="print the Snowflake Snowpipe setup (roles, stage, pipe, views) for snowsql",
        description=(
            "Print the Snowflake setup script for the S3 prefix the Firehose sink writes, rendered with "
            "your names: agentmeter sql --bucket B | snowsql -f /dev/stdin. See docs/snowflake.md."
        ),
    )
    p.add_argument("--bucket", required=True, help="S3 bucket the Firehose delivery stream writes to")
    p.add_argument("--prefix", default="agentmeter/", help="S3 key prefix of the delivery stream (default agentmeter/)")
    p.add_argument("--database", default="AGENTMETER", help="Snowflake database (default AGENTMETER)")
    p.add_argument("--schema", default="METRICS", help="Snowflake schema (default METRICS)")
    p.add_argument("--integration", default="AGENTMETER_S3", help="storage integration (default AGENTMETER_S3)")
    p.add_argument("--role", default="AGENTMETER", help="role that owns and loads the objects (default AGENTMETER)")
    p.add_argument("--reader-role", default=None, help="read-only role for the dashboard (default <role>_READER)")
    p.add_argument("--aws-role-arn", default=None,
                   help="IAM role the storage integration assumes; when given the integration is created, "
                        "else it must exist")
    p.add_argument("--warehouse", default=None, help="warehouse the reader role may use (optional)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..snowflake_sql import SnowflakeNames, render  # only for this command

    names = SnowflakeNames(  # raises ValueError naming the bad option: main() prints it and exits 2
        bucket=args.bucket, prefix=args.prefix, database=args.database, schema=args.schema,
        integration=args.integration, role=args.role, reader_role=args.reader_role,
        aws_role_arn=args.aws_role_arn, warehouse=args.warehouse,
    )
    sys.stdout.write(render(names))
    return 0
