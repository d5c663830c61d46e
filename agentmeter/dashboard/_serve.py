"""The process ``agentmeter dashboard`` becomes: what the first page would pay is paid here, before the
server answers, then Streamlit's own command line runs (``python -m agentmeter.dashboard._serve run APP
--server.port ...`` takes exactly the arguments of ``streamlit run``).

Streamlit runs the page's script inside this process, so modules imported here are already in
``sys.modules`` when the first visitor arrives: the dashboard's modules with pandas, Altair, pyarrow and
Streamlit's elements (about 0.6-1.5 s on 2 shared cores), and Altair's schema validator, which builds itself
on the first chart.
Nothing is read from the source before the server answers (its driver may wait on a network or a login);
then, once Streamlit's runtime has started, :func:`agentmeter.dashboard.prewarm.in_background` reads the
default page's queries of the local store into the page's cache. Neither ever stops the server from
starting: a failure is logged and the page pays as before.
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["main", "preload"]

log = logging.getLogger("agentmeter.dashboard")


def preload() -> float:
    """Import what the dashboard's first page needs and build one chart. Returns the seconds it took; never
    raises."""
    started = time.perf_counter()
    # the app's st.cache_data functions are decorated before Streamlit's runtime exists: Streamlit warns that
    # it checks them against an in-memory cache (their caches are made later, in the runtime's storage)
    quieted: list[tuple[logging.Logger, int]] = []
    try:
        from streamlit.runtime.caching import cache_data_api, cache_resource_api  # their loggers exist now

        for module in (cache_data_api, cache_resource_api):
            logger = logging.getLogger(module.__name__)
            quieted.append((logger, logger.level))
            logger.setLevel(logging.ERROR)
        import pandas as pd  # the preload's point: the page's heavy libraries, imported before the server

        # app imports every view, drill-down and table module, with Streamlit's elements and pyarrow
        from . import app, charts  # noqa: F401

        frame = pd.DataFrame({"name": ["a", "b"], "p95_ms": [1.0, 2.0]})
        charts.bar(frame, "name", "p95_ms", "preload").to_dict()  # Altair compiles its validator once
    except Exception:  # the page will import (and fail) as it did without the preload
        log.warning("agentmeter dashboard: preloading the page's modules failed", exc_info=True)
    finally:
        for logger, level in quieted:
            logger.setLevel(level)
    return time.perf_counter() - started


def main() -> None:
    preload()
    try:
        # the page's modules are imported by now (or the page fails as it would have): this costs nothing more
        from . import prewarm

        prewarm.in_background()
    except Exception:
        log.warning("agentmeter dashboard: reading the first page's queries at start failed", exc_info=True)
    from streamlit.web import cli  # Streamlit's command line (click): only when serving, not for preload()

    sys.argv = ["streamlit", *sys.argv[1:]]
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main()
