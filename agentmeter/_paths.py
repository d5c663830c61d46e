"""Where agentmeter keeps its files by default: the local store and, beside it, the spool."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_DB", "default_db_path", "default_spool_dir"]

#: Documented default location of the local store (overridable with ``AGENTMETER_DB``).
DEFAULT_DB = Path("~/.agentmeter/agentmeter.db")


def default_db_path() -> Path:
    """``AGENTMETER_DB`` if set, else ``~/.agentmeter/agentmeter.db``."""
    return Path(os.environ.get("AGENTMETER_DB") or DEFAULT_DB).expanduser()


def default_spool_dir() -> Path:
    """The spool sits beside the local store: ``<folder of AGENTMETER_DB>/spool``."""
    return default_db_path().parent / "spool"
