"""The sink side of the exporter: ``write(batch) -> WriteResult`` and ``close(timeout) -> bool``.

A sink receives run documents (see :mod:`agentmeter.contract`) on its own background worker thread, never
on the agent's thread. It makes one attempt per ``write`` and does not retry inside it: the exporter owns
retries (``max_attempts`` with backoff) and resends only what comes back in ``WriteResult.failed``. It may
raise: the exporter treats an exception as "the whole batch failed, try again later". Writes must be
idempotent by id: the same document may be delivered more than once (after a retry, or a replay from the
spool) and must be stored once.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = ["Document", "Sink", "WriteResult"]

Document = Mapping[str, Any]


@attrs.frozen
class WriteResult:
    """What became of a batch. Documents not listed were delivered.

    ``failed`` maps batch positions to an error for documents worth retrying (the sink is down, throttled,
    a partial failure). ``rejected`` maps positions the sink can never take (invalid for it); they are
    counted and kept in the spool's dead-letter lane, never retried in a loop.
    """

    failed: Mapping[int, str] = attrs.field(factory=dict)
    rejected: Mapping[int, str] = attrs.field(factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.rejected


class Sink(abc.ABC):
    """Base class of every sink. Subclasses set ``name`` and implement :meth:`write`."""

    #: Unique per configured sink; names the sink in ``flush()``/``stats()`` results and its spool lane.
    name: str = "sink"
    #: runs per write this sink works best with; the exporter uses the larger of this and ``batch_size``
    preferred_batch_size: int | None = None
    #: whether this sink stores scores (``agentmeter.score``): their documents reach only sinks that do
    #: (see :func:`agentmeter.contract.score_document`); a sink of your own opts in by setting it
    accepts_scores: bool = False

    @abc.abstractmethod
    def write(self, documents: Sequence[Document]) -> WriteResult:
        """Store ``documents`` (idempotently, by id). Called on the sink's worker thread only."""

    def close(self, timeout: float | None = None) -> bool:
        """Release connections. Return False if that did not finish within ``timeout``."""
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
