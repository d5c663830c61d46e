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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from .._record import FinishedRun
from ..contract import Pricer

__all__ = ["Document", "RunDocument", "Sink", "WriteResult"]

Document = Mapping[str, Any]


class RunDocument(Mapping[str, Any]):
    """A run's document not built yet, handed to a sink that writes rows straight from the frozen run
    (``Sink.writes_runs``): ``run``, ``pricer``, ``max_chars`` and ``sampled`` are what
    :func:`agentmeter.contract.run_document` would be given. Reading it as a mapping builds the document
    (once, shared with every other lane); its ``run_id`` is read without building it."""

    __slots__ = ("max_chars", "pricer", "run", "sampled")

    def __init__(self, run: FinishedRun, pricer: Pricer | None, max_chars: int, sampled: bool) -> None:
        self.run = run
        self.pricer = pricer
        self.max_chars = max_chars
        self.sampled = sampled

    @abc.abstractmethod
    def document(self) -> dict[str, Any]:
        """The document itself (built at the first call)."""

    def __getitem__(self, key: str) -> Any:
        if key == "run_id":
            return self.run.run_id
        return self.document()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.document())

    def __len__(self) -> int:
        return len(self.document())


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
    #: True when :meth:`write` takes :class:`RunDocument` items and may store them without building their
    #: documents (the local store writes its rows straight from the frozen run); scores come as documents
    writes_runs: bool = False
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
