"""The Snowflake setup script, rendered with your names.

The templates live in the shipped ``sql/`` folder (``agentmeter._resources.shipped_path("sql")``), one
file per part, run in name order. :func:`render` fills in the names and expands the typed columns of
``agent_runs``, ``run_steps`` and ``api_calls`` from :data:`agentmeter.contract.TABLES`, so the views
always carry every column of the contract. ``agentmeter sql`` prints the result for ``snowsql``.

Names are checked before anything is rendered: an identifier with a quote, a semicolon, a space or any
character Snowflake would need quoting for is refused with a ``ValueError`` naming the option, so the
script can never carry injected SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from . import contract
from ._resources import shipped_path

__all__ = [
    "PIPE_NAME",
    "RAW_TABLE",
    "STAGE_NAME",
    "SnowflakeNames",
    "check_identifier",
    "pipe_copy_statements",
    "render",
    "split_statements",
    "typed_column_sql",
]

RAW_TABLE: Final = "AGENTMETER_RAW"
STAGE_NAME: Final = "AGENTMETER_STAGE"
PIPE_NAME: Final = "AGENTMETER_PIPE"
FILE_FORMAT: Final = "AGENTMETER_JSON"

#: contract column type -> (Snowflake cast, or "" for VARIANT kept as is)
_CASTS: Final = {
    "text": "::VARCHAR",
    "integer": "::NUMBER(38,0)",
    "real": "::FLOAT",
    "boolean": "::BOOLEAN",
    "timestamp": "::TIMESTAMP_TZ",
    "json": "",
}

# Unquoted Snowflake identifier: letter or underscore, then letters, digits, underscores or dollar signs.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,254}")
# S3 bucket names (the DNS-compatible rules in force since 2018).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# An S3 key prefix limited to characters that are safe inside a SQL string literal and a URL.
_PREFIX = re.compile(r"[A-Za-z0-9_.=+-]+(/[A-Za-z0-9_.=+-]+)*/?")
_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]{1,512}")
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)(?::([a-z_]+))?\s*\}\}")


def check_identifier(option: str, value: str) -> str:
    """``value`` if it is a plain (unquoted) Snowflake identifier, else ``ValueError`` naming ``option``."""
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{option} must be a plain Snowflake identifier (a letter or _, then letters, digits, _ or $; "
            f"no quotes, semicolons, spaces, dots or dashes); got {value!r}"
        )
    return value


@dataclass(frozen=True)
class SnowflakeNames:
    """The names the setup script is rendered with. Validated on construction (``ValueError``).

    ``prefix`` is the S3 key prefix the Firehose delivery stream writes under (its ``Prefix``), without
    a leading slash; it is normalized to end with ``/``. ``reader_role`` defaults to ``<role>_READER``.
    ``aws_role_arn`` (the IAM role the storage integration assumes) creates the integration when given;
    without it the integration must exist. ``warehouse``, when given, is granted to the reader role.
    """

    bucket: str
    database: str = "AGENTMETER"
    schema: str = "METRICS"
    prefix: str = "agentmeter/"
    integration: str = "AGENTMETER_S3"
    role: str = "AGENTMETER"
    reader_role: str | None = None
    aws_role_arn: str | None = None
    warehouse: str | None = None

    def __post_init__(self) -> None:
        for option in ("database", "schema", "integration", "role"):
            check_identifier(f"--{option}", getattr(self, option))
        if self.reader_role is not None:
            check_identifier("--reader-role", self.reader_role)
        if self.warehouse is not None:
            check_identifier("--warehouse", self.warehouse)
        if not _BUCKET.fullmatch(self.bucket) or ".." in self.bucket:
            raise ValueError(
                "--bucket must be an S3 bucket name (3-63 characters: lowercase letters, digits, dots and "
                f"dashes; no quotes, semicolons or spaces); got {self.bucket!r}"
            )
        if not _PREFIX.fullmatch(self.prefix) or any(part in (".", "..") for part in self.prefix.split("/")):
            raise ValueError(
                "--prefix must be an S3 key prefix such as agentmeter/ or env/prod/agentmeter/ (letters, "
                f"digits, _ . = + - separated by /; no leading /, quotes, semicolons or spaces); got {self.prefix!r}"
            )
        if not self.prefix.endswith("/"):
            object.__setattr__(self, "prefix", self.prefix + "/")
        if self.aws_role_arn is not None and not _ARN.fullmatch(self.aws_role_arn):
            raise ValueError(
                "--aws-role-arn must look like arn:aws:iam::123456789012:role/snowflake-agentmeter; "
                f"got {self.aws_role_arn!r}"
            )

    @property
    def reader(self) -> str:
        """The reader role's name (``reader_role``, or ``<role>_READER``)."""
        return self.reader_role or f"{self.role}_READER"

    def qualified(self, name: str) -> str:
        """``DATABASE.SCHEMA.NAME``."""
        return f"{self.database}.{self.schema}.{name}"


def typed_column_sql(table: str, indent: str = "  ") -> str:
    """The SELECT list of a typed view: every column of ``contract.TABLES[table]`` cast from ``record``."""
    lines = [f'{indent}record:"{c.name}"{_CASTS[c.type]} AS {c.name}' for c in contract.TABLES[table]]
    return ",\n".join(lines)


def template_files(folder: Path | None = None) -> list[Path]:
    """The template files of the setup script, in the order they run."""
    root = folder or shipped_path("sql")
    return sorted(p for p in root.glob("[0-9][0-9]_*.sql"))


def _conditionals(text: str, flags: dict[str, bool]) -> str:
    out: list[str] = []
    keep: list[bool] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-- @if "):
            name = stripped[len("-- @if "):].strip()
            negate = name.startswith("!")
            keep.append(flags[name.lstrip("!")] != negate)
            continue
        if stripped == "-- @endif":
            keep.pop()
            continue
        if all(keep):
            out.append(line)
    if keep:
        raise ValueError("unbalanced -- @if in the SQL templates")
    return "\n".join(out) + "\n"


def render(names: SnowflakeNames, folder: Path | None = None) -> str:
    """The whole setup script for ``names``: every template part, in order, ready for ``snowsql``.

    Pure: reads the templates, never connects anywhere. Raises ``ValueError`` only for a template with an
    unknown placeholder (a packaging bug); the names were validated when ``names`` was built.
    """
    values = {
        "database": names.database,
        "schema": names.schema,
        "bucket": names.bucket,
        "prefix": names.prefix,
        "integration": names.integration,
        "role": names.role,
        "reader_role": names.reader,
        "aws_role_arn": names.aws_role_arn or "",
        "warehouse": names.warehouse or "",
    }
    flags = {"aws_role_arn": names.aws_role_arn is not None, "warehouse": names.warehouse is not None}

    def fill(match: re.Match[str]) -> str:
        key, arg = match.group(1), match.group(2)
        if key == "columns" and arg in contract.TABLES:
            return typed_column_sql(arg)
        if arg is None and key in values:
            return values[key]
        raise ValueError(f"unknown placeholder {match.group(0)!r} in the SQL templates")

    parts = []
    for path in template_files(folder):
        body = _conditionals(path.read_text(encoding="utf-8"), flags)
        parts.append(f"-- ===== {path.name} =====\n" + _PLACEHOLDER.sub(fill, body))
    header = (
        "-- agentmeter Snowflake setup, rendered by `agentmeter sql` for "
        f"s3://{names.bucket}/{names.prefix} -> {names.database}.{names.schema}\n"
        f"-- contract schema_version {contract.SCHEMA_VERSION}; run with: snowsql -f <this file>\n\n"
    )
    return header + "\n".join(parts)


def split_statements(script: str) -> list[str]:
    """The statements of a script, without comments or the trailing semicolons.

    Understands ``--`` comments and single-quoted strings (with ``''`` escapes), which is all the
    agentmeter templates use.
    """
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(script)
    while i < n:
        ch = script[i]
        if ch == "-" and script.startswith("--", i):
            end = script.find("\n", i)
            i = n if end == -1 else end
            continue
        if ch == "'":
            end = i + 1
            while end < n:
                if script[end] == "'" and script.startswith("''", end):
                    end += 2
                    continue
                if script[end] == "'":
                    break
                end += 1
            buf.append(script[i:end + 1])
            i = end + 1
            continue
        if ch == ";":
            stmt = "".join(buf).strip()
            if stmt:
                statements.append(stmt)
            buf = []
        else:
            buf.append(ch)
        i += 1
    tail = "".join(buf).strip()
    if tail:
        statements.append(tail)
    return statements


_PIPE = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?PIPE\b.*?\bAS\s+(COPY\s+INTO\b.*)\Z", re.IGNORECASE | re.DOTALL)


def pipe_copy_statements(script: str) -> list[str]:
    """The ``COPY INTO`` statement inside each ``CREATE PIPE`` of a rendered script, exactly as written.

    This is what Snowpipe runs for every new file; tests run it on its own where pipes do not exist.
    """
    copies = []
    for stmt in split_statements(script):
        match = _PIPE.match(stmt)
        if match:
            copies.append(match.group(1).strip())
    return copies
