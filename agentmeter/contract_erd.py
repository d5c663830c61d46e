"""``docs/data_model_erd.md``, generated from :data:`agentmeter.contract.TABLES`:
``python -m agentmeter.contract_erd > docs/data_model_erd.md`` (a test keeps the file in sync)."""

from __future__ import annotations

from .contract import TABLES

__all__ = ["erd_markdown"]


def erd_markdown() -> str:
    """The ERD document: a mermaid diagram and one table of columns per table."""
    mermaid_types = {"text": "string", "integer": "int", "real": "float", "boolean": "bool",
                     "timestamp": "timestamp", "json": "json"}
    fks = {"run_steps": {"run_id", "parent_step_id"}, "api_calls": {"run_id", "step_id"},
           "agent_runs": {"parent_run_id"}, "run_scores": {"run_id"}}
    pks = {"agent_runs": "run_id", "run_steps": "step_id", "api_calls": "call_id", "run_scores": "score_id"}
    lines = [
        "# Data model",
        "",
        "Generated from `agentmeter.contract.TABLES` (`python -m agentmeter.contract_erd > docs/data_model_erd.md`).",
        "",
        "Every run is one **document** (`run_document`): the run's fields and rollups, plus `steps` and `calls`",
        "lists. MongoDB stores it as is (`_id` = `run_id`); `document_records` turns it into rows of three",
        "tables, which the local SQLite store holds and Firehose ships to Snowflake. A score",
        "(`agentmeter.score`, possibly long after the run, from another process) is a document of its own",
        "(`score_document`) and one `run_scores` row (MongoDB: the `run_scores` collection, `_id` =",
        "`score_id`); of the rows with one `score_id` (one per run, name and source) the latest `scored_at`",
        "wins, in every sink. Every record Firehose ships carries `record_type`, `record_id` (its own id, the",
        "de-duplication key) and `schema_version`; the local store's rows leave out the first two (the table",
        "is the type, the primary key the id). Ids are",
        "time-ordered UUIDv7 strings made once when the run, step or call starts, so every write is",
        "idempotent. Timestamps are UTC ISO 8601 with microseconds; durations come from a monotonic clock,",
        "in milliseconds. Unknown token counts are null, never 0; an unpriced call has `cost_usd` null and",
        "`priced` false.",
        "",
        "```mermaid",
        "erDiagram",
        '    agent_runs ||--o{ run_steps : "has"',
        '    agent_runs ||--o{ api_calls : "has"',
        '    run_steps ||--o{ api_calls : "makes"',
        '    run_steps |o--o{ run_steps : "parent of"',
        '    agent_runs |o--o{ agent_runs : "parent of"',
        '    agent_runs ||--o{ run_scores : "scored by"',
    ]
    for table, cols in TABLES.items():
        lines.append(f"    {table} {{")
        for c in cols:
            if c.name in ("record_type", "record_id", "schema_version"):
                continue
            key = "PK" if c.name == pks[table] else None
            if key is None and c.name in fks[table]:
                key = "FK"
            lines.append(f"        {mermaid_types[c.type]} {c.name}{' ' + key if key else ''}")
        lines.append("    }")
    lines += ["```", ""]
    for table, cols in TABLES.items():
        lines += [f"## `{table}`", "", "| column | type | meaning |", "|---|---|---|"]
        lines += [f"| `{c.name}` | {c.type} | {c.description} |" for c in cols]
        lines.append("")
    lines += [
        "## The document",
        "",
        "The run document has every `agent_runs` column except `record_type` and `record_id`, plus:",
        "",
        "| key | meaning |",
        "|---|---|",
        "| `steps` | list of `run_steps` rows (without `record_type`, `record_id`, `schema_version`) |",
        "| `calls` | list of `api_calls` rows (same) |",
        "",
        "A score document is `{\"schema_version\", \"record_type\": \"run_score\", \"run_id\":",
        "\"score:<event_id>\", \"score\": <run_scores row>}`: its `run_id` is only its delivery key (one",
        "per call); the scored run is `score.run_id`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(erd_markdown(), end="")
