"""Integrations that record API calls of popular clients without hand-written bookkeeping.

* :mod:`agentmeter.integrations.openai` - ``instrument()`` the ``openai`` client (``agentmeter[openai]``);
* :mod:`agentmeter.integrations.tavily` - ``instrument()`` the ``tavily-python`` client (``agentmeter[tavily]``);
* :mod:`agentmeter.integrations.opentelemetry` - ``AgentmeterSpanProcessor``: OpenTelemetry GenAI spans -> runs
  (``agentmeter[otel]``);
* :mod:`agentmeter.integrations.openai_agents` - ``instrument()`` the OpenAI Agents SDK;
* :mod:`agentmeter.integrations.langchain` - ``CallbackHandler`` / ``enable()`` for LangChain and LangGraph.

Each integration imports its client library only when the integration module itself is imported;
``import agentmeter`` and ``import agentmeter.integrations`` import neither. Every recorded request is an
ordinary call record (the same as :func:`agentmeter.track_call` makes), nested under the current step; the
framework integrations record whole runs (see ``docs/frameworks.md``).
"""

from __future__ import annotations

__all__: list[str] = []
