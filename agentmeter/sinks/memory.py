"""An in-memory sink: keeps every document it receives (for tests, notebooks and the ``testing`` module)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..contract import Records, document_records, is_score
from ._base import Document, Sink, WriteResult

__all__ = ["MemorySink"]


class MemorySink(Sink):
    """Stores documents in a dict keyed by ``run_id`` (so a replayed document is stored once), and scores
    by ``score_id`` (the latest ``scored_at`` of a key wins)."""

    accepts_scores = True

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._documents: dict[str, dict[str, Any]] = {}
        self._scores: dict[str, dict[str, Any]] = {}
        self.writes = 0

    def write(self, documents: Sequence[Document]) -> WriteResult:
        with self._lock:
            self.writes += 1
            for doc in documents:
                if is_score(doc):
                    row = dict(doc["score"])
                    old = self._scores.get(row["score_id"])
                    if old is None or (row["scored_at"], row["event_id"]) > (old["scored_at"], old["event_id"]):
                        self._scores[row["score_id"]] = row
                    continue
                self._documents[doc["run_id"]] = dict(doc)
        return WriteResult()

    @property
    def scores(self) -> list[dict[str, Any]]:
        """The latest score of each (run, name, source), as ``run_scores`` rows without ``record_type``,
        ``record_id`` and ``schema_version``, in (run_id, name, source) order."""
        with self._lock:
            return sorted(self._scores.values(), key=lambda r: (r["run_id"], r["name"], r["source"]))

    @property
    def documents(self) -> list[dict[str, Any]]:
        """Documents received, in run-id (time) order."""
        with self._lock:
            return [self._documents[k] for k in sorted(self._documents)]

    def records(self) -> Records:
        """All documents as rows of the three tables."""
        out = Records([], [], [], [])
        for doc in self.documents:
            r = document_records(doc)
            out.agent_runs.extend(r.agent_runs)
            out.run_steps.extend(r.run_steps)
            out.api_calls.extend(r.api_calls)
        for row in self.scores:
            out.run_scores.append({"record_type": "run_score", "record_id": row["score_id"], "schema_version": 1,
                                   **row})
        return out

    def clear(self) -> None:
        with self._lock:
            self._documents.clear()
            self._scores.clear()
