"""A company-research agent, instrumented with agentmeter the way you would instrument your own.

Given a company name, the agent

1. plans a few web-search queries               -> a step of kind ``plan``
2. runs one Tavily search per query             -> steps of kind ``tool``, each with a Tavily call
3. extracts the best pages with Tavily          -> a step of kind ``retrieval`` with a Tavily call
4. summarizes the findings with OpenAI          -> a step of kind ``llm`` with an OpenAI call
   (optional: without an OpenAI client it writes a digest of the search snippets instead)

and returns a short :class:`Report`. Everything agentmeter needs is three lines: ``@track_run`` on the entry
point, ``@track_step`` on each step, and ``instrument(client)`` on the API clients, which records every
request as an API call (latency, status, retries, tokens) under the step that made it.

Run it on its own (live APIs when ``TAVILY_API_KEY`` / ``OPENAI_API_KEY`` are set, local stub servers
otherwise)::

    python examples/company_research/agent.py "Acme Corp" Globex

or let ``agentmeter demo`` run it many times and print the report.

This file is self-contained (it imports only agentmeter, tavily-python and openai), so it can be copied
and loaded from anywhere.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from agentmeter import current_run, score, track_run, track_step

__all__ = ["AGENT", "DEFAULT_MODEL", "CompanyResearcher", "Report", "ResearchError", "research_company"]

#: the agent name every run carries (``agent_runs.agent``)
AGENT = "company-research"
#: a small, cheap model that agentmeter's price library knows, so every summary has a cost
DEFAULT_MODEL = "gpt-4o-mini"

_QUERY_TEMPLATES = (
    "{company} company overview business model",
    "{company} latest news",
    "{company} funding revenue and competitors",
    "{company} leadership team",
    "{company} products and customers",
)

_SYSTEM_PROMPT = (
    "You are a research analyst. Write a neutral, factual brief about the company in at most five "
    "sentences, using only the sources given. Mention uncertainty when sources disagree."
)


class ResearchError(RuntimeError):
    """Raised when the agent gathered too little to report on (more than half of its searches failed)."""


@dataclass
class Report:
    """What the agent returns: a short brief and where it came from."""

    company: str
    summary: str
    queries: list[str]
    sources: list[str] = field(default_factory=list)
    failed_queries: list[str] = field(default_factory=list)
    summarized_by: str | None = None

    def to_markdown(self) -> str:
        lines = [f"# {self.company}", "", self.summary, ""]
        if self.sources:
            lines.append("Sources:")
            lines.extend(f"- {url}" for url in self.sources)
        if self.failed_queries:
            lines.append(f"({len(self.failed_queries)} of {len(self.queries)} searches failed)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def _instrument(tavily: Any, openai: Any | None) -> None:
    """Let agentmeter record every request these clients make (instrumenting twice is harmless)."""
    # tavily-python: only when a client is instrumented
    from agentmeter.integrations import tavily as tavily_integration

    tavily_integration.instrument(tavily)
    if openai is not None:
        from agentmeter.integrations import openai as openai_integration  # openai: only when a client is instrumented

        openai_integration.instrument(openai)


class CompanyResearcher:
    """The agent. ``tavily`` is a ``tavily.TavilyClient``; ``openai`` an ``openai.OpenAI`` client or None.

    ``max_queries`` searches are planned per company (1 to 5), ``max_results`` results asked per search,
    and the ``extract_top`` best pages are extracted in full.
    """

    def __init__(
        self,
        tavily: Any,
        openai: Any | None = None,
        *,
        model: str = DEFAULT_MODEL,
        max_queries: int = 3,
        max_results: int = 3,
        extract_top: int = 2,
        instrument: bool = True,
    ) -> None:
        if not 1 <= max_queries <= len(_QUERY_TEMPLATES):
            raise ValueError(f"max_queries must be between 1 and {len(_QUERY_TEMPLATES)}, got {max_queries}")
        self.tavily = tavily
        self.openai = openai
        self.model = model
        self.max_queries = max_queries
        self.max_results = max_results
        self.extract_top = extract_top
        if instrument:
            _instrument(tavily, openai)

    # -- the run ------------------------------------------------------------------------------------

    @track_run("research_company", agent=AGENT, tags=["example"])
    def research(self, company: str, *, session: str | None = None, user: str | None = None) -> Report:
        """Research ``company`` and return a report. Raises :class:`ResearchError` when more than half of
        the searches fail, and lets an OpenAI error through (after the client's own retries); either way
        the run is recorded as failed, with the error. ``session`` and ``user`` (say, a chat's id and who
        asked) are recorded on the run, for the dashboard's Sessions view and ``report --by``."""
        run = current_run()
        if run is not None:
            run.set_metadata(company=company, model=self.model if self.openai is not None else None)
            run.set_session(session)
            run.set_user(user)

        queries = self.plan(company)
        results: list[dict[str, Any]] = []
        failed: list[str] = []
        for query in queries:
            try:
                results.extend(self.search(query))
            except Exception:  # one failed search does not sink the run: the step records the error
                failed.append(query)
        if not results or len(failed) * 2 > len(queries):
            raise ResearchError(f"{len(failed)} of {len(queries)} searches for {company!r} failed: too little to report")

        ranked = sorted(results, key=lambda r: float(r.get("score") or 0.0), reverse=True)
        sources = list(dict.fromkeys(str(r["url"]) for r in ranked if r.get("url")))[: self.extract_top]
        pages: list[dict[str, Any]] = []
        if sources:
            try:
                pages = self.extract(sources)
            except Exception:  # the snippets are enough to write a brief
                pages = []

        if self.openai is not None:
            summary = self.summarize(company, ranked, pages)
            summarized_by = self.model
        else:
            summary = self.digest(company, ranked)
            summarized_by = None
        if run is not None:
            run.set_metadata(sources=len(sources), failed_searches=len(failed))
            # an automatic evaluation: how many of the sources we wanted we could read (a score from 0 to 1)
            score(run, "source_coverage", round(len(sources) / max(1, self.extract_top), 2), source="eval")
        return Report(company, summary, queries, sources, failed, summarized_by)

    # -- the steps ----------------------------------------------------------------------------------

    @track_step("plan_queries", kind="plan")
    def plan(self, company: str) -> list[str]:
        """The search queries for ``company`` (deterministic, so runs are comparable)."""
        name = " ".join(company.split())
        if not name:
            raise ValueError("company name is empty")
        return [template.format(company=name) for template in _QUERY_TEMPLATES[: self.max_queries]]

    @track_step("web_search", kind="tool")
    def search(self, query: str) -> list[dict[str, Any]]:
        """One Tavily search; returns its results (title, url, content, score)."""
        response = self.tavily.search(query, max_results=self.max_results, search_depth="basic", include_usage=True)
        return list(response.get("results") or [])

    @track_step("extract_pages", kind="retrieval")
    def extract(self, urls: list[str]) -> list[dict[str, Any]]:
        """Full text of ``urls`` via Tavily extract; pages that failed are left out."""
        response = self.tavily.extract(urls, include_usage=True)
        return list(response.get("results") or [])

    @track_step("summarize", kind="llm")
    def summarize(self, company: str, results: list[dict[str, Any]], pages: list[dict[str, Any]]) -> str:
        """A short brief written by the OpenAI model from the search results and extracted pages."""
        sources = []
        for r in results[:6]:
            sources.append(f"- {r.get('title', '')} ({r.get('url', '')}): {str(r.get('content', ''))[:500]}")
        for p in pages:
            sources.append(f"- page {p.get('url', '')}: {str(p.get('raw_content', ''))[:1500]}")
        completion = self.openai.chat.completions.create(  # type: ignore[union-attr]
            model=self.model,
            messages=[
                {"role": "system", "content": _SYSTEM_PROMPT},
                {"role": "user", "content": f"Company: {company}\nSources:\n" + "\n".join(sources)},
            ],
            max_tokens=300,
            temperature=0.2,
        )
        return str(completion.choices[0].message.content or "").strip()

    @track_step("digest", kind="other")
    def digest(self, company: str, results: list[dict[str, Any]]) -> str:
        """Without an LLM: the first sentence of the three best search results."""
        sentences = []
        for r in results[:3]:
            text = " ".join(str(r.get("content", "")).split())
            if text:
                sentences.append(text.split(". ")[0].rstrip(".") + ".")
        return " ".join(sentences) or f"No summary available for {company}."


def research_company(company: str, tavily: Any, openai: Any | None = None, **options: Any) -> Report:
    """One-shot helper: ``research_company("Acme", TavilyClient(), OpenAI())``."""
    return CompanyResearcher(tavily, openai, **options).research(company)


def main(argv: list[str] | None = None) -> int:
    """Research the companies named on the command line and print the reports."""
    import argparse  # only when run as a script

    import agentmeter  # only when run as a script
    from agentmeter.demo import open_clients  # only when run as a script

    parser = argparse.ArgumentParser(description="Research companies with Tavily (and OpenAI).")
    parser.add_argument("companies", nargs="*", default=["Acme Corp"], metavar="COMPANY")
    parser.add_argument("--seed", type=int, default=None, help="seed of the offline stub servers")
    parser.add_argument("--offline", action="store_true", help="use the stub servers even with API keys")
    args = parser.parse_args(argv)
    with open_clients(offline=args.offline, seed=args.seed) as clients:
        print(clients.describe())
        agent = CompanyResearcher(clients.tavily, clients.openai)
        for company in args.companies:
            try:
                print(agent.research(company), end="\n\n")
            except Exception as exc:
                print(f"{company}: failed: {type(exc).__name__}: {exc}", end="\n\n")
    agentmeter.flush()
    print("Recorded in the local store: see `agentmeter report` and `agentmeter dashboard`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
