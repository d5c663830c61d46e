"""Process-wide state: the current settings and the processor, created lazily.

This module only gets, replaces and resets them. What happens around them (exit, fork, signals, thread
propagation) lives in :mod:`agentmeter._lifecycle`, which subscribes with :func:`on_settings` and
:func:`on_processor`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _guard

if TYPE_CHECKING:
    from ._config import Settings  # attrs: loaded with the settings, not at import
    from .export import Processor

__all__ = ["configure", "current_processor", "enabled", "on_processor", "on_settings", "processor", "replace",
           "restore", "settings", "stop_tracking"]

_lock = threading.RLock()
_settings: Settings | None = None
_processor: Processor | None = None
#: the global ``capture`` setting, mirrored here so the hot path reads one attribute
capture_default = False
_settings_listeners: list[Callable[[Settings], None]] = []
_processor_listeners: list[Callable[[Processor], None]] = []


def on_settings(listener: Callable[[Settings], None]) -> None:
    """Call ``listener(settings)`` whenever settings are installed (the lifecycle's side effects)."""
    _settings_listeners.append(listener)


def on_processor(listener: Callable[[Processor], None]) -> None:
    """Call ``listener(processor)`` whenever a processor is created."""
    _processor_listeners.append(listener)


def _install(s: Settings) -> None:
    global _settings, capture_default
    from . import _capture  # re, dataclasses: loaded with the settings, not at import

    _settings = s
    capture_default = s.capture
    _capture.set_limits(s.capture_max_chars, s.redact)
    for listener in _settings_listeners:
        try:
            listener(s)
        except Exception as exc:
            _guard.internal_error("settings_listener", exc)


def settings() -> Settings:
    """The current settings, read from ``AGENTMETER_*`` variables on first use."""
    s = _settings
    if s is None:
        with _lock:
            if _settings is None:
                try:
                    from ._config import load_settings, warn_problems  # attrs: loaded with the settings

                    fresh, problems = load_settings()  # a bad variable fails only itself, named
                    warn_problems(problems)
                except ValueError as exc:
                    # A bad environment variable must not break the agent: warn and use the defaults.
                    _guard.warn("config.env", "invalid AGENTMETER_* environment variable; using defaults",
                                error=str(exc))
                    from ._config import Settings  # attrs: loaded with the settings, not at import

                    fresh = Settings()
                _install(fresh)
            s = _settings
            assert s is not None
    return s


def enabled() -> bool:
    s = _settings
    return (s if s is not None else settings()).enabled


def stop_tracking() -> None:
    """The process is exiting: spans begun from now on are not recorded (other threads may still be
    running; what they start now could not end before the interpreter stops them). The processor keeps
    its own settings and goes on delivering."""
    global _settings
    s = _settings
    if s is not None and s.enabled:
        import attrs  # loaded with the settings already

        _settings = attrs.evolve(s, enabled=False)


def configure(**kwargs: Any) -> Settings:
    """Replace the settings (see :func:`agentmeter.configure`); the old processor is shut down first."""
    global _processor
    from ._config import settings_from_env  # attrs: loaded with the settings, not at import

    new = settings_from_env(**kwargs)  # raises ValueError before anything changes
    with _lock:
        old = _processor
        _processor = None
        _install(new)
    if old is not None:
        old.shutdown(timeout=new.exit_timeout)
    if new.enabled:
        processor()  # start the lanes now: they replay what an earlier process left in the spool
    return new


def processor() -> Processor:
    """The processor finished runs go to, created with the current settings on first use."""
    global _processor
    p = _processor
    if p is None:
        with _lock:
            if _processor is None:
                from .export import make_processor  # the exporter loads with the first run, not at import

                created = make_processor(settings())
                _processor = created
                for listener in _processor_listeners:
                    try:
                        listener(created)
                    except Exception as exc:
                        _guard.internal_error("processor_listener", exc)
                from .pricing import load_library_if_alone  # genai-prices: only once a processor is needed

                load_library_if_alone()  # here, on the caller's thread: never on the exporter's (import races)
            p = _processor
            assert p is not None
    return p


def current_processor() -> Processor | None:
    """The processor if one was created, else None (nothing was tracked yet)."""
    return _processor


def replace(settings_obj: Settings | None = None, *, forget_settings: bool = False) -> Processor | None:
    """Take the processor out (returned, not shut down) and optionally install new settings, or forget
    them (read from the environment again on next use)."""
    global _processor, _settings
    with _lock:
        old, _processor = _processor, None
        if settings_obj is not None:
            _install(settings_obj)
        elif forget_settings:
            _settings = None
    return old


def restore(processor_obj: Processor) -> None:
    """Put back a processor taken by :func:`replace` (``agentmeter.testing`` does, after a capture)."""
    global _processor
    with _lock:
        _processor = processor_obj


def after_fork_in_child() -> Processor | None:
    """In a forked child: a fresh lock and no processor; returns the parent's (to be abandoned)."""
    global _lock, _processor
    _lock = threading.RLock()
    old, _processor = _processor, None
    return old
