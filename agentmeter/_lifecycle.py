"""The process lifecycle, in one place: interpreter exit, fork, SIGTERM, ``multiprocessing`` children, and
the process-wide switches the settings control (thread propagation, the SIGTERM handler).

* **Exit** (``atexit``, and a ``multiprocessing`` child's finalizers, since it skips ``atexit``): runs still
  open are recorded as ``cancelled`` with their partial steps, then the processor delivers within
  ``exit_timeout`` and spools the rest. Python 3.12+ refuses new threads at exit, so nothing at exit
  needs one: the exporter starts with the first run, and each lane's writer thread closes its own sink.
* **Fork**: the child starts with no processor, no open runs and fresh locks; the parent's queued runs and
  open runs stay the parent's, so nothing is sent twice. Work the child does inside a run it inherited
  becomes runs of its own, pointing at the parent's run (``parent_run_id``).
* **multiprocessing workers**: ``Pool.terminate()`` (which ``with Pool() as pool:`` calls) stops its
  workers with SIGTERM, and Python's default for SIGTERM runs no finalizer. In a ``multiprocessing``
  child that tracked something, agentmeter installs its SIGTERM handler (when the child has none of its
  own): queued, in-flight and open runs (these as ``cancelled``) go to the spool at once, for the parent or
  the next process to replay, then the child dies by SIGTERM as it would have. Runs are lost only when a
  worker is killed outright (SIGKILL, a crash) or replaced the handler with its own: the runs it had not
  spooled yet, at most about ``flush_interval`` of them.
* **SIGTERM** (opt-in, :func:`install_signal_handlers` or ``configure(handle_sigterm=True)``): container
  platforms stop a process with SIGTERM and a kill a few seconds later, and Python's default for SIGTERM
  skips ``atexit``. The handler records open runs as ``cancelled``, delivers within ``exit_timeout``, spools
  the rest, then chains to the handler that was installed before (the user's own is called, ``SIG_IGN``
  keeps ignoring, the default terminates the process with the usual status).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import _context, _guard, _spans, _state
from ._threads import start_thread

if TYPE_CHECKING:
    from ._config import Settings
    from .export import Processor

__all__ = ["exit_flush", "install_signal_handlers"]

#: processors abandoned in a forked child: kept referenced so their inherited SQLite handles are never
#: closed (closing them in the child would release locks the child's own connections hold)
_abandoned: list[Any] = []
_previous_handlers: dict[int, Any] = {}
_mp_registered = False


# -- exit ---------------------------------------------------------------------------------------------


#: the GIL switch interval while the exit handler delivers (Python's default is 5 ms)
_EXIT_SWITCH_INTERVAL_S = 0.0005


def exit_flush(reason: str, message: str, timeout: float | None = None, fresh: bool = False) -> None:
    """Record open runs as cancelled, then deliver within the deadline and spool the rest. Never raises.

    ``fresh``: start a new processor for whatever is tracked afterwards (the process may go on after a
    signal). Otherwise the process is ending: spans begun from now on (by threads still running) are not
    recorded, and runs that still end later are spooled by the closed processor.
    """
    try:
        if _state.current_processor() is None and not _spans.has_open_runs():
            return  # nothing was tracked: load nothing (the settings, pricing) just to exit
        if _state.enabled():
            _spans.close_open_runs(reason, message)
            if not fresh:
                _state.stop_tracking()
        p = _state.replace() if fresh else _state.current_processor()
        if p is not None:
            if not fresh:
                # Threads still running (a daemon thread in a loop) hold the GIL for whole switch
                # intervals, and the exporter's threads wait that long each time they take it back
                # after a write: the process is ending, so hand the GIL over more often.
                sys.setswitchinterval(min(sys.getswitchinterval(), _EXIT_SWITCH_INTERVAL_S))
            p.shutdown(timeout=p.settings.exit_timeout if timeout is None else timeout)
    except Exception as exc:
        try:
            _guard.internal_error("exit", exc)
        except Exception:
            pass  # never fail the interpreter's exit


def _at_exit() -> None:
    exit_flush("InterpreterExit", "process exited before the run ended")


#: the longest a multiprocessing worker's SIGTERM handler may take to spool before the worker dies anyway
_WORKER_DEADLINE_S = 10.0
#: how often the watcher thread repeats SIGTERM to the main thread until its handler starts
_NUDGE_S = 0.5

_term_started = threading.Event()  # the main thread's handler began
_wakeup: tuple[int, int] | None = None  # our wakeup pipe (read end, write end) in this process


def _worker_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM in a ``multiprocessing`` child (``Pool.terminate()``): spool everything at once, on this
    thread, then die by SIGTERM. No delivery and no waiting on the exporter's threads: the interrupted code
    may hold a lock they need, and ``terminate()`` waits for its workers."""
    _term_started.set()
    try:
        # a hard deadline: if spooling cannot finish (the interrupted code holds a lock it needs), the
        # worker dies by SIGALRM instead of hanging Pool.terminate(), which waits for it
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_REAL, _WORKER_DEADLINE_S)
        name = signal.Signals(signum).name
        p = _state.current_processor()
        if p is not None:
            p.spool_now()  # from here on, submitted runs are spooled by the submitting thread
        if _state.enabled():
            _spans.close_open_runs(name, f"process received {name} before the run ended")
    except Exception as exc:
        try:
            _guard.internal_error("worker_sigterm", exc)
        except Exception:
            pass
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _watch_wakeup(read_fd: int) -> None:
    """Make sure the SIGTERM handler runs. Python runs handlers on the main thread once it returns to
    Python; a signal that trips just before the main thread blocks in a call it does not leave (a pool
    worker's ``SimpleQueue.get()``, on the lock ``Pool.terminate()`` holds) is never acted on, and the pool
    hangs (seen: 1 pool in 8 under load). Each signal's number also arrives on the wakeup pipe: until the
    handler has started, this thread sends SIGTERM again, to the main thread itself, which interrupts its
    blocking call. If the handler still has not started by the deadline, the process ends (status 143)."""
    main = threading.main_thread().ident
    while True:
        try:
            data = os.read(read_fd, 64)
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            return
        if signal.SIGTERM not in data or main is None:
            continue
        waited = 0.0
        while not _term_started.wait(_NUDGE_S):
            waited += _NUDGE_S
            if waited >= _WORKER_DEADLINE_S:
                os._exit(128 + signal.SIGTERM)
            try:
                signal.pthread_kill(main, signal.SIGTERM)
            except (OSError, ValueError):
                os._exit(128 + signal.SIGTERM)
        return


def _install_wakeup_watcher() -> None:
    """Route signal numbers to a pipe our watcher thread reads, unless the program set its own."""
    global _wakeup
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(read_fd)
        os.close(write_fd)
        return
    if previous != -1 and (_wakeup is None or previous != _wakeup[1]):
        signal.set_wakeup_fd(previous)  # the program's own (an asyncio loop's): leave it in place
        os.close(read_fd)
        os.close(write_fd)
        return
    _wakeup = (read_fd, write_fd)
    start_thread(lambda: _watch_wakeup(read_fd), "agentmeter-sigterm")


def _register_multiprocessing_exit(_processor: Processor) -> None:
    """A multiprocessing child ends with os._exit(), skipping atexit: flush from its finalizers instead;
    and a pool worker is stopped by SIGTERM, which runs no finalizer: flush from a SIGTERM handler."""
    global _mp_registered
    if _mp_registered or "multiprocessing" not in sys.modules:
        return
    try:
        import multiprocessing  # only when the program already imported it
        from multiprocessing import util  # only when the program already imported it

        if multiprocessing.parent_process() is None:
            return  # the main process: atexit runs
        util.Finalize(None, _at_exit, exitpriority=100)
        _mp_registered = True
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None, _worker_sigterm)):
            signal.signal(signal.SIGTERM, _worker_sigterm)
            _install_wakeup_watcher()
    except Exception as exc:
        _guard.internal_error("multiprocessing_exit", exc)


# -- fork ---------------------------------------------------------------------------------------------


def _after_fork_in_child() -> None:
    # The parent's exporter threads do not exist in the child, and the parent still owns its queued runs
    # and its open runs: the child starts with a fresh processor, an empty queue and no open runs, so
    # nothing is sent twice (and the parent's open runs are not recorded as cancelled by the child).
    global _mp_registered, _term_started
    _guard.after_fork()
    old = _state.after_fork_in_child()
    _mp_registered = False
    _term_started = threading.Event()  # the watcher thread is the parent's: registering starts another
    try:
        _spans.forget_open_runs(inherited=True)
        if old is not None:
            _abandoned.append(old)
            old.abandon_after_fork()
    except Exception:
        pass  # never fail a fork


# -- signals ------------------------------------------------------------------------------------------


def _handle(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    exit_flush(name, f"process received {name} before the run ended", fresh=True)
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
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
            _previous_handlers[signum] = current
        except (ValueError, OSError, AttributeError) as exc:
            _guard.warn("signals.install", "could not install the signal handler", signal=signum,
                        error=repr(exc)[:200])
            ok = False
    return ok


# -- what the settings switch -------------------------------------------------------------------------


def _apply(s: Settings) -> None:
    _context.set_thread_propagation(s.enabled and s.propagate_threads)
    if s.enabled and s.handle_sigterm:
        install_signal_handlers()


_state.on_settings(_apply)
_state.on_processor(_register_multiprocessing_exit)
atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
