"""LangChain and LangGraph: a callback handler that records every invocation, without decorators.

::

    import agentmeter.integrations.langchain as am_langchain

    am_langchain.enable()                                   # every chain, graph, model and tool, globally
    graph.invoke(state, config={"callbacks": [am_langchain.CallbackHandler()]})   # or one invocation

What becomes what:

* the outermost chain or graph invocation -> a **run** (its name, e.g. ``LangGraph``; ``session_id``
  from a ``thread_id``, ``session_id`` or ``conversation_id`` in the config's metadata or configurable);
* LangGraph nodes (``metadata.langgraph_node``) -> steps of kind ``other``; tools -> steps of kind
  ``tool``; retrievers -> steps of kind ``retrieval``; the chains in between (sequences, channel writes,
  routers) are not recorded, what they contain attaches to the nearest recorded step;
* chat model and LLM calls -> **calls** with the provider (``ls_provider``), the model the API reported,
  usage from ``usage_metadata`` (input, output, cache-read and reasoning tokens), time to the first
  streamed token, and errors -> ``status``. A streamed call has usage only when the model reports it
  (``ChatOpenAI(stream_usage=True)``); otherwise its tokens are unknown and it is unpriced.

A ``@track_step`` or ``track_call`` inside a tool or a node joins the run, nested under that step. A
request that agentmeter's OpenAI integration also records is counted once (the client's call, under the
chat model's span, which then becomes a step of kind ``llm``). Never raises into the chain; never blocks
it on I/O.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref
from collections.abc import Hashable
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables.config import var_child_runnable_config

from .. import _guard, _spans
from .._model import Run, Step
from .._status import SUCCESS, error_fields
from ._trees import CALL, OTHER, RUN, STEP, Forest, Node
from ._values import as_count as _tokens
from ._values import attr as _get

__all__ = ["CallbackHandler", "disable", "enable", "enabled"]

_SOURCE = "langchain"
_SESSION_KEYS = ("thread_id", "session_id", "conversation_id")
#: LangGraph's control-flow exceptions (an interrupt, a jump to the parent graph): not failures
_CONTROL_FLOW = ("GraphInterrupt", "NodeInterrupt", "ParentCommand", "GraphBubbleUp", "GraphRecursionError")


def _name(serialized: Any, kwargs: dict[str, Any], default: str) -> str:
    name = kwargs.get("name") or _get(serialized, "name")
    if not name:
        ids = _get(serialized, "id")
        name = ids[-1] if isinstance(ids, list) and ids else default
    return str(name)


class CallbackHandler(BaseCallbackHandler):
    """Records LangChain / LangGraph invocations as agentmeter runs. Thread-safe; never raises.

    ``trace_timeout``: seconds without a callback after which an invocation that never ended is exported
    as it is (default 300).
    """

    run_inline = True  # called on the chain's own thread/task: no executor hop, no copied context
    raise_error = False

    def __init__(self, *, trace_timeout: float = 300.0) -> None:
        self.enabled = True
        self.forest = Forest(_SOURCE, trace_timeout=trace_timeout, on_export=self._forget)
        self._lock = threading.Lock()
        self._open: dict[UUID, tuple[Hashable, Node]] = {}  # run id -> (its tree, its node)
        _register(self)

    # -- bookkeeping ----------------------------------------------------------------------------------
    def _start(self, run_id: UUID, parent_run_id: UUID | None, role: str, name: str, kind: str = "other",
               metadata: dict[str, Any] | None = None, **fields: Any) -> None:
        if not self.enabled:
            return
        try:
            with self._lock:
                parent = self._open.get(parent_run_id) if parent_run_id is not None else None
                tree_key: Hashable = parent[0] if parent is not None else run_id
                if parent is None:
                    role = RUN  # the outermost invocation this handler sees
                node = Node(run_id, parent_run_id if parent is not None else None, role, name, time.time_ns(),
                            kind=kind, **fields)
                self._open[run_id] = (tree_key, node)
            if role == RUN:
                _session(node, metadata)
            self.forest.start(tree_key, node)
        except Exception as exc:
            _guard.internal_error("langchain.start", exc)

    def _end(self, run_id: UUID, error: BaseException | None = None, **fields: Any) -> None:
        try:
            with self._lock:
                entry = self._open.pop(run_id, None)
            if entry is None:
                return
            tree_key, node = entry
            final = dataclasses.replace(node, end_ns=time.time_ns(), metadata=dict(node.metadata), **fields)
            if error is not None:
                if type(error).__name__ in _CONTROL_FLOW:
                    final.status = SUCCESS
                    final.metadata["control_flow"] = type(error).__name__
                else:
                    final.status, final.error_type, final.error_message = error_fields(error)
            self.forest.end(tree_key, final)
        except Exception as exc:
            _guard.internal_error("langchain.end", exc)

    def _forget(self, tree: Any) -> None:
        with self._lock:
            for key, node in tree.nodes.items():
                if node.end_ns is None:
                    self._open.pop(key, None)

    def outer(self, parent_run_id: UUID) -> tuple[Run, Step | None] | None:
        with self._lock:
            entry = self._open.get(parent_run_id)
        return self.forest.outer(entry[0], parent_run_id) if entry is not None else None

    # -- chains and graph nodes -----------------------------------------------------------------------
    def on_chain_start(self, serialized: dict[str, Any], inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, tags: list[str] | None = None,
                       metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        name = _name(serialized, kwargs, "chain")
        node = (metadata or {}).get("langgraph_node")
        role = STEP if node is not None and node == name else OTHER
        self._start(run_id, parent_run_id, role, name, "other", metadata)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    # -- tools and retrievers -------------------------------------------------------------------------
    def on_tool_start(self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, tags: list[str] | None = None,
                      metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._start(run_id, parent_run_id, STEP, _name(serialized, kwargs, "tool"), "tool", metadata)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    def on_retriever_start(self, serialized: dict[str, Any], query: str, *, run_id: UUID,
                           parent_run_id: UUID | None = None, tags: list[str] | None = None,
                           metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._start(run_id, parent_run_id, STEP, _name(serialized, kwargs, "retriever"), "retrieval", metadata)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    # -- models ---------------------------------------------------------------------------------------
    def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, *, run_id: UUID,
                            parent_run_id: UUID | None = None, tags: list[str] | None = None,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._model_start(serialized, run_id, parent_run_id, metadata, "chat", kwargs)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                     parent_run_id: UUID | None = None, tags: list[str] | None = None,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._model_start(serialized, run_id, parent_run_id, metadata, "text_completion", kwargs)

    def _model_start(self, serialized: Any, run_id: UUID, parent_run_id: UUID | None,
                     metadata: dict[str, Any] | None, operation: str, kwargs: dict[str, Any]) -> None:
        meta = metadata or {}
        provider = str(meta.get("ls_provider") or "unknown")
        self._start(run_id, parent_run_id, CALL, _name(serialized, kwargs, "model"), "llm", None,
                    provider=provider, operation=operation, model=meta.get("ls_model_name"))

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if not token and not _get(_get(kwargs.get("chunk"), "message"), "tool_call_chunks"):
            return  # the first chunk of a stream carries the role only
        with self._lock:
            entry = self._open.get(run_id)
        if entry is not None and entry[1].first_token_ns is None:
            entry[1].first_token_ns = time.time_ns()

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            fields = _usage(response)
        except Exception as exc:
            _guard.internal_error("langchain.usage", exc)
            fields = {}
        self._end(run_id, **fields)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)


def _session(node: Node, metadata: dict[str, Any] | None) -> None:
    for key in _SESSION_KEYS:
        value = (metadata or {}).get(key)
        if value:
            node.metadata["session_id"] = str(value)
            return


def _usage(response: Any) -> dict[str, Any]:
    """Model, tokens and finish reason of an ``LLMResult`` (chat: the message's ``usage_metadata``)."""
    out: dict[str, Any] = {}
    generations = _get(response, "generations") or []
    first = generations[0][0] if generations and generations[0] else None
    message = _get(first, "message")
    usage = _get(message, "usage_metadata")
    response_meta = _get(message, "response_metadata") or {}
    llm_output = _get(response, "llm_output") or {}
    model = _get(response_meta, "model_name") or _get(llm_output, "model_name")
    if model:
        out["model"] = str(model)
    if usage is not None:
        out["input_tokens"] = _tokens(_get(usage, "input_tokens"))
        out["output_tokens"] = _tokens(_get(usage, "output_tokens"))
        out["cached_input_tokens"] = _tokens(_get(_get(usage, "input_token_details"), "cache_read"))
        out["reasoning_tokens"] = _tokens(_get(_get(usage, "output_token_details"), "reasoning"))
    else:
        token_usage = _get(llm_output, "token_usage") or {}
        out["input_tokens"] = _tokens(_get(token_usage, "prompt_tokens"))
        out["output_tokens"] = _tokens(_get(token_usage, "completion_tokens"))
    return out


# -- decorated code inside a chain, and the global switch ----------------------------------------------

_handlers: weakref.WeakSet[CallbackHandler] = weakref.WeakSet()
_registry_lock = threading.RLock()  # enable() makes a handler, which registers itself


def _outer() -> tuple[Run, Step | None] | None:
    """The run (and step) of the LangChain invocation whose code runs now (LangChain's own context)."""
    if not any(not h.forest.idle() for h in list(_handlers)):
        return None
    config = var_child_runnable_config.get()
    if not config:
        return None
    parent = _get(config.get("callbacks"), "parent_run_id")
    if parent is None:
        return None
    for handler in list(_handlers):
        if handler.enabled:
            found = handler.outer(parent)
            if found is not None:
                return found
    return None


def _register(handler: CallbackHandler) -> None:
    with _registry_lock:
        _handlers.add(handler)
        _spans.add_outer_context(_outer)


_global: CallbackHandler | None = None


def enable(*, trace_timeout: float = 300.0) -> CallbackHandler:
    """Record every LangChain / LangGraph invocation in this process (idempotent; returns the handler)."""
    global _global
    with _registry_lock:
        if _global is None:
            from langchain_core.tracers.context import register_configure_hook  # langchain-core: only when instrumented

            _global = CallbackHandler(trace_timeout=trace_timeout)
            # a default value reaches every thread and task (a ContextVar set here would not)
            register_configure_hook(ContextVar("agentmeter_langchain", default=_global), inheritable=True)
        _global.enabled = True
        return _global


def disable() -> None:
    """Stop the global recording (the hook stays, its handler ignores new invocations). Never raises."""
    if _global is not None:
        _global.enabled = False


def enabled() -> bool:
    return _global is not None and _global.enabled
