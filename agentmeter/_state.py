"""Process-wide state: the current settings and the exporter, created lazily and re-created after fork.

Exit handling lives here too: at interpreter exit (and at the end of a ``multiprocessing`` child, which
skips ``atexit``) runs still open are recorded as ``cancelled`` with their partial steps, then the exporter
delivers within ``exit_timeout`` and spools the rest.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from . import _guard

if TYPE_CHECKING:
    from ._config import Settings
    from ._exporter import Exporter

_lock = threading.RLock()
_settings: Settings | None = None
_exporter: Exporter | None = None
_pid = os.getpid()
#: the global ``capture`` setting, mirrored here so the hot path reads one attribute
capture_default = False
#: exporters abandoned in a forked child: kept referenced so their inherited SQLite handles are never
#: closed (closing them in the child would release locks the child's own connections hold)
_abandoned: list[Any] = []


def settings() -> Settings:
    global _settings
    s = _settings
    if s is None:
        with _lock:
            if _settings is None:
                try:
                    from ._config import settings_from_env  # attrs: loaded with the settings

                    _settings = settings_from_env()
                except ValueError as exc:
                    # A bad environment variable must not break the agent: warn and use the defaults.
                    _guard.warn("config.env", "invalid AGENTMETER_* environment variable; using defaults",
                                error=str(exc))
                    from ._config import Settings

                    _settings = Settings()
                _apply_side_effects(_settings)
            s = _settings
    return s


def enabled() -> bool:
    s = _settings
    return (s if s is not None else settings()).enabled


def configure(**kwargs: Any) -> Settings:
    """Replace the settings (see :func:`agentmeter.configure`)."""
    global _settings, _exporter
    from ._config import settings_from_env

    new = settings_from_env(**kwargs)  # raises ValueError before anything changes
    with _lock:
        old_exporter = _exporter
        _exporter = None
        _settings = new
        _apply_side_effects(new)
    if old_exporter is not None:
        old_exporter.shutdown(timeout=new.exit_timeout)
    if new.enabled:
        exporter()  # start the lanes now: they replay what an earlier process left in the spool
    return new


def _apply_side_effects(s: Settings) -> None:
    from . import _context

    global capture_default
    capture_default = s.capture

    _context.set_thread_propagation(s.enabled and s.propagate_threads)
    if s.enabled and s.handle_sigterm:
        from ._signals import install_signal_handlers

        install_signal_handlers()


def exporter() -> Exporter:
    global _exporter
    e = _exporter
    if e is None:
        with _lock:
            if _exporter is None:
                from ._exporter import Exporter

                _exporter = Exporter(settings())
                _register_multiprocessing_exit()
                from .pricing import load_library_if_alone

                load_library_if_alone()  # here, on the caller's thread: never on the exporter's
            e = _exporter
    return e


def current_exporter() -> Exporter | None:
    return _exporter


def reset(settings_obj: Settings | None = None) -> Exporter | None:
    """Drop the exporter (returned, not shut down) and optionally install settings. For testing."""
    global _exporter, _settings
    with _lock:
        old, _exporter = _exporter, None
        if settings_obj is not None:
            _settings = settings_obj
            _apply_side_effects(settings_obj)
    return old


def _after_fork_in_child() -> None:
    # The parent's exporter threads do not exist in the child, and the parent still owns its queued runs
    # and its open runs: the child starts with a fresh exporter, an empty queue and no open runs, so
    # nothing is sent twice (and the parent's open runs are not recorded as cancelled by the child).
    global _exporter, _lock, _pid, _mp_registered
    _lock = threading.RLock()
    _guard._lock = threading.Lock()  # may have been held by a parent thread at fork time
    old = _exporter
    _exporter = None
    _pid = os.getpid()
    _mp_registered = False
    try:
        from . import _tracking

        _tracking._open_runs.clear()
    except Exception:
        pass
    if old is not None:
        _abandoned.append(old)
        old.abandon_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_mp_registered = False


def _register_multiprocessing_exit() -> None:
    """A multiprocessing child ends with os._exit(), skipping atexit: flush from its finalizers instead."""
    global _mp_registered
    if _mp_registered or "multiprocessing" not in sys.modules:
        return
    try:
        import multiprocessing
        from multiprocessing import util

        if multiprocessing.parent_process() is None:
            return  # the main process: atexit runs
        util.Finalize(None, _at_exit, exitpriority=100)
        _mp_registered = True
    except Exception as exc:
        _guard.internal_error("multiprocessing_exit", exc)


def exit_flush(reason: str, message: str, timeout: float | None = None, fresh: bool = False) -> None:
    """Record open runs as cancelled, then deliver within the deadline and spool the rest. Never raises.

    ``fresh``: start a new exporter for whatever is tracked afterwards (the process may go on after a
    signal); at interpreter exit the closed exporter stays, and runs ending later are spooled.
    """
    try:
        from ._tracking import close_open_runs

        if enabled():
            close_open_runs(reason, message)
        e = reset() if fresh else _exporter
        if e is not None:
            e.shutdown(timeout=e.settings.exit_timeout if timeout is None else timeout)
    except Exception as exc:
        try:
            _guard.internal_error("exit", exc)
        except Exception:
            pass  # never fail the interpreter's exit


def _at_exit() -> None:
    exit_flush("InterpreterExit", "process exited before the run ended")


atexit.register(_at_exit)


def restore_exporter(exporter_obj: Exporter) -> None:
    """Put back an exporter taken by :func:`reset` (``agentmeter.testing`` does, after a capture)."""
    global _exporter
    with _lock:
        _exporter = exporter_obj
