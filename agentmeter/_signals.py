"""The opt-in SIGTERM handler: open runs become ``cancelled``, the exporter flushes, the previous handler runs.

Container platforms stop a process with SIGTERM and a kill a few seconds later; Python's default for
SIGTERM ends the process without running ``atexit``, so without a handler the runs in progress and the
runs still queued would be lost. ``install_signal_handlers()`` (or ``configure(handle_sigterm=True)``)
installs a handler that records every open run as ``cancelled`` with its partial steps, delivers within
``exit_timeout`` and spools the rest, and then chains to whatever handler was installed before: the user's
own handler is called, ``SIG_IGN`` keeps ignoring, and the default handler terminates the process with the
usual SIGTERM status.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from . import _guard

__all__ = ["install_signal_handlers", "uninstall_signal_handlers"]

_previous: dict[int, Any] = {}


def _handle(signum: int, frame: FrameType | None) -> None:
    from . import _state

    name = signal.Signals(signum).name
    _state.exit_flush(name, f"process received {name} before the run ended", fresh=True)
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    # the default action: terminate with the signal's own status, as if we had never been here
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_signal_handlers(signals: tuple[int, ...] = (signal.SIGTERM,)) -> bool:
    """Install agentmeter's handler for ``signals`` (default SIGTERM), chaining to the handlers in place.

    Returns False (with a logged warning) when it cannot: off the main thread, or on a platform without
    the signal. Calling it again is harmless. Never raises.
    """
    if threading.current_thread() is not threading.main_thread():
        _guard.warn("signals.thread", "install_signal_handlers() must be called from the main thread; skipped")
        return False
    ok = True
    for signum in signals:
        try:
            current = signal.getsignal(signum)
            if current is _handle:
                continue
            signal.signal(signum, _handle)
            _previous[signum] = current
        except (ValueError, OSError, AttributeError) as exc:
            _guard.warn("signals.install", "could not install the signal handler", signal=signum,
                        error=repr(exc)[:200])
            ok = False
    return ok


def uninstall_signal_handlers() -> None:
    """Put back the handlers that were in place before :func:`install_signal_handlers`. Never raises."""
    for signum, previous in list(_previous.items()):
        try:
            if signal.getsignal(signum) is _handle:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        except (ValueError, OSError):
            pass
        _previous.pop(signum, None)
