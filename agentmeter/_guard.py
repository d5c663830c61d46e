"""The one guard for internal errors and run-time bad input.

Every place where agentmeter code runs on behalf of the user's code goes through here:

* :func:`internal_error` logs an SDK failure (rate-limited, with structlog), counts it, and returns, so it
  never reaches user code. Under agentmeter's own test suite (``AGENTMETER_RAISE_INTERNAL=1``) it re-raises
  instead, so SDK bugs fail tests.
* :func:`warn` reports bad input at run time (a negative token count, an unserializable argument): logged,
  counted and rate-limited, never raised.

Every log line is scrubbed of secrets (:mod:`agentmeter._scrub`: the message and every field) and goes to
stderr (or wherever the application configured structlog to write), never to stdout.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from typing import Any, TextIO, cast

__all__ = ["counters", "internal_error", "raise_internal", "warn"]

_logger: Any = None


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written (a test's capture, a redirect), never stdout."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _log() -> Any:
    """agentmeter's structlog logger: it writes to stderr (structlog's default logger prints to stdout, which
    belongs to the application) through the processors structlog is configured with, so
    ``structlog.testing.capture_logs()`` and an application's own renderer still see agentmeter's lines.
    Made with the first log line: structlog (with rich) takes ~50 ms to import."""
    global _logger
    if _logger is None:
        import structlog  # ~50 ms with rich: loaded with the first log line

        # the configured processors (an application's renderer, capture_logs()), but always onto stderr
        _logger = structlog.wrap_logger(structlog.PrintLogger(cast(TextIO, _Stderr())), logger_name="agentmeter")
    return _logger


def _scrubbed(message: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from ._scrub import scrub, scrub_fields  # loaded with the first log line

    return scrub(message), scrub_fields(fields)


def _emit(level: str, message: str, fields: dict[str, Any]) -> None:
    """Log one scrubbed line at ``level``. Never raises."""
    try:
        message, fields = _scrubbed(message, fields)
        getattr(_log(), level)(message, **fields)
    except Exception:  # processors made for another logger (stdlib's): one plain line on stderr instead
        try:
            detail = " ".join(f"{k}={v!r}" for k, v in fields.items())
            sys.stderr.write(f"agentmeter {level}: {message} {detail}\n")
        except Exception:
            pass  # a closed stream at exit: the counters are kept


#: Seconds between two log lines for the same key; the counters still see every occurrence.
LOG_INTERVAL_S = 60.0

#: reentrant: a signal handler that logs may interrupt this thread while it holds the lock
_lock = threading.RLock()
_last_logged: dict[str, float] = {}
counters: Counter[str] = Counter()


def raise_internal() -> bool:
    """True when internal errors must propagate (agentmeter's own test suite sets this)."""
    return os.environ.get("AGENTMETER_RAISE_INTERNAL", "") == "1"


def _should_log(key: str) -> bool:
    now = time.monotonic()
    with _lock:
        last = _last_logged.get(key)
        if last is not None and now - last < LOG_INTERVAL_S:
            return False
        _last_logged[key] = now
        return True


def internal_error(where: str, exc: BaseException) -> None:
    """Record an internal failure at ``where``. Never raises, except under the SDK's own tests."""
    counters["internal_errors"] += 1
    counters[f"internal_errors.{where}"] += 1
    if raise_internal():
        raise exc
    try:
        if _should_log(f"error:{where}:{type(exc).__name__}"):
            _emit("error", "agentmeter internal error; your code is unaffected",
                  {"where": where, "error_type": type(exc).__name__, "error": str(exc)[:500],
                   "count": counters[f"internal_errors.{where}"]})
    except Exception:
        pass  # logging itself failed (closed stream at exit): the count above is kept


def warn(key: str, message: str, **fields: Any) -> None:
    """Report bad input found at run time: counted, logged at most once a minute per key. Never raises."""
    counters["warnings"] += 1
    counters[f"warnings.{key}"] += 1
    try:
        if _should_log(f"warn:{key}"):
            _emit("warning", message, {"key": key, "count": counters[f"warnings.{key}"], **fields})
    except Exception:
        pass  # see internal_error


def after_fork() -> None:
    """In a forked child: a parent thread may have held the lock at fork time; nobody would release it."""
    global _lock
    _lock = threading.RLock()


def reset_rate_limit() -> None:
    """Forget when each key was last logged (tests use this to see every first log line)."""
    with _lock:
        _last_logged.clear()
