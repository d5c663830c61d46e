"""agentmeter's background threads, started with the process-stopping signals blocked.

The kernel hands a process-directed signal (SIGTERM, SIGINT) to any thread that does not block it. Python
runs its handlers on the main thread only, so when the signal lands on one of our threads while the main
thread is blocked in a call that only a signal to itself would interrupt (a ``multiprocessing`` pool worker
waiting on its queue's lock, which ``Pool.terminate()`` holds), the handler never runs and the process never
stops: the pool hangs. Our threads block those signals, so they always reach a thread that can act on them.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

__all__ = ["start_thread"]

_BLOCKED = frozenset(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGINT", None)) if s)


def start_thread(target: Callable[[], object], name: str) -> threading.Thread:
    """Start a daemon thread running ``target`` with SIGTERM and SIGINT blocked in it.

    The new thread inherits the signal mask of the thread that starts it, so the mask is set around
    ``start()`` (no window in which the new thread could take the signal). Raises what ``start()`` raises
    (``RuntimeError`` at interpreter shutdown on Python 3.12+).
    """
    thread = threading.Thread(target=target, name=name, daemon=True)
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None or not _BLOCKED:  # Windows: no signal masks
        thread.start()
        return thread
    previous = mask(signal.SIG_BLOCK, _BLOCKED)
    try:
        thread.start()
    finally:
        mask(signal.SIG_SETMASK, previous)
    return thread
