-- agentmeter Snowpipe setup, part 4 of 4: the views the dashboard and your own BI read.
--
-- Days are UTC calendar days of started_at. Percentiles use PERCENTILE_CONT (linear interpolation, the
-- same definition as the Python code of agentmeter). Rates are FLOAT. Token and cost sums ignore unknown
-- (null) values, and cost_usd is null for a group where no call has a known price.

USE ROLE {{role}};
USE SCHEMA {{database}}.{{schema}};

CREATE OR REPLACE VIEW {{database}}.{{schema}}.DAILY_HEALTH
  COMMENT = 'agentmeter: runs and outcomes per UTC day and agent'
AS
SELECT
  TO_DATE(started_at) AS day,
  agent,
  COUNT(*) AS runs,
  COUNT_IF(status = 'success') AS success_runs,
  COUNT_IF(status = 'error') AS error_runs,
  COUNT_IF(status = 'cancelled') AS cancelled_runs,
  COUNT_IF(status = 'success')::FLOAT / COUNT(*) AS success_rate,
  COUNT_IF(status = 'error')::FLOAT / COUNT(*) AS error_rate
FROM {{database}}.{{schema}}.AGENT_RUNS
GROUP BY TO_DATE(started_at), agent;

CREATE OR REPLACE VIEW {{database}}.{{schema}}.DAILY_RUN_LATENCY
  COMMENT = 'agentmeter: run latency percentiles (ms) per UTC day and agent'
AS
SELECT
  TO_DATE(started_at) AS day,
  agent,
  COUNT(duration_ms) AS runs,
  PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
  PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms,
  PERCENTILE_CONT(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms,
  AVG(duration_ms) AS mean_ms,
  MAX(duration_ms) AS max_ms
FROM {{database}}.{{schema}}.AGENT_RUNS
GROUP BY TO_DATE(started_at), agent;

CREATE OR REPLACE VIEW {{database}}.{{schema}}.DAILY_STEP_LATENCY
  COMMENT = 'agentmeter: step latency percentiles (ms) per UTC day, agent and step name'
AS
SELECT
  TO_DATE(started_at) AS day,
  agent,
  name AS step_name,
  kind,
  COUNT(*) AS steps,
  COUNT_IF(status = 'error') AS error_steps,
  PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
  PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms,
  PERCENTILE_CONT(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms
FROM {{database}}.{{schema}}.RUN_STEPS
GROUP BY TO_DATE(started_at), agent, name, kind;

CREATE OR REPLACE VIEW {{database}}.{{schema}}.DAILY_CALL_LATENCY
  COMMENT = 'agentmeter: API call latency percentiles (ms) per UTC day, provider and model'
AS
SELECT
  TO_DATE(started_at) AS day,
  provider,
  model,
  COUNT(*) AS calls,
  COUNT_IF(status = 'error') AS error_calls,
  PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
  PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms,
  PERCENTILE_CONT(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms,
  PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY time_to_first_token_ms) AS p50_ttft_ms
FROM {{database}}.{{schema}}.API_CALLS
GROUP BY TO_DATE(started_at), provider, model;

CREATE OR REPLACE VIEW {{database}}.{{schema}}.DAILY_USAGE
  COMMENT = 'agentmeter: API calls and tokens per UTC day, agent, provider and model'
AS
SELECT
  TO_DATE(started_at) AS day,
  agent,
  provider,
  model,
  COUNT(*) AS calls,
  COUNT_IF(status = 'error') AS error_calls,
  SUM(input_tokens) AS input_tokens,
  SUM(output_tokens) AS output_tokens,
  SUM(cached_input_tokens) AS cached_input_tokens,
  SUM(cache_write_tokens) AS cache_write_tokens,
  SUM(reasoning_tokens) AS reasoning_tokens,
  SUM(total_tokens) AS total_tokens,
  SUM(units) AS units
FROM {{database}}.{{schema}}.API_CALLS
GROUP BY TO_DATE(started_at), agent, provider, model;

CREATE OR REPLACE VIEW {{database}}.{{schema}}.DAILY_COST
  COMMENT = 'agentmeter: API cost (USD) per UTC day, agent, provider and model'
AS
SELECT
  TO_DATE(started_at) AS day,
  agent,
  provider,
  model,
  COUNT(*) AS calls,
  COUNT_IF(priced) AS priced_calls,
  COUNT_IF(NOT priced OR priced IS NULL) AS unpriced_calls,
  SUM(IFF(priced, cost_usd, NULL)) AS cost_usd
FROM {{database}}.{{schema}}.API_CALLS
GROUP BY TO_DATE(started_at), agent, provider, model;

-- What to do next (docs/snowflake.md): the notification_channel column below is the SQS queue ARN that
-- the event notification of the bucket must target, so new files reach the pipe.
USE ROLE {{role}};
DESC PIPE {{database}}.{{schema}}.AGENTMETER_PIPE;
