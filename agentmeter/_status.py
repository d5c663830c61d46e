"""Statuses, step kinds, and how an exception leaving user code is classified.

Kept apart from the model so the tracking code can use them without loading attrs at ``import agentmeter``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CALL_STATUSES", "CANCELLED", "ERROR", "RUNNING", "STATUSES", "STEP_KINDS", "SUCCESS", "error_fields"]

RUNNING: Final = "running"
SUCCESS: Final = "success"
ERROR: Final = "error"
CANCELLED: Final = "cancelled"
STATUSES: Final = (SUCCESS, ERROR, CANCELLED)
CALL_STATUSES: Final = STATUSES
STEP_KINDS: Final = ("tool", "llm", "retrieval", "plan", "agent", "other")

_MAX_ERROR_MESSAGE = 2000
#: scrubbed with this much beyond the cut, so a secret the cut would halve is still recognised whole
_SCRUB_MARGIN = 512


def error_fields(exc: BaseException) -> tuple[str, str, str]:
    """(status, error_type, error_message) for an exception leaving user code; secrets in the message are
    scrubbed (:mod:`agentmeter._scrub`), whatever the capture setting."""
    from ._scrub import scrub  # local: loaded with the first error, not with agentmeter
    from ._tracking import is_cancellation  # local: avoids an import cycle at module load

    status = CANCELLED if is_cancellation(exc) else ERROR
    try:
        message = scrub(str(exc)[:_MAX_ERROR_MESSAGE + _SCRUB_MARGIN])[:_MAX_ERROR_MESSAGE]
    except Exception:
        message = f"<unprintable {type(exc).__name__}>"
    return status, type(exc).__qualname__, message
