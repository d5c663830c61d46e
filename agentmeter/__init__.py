"""agentmeter: agent metrics with honest numbers.

Put ``@track_run`` / ``@track_step`` / ``@track_call`` on your agent's functions (or use them as context
managers). Every run becomes one document - the run, its steps and its API calls, with latency, status,
errors, tokens and cost - exported in the background to the local SQLite store by default, or to MongoDB
and Kinesis Firehose. agentmeter never raises into your code and never makes your code wait on I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _context, _guard, _spans, _state
from ._context import current_call, current_run, current_step
from ._context import wrap as wrap_context
from ._lifecycle import install_signal_handlers  # importing _lifecycle installs the exit and fork hooks
from ._scores import score
from ._tracking import track_call, track_run, track_step
from ._version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from typing_extensions import TypedDict, Unpack

    from ._config import Settings  # attrs: loaded when Settings is asked for
    from ._model import Call, Run, Step
    from .export import FlushResult, SinkFlushResult, SinkStats, Stats
    from .sinks import Sink

    class ConfigureOptions(TypedDict, total=False):
        """The keywords of :func:`configure` (each a field of :class:`Settings`)."""

        enabled: bool
        sinks: Sequence[Sink] | None
        capture: bool
        capture_max_chars: int
        redact: Callable[[Any], Any] | None
        batch_size: int
        flush_interval: float
        max_queue_runs: int
        max_queue_bytes: int
        max_attempts: int
        retry_initial: float
        retry_max: float
        exit_timeout: float
        write_timeout: float
        handle_sigterm: bool
        propagate_threads: bool
        sync_export: bool
        prices: Mapping[str, Any]
        spool_dir: str | None
        spool_max_bytes: int
        spool_full_policy: str
        sample_rate: float
        always_keep_errors: bool
        slow_run_ms: float | None
        version: str | None

__all__ = [
    "Call",
    "FlushResult",
    "Run",
    "Settings",
    "SinkFlushResult",
    "SinkStats",
    "Stats",
    "Step",
    "__version__",
    "configure",
    "current_call",
    "current_run",
    "current_step",
    "flush",
    "install_signal_handlers",
    "score",
    "shutdown",
    "stats",
    "track_call",
    "track_run",
    "track_step",
    "wrap_context",
]

def configure(**settings: Unpack[ConfigureOptions]) -> Settings:
    """Configure agentmeter; every keyword is a field of :class:`Settings`, the rest come from
    ``AGENTMETER_*`` environment variables and defaults.

    ``configure(sinks=[SQLiteSink("runs.db"), MongoDBSink(uri=...)])``. Raises ``ValueError`` naming the
    setting when a value is invalid; nothing changes then. Runs already queued are flushed to the previous
    sinks first. Also loads the price table (genai-prices, when installed) on this thread, so the exporter
    never has to import it while your threads run (see :mod:`agentmeter.pricing`).
    """
    new = _state.configure(**settings)
    if new.enabled:
        from .pricing import load_library  # genai-prices: loaded by configure(), not by import

        load_library()
    return new


def flush(timeout: float | None = 10.0) -> FlushResult:
    """Deliver every finished run to every sink, waiting at most ``timeout`` seconds.

    Returns per sink what was delivered, spooled (kept on disk for later), dropped, failed, and what is
    still pending. Streams dropped without being closed are recorded first. Never raises.
    """
    _spans.settle()
    return _with_processor("flush", _state.current_processor, timeout)


def shutdown(timeout: float | None = 10.0) -> FlushResult:
    """Flush within ``timeout``, spool what is left, and stop the background workers. Never raises.

    Tracking after shutdown starts a fresh processor.
    """
    _spans.settle()
    return _with_processor("shutdown", _state.replace, timeout)


def _with_processor(method: str, take: Callable[[], Any], timeout: float | None) -> FlushResult:
    try:
        processor = take()
        if processor is None:
            return _empty_result()
        result: FlushResult = getattr(processor, method)(timeout)
        return result
    except Exception as exc:
        _guard.internal_error(method, exc)
        return _empty_result(timed_out=True)


def stats() -> Stats:
    """Counters: runs finished, exported, dropped, failed, spooled, per sink; internal errors; warnings.

    The same shape before and after the first run (every configured sink is listed). Never raises.
    """
    import attrs  # attrs: loaded with the first stats(), not at import

    from .export import SinkStats, Stats  # the exporter: with the first stats(), not at import

    try:
        processor = _state.current_processor()
        if processor is not None:
            base = processor.stats()
        else:
            s = _state.settings()
            names = [sink.name for sink in s.sinks] if s.sinks is not None else ["sqlite"]
            base = Stats(sinks={name: SinkStats() for name in names})
    except Exception as exc:
        _guard.internal_error("stats", exc)
        base = Stats()
    return attrs.evolve(base, internal_errors=_guard.counters["internal_errors"],
                        warnings=_guard.counters["warnings"],
                        unpriced_price_table_not_loaded=_guard.counters["pricing.library_not_loaded"],
                        thread_propagation=_context.thread_propagation_enabled())


def _empty_result(timed_out: bool = False) -> FlushResult:
    from .export import FlushResult  # loaded with the first flush or finished run, not at import

    return FlushResult({}, timed_out=timed_out)


def __getattr__(name: str) -> Any:
    # Settings, the model classes and the results load their modules (attrs, the exporter) when first
    # asked for.
    if name in ("FlushResult", "SinkFlushResult", "SinkStats", "Stats"):
        from . import export  # the exporter: loaded when these names are asked for

        return getattr(export, name)
    if name == "Settings":
        from ._config import Settings  # attrs: loaded when Settings is asked for

        return Settings
    if name in ("Run", "Step", "Call"):
        from . import _model  # attrs: loaded when the handle types are asked for

        return getattr(_model, name)
    raise AttributeError(f"module 'agentmeter' has no attribute {name!r}")
