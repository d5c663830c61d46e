-- agentmeter Snowpipe setup, part 3 of 4: the typed objects agent_runs, run_steps, api_calls and run_scores.
--
-- Views over AGENTMETER_RAW, one row per record_id. Firehose and Snowpipe deliver at least once, so a
-- record may sit in the raw table twice. QUALIFY ROW_NUMBER() keeps one copy (the newest schema, then
-- the latest end), whenever the duplicate arrives and without any task, stream or extra credits.
-- Columns follow agentmeter.contract.TABLES (rendered by `agentmeter sql`): timestamps are TIMESTAMP_TZ
-- in UTC, durations FLOAT milliseconds, tokens NUMBER (null when unknown), JSON fields VARIANT.
-- docs/snowflake.md explains when to materialize them instead (dynamic tables or MERGE).

USE ROLE {{role}};
USE SCHEMA {{database}}.{{schema}};

CREATE OR REPLACE VIEW {{database}}.{{schema}}.AGENT_RUNS
  COMMENT = 'agentmeter: one row per run (de-duplicated by record_id)'
AS
SELECT
{{columns:agent_runs}}
FROM {{database}}.{{schema}}.AGENTMETER_RAW
WHERE record:record_type::VARCHAR = 'agent_run'
QUALIFY ROW_NUMBER() OVER (
  PARTITION BY record:record_id::VARCHAR
  ORDER BY record:schema_version::NUMBER DESC NULLS LAST, record:ended_at::VARCHAR DESC NULLS LAST
) = 1;

CREATE OR REPLACE VIEW {{database}}.{{schema}}.RUN_STEPS
  COMMENT = 'agentmeter: one row per step (de-duplicated by record_id)'
AS
SELECT
{{columns:run_steps}}
FROM {{database}}.{{schema}}.AGENTMETER_RAW
WHERE record:record_type::VARCHAR = 'run_step'
QUALIFY ROW_NUMBER() OVER (
  PARTITION BY record:record_id::VARCHAR
  ORDER BY record:schema_version::NUMBER DESC NULLS LAST, record:ended_at::VARCHAR DESC NULLS LAST
) = 1;

CREATE OR REPLACE VIEW {{database}}.{{schema}}.API_CALLS
  COMMENT = 'agentmeter: one row per API call (de-duplicated by record_id)'
AS
SELECT
{{columns:api_calls}}
FROM {{database}}.{{schema}}.AGENTMETER_RAW
WHERE record:record_type::VARCHAR = 'api_call'
QUALIFY ROW_NUMBER() OVER (
  PARTITION BY record:record_id::VARCHAR
  ORDER BY record:schema_version::NUMBER DESC NULLS LAST, record:ended_at::VARCHAR DESC NULLS LAST
) = 1;

-- Scores (agentmeter.score): one row per score_id (run, name and source), the latest scored_at wins
-- (then the latest event_id), so a score given again, from any process, replaces the earlier one.
CREATE OR REPLACE VIEW {{database}}.{{schema}}.RUN_SCORES
  COMMENT = 'agentmeter: the latest score per run, name and source (de-duplicated by record_id)'
AS
SELECT
{{columns:run_scores}}
FROM {{database}}.{{schema}}.AGENTMETER_RAW
WHERE record:record_type::VARCHAR = 'run_score'
QUALIFY ROW_NUMBER() OVER (
  PARTITION BY record:record_id::VARCHAR
  ORDER BY record:scored_at::VARCHAR DESC NULLS LAST, record:event_id::VARCHAR DESC NULLS LAST
) = 1;
