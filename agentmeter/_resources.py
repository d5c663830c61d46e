"""Where the files shipped inside the package are: ``dashboard/``, ``sql/`` and ``examples/``.

They live in the package itself (``agentmeter/<name>/``; the repository's top-level ``dashboard``, ``sql``
and ``examples`` are symbolic links to them), and are found one way, with :mod:`importlib.resources`,
in a checkout, an editable install and an installed wheel alike.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["SHIPPED", "shipped_path"]

#: the folders of shipped files
SHIPPED = ("dashboard", "sql", "examples")


def shipped_path(name: str) -> Path:
    """The folder of shipped files ``name`` (one of :data:`SHIPPED`) on the file system.

    Raises ``ValueError`` for another name and ``FileNotFoundError`` when the folder is missing or the
    package is not installed as plain files (Streamlit and SQLite need real paths, not a zip member).
    """
    if name not in SHIPPED:
        raise ValueError(f"shipped_path name must be one of {', '.join(SHIPPED)}; got {name!r}")
    folder = files("agentmeter").joinpath(name)
    if not isinstance(folder, Path) or not folder.is_dir():
        raise FileNotFoundError(f"agentmeter's {name}/ folder is missing from this installation ({folder})")
    return folder
