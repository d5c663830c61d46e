"""Span trees of agent frameworks turned into agentmeter runs, steps and calls.

The framework integrations (OpenTelemetry, OpenAI Agents, LangChain) all see the same thing: spans that
start and end, each with a parent, grouped in traces. They translate each span into a :class:`Node` with a
**role** and hand it to a :class:`Forest`, which keeps one :class:`Tree` per trace until the trace is
complete (every span it saw start has ended, or the framework says the trace ended), then builds the
frozen records (:mod:`agentmeter._record`) and submits them to the processor, never blocking. A trace
whose spans stop arriving is exported as it is after ``trace_timeout`` seconds, its unfinished spans
recorded as unfinished.

Roles: ``run`` (an agent or workflow), ``step``, ``call`` (an inference), ``other`` (not GenAI: not
recorded, its recorded descendants attach to its nearest recorded ancestor). The outermost recorded node
of a trace is a run; nested ``run`` nodes are steps of kind ``agent``. Only **leaf** inference nodes are
calls: an inference node with an inference (or an agentmeter call) below it is a step of kind ``llm``, so
a request recorded twice (a framework span around a client span) is counted once. Usage reported on
agent or workflow nodes is never read: tokens and cost come from the calls only.

Times are epoch nanoseconds, which the records take as both their wall time (``start_us``) and their
monotonic time (``start_ns``), so every duration is exactly the span's. Ids are derived from the trace and
span ids (UUIDv7 from the start time), so the same trace always gives the same run, step and call ids.

Decorated code running inside a framework span (``@track_step`` in a tool) joins the tree: an integration
registers a finder with :func:`agentmeter._spans.add_outer_context` that asks :meth:`Forest.outer` for
the run and step of the framework span current in that context; those records are merged in at export.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from .. import _guard, _spans, _state
from .._capture import Snapshot, jsonable
from .._context import Ref, run_var
from .._model import Run, Step, clean_label
from .._record import FinishedCall, FinishedRun, FinishedStep, freeze_call, freeze_step
from .._status import CANCELLED, ERROR, RUNNING, SUCCESS
from .._threads import start_thread

__all__ = ["CALL", "OTHER", "RUN", "STEP", "Forest", "Node", "derived_id"]

RUN, STEP, CALL, OTHER = "run", "step", "call", "other"
_EMPTY = Snapshot({}, False, 0)
_forests: weakref.WeakSet[Forest] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for forest in list(_forests):
        forest._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass
class Node:
    """One span, as the integration read it. Times in epoch nanoseconds; ``end_ns`` None while open."""

    key: Hashable
    parent: Hashable | None
    role: str
    name: str
    start_ns: int
    end_ns: int | None = None
    kind: str = "other"  # step kind (for a step, or an agent/inference node that becomes one)
    status: str = RUNNING
    error_type: str | None = None
    error_message: str | None = None
    agent: str | None = None
    provider: str = "unknown"
    operation: str = "chat"
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    first_token_ns: int | None = None
    http_status: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def run_id_of(source: str, tree: Tree, root: Node) -> str:
    """The run id of a run root: the root's own id for an agent or workflow; for a run made around another
    outermost span (a bare chat or tool span), a distinct id, since that span is recorded inside the run."""
    if root.role == RUN:
        return derived_id(root.start_ns, source, tree.key, root.key)
    return derived_id(root.start_ns, source, tree.key, root.key, "run")


def derived_id(start_ns: int, *parts: object) -> str:
    """A UUIDv7 whose time is ``start_ns`` and whose random bits hash ``parts``: stable for one span."""
    ms, sub = divmod(max(start_ns, 0), 1_000_000)
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    tail = "%016x" % ((int.from_bytes(digest, "big") >> 2) | 0x8000000000000000)
    return f"{ms >> 16 & 0xFFFFFFFF:08x}-{ms & 0xFFFF:04x}-7{sub * 4096 // 1_000_000:03x}-{tail[:4]}-{tail[4:]}"


class Tree:
    """The spans of one trace seen so far (``nodes``), how many are open, and decorated records joining."""

    __slots__ = ("inherited", "key", "live", "nodes", "open", "parent_run_id", "placeholders", "touched")

    def __init__(self, key: Hashable, parent: Ref | None) -> None:
        self.key = key
        self.nodes: dict[Hashable, Node] = {}
        self.open = 0
        self.parent_run_id = parent.run_id if parent is not None else None
        # a framework run started inside a tracked run inherits its session, user and version, as a nested
        # track_run does
        run = parent.handle if parent is not None else None
        self.inherited = (run.session_id, run.user_id, run.version) if run is not None else (None, None, None)
        self.live: dict[Hashable, Run] = {}  # run root key -> the handle decorated steps and calls join
        self.placeholders: dict[Hashable, Step] = {}
        self.touched = time.monotonic()


class Forest:
    """The open traces of one integration. Thread-safe; no method ever raises into the caller.

    ``source`` names the integration (``metadata.source`` of its runs and part of every derived id);
    ``trace_timeout`` is how long a trace may go without a span starting or ending before it is exported
    as it is; at most ``max_traces`` traces are kept open and ``max_spans`` spans per trace (beyond that,
    spans are dropped and counted as ``<source>.dropped_spans``).
    """

    def __init__(self, source: str, *, trace_timeout: float = 300.0, max_traces: int = 10_000,
                 max_spans: int = 10_000, complete_when_idle: bool = True,
                 on_export: Callable[[Tree], None] | None = None) -> None:
        if not trace_timeout > 0:
            raise ValueError(f"trace_timeout must be a positive number of seconds, got {trace_timeout!r}")
        self.source = source
        self.trace_timeout = float(trace_timeout)
        self.max_traces = max_traces
        self.max_spans = max_spans
        self.complete_when_idle = complete_when_idle
        self.on_export = on_export  # the integration forgets what it kept for the tree's open spans
        self._lock = threading.Lock()
        self._trees: dict[Hashable, Tree] = {}
        self._done: OrderedDict[Hashable, None] = OrderedDict()  # traces exported lately: late spans dropped
        self._wake = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._closed = False
        _forests.add(self)
        _spans.load_model()

    def _after_fork_in_child(self) -> None:
        # A parent thread may have held the lock at fork time, and the parent's open traces stay the
        # parent's (as its open runs do): the child starts empty, with a fresh lock and no sweeper thread.
        self._lock = threading.Lock()
        self._trees = {}
        self._sweeper = None

    # -- spans arriving -------------------------------------------------------------------------------
    def start(self, tree_key: Hashable, node: Node) -> None:
        """A span started (``node.end_ns`` None). Never raises."""
        try:
            self._start(tree_key, node)
        except Exception as exc:
            _guard.internal_error(f"{self.source}.start", exc)

    def end(self, tree_key: Hashable, node: Node) -> None:
        """A span ended: ``node`` is its final form (a span whose start was not seen is ignored). Exports the
        trace when it is complete. Never raises."""
        try:
            tree = self._end(tree_key, node)
            if tree is not None:
                self._export(tree, timed_out=False)
        except Exception as exc:
            _guard.internal_error(f"{self.source}.end", exc)

    def finish(self, tree_key: Hashable) -> None:
        """The framework says the trace ended: export it now (spans still open recorded as unfinished)."""
        try:
            with self._lock:
                tree = self._pop(tree_key)
            if tree is not None:
                self._export(tree, timed_out=False)
        except Exception as exc:
            _guard.internal_error(f"{self.source}.finish", exc)

    def _start(self, tree_key: Hashable, node: Node) -> None:
        with self._lock:
            if self._closed or tree_key in self._done:
                return
            tree = self._trees.get(tree_key)
            if tree is None:
                if not _state.enabled():
                    return
                if len(self._trees) >= self.max_traces:
                    _guard.warn(f"{self.source}.dropped_spans", "too many open traces; span dropped",
                                max_traces=self.max_traces)
                    return
                tree = self._trees[tree_key] = Tree(tree_key, run_var.get())
                self._ensure_sweeper()
            if len(tree.nodes) >= self.max_spans:
                _guard.warn(f"{self.source}.dropped_spans", "too many spans in one trace; span dropped",
                            max_spans=self.max_spans)
                return
            tree.nodes[node.key] = node
            tree.open += 1
            tree.touched = time.monotonic()

    def _end(self, tree_key: Hashable, node: Node) -> Tree | None:
        with self._lock:
            tree = self._trees.get(tree_key)
            if tree is None:
                if tree_key in self._done:
                    _guard.warn(f"{self.source}.late_span", "a span ended after its trace was exported; dropped",
                                span=node.name)
                return None  # its start was dropped, or agentmeter is disabled
            previous = tree.nodes.get(node.key)
            if previous is None:
                return None
            if previous.end_ns is None:
                tree.open -= 1
            tree.nodes[node.key] = node
            tree.touched = time.monotonic()
            if tree.open <= 0 and self.complete_when_idle:
                return self._pop(tree_key)
            return None

    def _pop(self, tree_key: Hashable) -> Tree | None:
        tree = self._trees.pop(tree_key, None)
        if tree is not None:
            self._done[tree_key] = None
            while len(self._done) > 4096:
                self._done.popitem(last=False)
        return tree

    # -- decorated code inside a framework span --------------------------------------------------------
    def outer(self, tree_key: Hashable, node_key: Hashable | None) -> tuple[Run, Step | None] | None:
        """The run (and parent step) that a step or call opened inside span ``node_key`` joins, or None."""
        with self._lock:
            tree = self._trees.get(tree_key)
            if tree is None:
                return None
            chain = _ancestors(tree, node_key)
            recorded = [n for n in chain if n.role != OTHER]
            if not recorded:
                return None
            root, nearest = recorded[-1], recorded[0]
            live = tree.live.get(root.key)
            if live is None:
                run_id = run_id_of(self.source, tree, root)
                live = Run(run_id, root.name, root.agent, time.time_ns() // 1000, time.perf_counter_ns(),
                           parent_run_id=tree.parent_run_id)
                live.ref = Ref(live, run_id, run_id)  # what agentmeter's ContextVars hold while it is current
                tree.live[root.key] = live
            if nearest is root and root.role == RUN:
                return live, None
            placeholder = tree.placeholders.get(nearest.key)
            if placeholder is None:
                step_id = derived_id(nearest.start_ns, self.source, tree.key, nearest.key)
                placeholder = Step(step_id, live.run_id, None, nearest.name, nearest.kind, 0, 0)
                tree.placeholders[nearest.key] = placeholder
            return live, placeholder

    # -- the deadline ---------------------------------------------------------------------------------
    def _ensure_sweeper(self) -> None:
        thread = self._sweeper
        if thread is None or not thread.is_alive():  # first trace, or a forked child (threads do not survive)
            self._sweeper = start_thread(self._sweep_loop, f"agentmeter-{self.source}-traces")

    def _sweep_loop(self) -> None:
        interval = min(max(self.trace_timeout / 4, 0.05), 5.0)
        while not self._wake.wait(interval):
            try:
                self.sweep()
            except Exception as exc:
                _guard.internal_error(f"{self.source}.sweep", exc)

    def sweep(self, now: float | None = None) -> int:
        """Export the traces idle for longer than ``trace_timeout`` (as they are); returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [k for k, t in self._trees.items() if now - t.touched >= self.trace_timeout]
            trees = [t for t in (self._pop(k) for k in stale) if t is not None]
        for tree in trees:
            self._export(tree, timed_out=True)
        return len(trees)

    def flush(self) -> int:
        """Export every trace still open, as it is (at shutdown or on force_flush). Never raises."""
        try:
            with self._lock:
                trees = [t for t in (self._pop(k) for k in list(self._trees)) if t is not None]
            for tree in trees:
                self._export(tree, timed_out=True)
            return len(trees)
        except Exception as exc:
            _guard.internal_error(f"{self.source}.flush", exc)
            return 0

    def close(self) -> None:
        """Export what is open and stop the deadline thread. Idempotent; never raises."""
        self.flush()
        with self._lock:
            self._closed = True
        self._wake.set()

    def idle(self) -> bool:
        """True when no trace is open: a finder can answer None without reading any context (lock-free)."""
        return not self._trees

    def open_traces(self) -> int:
        with self._lock:
            return len(self._trees)

    # -- export ---------------------------------------------------------------------------------------
    def _export(self, tree: Tree, timed_out: bool) -> None:
        if self.on_export is not None and tree.open > 0:
            self.on_export(tree)
        for run in build_runs(tree, self.source, self.trace_timeout if timed_out else None):
            _state.processor().submit(run)


def _ancestors(tree: Tree, key: Hashable | None) -> list[Node]:
    """``key``'s node and its ancestors in the tree, innermost first (a cycle or a missing parent ends it)."""
    out: list[Node] = []
    seen: set[Hashable] = set()
    while key is not None and key not in seen:
        seen.add(key)
        node = tree.nodes.get(key)
        if node is None:
            break
        out.append(node)
        key = node.parent
    return out


def build_runs(tree: Tree, source: str, timed_out_after: float | None = None) -> list[FinishedRun]:
    """The finished runs of a trace: one per outermost recorded node. Pure (reads the tree only)."""
    nodes = tree.nodes
    max_chars = _state.settings().capture_max_chars
    children: dict[Hashable | None, list[Node]] = {}
    for node in nodes.values():
        parent = node.parent if node.parent in nodes else None
        children.setdefault(parent, []).append(node)

    def ident(node: Node) -> str:
        return derived_id(node.start_ns, source, tree.key, node.key)

    live_call_parents = {c.step_id for live in tree.live.values() for c in (*live.calls, *live.open_calls.values())}
    leaf_cache: dict[Hashable, bool] = {}

    def has_calls_below(node: Node) -> bool:
        cached = leaf_cache.get(node.key)
        if cached is None:
            cached = ident(node) in live_call_parents or any(
                c.role == CALL or has_calls_below(c) for c in children.get(node.key, ()))
            leaf_cache[node.key] = cached
        return cached

    runs: list[FinishedRun] = []
    stack: list[Node] = list(children.get(None, ()))
    roots: list[Node] = []
    while stack:  # outermost recorded nodes
        node = stack.pop()
        if node.role == OTHER:
            stack.extend(children.get(node.key, ()))
        else:
            roots.append(node)
    last_end = max((n.end_ns for n in nodes.values() if n.end_ns is not None), default=None)
    for root in sorted(roots, key=lambda n: n.start_ns):
        runs.append(_build_run(root, tree, children, ident, has_calls_below, last_end, timed_out_after,
                               source, max_chars))
    return runs


def _meta(value: dict[str, Any], max_chars: int) -> Snapshot:
    return jsonable(value, max_chars) if value else _EMPTY


def _build_run(root: Node, tree: Tree, children: dict[Hashable | None, list[Node]], ident: Callable[[Node], str],
               has_calls_below: Callable[[Node], bool], last_end: int | None, timed_out_after: float | None,
               source: str, max_chars: int) -> FinishedRun:
    run_id = run_id_of(source, tree, root)
    steps: list[FinishedStep] = []
    open_steps: list[FinishedStep] = []
    calls: list[FinishedCall] = []
    open_calls: list[FinishedCall] = []
    # (node, its step id for what nests below it): the root's children nest at the run's top level
    stack: list[tuple[Node, str | None]] = (
        [(c, None) for c in children.get(root.key, ())] if root.role == RUN else [(root, None)])
    while stack:
        node, parent_step = stack.pop()
        if node.role == OTHER:
            stack.extend((c, parent_step) for c in children.get(node.key, ()))
            continue
        node_id = ident(node)
        if node.role == CALL and not has_calls_below(node):
            call = _call(node, node_id, run_id, parent_step, max_chars)
            (calls if node.end_ns is not None else open_calls).append(call)
            stack.extend((c, parent_step) for c in children.get(node.key, ()))  # a call holds no steps
            continue
        kind = "agent" if node.role == RUN else "llm" if node.role == CALL else node.kind
        step = _step(node, node_id, run_id, parent_step, kind, max_chars)
        (steps if node.end_ns is not None else open_steps).append(step)
        stack.extend((c, node_id) for c in children.get(node.key, ()))
    live = tree.live.get(root.key)
    if live is not None:  # decorated steps and calls made inside the framework's spans
        live.ended = True
        offset = live.start_us * 1000 - live.start_ns  # their monotonic times -> epoch nanoseconds
        steps += [_shift(s, offset) for s in live.steps]
        calls += [_shift(c, offset) for c in live.calls]
        open_steps += [_shift(freeze_step(s, max_chars), offset) for s in list(live.open_steps.values())]
        open_calls += [_shift(freeze_call(c, max_chars), offset) for c in list(live.open_calls.values())]
    metadata = {"source": source, **root.metadata}
    # the framework's conversation and user ids are the run's session and user (first-class fields)
    labels = [_label(metadata.pop(key, None)) for key in ("session_id", "user_id")]
    if live is not None:  # set on the run's handle by code inside the framework's run
        labels = [getattr(live, key) or value for key, value in zip(("session_id", "user_id"), labels, strict=True)]
    labels = [value or inherited for value, inherited in zip(labels, tree.inherited[:2], strict=True)]
    version = (live.version if live is not None and live.version else None) or tree.inherited[2] \
        or _state.settings().version
    status, error_type, error_message = root.status, root.error_type, root.error_message
    end_ns = root.end_ns
    if end_ns is None:  # the root never ended (deadline, or shutdown)
        end_ns = max(last_end or root.start_ns, root.start_ns)
        status, error_type = CANCELLED, "Unfinished"
        error_message = (f"the trace had no activity for {timed_out_after:g} s; exported unfinished"
                         if timed_out_after is not None else "the trace was still open; exported unfinished")
    elif status == RUNNING:
        status = SUCCESS
    return FinishedRun(
        run_id, root.name, root.agent, root.start_ns // 1000, root.start_ns, tree.parent_run_id, root.role != RUN,
        end_ns // 1000, end_ns, status, error_type, error_message, (), _meta(metadata, max_chars), None, None,
        False, tuple(steps), tuple(calls), tuple(open_steps), tuple(open_calls), labels[0], labels[1], version,
    )


def _label(value: Any) -> str | None:
    try:
        return clean_label("session_id", str(value)) if value is not None else None
    except Exception:  # never costs the run
        return None


def _times(node: Node) -> tuple[int, int, int | None, int | None]:
    end = node.end_ns
    return node.start_ns // 1000, node.start_ns, (end // 1000 if end is not None else None), end


def _status(node: Node) -> str:
    if node.end_ns is None:
        return RUNNING
    return SUCCESS if node.status == RUNNING else node.status


def _step(node: Node, step_id: str, run_id: str, parent: str | None, kind: str, max_chars: int) -> FinishedStep:
    return FinishedStep(step_id, run_id, parent, node.name, kind, *_times(node), _status(node), node.error_type,
                        node.error_message, _meta(node.metadata, max_chars), None, None, False)


def _call(node: Node, call_id: str, run_id: str, parent: str | None, max_chars: int) -> FinishedCall:
    start_us, start_ns, end_us, end_ns = _times(node)
    return FinishedCall(
        call_id=call_id, run_id=run_id, step_id=parent, provider=node.provider, operation=node.operation,
        model=node.model, start_us=start_us, start_ns=start_ns, end_us=end_us, end_ns=end_ns,
        status=_status(node), error_type=node.error_type, error_message=node.error_message,
        http_status=node.http_status, retries=0, first_token_ns=node.first_token_ns, request_bytes=None,
        response_bytes=None, input_tokens=node.input_tokens, output_tokens=node.output_tokens,
        cached_input_tokens=node.cached_input_tokens, cache_write_tokens=None,
        reasoning_tokens=node.reasoning_tokens, units=None, metadata=_meta(node.metadata, max_chars),
    )


def _shift(record: Any, offset: int) -> Any:
    """A decorated record with its monotonic times moved onto the trace's epoch-nanosecond clock."""
    changes: dict[str, int | None] = {"start_ns": record.start_ns + offset}
    if record.end_ns is not None:
        changes["end_ns"] = record.end_ns + offset
    if isinstance(record, FinishedCall) and record.first_token_ns is not None:
        changes["first_token_ns"] = record.first_token_ns + offset
    return record._replace(**changes)


def status_of_error(error_type: str | None) -> str:
    """``cancelled`` for a cancellation's exception type name, else ``error``."""
    return CANCELLED if error_type in ("CancelledError", "KeyboardInterrupt", "GeneratorExit") else ERROR
