"""The Streamlit dashboard over one :class:`agentmeter.queries.Source` (``agentmeter[dashboard]``).

``agentmeter dashboard`` runs ``streamlit run`` on :func:`script_path` (``streamlit_app.py``, which only
calls :func:`agentmeter.dashboard.app.main`). The modules: :mod:`.app` (page, sidebar, error panel),
:mod:`.views` (one function per view), :mod:`.charts` (Altair charts), :mod:`.format` (numbers as text).
Importing this package imports neither Streamlit nor pandas; its modules do.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["script_path"]


def script_path() -> Path:
    """The file ``streamlit run`` executes. Raises FileNotFoundError when it is missing."""
    from .._resources import shipped_path  # importlib.resources: only when the path is asked for

    return shipped_path("dashboard") / "streamlit_app.py"
