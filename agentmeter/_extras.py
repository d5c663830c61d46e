"""Optional libraries (the package's extras), checked where a feature is set up.

A sink, a dashboard source or a command whose library is not installed fails where it is configured, once,
with the command that installs it (``pip install 'agentmeter[mongodb]'``), instead of failing on every
export in the background or with a traceback. The check looks the library up without importing it, so it
costs microseconds and ``import agentmeter`` stays light. Standard library only.
"""

from __future__ import annotations

import importlib.util

__all__ = ["MissingExtra", "installed", "require"]


class MissingExtra(ImportError, ValueError):
    """An optional library is not installed. Both an ``ImportError`` (what it is) and a ``ValueError``
    (what ``configure()`` raises for a setting it cannot accept)."""

    def __init__(self, what: str, module: str, extra: str) -> None:
        self.extra = extra
        self.install = f"pip install 'agentmeter[{extra}]'"
        super().__init__(f"{what} needs {module}, which is not installed: {self.install}", name=module)


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found on the path; not imported). Never raises."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # the parent package is missing, or a half-removed module
        return False


def require(what: str, extra: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` naming ``extra`` unless every one of ``modules`` is installed."""
    for module in modules:
        if not installed(module):
            raise MissingExtra(what, module, extra)
