"""agentmeter: agent metrics with honest numbers.

Put ``@track_run`` / ``@track_step`` / ``@track_call`` on your agent's functions (or use them as context
managers). Every run becomes one document - the run, its steps and its API calls, with latency, status,
errors, tokens and cost - exported in the background to the local SQLite store by default, or to MongoDB
and Kinesis Firehose. agentmeter never raises into your code and never makes your code wait on I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _context, _guard, _state
from ._context import current_call, current_run, current_step
from ._context import wrap as wrap_context
from ._signals import install_signal_handlers
from ._tracking import track_call, track_run, track_step
from ._version import __version__

if TYPE_CHECKING:
    from ._config import Settings
    from ._exporter import FlushResult, SinkFlushResult
    from ._model import Call, Run, Step

__all__ = [
    "Call",
    "FlushResult",
    "Run",
    "Settings",
    "SinkFlushResult",
    "Step",
    "__version__",
    "configure",
    "current_call",
    "current_run",
    "current_step",
    "flush",
    "install_signal_handlers",
    "shutdown",
    "stats",
    "track_call",
    "track_run",
    "track_step",
    "wrap_context",
]


def configure(**settings: Any) -> Settings:
    """Configure agentmeter; every keyword is a field of :class:`Settings`, the rest come from
    ``AGENTMETER_*`` environment variables and defaults.

    ``configure(sinks=[SQLiteSink("runs.db"), MongoDBSink(uri=...)])``. Raises ``ValueError`` naming the
    setting when a value is invalid; nothing changes then. Runs already queued are flushed to the previous
    sinks first. Also loads the price table (genai-prices, when installed) on this thread, so the exporter
    never has to import it while your threads run (see :mod:`agentmeter.pricing`).
    """
    new = _state.configure(**settings)
    if new.enabled:
        from .pricing import load_library

        load_library()
    return new


def flush(timeout: float | None = 10.0) -> FlushResult:
    """Deliver every finished run to every sink, waiting at most ``timeout`` seconds.

    Returns per sink what was delivered, spooled (kept on disk for later), dropped, failed, and what is
    still pending. Never raises.
    """
    try:
        exporter = _state.current_exporter()
        if exporter is None:
            return _empty_result()
        return exporter.flush(timeout)
    except Exception as exc:
        _guard.internal_error("flush", exc)
        return _empty_result(timed_out=True)


def shutdown(timeout: float | None = 10.0) -> FlushResult:
    """Flush within ``timeout``, spool what is left, and stop the background workers. Never raises.

    Tracking after shutdown starts a fresh exporter.
    """
    try:
        exporter = _state.reset()
        if exporter is None:
            return _empty_result()
        return exporter.shutdown(timeout)
    except Exception as exc:
        _guard.internal_error("shutdown", exc)
        return _empty_result(timed_out=True)


def stats() -> dict[str, Any]:
    """Counters: runs finished, exported, dropped, failed, spooled, per sink; internal errors; warnings;
    calls left unpriced because the price table was not loaded (see :mod:`agentmeter.pricing`)."""
    exporter = _state.current_exporter()
    out: dict[str, Any] = exporter.stats() if exporter is not None else {
        "runs_finished": 0, "runs_exported": 0, "runs_dropped": 0, "runs_failed": 0, "runs_spooled": 0,
        "spool_bytes": 0, "sinks": {},
    }
    out["internal_errors"] = _guard.counters["internal_errors"]
    out["warnings"] = _guard.counters["warnings"]
    out["unpriced_price_table_not_loaded"] = _guard.counters["pricing.library_not_loaded"]
    out["thread_propagation"] = _context.thread_propagation_enabled()
    return out


def _empty_result(timed_out: bool = False) -> FlushResult:
    from ._exporter import FlushResult  # loaded with the first flush or finished run, not at import

    return FlushResult({}, timed_out=timed_out)


def _exporter_module() -> Any:
    from . import _exporter

    return _exporter


def __getattr__(name: str) -> Any:
    # Settings, the model classes and the flush results load their modules (attrs, the exporter) when first
    # asked for.
    if name in ("FlushResult", "SinkFlushResult"):
        return getattr(_exporter_module(), name)
    if name == "Settings":
        from ._config import Settings

        return Settings
    if name in ("Run", "Step", "Call"):
        from . import _model

        return getattr(_model, name)
    raise AttributeError(f"module 'agentmeter' has no attribute {name!r}")
