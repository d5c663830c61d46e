"""What the processor reports: per-sink flush results and the counters of :func:`agentmeter.stats`."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = ["FlushResult", "SinkFlushResult", "SinkStats", "Stats"]


@attrs.frozen
class SinkFlushResult:
    """What happened to one sink's runs during a flush or shutdown."""

    delivered: int = 0
    spooled: int = 0
    dropped: int = 0
    failed: int = 0
    pending: int = 0  # still queued in memory or waiting in the spool when the call returned


@attrs.frozen
class FlushResult:
    """Per-sink outcome of :func:`agentmeter.flush`; ``ok`` when everything reached every sink."""

    sinks: Mapping[str, SinkFlushResult]
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(
            r.pending == 0 and r.failed == 0 and r.dropped == 0 and r.spooled == 0 for r in self.sinks.values()
        )

    @property
    def delivered(self) -> int:
        return sum(r.delivered for r in self.sinks.values())

    @property
    def spooled(self) -> int:
        return sum(r.spooled for r in self.sinks.values())

    @property
    def dropped(self) -> int:
        return sum(r.dropped for r in self.sinks.values())


@attrs.frozen
class SinkStats(SinkFlushResult):
    """One sink's counters since the processor started (``pending``: queued, in flight or spooled now)."""

    retries: int = 0  #: write attempts after the first, over all batches
    replayed: int = 0  #: runs delivered from the spool (included in ``delivered``)
    queued: int = 0  #: runs waiting in memory now
    degraded: bool = False  #: the sink is failing (or hung) and new batches go to the spool


@attrs.frozen
class Stats:
    """Counters of :func:`agentmeter.stats`; the same shape before and after the first run."""

    runs_finished: int = 0
    runs_exported: int = 0
    runs_dropped: int = 0
    runs_failed: int = 0
    runs_spooled: int = 0
    spool_bytes: int = 0
    spool_dropped: int = 0
    spool_broken: bool = False
    sinks: Mapping[str, SinkStats] = attrs.field(factory=dict)
    internal_errors: int = 0
    warnings: int = 0
    #: calls left unpriced because the price table was not loaded (see :mod:`agentmeter.pricing`)
    unpriced_price_table_not_loaded: int = 0
    thread_propagation: bool = False

    def as_dict(self) -> dict[str, object]:
        """Plain data (``sinks`` as dicts too), for logging or JSON."""
        return attrs.asdict(self, recurse=True)
