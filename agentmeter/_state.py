"""Process-wide state: the current settings and the exporter, created lazily and re-created after fork."""

from __future__ import annotations

import atexit
import os
import threading
from typing import TYPE_CHECKING, Any

from . import _guard
from ._config import Settings, settings_from_env

if TYPE_CHECKING:
    from ._exporter import Exporter

_lock = threading.RLock()
_settings: Settings | None = None
_exporter: Exporter | None = None
_pid = os.getpid()


def settings() -> Settings:
    global _settings
    s = _settings
    if s is None:
        with _lock:
            if _settings is None:
                try:
                    _settings = settings_from_env()
                except ValueError as exc:
                    # A bad environment variable must not break the agent: warn and use the defaults.
                    _guard.warn("config.env", "invalid AGENTMETER_* environment variable; using defaults",
                                error=str(exc))
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
    new = settings_from_env(**kwargs)  # raises ValueError before anything changes
    with _lock:
        old_exporter = _exporter
        _exporter = None
        _settings = new
        _apply_side_effects(new)
    if old_exporter is not None:
        old_exporter.shutdown(timeout=new.exit_timeout)
    return new


def _apply_side_effects(s: Settings) -> None:
    from . import _context

    _context.set_thread_propagation(s.enabled and s.propagate_threads)


def exporter() -> Exporter:
    global _exporter
    e = _exporter
    if e is None:
        with _lock:
            if _exporter is None:
                from ._exporter import Exporter

                _exporter = Exporter(settings())
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
    # The parent's exporter threads do not exist in the child, and the parent still owns its queued runs:
    # the child starts with a fresh exporter and an empty queue, so nothing is sent twice.
    global _exporter, _lock, _pid
    _lock = threading.RLock()
    old = _exporter
    _exporter = None
    _pid = os.getpid()
    if old is not None:
        old.abandon_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _at_exit() -> None:
    e = _exporter
    if e is None:
        return
    try:
        from ._tracking import close_open_runs

        close_open_runs()
        e.shutdown(timeout=settings().exit_timeout)
    except Exception as exc:
        try:
            _guard.internal_error("atexit", exc)
        except Exception:
            pass  # never fail the interpreter's exit


atexit.register(_at_exit)


def restore_exporter(exporter_obj: Exporter) -> None:
    """Put back an exporter taken by :func:`reset` (``agentmeter.testing`` does, after a capture)."""
    global _exporter
    with _lock:
        _exporter = exporter_obj
