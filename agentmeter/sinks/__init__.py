"""Sinks: where finished runs go. Sink libraries (pymongo, boto3) are imported only when their sink is used;
a sink whose library is not installed refuses to be built (:class:`agentmeter._extras.MissingExtra`, a
``ValueError`` naming the extra to install).

* :class:`SQLiteSink` - the embedded local store (the default);
* :class:`MemorySink` - in memory, for tests;
* :class:`MongoDBSink` - one document per run in ``agent_metadata`` (``agentmeter[mongodb]``);
* :class:`FirehoseSink` - Kinesis Firehose -> S3 -> Snowpipe (``agentmeter[firehose]``);
* :class:`OTLPSink` - OTLP/HTTP spans in the GenAI conventions, to any OpenTelemetry back end (``agentmeter[otel]``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._base import Document, Sink, WriteResult
from .memory import MemorySink
from .sqlite import SQLiteSink

if TYPE_CHECKING:
    from .firehose import FirehoseSink
    from .mongodb import MongoDBSink
    from .otlp import OTLPSink

__all__ = ["Document", "FirehoseSink", "MemorySink", "MongoDBSink", "OTLPSink", "SQLiteSink", "Sink", "WriteResult",
           "sinks_from_names"]

_LAZY = {"MongoDBSink": ".mongodb", "FirehoseSink": ".firehose", "OTLPSink": ".otlp"}
#: names accepted by ``AGENTMETER_SINKS`` -> (module, class); each class has ``from_env()``
_BY_NAME = {
    "sqlite": (".sqlite", "SQLiteSink"),
    "memory": (".memory", "MemorySink"),
    "mongodb": (".mongodb", "MongoDBSink"),
    "firehose": (".firehose", "FirehoseSink"),
    "otlp": (".otlp", "OTLPSink"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sinks_from_names(names: Iterable[str]) -> list[Sink]:
    """Build sinks from names (``AGENTMETER_SINKS=sqlite,mongodb``), each configured from its env vars."""
    out: list[Sink] = []
    for name in names:
        if name not in _BY_NAME:
            raise ValueError(f"AGENTMETER_SINKS: unknown sink {name!r}; accepted: {', '.join(_BY_NAME)}")
        module, cls = _BY_NAME[name]
        sink_cls = getattr(importlib.import_module(module, __name__), cls)
        factory = getattr(sink_cls, "from_env", sink_cls)
        out.append(factory())
    return out
