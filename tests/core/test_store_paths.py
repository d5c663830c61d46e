"""The local store's two write paths make the same rows.

The fast path writes rows straight from the frozen run (what a fresh run takes); the document path turns
the run document into rows (what a replay from the spool, a document from elsewhere, or a run the fast path
cannot write exactly takes). For any run the three tables must hold the same rows whichever path wrote
them.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentmeter
from agentmeter import _guard, contract, pricing, track_call, track_run, track_step
from agentmeter._config import settings_from_env
from agentmeter._record import FinishedRun
from agentmeter.export._documents import Documents, Entry, EntryDocument, record_text
from agentmeter.export._spool import Spool
from agentmeter.sinks import SQLiteSink
from agentmeter.sinks._base import Document, Sink, WriteResult
from tests import strategies
from tests.strategies import Boom, CallSpec, RunSpec, StepSpec

_PK = {"agent_runs": "run_id", "run_steps": "step_id", "api_calls": "call_id", "run_scores": "score_id"}


class _Recorder(Sink):
    """A sink that keeps the frozen runs it is handed (it opts in to runs, as the local store does)."""

    name = "recorder"
    writes_runs = True

    def __init__(self) -> None:
        self.runs: list[FinishedRun] = []

    def write(self, documents: Sequence[Document]) -> WriteResult:
        for doc in documents:
            assert isinstance(doc, EntryDocument)
            assert isinstance(doc.run, FinishedRun)
            self.runs.append(doc.run)
        return WriteResult()


def _tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY {pk}").fetchall() for t, pk in _PK.items()}
    finally:
        conn.close()


# -- what runs are made of ------------------------------------------------------------------------------

_odd_text = st.lists(st.sampled_from(["a", "é", "\ud800", "\udfff", "\x00", "\u2028", "🙂", " "]), max_size=4).map(
    "".join
)
_text = st.one_of(st.text(max_size=6), _odd_text)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), _text
)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3), max_leaves=6
)
_metadata = st.dictionaries(_text, _values, max_size=3)
_NOTHING = object()
#: a session, user or version: none, or any non-empty text (invalid Unicode too)
_label = st.one_of(st.none(), _text.filter(bool))


@st.composite
def _extras(draw: st.DrawFn) -> dict[str, Any]:
    """Per node: metadata, a captured output, an error message, call details."""
    return {
        "metadata": draw(_metadata),
        "output": draw(st.one_of(st.just(_NOTHING), _values)),
        "error": draw(_text),
        "http_status": draw(st.one_of(st.none(), st.sampled_from([200, 429, 500]))),
        "first_token": draw(st.booleans()),
        "cached": draw(st.one_of(st.none(), st.integers(0, 100))),
        # the rest of a call's usage and sizes (the fast path writes each column from the frozen call)
        "reasoning": draw(st.one_of(st.none(), st.integers(0, 50))),
        "cache_write": draw(st.one_of(st.none(), st.integers(0, 100))),
        "units": draw(st.one_of(st.none(), st.floats(0, 1e6), st.just(math.inf))),
        "retries": draw(st.integers(0, 3)),
        "sizes": draw(st.one_of(st.none(), st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)))),
    }


def _execute(node: StepSpec | CallSpec, extras: st.DataObject) -> None:
    x = extras.draw(_extras())
    try:
        if isinstance(node, CallSpec):
            with track_call("test", node.name, model=node.model) as call:
                call.record_usage(input_tokens=node.input_tokens, output_tokens=node.output_tokens,
                                  cached_input_tokens=x["cached"] if node.input_tokens is not None else None,
                                  reasoning_tokens=x["reasoning"], units=x["units"],
                                  cache_write_tokens=x["cache_write"])
                if x["retries"]:
                    call.record_retry(x["retries"])
                if x["sizes"] is not None:
                    call.record_sizes(*x["sizes"])
                if x["metadata"]:
                    call.set_metadata(x["metadata"])
                if x["http_status"] is not None:
                    call.set_http_status(x["http_status"])
                if x["first_token"]:
                    call.mark_first_token()
                if node.fail:
                    raise Boom(x["error"])
            return
        with track_step(node.name, kind=node.kind) as step:
            if x["metadata"]:
                step.set_metadata(x["metadata"])
            if x["output"] is not _NOTHING:
                step.set_output(x["output"])
            for child in node.children:
                _execute(child, extras)
            if node.fail:
                raise Boom(x["error"])
    except Boom:
        pass


def _run(spec: RunSpec, extras: st.DataObject) -> None:
    x = extras.draw(_extras())
    tags = extras.draw(st.lists(_text, max_size=3))
    try:
        with track_run(spec.name + extras.draw(st.one_of(st.just(""), _odd_text)), agent=spec.agent, tags=tags,
                       metadata=x["metadata"], capture=extras.draw(st.booleans()), session=extras.draw(_label),
                       user=extras.draw(_label), version=extras.draw(_label)) as run:
            if x["output"] is not _NOTHING:
                run.set_output(x["output"])
            for child in spec.children:
                _execute(child, extras)
            if spec.fail:
                raise Boom(x["error"])
    except Boom:
        pass


def _leave_open(run: FinishedRun) -> FinishedRun:
    """The run as if its first step and first call were still open when it ended."""
    steps, calls = run.steps, run.calls
    open_steps = tuple(s._replace(status="running", end_us=None, end_ns=None) for s in steps[:1])
    open_calls = tuple(c._replace(status="running", end_us=None, end_ns=None) for c in calls[:1])
    return run._replace(steps=steps[1:], calls=calls[1:], open_steps=open_steps, open_calls=open_calls)


def _write_both_ways(tmp: Path, runs: list[FinishedRun], **overrides: Any) -> tuple[SQLiteSink, ...]:
    """The runs written by the fast path, by the document path, and replayed from the spool as records."""
    documents = Documents(settings_from_env(**{"prices": strategies.PRICES, **overrides}))
    fast, slow, replayed = (SQLiteSink(tmp / f"{name}.db") for name in ("fast", "document", "replayed"))
    fast.write([EntryDocument(Entry(r), documents) for r in runs])
    slow.write([documents.document(Entry(r)) for r in runs])
    spool = Spool(tmp / "spool", 64 * 2**20)
    spool.store("sqlite", [(r.run_id, record_text(Entry(r), documents)) for r in runs])
    replayed.write(spool.take("sqlite", len(runs), Documents(documents.settings).from_record))
    spool.close()
    want = _tables(slow.path)
    assert sum(len(rows) for rows in want.values()) >= len(runs)
    for got in (_tables(fast.path), _tables(replayed.path)):
        for table, rows in want.items():
            assert got[table] == rows, _diff(table, got[table], rows)
    for sink in (fast, slow, replayed):
        sink.close()
    return fast, slow, replayed


def _diff(table: str, got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> str:
    cols = [c.name for c in contract.TABLES[table] if c.name not in ("record_type", "record_id")]
    for g, w in zip(got, want, strict=False):
        if g != w:
            pairs = zip(cols, g, w, strict=True)
            return f"{table}: " + ", ".join(f"{n}: {a!r} != {b!r}" for n, a, b in pairs if a != b)
    return f"{table}: {len(got)} rows != {len(want)}"


# -- the property ---------------------------------------------------------------------------------------

_M = strategies.PRICED_MODEL
#: price tables the rows are written with: token rates alone (which the fast path prices from its token
#: rates, pricing.TokenRates), and the overrides only the pricer prices (dated, per request, per unit)
_PRICE_TABLES: list[dict[str, Any]] = [
    strategies.PRICES,
    {_M: {"input_per_mtok": 2.5, "output_per_mtok": 10.0, "cached_input_per_mtok": 1.25,
          "cache_write_per_mtok": 3.75}},
    {f"test:{_M}": {"output_per_mtok": 0.3}, _M: {"input_per_mtok": 1.0}},
    {_M: [{"input_per_mtok": 1.0, "output_per_mtok": 2.0},
          {"effective_from": "2026-01-01", "input_per_mtok": 3.0, "output_per_mtok": 4.0}]},
    {_M: {"input_per_mtok": 0.1, "per_request": 0.01}, "test": {"per_unit": 0.5}},
]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(specs=st.lists(strategies.runs, min_size=1, max_size=3), extras=st.data(),
       rate=st.sampled_from([1.0, 0.5, 0.0]), open_first=st.booleans(), prices=st.sampled_from(_PRICE_TABLES))
def test_the_fast_path_and_the_document_path_write_the_same_rows(
    tmp_path_factory: Any, specs: list[RunSpec], extras: st.DataObject, rate: float, open_first: bool,
    prices: dict[str, Any],
) -> None:
    recorder = _Recorder()
    agentmeter.configure(sinks=[recorder], sync_export=True, prices=strategies.PRICES)
    for spec in specs:
        _run(spec, extras)
    runs = [_leave_open(r) if open_first else r for r in recorder.runs]
    assert len(runs) == len(specs)
    fast, slow, _ = _write_both_ways(tmp_path_factory.mktemp("paths"), runs, sample_rate=rate, prices=prices)
    assert fast.fast_runs + fast.document_runs == len(runs)
    assert slow.document_runs == len(runs) and slow.fast_runs == 0
    # only invalid Unicode outside captured values (a run name, an error message, a tag) sends a fresh run
    # the document path; everything else the user gives was made JSON-safe when it was captured
    clean = [r for r in runs if _bindable(r)]
    assert fast.fast_runs >= len(clean)


def _bindable(run: FinishedRun) -> bool:
    texts = [run.name, run.error_message or "", *run.tags, run.session_id or "", run.user_id or "",
             run.version or ""]
    texts += [s.error_message or "" for s in run.steps + run.open_steps]
    texts += [c.error_message or "" for c in run.calls + run.open_calls]
    try:
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- the fallbacks, one by one --------------------------------------------------------------------------


def _one_run(**metadata: Any) -> FinishedRun:
    recorder = _Recorder()
    agentmeter.configure(sinks=[recorder], sync_export=True, prices=strategies.PRICES)
    with track_run("fallback", agent="a", tags=["t"], metadata=metadata), track_step("s"):
        with track_call("test", "op", model=strategies.PRICED_MODEL) as call:
            call.record_usage(input_tokens=10, output_tokens=5)
        with track_call("test", "op2", model=strategies.PRICED_MODEL) as call:
            call.record_usage(input_tokens=10, output_tokens=5)
    (run,) = recorder.runs
    return run


def test_a_plain_run_takes_the_fast_path(tmp_path: Path) -> None:
    fast, _, _ = _write_both_ways(tmp_path, [_one_run(note="x", score=1.5)])
    assert (fast.fast_runs, fast.document_runs) == (1, 0)


def test_finished_calls_and_their_steps_are_written_without_row_dicts(tmp_path: Path, monkeypatch: Any) -> None:
    # the fast path writes a finished call's row, and its step's sums, straight from the frozen records:
    # neither contract.call_row nor contract.step_row is asked (they make the dicts of the document path)
    runs = [_one_run(note="x"), _one_run()]
    documents = Documents(settings_from_env(prices=strategies.PRICES))
    slow = SQLiteSink(tmp_path / "document.db")
    slow.write([documents.document(Entry(r)) for r in runs])

    def refuse(*_args: Any) -> Any:
        raise AssertionError("a row dict was built")

    monkeypatch.setattr(contract, "call_row", refuse)
    monkeypatch.setattr(contract, "step_row", refuse)
    fast = SQLiteSink(tmp_path / "fast.db")
    fast.write([EntryDocument(Entry(r), documents) for r in runs])
    assert (fast.fast_runs, fast.document_runs) == (2, 0)
    want, got = _tables(slow.path), _tables(fast.path)
    assert [len(want[t]) for t in ("agent_runs", "run_steps", "api_calls")] == [2, 2, 4]
    assert got == want
    (step,) = [r for r in got["run_steps"] if r[2] == runs[0].run_id]
    assert step[14:22] == (2, 20, 10, None, None, None, 30, step[21]) and step[21] is not None  # summed, priced


def test_plain_steps_of_every_null_pattern_share_a_batch(tmp_path: Path) -> None:
    # a plain step row carries the key of its null pattern (parent, agent, error fields): rows of several
    # patterns in one batch each go to their own statement and are stored as the document path stores them
    recorder = _Recorder()
    agentmeter.configure(sinks=[recorder], sync_export=True, prices=strategies.PRICES)
    for agent in (None, "a"):
        with track_run("patterns", agent=agent):
            with track_step("outer"), track_step("inner"):
                pass
            try:
                with track_step("fails"):
                    raise Boom("no")
            except Boom:
                pass
            try:
                with track_step("fails silently"):
                    raise Boom("")
            except Boom:
                pass
    fast, _, _ = _write_both_ways(tmp_path, recorder.runs)
    assert (fast.fast_runs, fast.document_runs) == (2, 0)
    steps = _tables(fast.path)["run_steps"]
    assert len(steps) == 8
    assert {(r[3] is None, r[4] is None, r[8] is None, r[9] is None) for r in steps} >= {
        (True, True, True, True), (False, True, True, True), (True, False, False, False), (True, False, True, True)}


def test_a_text_every_row_of_a_statement_holds_is_bound_once(tmp_path: Path) -> None:
    # the agent, the model, a status, "{}"...: bound once per statement and referenced by every row (?1),
    # and the rows are the document path's; a column whose values differ in one row is bound per row
    runs = [_one_run() for _ in range(3)] + [_one_run(note="x")._replace(agent="b")]
    fast, _, _ = _write_both_ways(tmp_path, runs)
    assert (fast.fast_runs, fast.document_runs) == (4, 0)
    names = {t.name: t.names for t in fast._tables}
    shared = {(table, tuple(names[table][i] for i in at)) for table, _, _, at in fast._sql}
    calls = {columns for table, columns in shared if table == "api_calls"}
    assert any({"provider", "model", "status", "price_source"} <= set(c) and "agent" not in c for c in calls)
    assert not any("call_id" in c or "operation" in c for c in calls)  # the ids, the two operations: per row


def test_a_shared_text_with_invalid_unicode_takes_the_document_path(tmp_path: Path) -> None:
    # every row of the statements holds it: bound once, it still fails the batch, and the runs are repaired
    runs = [_one_run()._replace(agent="bad \ud800 agent") for _ in range(2)]
    fast, _, _ = _write_both_ways(tmp_path, runs)
    assert (fast.fast_runs, fast.document_runs) == (0, 2)


def test_invalid_unicode_in_a_name_takes_the_document_path_and_is_repaired(tmp_path: Path) -> None:
    run = _one_run()._replace(name="bad \ud800 name")
    fast, _, _ = _write_both_ways(tmp_path, [run, _one_run()])
    assert (fast.fast_runs, fast.document_runs) == (1, 1)  # the other run of the batch stays fast
    (row,) = [r for r in _tables(fast.path)["agent_runs"] if r[1] == run.run_id]
    assert "bad ? name" in row


def test_token_sums_past_64_bits_take_the_document_path_as_null(tmp_path: Path) -> None:
    run = _one_run()
    big = run._replace(calls=tuple(c._replace(input_tokens=2**62 + 1) for c in run.calls))
    fast, _, _ = _write_both_ways(tmp_path, [big])
    assert fast.document_runs == 1
    conn = sqlite3.connect(fast.path)
    (tokens,) = conn.execute("SELECT input_tokens FROM agent_runs").fetchone()
    conn.close()
    assert tokens is None


def test_a_non_finite_cost_takes_the_document_path(tmp_path: Path) -> None:
    run = _one_run()
    documents = Documents(settings_from_env(prices=strategies.PRICES))
    documents._pricer = lambda row: contract.Price(math.nan, True, "override")
    sink = SQLiteSink(tmp_path / "nan.db")
    sink.write([EntryDocument(Entry(run), documents)])
    assert (sink.fast_runs, sink.document_runs) == (0, 1)
    conn = sqlite3.connect(sink.path)
    costs = conn.execute("SELECT cost_usd FROM api_calls").fetchall()
    conn.close()
    assert costs == [("nan",), ("nan",)]  # as the document path's JSON-safety check writes NaN


def test_a_pricing_failure_takes_the_document_path_unpriced(tmp_path: Path) -> None:
    run = _one_run()
    documents = Documents(settings_from_env(prices=strategies.PRICES))

    def broken(row: Any) -> contract.Price:
        raise RuntimeError("price table broken")

    documents._pricer = broken
    sink = SQLiteSink(tmp_path / "unpriced.db")
    sink.write([EntryDocument(Entry(run), documents)])
    _guard.counters.pop("internal_errors.pricing", None)  # reported by the document path, on purpose here
    assert (sink.fast_runs, sink.document_runs) == (0, 1)
    conn = sqlite3.connect(sink.path)
    assert conn.execute("SELECT priced, cost_usd FROM api_calls").fetchall() == [(0, None), (0, None)]
    conn.close()


def test_a_call_priced_by_its_tokens_alone_is_priced_without_the_pricer(tmp_path: Path) -> None:
    run = _one_run()
    documents = Documents(settings_from_env(prices=strategies.PRICES))
    pricer = documents.pricer()
    asked: list[Any] = []

    def counting(call: Any) -> contract.Price:
        asked.append(call)
        return pricer(call)

    counting.token_rates = pricing.token_rates(pricer)  # type: ignore[attr-defined]
    documents._pricer = counting
    sink = SQLiteSink(tmp_path / "rates.db")
    sink.write([EntryDocument(Entry(run), documents)])
    assert (sink.fast_runs, asked) == (1, [])
    conn = sqlite3.connect(sink.path)
    rows = conn.execute("SELECT cost_usd, priced, price_source FROM api_calls").fetchall()
    conn.close()
    want = pricer({"provider": "test", "model": strategies.PRICED_MODEL, "input_tokens": 10, "output_tokens": 5})
    assert want.priced and want.source == pricing.OVERRIDE
    assert rows == [(want.cost_usd, 1, pricing.OVERRIDE)] * 2


def test_only_an_undated_override_of_token_rates_alone_has_token_rates() -> None:
    m = strategies.PRICED_MODEL
    rates = pricing.token_rates(pricing.make_pricer({
        m: {"input_per_mtok": 2.0, "cached_input_per_mtok": 0.5, "output_per_mtok": 8.0},
        "dated": [{"input_per_mtok": 1.0}, {"effective_from": "2026-01-01", "input_per_mtok": 2.0}],
        "per-request": {"input_per_mtok": 1.0, "per_request": 0.01},
        "per-unit": {"per_unit": 0.5},
    }))
    assert rates is not None
    assert rates["test", m, "chat"] == (2.0, 0.5, 2.0, 8.0)  # cache writes at the input rate
    assert rates["test", "dated", "chat"] == rates["test", "per-request", "chat"] == ()
    assert rates["test", "per-unit", "chat"] == rates["test", "unknown", "chat"] == ()
    assert pricing.token_rates(contract.unpriced) is None


def test_nan_and_invalid_unicode_in_metadata_are_stored_as_today(tmp_path: Path) -> None:
    run = _one_run(x=math.nan, y=math.inf, z="a\udfffb")
    fast, _, _ = _write_both_ways(tmp_path, [run])
    assert fast.fast_runs == 1
    conn = sqlite3.connect(fast.path)
    (metadata,) = conn.execute("SELECT metadata FROM agent_runs").fetchone()
    conn.close()
    assert metadata == '{"x":"NaN","y":"Infinity","z":"a?b"}'


def test_every_table_of_the_contract_has_a_fast_path() -> None:
    # A new table in contract.TABLES turns the fast path off (every run then takes the document path)
    # until contract.run_parts makes its rows and SQLiteSink._fast_rows writes them. The one exception:
    # run_scores, which no run writes; a score reaches the sink as its document (see the test below).
    assert SQLiteSink(Path("unused.db"))._fast, "extend contract.run_parts and SQLiteSink._fast_rows"
    assert set(contract.TABLES) - {"agent_runs", "run_steps", "api_calls"} == {"run_scores"}


def test_a_run_with_session_user_and_version_takes_the_fast_path(tmp_path: Path) -> None:
    recorder = _Recorder()
    agentmeter.configure(sinks=[recorder], sync_export=True, prices=strategies.PRICES, version="1.4.0")
    with track_run("chat", agent="a", session="conv-42", user="user-7"), track_step("s"):
        pass
    (run,) = recorder.runs
    fast, _, _ = _write_both_ways(tmp_path, [run])
    assert (fast.fast_runs, fast.document_runs) == (1, 0)
    conn = sqlite3.connect(fast.path)
    row = conn.execute("SELECT session_id, user_id, version FROM agent_runs").fetchone()
    conn.close()
    assert row == ("conv-42", "user-7", "1.4.0")


def _score(run_id: str, value: float, scored_us: int) -> Any:
    from agentmeter._record import FinishedScore

    return FinishedScore(f"0190-{scored_us}", run_id, "helpfulness", "eval", value, None, "numeric", None, scored_us)


def test_scores_take_the_document_path_beside_fast_runs(tmp_path: Path) -> None:
    # a batch as the exporter builds it for the local store: runs unbuilt, scores as their documents
    from agentmeter.export._documents import build_documents

    run = _one_run()
    documents = Documents(settings_from_env(prices=strategies.PRICES))
    entries = [Entry(_score(run.run_id, 0.9, 2_000_000)), Entry(run), Entry(_score(run.run_id, 0.1, 1_000_000))]

    class _Counts:
        failed = 0

    batch = build_documents(documents, entries, True, _Counts())
    assert [type(d) is EntryDocument for d in batch] == [False, True, False]
    sink = SQLiteSink(tmp_path / "mixed.db")
    sink.write(batch)
    assert (sink.fast_runs, sink.document_runs) == (1, 2)
    scores = _tables(sink.path)["run_scores"]
    sink.close()
    assert len(scores) == 1  # one per (run, name, source), the latest scored_at wins within a batch too
    names = [c.name for c in contract.TABLES["run_scores"] if c.name not in ("record_type", "record_id")]
    row = dict(zip(names, scores[0], strict=True))
    assert (row["run_id"], row["value"], row["scored_at"]) == (run.run_id, 0.9, "1970-01-01T00:00:02.000000Z")


def test_the_json_safety_check_keeps_todays_repairs() -> None:
    from agentmeter.export._documents import json_safe

    run = _one_run()
    doc = contract.run_document(run)
    assert json_safe(doc) is doc  # strict JSON already: the document itself, not a copy
    big = {**doc, "metadata": {"id": 2**60}}  # past 2**53 (orjson's strict range), within 64 bits: kept
    assert json_safe(big) == big
    past = {**doc, "input_tokens": 2**63}
    assert json_safe(past)["input_tokens"] is None
    assert _guard.counters["warnings.document.out_of_range"] == 1
    bad = {**doc, "name": "a\ud800b", "cost_usd": math.inf, "calls": [{**doc["calls"][0], "cost_usd": math.nan}]}
    fixed = json_safe(bad)
    assert (fixed["name"], fixed["cost_usd"], fixed["calls"][0]["cost_usd"]) == ("a?b", "inf", "nan")
    assert _guard.counters["warnings.document.repaired"] == 1


def test_the_exporter_hands_the_local_store_runs_not_documents(tmp_path: Path) -> None:
    from agentmeter.sinks import MemorySink

    store, memory = SQLiteSink(tmp_path / "store.db"), MemorySink()
    agentmeter.configure(sinks=[store], flush_interval=3600)
    with track_run("alone"), track_step("s"):
        pass
    assert agentmeter.flush(timeout=30).ok
    assert (store.fast_runs, store.document_runs) == (1, 0)  # written from the frozen run
    agentmeter.configure(sinks=[store, memory], flush_interval=3600)
    with track_run("shared"), track_step("s"):
        pass
    assert agentmeter.flush(timeout=30).ok
    assert store.fast_runs == 2 and [d["name"] for d in memory.documents] == ["shared"]
    assert {r[3] for r in _tables(store.path)["agent_runs"]} == {"alone", "shared"}
