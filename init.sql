-- init.sql: database bootstrap for the docker-compose Postgres.
--
-- Creates the login role `mlops` and two databases owned by it:
--   mlops   - the control plane's own schema (Alembic migrations)
--   mlflow  - MLflow's backend store
--
-- Run by psql (the postgres image runs every file in /docker-entrypoint-initdb.d
-- with psql as the superuser on first start). It is idempotent: objects that
-- already exist are left as they are, so it can also be applied by hand:
--
--   psql -v ON_ERROR_STOP=1 -h HOST -U postgres -v mlops_password=SECRET -f init.sql
--
-- The role's password is never stored here. It is taken, in this order, from
--   1. the psql variable  mlops_password  (psql -v mlops_password=...)
--   2. the environment variable  MLOPS_DB_PASSWORD  (docker-compose passes it to
--      the postgres container, whose entrypoint's psql inherits it)
-- and the script stops with an error if neither is set or it is shorter than
-- 12 characters. An existing role keeps its current password.
-- Needs psql 15 or newer (\getenv).

\set ON_ERROR_STOP on

\if :{?mlops_password}
\else
  \getenv mlops_password MLOPS_DB_PASSWORD
\endif

\if :{?mlops_password}
\else
  \set mlops_password ''
\endif

SELECT length(:'mlops_password') >= 12 AS mlops_password_ok \gset
\if :mlops_password_ok
\else
  DO $$
  BEGIN
    RAISE EXCEPTION 'init.sql: no usable password for role mlops'
      USING HINT = 'Set MLOPS_DB_PASSWORD (12+ characters) or pass -v mlops_password=...';
  END
  $$;
\endif

-- Role: created only when missing (CREATE ROLE has no IF NOT EXISTS).
SELECT format('CREATE ROLE mlops WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'mlops_password')
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mlops')
\gexec

\unset mlops_password

-- Databases: CREATE DATABASE cannot run in a DO block (transaction), hence \gexec.
SELECT 'CREATE DATABASE mlops OWNER mlops'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = 'mlops')
\gexec

SELECT 'CREATE DATABASE mlflow OWNER mlops'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = 'mlflow')
\gexec

-- Only the owner (and superusers) may connect.
REVOKE ALL ON DATABASE mlops FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
