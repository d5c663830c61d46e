-- agentmeter Snowpipe setup, part 2 of 4: file format, external stage, raw landing table, pipe.
--
-- The Firehose sink writes ONE delivery stream of newline-delimited JSON under s3://{{bucket}}/{{prefix}}
-- (Firehose adds YYYY/MM/DD/HH/). Every line is one record of agent_run, run_step or api_call, with
-- record_type, record_id and schema_version. Snowpipe lands each line whole, as one VARIANT, in
-- AGENTMETER_RAW, and the typed views (part 3) pick the columns and drop duplicates.

USE ROLE {{role}};
USE SCHEMA {{database}}.{{schema}};

CREATE FILE FORMAT IF NOT EXISTS {{database}}.{{schema}}.AGENTMETER_JSON
  TYPE = JSON
  COMPRESSION = AUTO
  STRIP_OUTER_ARRAY = FALSE
  COMMENT = 'agentmeter: newline-delimited JSON records written by Firehose';

CREATE STAGE IF NOT EXISTS {{database}}.{{schema}}.AGENTMETER_STAGE
  URL = 's3://{{bucket}}/{{prefix}}'
  STORAGE_INTEGRATION = {{integration}}
  FILE_FORMAT = (FORMAT_NAME = '{{database}}.{{schema}}.AGENTMETER_JSON')
  COMMENT = 'agentmeter: the S3 prefix the Firehose delivery stream writes';

-- One VARIANT column: a plain JSON COPY (no transform) loads every record kind into one table, and a new
-- contract column never needs an ALTER here. Which file a row came from is in COPY_HISTORY.
CREATE TABLE IF NOT EXISTS {{database}}.{{schema}}.AGENTMETER_RAW (
  record VARIANT
)
COMMENT = 'agentmeter: raw records as delivered (at least once), read the typed views instead';

-- Snowpipe loads each new file once (its load history is kept 14 days per pipe). Firehose itself may
-- deliver a record twice, in two files: the typed views keep one row per record_id.
CREATE PIPE IF NOT EXISTS {{database}}.{{schema}}.AGENTMETER_PIPE
  AUTO_INGEST = TRUE
  COMMENT = 'agentmeter: loads Firehose NDJSON from the stage into AGENTMETER_RAW'
  AS
COPY INTO {{database}}.{{schema}}.AGENTMETER_RAW
  FROM @{{database}}.{{schema}}.AGENTMETER_STAGE
  FILE_FORMAT = (FORMAT_NAME = '{{database}}.{{schema}}.AGENTMETER_JSON');
