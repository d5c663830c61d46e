"""Read-side of agentmeter: the queries behind the dashboard, one :class:`Source` per store.

``from agentmeter.queries import Filters, open_source``. Sources import their driver (pandas, pymongo,
snowflake-connector-python) only when opened; importing this package imports neither pandas nor a driver.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from .._extras import MissingExtra, require
from .base import FRAMES, Filters, RunDetail, Source, SourceUnavailable

__all__ = ["FRAMES", "SOURCES", "SOURCE_EXTRAS", "Filters", "RunDetail", "Source", "SourceUnavailable",
           "open_source"]

#: ``--source`` name -> (module, factory function taking keyword options)
SOURCES = {
    "local": (".local", "from_env"),
    "mongodb": (".mongodb", "from_env"),
    "snowflake": (".snowflake", "from_env"),
}
#: ``--source`` name -> (extra to install, the driver it needs); every source needs pandas as well
SOURCE_EXTRAS = {
    "local": ("dashboard", "pandas"),
    "mongodb": ("mongodb", "pymongo"),
    "snowflake": ("snowflake", "snowflake.connector"),
}


def open_source(kind: str | None = None, **options: Any) -> Source:
    """Build the source named ``kind`` (default: ``$AGENTMETER_DASHBOARD_SOURCE`` or ``local``).

    ``options`` go to the source's ``from_env`` (for ``local``: ``db=PATH``). Raises ``ValueError`` for an
    unknown kind and :class:`SourceUnavailable` when the source's driver is not installed. Does not connect:
    call :meth:`Source.check` for that.
    """
    name = (kind or os.environ.get("AGENTMETER_DASHBOARD_SOURCE") or "local").strip().lower()
    if name not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {name!r}")
    module_name, factory = SOURCES[name]
    extra, driver = SOURCE_EXTRAS[name]
    try:
        require(f"the {name} source", "dashboard", "pandas")
        require(f"the {name} source", extra, driver)
        module = importlib.import_module(module_name, __name__)
    except ImportError as exc:
        install = exc.install if isinstance(exc, MissingExtra) else f"pip install 'agentmeter[{extra},dashboard]'"
        raise SourceUnavailable(f"the {name} source cannot be loaded: {exc}", f"install its extra: {install}",
                                ) from exc
    source: Source = getattr(module, factory)(**options)
    return source
