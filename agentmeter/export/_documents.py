"""Document building on the exporter's side: pricing, sampling and a last JSON-safety check.

The processor wraps each submitted :class:`~agentmeter._record.FinishedRun` in an :class:`Entry` that every
sink's lane shares, so the run document is built once (by whichever lane needs it first) and the frozen
record itself is never changed.

A run spilled to the spool before its document was built (memory pressure, a sink down or hung) is kept as
its frozen record, encoded as a JSON array (:func:`record_text`): a fraction of the cost of building and
encoding its document, so the exporter's threads keep up with a caller in a tight loop. The document is
built when the record is replayed (:meth:`Documents.from_record`), with the pid and host of the process
that tracked the run.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
import zlib
from collections.abc import Mapping
from typing import Any, Protocol

from .. import _guard
from .._capture import Snapshot
from .._config import Settings
from .._json import OPT_PASSTHROUGH_SUBCLASS, OPT_STRICT_INTEGER, dumps_bytes
from .._record import FinishedCall, FinishedRun, FinishedScore, FinishedStep
from .._status import ERROR, SUCCESS
from ..contract import SCORE_KEY_PREFIX, TABLES, Pricer, run_document, score_document
from ..sinks._base import Document, RunDocument

__all__ = ["Documents", "Entry", "EntryDocument", "build_documents", "estimate_bytes", "keep_payloads", "record_text"]


def estimate_bytes(run: FinishedRun | FinishedScore) -> int:
    """A cheap estimate of the memory a queued run (or score) holds, for the queue's byte budget."""
    if isinstance(run, FinishedScore):
        return 600 + len(run.comment or "")
    size = 800 + 600 * (len(run.steps) + len(run.calls))
    for item in (run.inputs, run.output):
        size += getattr(item, "size", 0)
    return size


class Entry:
    """A submitted run (or score) as the lanes share it: the frozen record and, once built, its document
    (or, once spilled, its record's spool text). ``key`` is its document's ``run_id``: the run's id, or a
    score's delivery key ``score:<event_id>``."""

    __slots__ = ("doc", "keep", "key", "run", "size", "text")

    def __init__(self, run: FinishedRun | FinishedScore) -> None:
        self.run = run
        self.key = SCORE_KEY_PREFIX + run.event_id if type(run) is FinishedScore else run.run_id
        self.size = estimate_bytes(run)
        self.doc: dict[str, Any] | None = None
        self.text: str | None = None
        self.keep: bool | None = None  # the sampler's decision, made once per run

    @property
    def is_score(self) -> bool:
        return type(self.run) is FinishedScore


class EntryDocument(RunDocument):
    """An entry's document as a sink that writes rows straight from the frozen run gets it: built only if
    something reads it (the spool keeps the frozen record instead, see :func:`record_text`). Runs only: a
    score reaches every sink as its (small) document."""

    __slots__ = ("documents", "entry")

    def __init__(self, entry: Entry, documents: Documents) -> None:
        if isinstance(entry.run, FinishedScore):  # build_documents hands a score over as its document
            raise TypeError("a score has no run to write rows from")
        super().__init__(entry.run, documents.pricer(), documents.settings.capture_max_chars,
                         documents.keep(entry))
        self.entry = entry
        self.documents = documents

    def document(self) -> dict[str, Any]:
        return self.documents.document(self.entry)


# -- records in the spool ------------------------------------------------------------------------------

#: the first item of a spooled record: the layout below; a reader that does not know it dead-letters it
RECORD_FORMAT = 1
#: the first item of a spooled score's record
SCORE_FORMAT = 2
_PID = os.getpid()
_HOST = socket.gethostname()


def record_text(entry: Entry, documents: Documents | None = None) -> str:
    """The spool text of a run's frozen record (built once per entry, shared by the lanes).

    A record holding an unpaired surrogate (in a name, an error message, a tag: captured values are repaired
    when captured) is kept as its document instead, repaired by the JSON-safety check, when ``documents``
    is given: escaped in JSON, two such surrogates side by side would come back as one other character."""
    text = entry.text
    if text is None:
        pid = os.getpid()  # the process that tracked the run (a forked child has its own)
        layout = SCORE_FORMAT if entry.is_score else RECORD_FORMAT
        value = [layout, pid, _HOST if pid == _PID else socket.gethostname(), entry.run]
        try:
            # the record is named tuples of JSON-safe values (snapshots are tuples too): orjson encodes it
            # in about a quarter of the standard library's time, which is the exporter's hold of the GIL
            # while it spills (the caller's latency under memory pressure); it refuses what is not exactly
            # JSON (an unpaired surrogate, an integer past 64 bits, a non-string key)
            text = dumps_bytes(value, option=_PASSTHROUGH, default=_plain).decode()
        except (TypeError, UnicodeDecodeError):
            # the standard library's encoder, as before: big integers, odd keys, repaired surrogates
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=repr)
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    text = _repaired_text(entry, value, documents)
        entry.text = text
    return text


_PASSTHROUGH = OPT_PASSTHROUGH_SUBCLASS


def _plain(value: Any) -> Any:
    """What orjson is handed for a subclass of a JSON type (named tuples: the record's records) or an
    unknown type: the value as the standard library's encoder writes it (``default=repr`` for the rest)."""
    if isinstance(value, tuple):
        return tuple(value)
    if isinstance(value, str):
        return str.__str__(value)  # its characters, as json writes them (not a str-enum's name)
    if isinstance(value, int):  # an int-enum: its number (bool is no subclass orjson passes here)
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return repr(value)


def _repaired_text(entry: Entry, value: list[Any], documents: Documents | None) -> str:
    if documents is not None:
        try:
            return json.dumps(documents.document(entry), separators=(",", ":"), ensure_ascii=False)
        except Exception as exc:
            report("record_text", exc)
    return json.dumps(value, separators=(",", ":"), default=repr)


def _snap(value: Any) -> Snapshot | None:
    return None if value is None else Snapshot(value[0], bool(value[1]), int(value[2]))


_RUN_SNAPS = tuple(FinishedRun._fields.index(f) for f in ("metadata", "inputs", "output"))
_STEP_SNAPS = tuple(FinishedStep._fields.index(f) for f in ("metadata", "inputs", "output"))
_CALL_SNAPS = (FinishedCall._fields.index("metadata"),)
_RUN_TUPLES = {FinishedRun._fields.index(f): kind for f, kind in (
    ("steps", "step"), ("open_steps", "step"), ("calls", "call"), ("open_calls", "call"))}
_TAGS = FinishedRun._fields.index("tags")


def _fields(values: list[Any], snaps: tuple[int, ...]) -> list[Any]:
    for i in snaps:
        values[i] = _snap(values[i])
    return values


def decode_record(value: list[Any]) -> tuple[FinishedRun | FinishedScore, int, str]:
    """(record, pid, host) of a spooled record. Raises ValueError on a layout this version does not know."""
    if len(value) == 4 and value[0] == SCORE_FORMAT:
        return FinishedScore(*value[3]), int(value[1]), str(value[2])
    if len(value) != 4 or value[0] != RECORD_FORMAT:
        raise ValueError("unknown record format")
    fields = _fields(list(value[3]), _RUN_SNAPS)
    for i, kind in _RUN_TUPLES.items():
        if kind == "step":
            fields[i] = tuple(FinishedStep(*_fields(list(s), _STEP_SNAPS)) for s in fields[i])
        else:
            fields[i] = tuple(FinishedCall(*_fields(list(c), _CALL_SNAPS)) for c in fields[i])
    fields[_TAGS] = tuple(fields[_TAGS])
    return FinishedRun(*fields), int(value[1]), str(value[2])


class Documents:
    """Builds run documents with the configured prices and sampling. Used by the exporter's threads only."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pricer: Pricer | None = None
        self._lock = threading.Lock()

    def pricer(self) -> Pricer:
        if self._pricer is None:
            with self._lock:
                if self._pricer is None:
                    from ..pricing import make_pricer  # genai-prices: loaded with the first price needed

                    self._pricer = make_pricer(self.settings.prices)
        return self._pricer

    def keep(self, entry: Entry) -> bool:
        """The sampler's decision for the entry's run (made and counted once per run)."""
        keep = entry.keep
        if keep is None:
            run = entry.run
            keep = entry.keep = True if isinstance(run, FinishedScore) else keep_payloads(run, self.settings)
            if not keep:
                _guard.counters["sampling.payloads_dropped"] += 1
        return keep

    def document(self, entry: Entry) -> dict[str, Any]:
        """The run's document, built once per entry (sampling applied, JSON-safe). Raises on a bug only."""
        doc = entry.doc
        if doc is None and isinstance(entry.run, FinishedScore):
            doc = entry.doc = json_safe(score_document(entry.run))
        if doc is None:
            run = entry.run
            if isinstance(run, FinishedScore):  # built above: never here
                raise TypeError("a score entry without its document")
            keep = self.keep(entry)
            max_chars = self.settings.capture_max_chars
            try:
                doc = run_document(run, self.pricer(), max_chars, sampled=keep)
            except Exception as exc:  # a pricing failure must not cost the run: export it unpriced
                report("pricing", exc)
                doc = run_document(run, None, max_chars, sampled=keep)
            doc = json_safe(doc)
            entry.doc = doc
        return doc

    def from_record(self, value: list[Any]) -> dict[str, Any]:
        """The document of a record read back from the spool (see :func:`record_text`)."""
        run, pid, host = decode_record(value)
        doc = self.document(Entry(run))
        if type(run) is FinishedScore:
            row = doc["score"]
            if row.get("pid") != pid or row.get("host") != host:
                doc = {**doc, "score": {**row, "pid": pid, "host": host}}
            return doc
        if doc.get("pid") != pid or doc.get("host") != host:
            doc = {**doc, "pid": pid, "host": host}
        return doc


class _Counted(Protocol):
    failed: int


def build_documents(documents: Documents, entries: list[Entry], lazy: bool,
                    counts: _Counted) -> list[Document]:
    """The documents of ``entries`` for one sink (``lazy``: as :class:`EntryDocument`, built only when
    read); a run whose document cannot be built is counted in ``counts.failed``, alone."""
    docs: list[Document] = []
    for entry in entries:
        try:
            lazy_run = lazy and not entry.is_score  # a score is no run: its document, for the document path
            docs.append(EntryDocument(entry, documents) if lazy_run else documents.document(entry))
        except Exception as exc:
            counts.failed += 1
            report("build_document", exc)
    return docs


def report(where: str, exc: BaseException) -> None:
    """internal_error from an exporter thread: under the test suite it re-raises; a worker must survive."""
    try:
        _guard.internal_error(where, exc)
    except Exception:
        pass


# -- sampling -----------------------------------------------------------------------------------------


def keep_payloads(run: FinishedRun, settings: Settings) -> bool:
    """Whether the sampler keeps this run's captured payloads (inputs and outputs).

    Counts, latencies, tokens and cost are exported for every run whatever this says. Failed runs (and runs
    with a failed step or call) are always kept when ``always_keep_errors``; runs at least ``slow_run_ms``
    long are always kept. Otherwise the decision is a hash of the run id, so every sink and every replay
    agrees. Never raises.
    """
    rate = settings.sample_rate
    if rate >= 1.0:
        return True
    if settings.always_keep_errors and (
        run.status != SUCCESS
        or any(s.status == ERROR for s in run.steps)
        or any(c.status == ERROR for c in run.calls)
    ):
        return True
    if settings.slow_run_ms is not None and run.duration_ms >= settings.slow_run_ms:
        return True
    return zlib.crc32(run.run_id.encode("utf-8", "replace")) / 4294967296.0 < rate


# -- JSON safety ----------------------------------------------------------------------------------------


#: 19 digits or more: the only integers that may not fit in 64 bits (and, rarely, digits inside a string)
_LONG_DIGITS = re.compile(r"\d{19,}")
_STRICT_INTEGER = OPT_STRICT_INTEGER  # orjson raises on an integer past 2**53 with it
_INT64 = 2**63


def json_safe(doc: dict[str, Any]) -> dict[str, Any]:
    """The document itself when it is strict JSON in valid UTF-8 whose integers fit in 64 bits (the usual
    case: one strict orjson encoding), else a repaired copy: lone surrogates replaced,
    NaN/infinity as strings, unknown types as repr(), integers no store can hold (a rollup summing huge
    token counts, say) as null with a counted warning ``document.out_of_range``.

    orjson raises on invalid Unicode, integers past 64 bits, non-string keys and unknown types; it writes
    NaN and infinity as null, so those are looked for in the number columns of the contract (captured
    values and metadata have none: :func:`agentmeter._capture.jsonable` writes them as strings)."""
    try:
        if not _non_finite(doc):
            dumps_bytes(doc, option=_STRICT_INTEGER)  # the usual case: no integer past 2**53 at all
            return doc
    except TypeError:
        pass
    # something to look at closely: the standard library's encoder says what (as before orjson)
    try:
        text = json.dumps(doc, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
        if _LONG_DIGITS.search(text) is None:
            return doc
        changed = [0]
        clamped = _clamp(doc, changed)
        if changed[0]:
            _guard.warn("document.out_of_range", "run document had integers past 64 bits; recorded as null",
                        count=changed[0])
        return clamped if isinstance(clamped, dict) else doc
    except (TypeError, ValueError):
        pass
    _guard.warn("document.repaired", "run document had invalid Unicode or non-JSON values; repaired")
    repaired = _repair(doc)
    return repaired if isinstance(repaired, dict) else doc


_REAL = {table: tuple(c.name for c in cols if c.type == "real") for table, cols in TABLES.items()}


def _non_finite(doc: dict[str, Any]) -> bool:
    """Whether a number column of the run, its steps or its calls holds NaN or infinity."""
    for row, table in ((doc, "agent_runs"), *((s, "run_steps") for s in doc.get("steps", ())),
                       *((c, "api_calls") for c in doc.get("calls", ()))):
        for key in _REAL[table]:
            value = row.get(key)
            if type(value) is float and value - value != 0:
                return True
    return False


def _clamp(value: Any, changed: list[int]) -> Any:
    """A copy of ``value`` with integers outside the signed 64-bit range as None (``changed[0]`` counts)."""
    if type(value) is int:
        if -_INT64 <= value < _INT64:
            return value
        changed[0] += 1
        return None
    if isinstance(value, dict):
        return {k: _clamp(v, changed) for k, v in value.items()}
    if isinstance(value, list):
        return [_clamp(v, changed) for v in value]
    return value


def _repair(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {_repair(str(k)): _repair(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_repair(v) for v in value]
    return _repair(repr(value))
