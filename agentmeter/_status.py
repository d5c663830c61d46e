"""Statuses, step kinds, and how an exception leaving user code is classified.

Kept apart from the model so the tracking code can use them without loading attrs at ``import agentmeter``.
"""

from __future__ import annotations

import sys
from typing import Final

__all__ = ["CANCELLED", "ERROR", "RUNNING", "STATUSES", "STEP_KINDS", "SUCCESS", "error_fields", "is_cancellation"]

RUNNING: Final = "running"
SUCCESS: Final = "success"
ERROR: Final = "error"
CANCELLED: Final = "cancelled"
STATUSES: Final = (SUCCESS, ERROR, CANCELLED)
STEP_KINDS: Final = ("tool", "llm", "retrieval", "plan", "agent", "other")

_MAX_ERROR_MESSAGE = 2000
#: scrubbed with this much beyond the cut, so a secret the cut would halve is still recognised whole
_SCRUB_MARGIN = 512


#: Exceptions recorded as ``cancelled`` rather than ``error`` (and asyncio's CancelledError).
_BASE_CANCELLATION: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit, GeneratorExit)


def is_cancellation(exc: BaseException) -> bool:
    """True for the exceptions recorded as ``cancelled``: KeyboardInterrupt, SystemExit, GeneratorExit and
    asyncio's ``CancelledError``.

    ``CancelledError`` can only be raised once asyncio is imported, so it is looked up in ``sys.modules``
    rather than imported with agentmeter (asyncio takes ~15 ms to import).
    """
    if isinstance(exc, _BASE_CANCELLATION):
        return True
    aio = sys.modules.get("asyncio")
    return aio is not None and isinstance(exc, aio.CancelledError)


def error_fields(exc: BaseException) -> tuple[str, str, str]:
    """(status, error_type, error_message) for an exception leaving user code; secrets in the message are
    scrubbed (:mod:`agentmeter._scrub`), whatever the capture setting."""
    from ._scrub import scrub  # re: loaded with the first error, not with agentmeter

    status = CANCELLED if is_cancellation(exc) else ERROR
    try:
        message = scrub(str(exc)[:_MAX_ERROR_MESSAGE + _SCRUB_MARGIN])[:_MAX_ERROR_MESSAGE]
    except Exception:
        message = f"<unprintable {type(exc).__name__}>"
    return status, type(exc).__qualname__, message
