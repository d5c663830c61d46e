-- agentmeter Snowpipe setup, part 1 of 4: roles, database, schema, storage integration, grants.
--
-- Run as a user who can create roles, databases and storage integrations (ACCOUNTADMIN, or SECURITYADMIN
-- plus SYSADMIN plus an integration admin). Every statement is idempotent: running the script again
-- changes nothing that already exists.
--
-- Roles (least privilege):
--   * {{role}} owns the stage, raw table, pipe and views. The pipe loads as this role. It can create
--     objects in {{database}}.{{schema}} only, and use one storage integration.
--   * {{reader_role}} is what the dashboard connects with: SELECT on the views, nothing else.

USE ROLE SECURITYADMIN;
CREATE ROLE IF NOT EXISTS {{role}} COMMENT = 'agentmeter: owns the Snowpipe objects and loads agent metrics';
CREATE ROLE IF NOT EXISTS {{reader_role}} COMMENT = 'agentmeter: reads the agent-metrics views (dashboard)';
-- Role hierarchy: SYSADMIN can manage the objects of both roles, and the loader can read what it loads.
GRANT ROLE {{role}} TO ROLE SYSADMIN;
GRANT ROLE {{reader_role}} TO ROLE {{role}};

USE ROLE SYSADMIN;
CREATE DATABASE IF NOT EXISTS {{database}} COMMENT = 'agentmeter agent metrics';
CREATE SCHEMA IF NOT EXISTS {{database}}.{{schema}} COMMENT = 'agentmeter: raw records, typed views, dashboard views';
GRANT USAGE ON DATABASE {{database}} TO ROLE {{role}};
GRANT USAGE, CREATE TABLE, CREATE VIEW, CREATE FILE FORMAT, CREATE STAGE, CREATE PIPE
  ON SCHEMA {{database}}.{{schema}} TO ROLE {{role}};
GRANT USAGE ON DATABASE {{database}} TO ROLE {{reader_role}};
GRANT USAGE ON SCHEMA {{database}}.{{schema}} TO ROLE {{reader_role}};
-- The reader sees the views (also the ones created later), never the raw landing table.
GRANT SELECT ON FUTURE VIEWS IN SCHEMA {{database}}.{{schema}} TO ROLE {{reader_role}};
-- @if warehouse
GRANT USAGE ON WAREHOUSE {{warehouse}} TO ROLE {{reader_role}};
-- @endif

-- @if aws_role_arn
-- The storage integration lets Snowflake read s3://{{bucket}}/{{prefix}} by assuming an IAM role in your
-- AWS account. No AWS keys are stored in Snowflake. After this runs, DESC INTEGRATION (right below) prints STORAGE_AWS_IAM_USER_ARN and STORAGE_AWS_EXTERNAL_ID for the trust policy of that role
-- (docs/snowflake.md, "IAM role and trust").
USE ROLE ACCOUNTADMIN;
CREATE STORAGE INTEGRATION IF NOT EXISTS {{integration}}
  TYPE = EXTERNAL_STAGE
  STORAGE_PROVIDER = 'S3'
  ENABLED = TRUE
  STORAGE_AWS_ROLE_ARN = '{{aws_role_arn}}'
  STORAGE_ALLOWED_LOCATIONS = ('s3://{{bucket}}/{{prefix}}')
  COMMENT = 'agentmeter: read the Firehose output for Snowpipe';
-- @endif
-- @if !aws_role_arn
-- The storage integration {{integration}} is expected to exist already (pass --aws-role-arn to create it
-- here). It must allow s3://{{bucket}}/{{prefix}}. Granting USAGE on it needs its owner or ACCOUNTADMIN.
USE ROLE ACCOUNTADMIN;
-- @endif
GRANT USAGE ON INTEGRATION {{integration}} TO ROLE {{role}};
-- What to do next (docs/snowflake.md): STORAGE_AWS_IAM_USER_ARN and STORAGE_AWS_EXTERNAL_ID below go into
-- the trust policy of the IAM role that the integration assumes.
DESC INTEGRATION {{integration}};
