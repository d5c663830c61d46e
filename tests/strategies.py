"""Hypothesis strategies for the data model: random trees of runs, steps and calls, and how to execute them.

A tree is executed with the real decorators across sync code, generators, async generators, asyncio
``gather``, ``asyncio.to_thread`` and a ``ThreadPoolExecutor``; :func:`expected` says what the store must
then hold.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from collections.abc import Iterator
from typing import Any

import attrs
from hypothesis import strategies as st

from agentmeter import track_call, track_run, track_step

STEP_MODES = ("sync", "generator", "thread", "gather", "async_generator")
PRICED_MODEL = "test-model-priced"
PRICES = {PRICED_MODEL: {"input_per_mtok": 2.0, "output_per_mtok": 8.0}}


class Boom(Exception):
    """The user's own error, raised on purpose by failing nodes."""


@attrs.define
class CallSpec:
    name: str
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    fail: bool


@attrs.define
class StepSpec:
    name: str
    mode: str
    kind: str
    fail: bool
    children: list[StepSpec | CallSpec]


@attrs.define
class RunSpec:
    name: str
    agent: str
    fail: bool
    children: list[StepSpec | CallSpec]


_names = itertools.count()


def _name(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


calls = st.builds(
    lambda model, tin, tout, fail: CallSpec(_name("c"), model, tin, tout, fail),
    st.sampled_from([PRICED_MODEL, "unknown-model", None]),
    st.one_of(st.none(), st.integers(0, 5000)),
    st.one_of(st.none(), st.integers(0, 5000)),
    st.booleans(),
)


def _step(children: st.SearchStrategy[list[Any]]) -> st.SearchStrategy[StepSpec]:
    return st.builds(
        lambda mode, kind, fail, kids: StepSpec(_name("s"), mode, kind, fail, kids),
        st.sampled_from(STEP_MODES),
        st.sampled_from(["tool", "llm", "retrieval", "plan", "other"]),
        st.booleans(),
        children,
    )


nodes = st.recursive(
    calls,
    lambda inner: _step(st.lists(inner, max_size=3)),
    max_leaves=12,
)

runs = st.builds(
    lambda agent, fail, kids: RunSpec(_name("r"), agent, fail, kids),
    st.sampled_from(["alpha", "beta"]),
    st.booleans(),
    st.lists(nodes, max_size=4),
)


# -- execution ---------------------------------------------------------------------------------------


def _call(spec: CallSpec) -> None:
    try:
        with track_call("test", spec.name, model=spec.model) as call:
            call.record_usage(input_tokens=spec.input_tokens, output_tokens=spec.output_tokens)
            if spec.fail:
                raise Boom(spec.name)
    except Boom:
        pass


def sync_exec(node: StepSpec | CallSpec) -> None:
    if isinstance(node, CallSpec):
        _call(node)
        return
    decorate = track_step(node.name, kind=node.kind)

    if node.mode == "generator":

        @decorate
        def gen() -> Iterator[None]:
            for child in node.children:
                sync_exec(child)
                yield None
            if node.fail:
                raise Boom(node.name)

        body: Any = lambda: list(gen())  # noqa: E731
    elif node.mode == "thread":

        @decorate
        def body() -> None:
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                list(pool.map(sync_exec, node.children))
            if node.fail:
                raise Boom(node.name)
    elif node.mode in ("gather", "async_generator"):

        def body() -> None:
            asyncio.run(async_exec(node))
    else:

        @decorate
        def body() -> None:
            for child in node.children:
                sync_exec(child)
            if node.fail:
                raise Boom(node.name)

    try:
        body()
    except Boom:
        pass


async def async_exec(node: StepSpec | CallSpec) -> None:
    if isinstance(node, CallSpec) or node.mode not in ("gather", "async_generator"):
        await asyncio.to_thread(sync_exec, node)
        return
    decorate = track_step(node.name, kind=node.kind)
    if node.mode == "gather":

        @decorate
        async def body() -> None:
            await asyncio.gather(*(async_exec(c) for c in node.children))
            if node.fail:
                raise Boom(node.name)

        try:
            await body()
        except Boom:
            pass
        return

    @decorate
    async def agen() -> Any:
        for child in node.children:
            await async_exec(child)
            yield None
        if node.fail:
            raise Boom(node.name)

    try:
        async for _ in agen():
            pass
    except Boom:
        pass


def execute(spec: RunSpec) -> None:
    try:
        with track_run(spec.name, agent=spec.agent):
            for child in spec.children:
                sync_exec(child)
            if spec.fail:
                raise Boom(spec.name)
    except Boom:
        pass


# -- what the store must hold --------------------------------------------------------------------------


@attrs.define
class Expected:
    steps: dict[str, tuple[str | None, str]]  # step name -> (parent step name, status)
    calls: dict[str, tuple[str | None, str, int | None, int | None]]  # name -> (step, status, in, out)
    cost_usd: float | None
    unpriced: int


def expected(spec: RunSpec) -> Expected:
    steps: dict[str, tuple[str | None, str]] = {}
    calls: dict[str, tuple[str | None, str, int | None, int | None]] = {}
    costs: list[float] = []
    unpriced = 0

    def walk(node: StepSpec | CallSpec, parent: str | None) -> None:
        nonlocal unpriced
        if isinstance(node, CallSpec):
            calls[node.name] = (parent, "error" if node.fail else "success", node.input_tokens, node.output_tokens)
            if node.model == PRICED_MODEL and (node.input_tokens is not None or node.output_tokens is not None):
                costs.append(((node.input_tokens or 0) * 2.0 + (node.output_tokens or 0) * 8.0) / 1e6)
            else:
                unpriced += 1
            return
        steps[node.name] = (parent, "error" if node.fail else "success")
        for child in node.children:
            walk(child, node.name)

    for child in spec.children:
        walk(child, None)
    cost = sum(costs) if costs or not calls else None
    return Expected(steps, calls, cost, unpriced)
