"""Where the shipped extras live: ``dashboard/``, ``sql/`` and ``examples/``.

In an installed wheel they are inside the package (``agentmeter/_bundled/<name>``); in a checkout
(editable install, tests) they are the top-level folders of the repository.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["bundled_path"]

_PACKAGE = Path(__file__).resolve().parent


def bundled_path(name: str) -> Path:
    """Folder of a shipped extra: ``"dashboard"``, ``"sql"`` or ``"examples"``."""
    if name not in ("dashboard", "sql", "examples"):
        raise ValueError(f"bundled_path name must be dashboard, sql or examples; got {name!r}")
    inside = _PACKAGE / "_bundled" / name
    if inside.is_dir():
        return inside
    checkout = _PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"agentmeter's {name}/ folder is missing from this installation ({inside})")
