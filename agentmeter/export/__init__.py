"""The export side: finished runs in, documents out to every sink, in the background.

* :class:`Processor` is the seam the tracking code hands :class:`~agentmeter._record.FinishedRun` records
  to; :class:`BatchProcessor` (the default: one lane per sink, see ``_lane``) and :class:`SyncProcessor`
  (exports on the caller's thread, for tests) implement it;
* ``_delivery``: writes with retries (the one owner of backoff), spooling, replay, poison isolation and
  dead letters; ``_spool``: the durable on-disk spool; ``_documents``: building documents once per run,
  with pricing and sampling; ``_results``: :class:`FlushResult` and :class:`Stats`.
"""

from ._documents import keep_payloads
from ._processor import BatchProcessor, Processor, SyncProcessor, make_processor
from ._results import FlushResult, SinkFlushResult, SinkStats, Stats
from ._spool import Spool

__all__ = ["BatchProcessor", "FlushResult", "Processor", "SinkFlushResult", "SinkStats", "Spool", "Stats",
           "SyncProcessor", "keep_payloads", "make_processor"]
