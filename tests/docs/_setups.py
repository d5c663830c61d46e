"""What a documented Python block needs around it to run offline: the names the page leaves to the reader
(``my_search_api``, ``client``, ``build_graph``...) and loopback stand-ins for the services it calls.

A block asks for one with ``<!-- docs-test: run setup=NAME -->`` above it. Each setup is a prologue run
before the block and an epilogue run after it (which checks what the page says happened), in the block's
own interpreter."""

from __future__ import annotations

#: the stub server for OpenAI- and Anthropic-shaped APIs, and the environment variables clients read
_STUB = """
import os
from agentmeter.stubs import StubServer
_stub = StubServer(seed=0).__enter__()
os.environ["OPENAI_BASE_URL"] = _stub.openai_base_url
os.environ["OPENAI_API_KEY"] = "sk-stub"
os.environ["ANTHROPIC_BASE_URL"] = _stub.anthropic_base_url
os.environ["ANTHROPIC_API_KEY"] = "sk-ant-stub"
"""

#: the run the block made reached the local store the page names
_STORED = """
import sqlite3
from pathlib import Path
assert agentmeter.flush(timeout=30).ok
_db = Path.home() / ".agentmeter" / "agentmeter.db"
with sqlite3.connect(_db) as _conn:
    _runs = _conn.execute("select count(*) from agent_runs").fetchone()[0]
assert _runs >= 1, f"no run in {_db}"
"""

_SERVED = """
assert _stub.requests, "the block made no request to the stub server"
"""

SETUPS: dict[str, tuple[str, str]] = {
    # README's Usage: the search API and the LLM are the reader's own
    "readme-usage": ("""
from types import SimpleNamespace
def my_search_api(query):
    return [f"{query} result {i}" for i in range(3)]
def my_llm(texts):
    return SimpleNamespace(text=" ".join(texts)[:40], prompt_tokens=120, completion_tokens=30)
""", _STORED),
    # a client library of the reader's own (track_call around it)
    "my-client": ("""
import agentmeter
from types import SimpleNamespace
class _Client:
    def generate(self, prompt):
        return SimpleNamespace(prompt_tokens=12, completion_tokens=5, status=200)
my_client, prompt = _Client(), "hello"
""", _STORED),
    "openai-client": (_STUB + """
import openai
client = openai.OpenAI()
""", ""),
    "anthropic-client": (_STUB + """
import anthropic
client = anthropic.Anthropic()
""", ""),
    "openai-stub": (_STUB, _SERVED),
    # the OpenAI Agents SDK exports traces to api.openai.com by default: only agentmeter's processor stays
    "openai-agents": (_STUB + """
import agents
agents.set_trace_processors([])
""", _SERVED + """
import agentmeter
assert agentmeter.flush(timeout=30).ok
"""),
    # the LangGraph page leaves the tool and the graph to the reader
    "langgraph": (_STUB + """
from langchain_core.tools import tool
from langgraph.graph import MessagesState, StateGraph, START
@tool
def get_weather(city: str) -> str:
    \"\"\"The weather in a city.\"\"\"
    return f"sunny in {city}"
def build_graph(model, tools):
    from langgraph.prebuilt import tools_condition
    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_node("tools", tools)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    from langgraph.checkpoint.memory import MemorySaver
    return graph.compile(checkpointer=MemorySaver())
""", _SERVED),
    # a MongoDB collection to query (mongomock: the stand-in the dashboard's query tests use)
    "mongo-collection": ("""
import mongomock
coll = mongomock.MongoClient().agentmeter.agent_metadata
""", ""),
}
