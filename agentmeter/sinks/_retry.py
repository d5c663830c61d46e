"""The per-write retries of the network sinks (Firehose, MongoDB): what is left to send, and the policy.

A sink's single attempt raises :class:`Retry` with the batch positions still undelivered; :func:`retrying`
tries again (only those) while the error is worth it, waiting with full-jitter exponential backoff.
"""

from __future__ import annotations

from collections.abc import Callable

import tenacity

__all__ = ["Retry", "retrying"]


class Retry(Exception):
    """Batch positions not delivered yet, why, and whether trying again now cannot help (``final``)."""

    def __init__(self, pending: list[int], reason: str, final: bool = False) -> None:
        super().__init__(reason)
        self.pending = pending
        self.reason = reason
        self.final = final


def _worth_retrying(exc: BaseException) -> bool:
    return isinstance(exc, Retry) and not exc.final


def retrying(max_attempts: int, backoff_initial: float, backoff_max: float,
             sleep: Callable[[float], None]) -> tenacity.Retrying:
    """At most ``max_attempts`` tries (the first included) while a try raises a non-final :class:`Retry`;
    between tries ``sleep`` a random time up to ``backoff_initial * 2 ** (try - 1)``, at most
    ``backoff_max``. The last :class:`Retry` (or any other exception) is re-raised."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max_attempts),
        wait=tenacity.wait_random_exponential(multiplier=backoff_initial, max=backoff_max),
        retry=tenacity.retry_if_exception(_worth_retrying),
        sleep=sleep,
        reraise=True,
    )
