-- mmbroker's database roles, run by db-init.sh (psql, as the superuser, in database
-- mmbroker) at every `docker compose up`: it creates what is missing and sets each role's
-- password from its secret file, so a password made anew by make_secrets.py --force takes
-- effect at the next start. The passwords arrive in psql variables (:'name' quotes them as
-- literals); none is written here.
SELECT 'CREATE ROLE mmbroker_ingest LOGIN'
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mmbroker_ingest') \gexec
ALTER ROLE mmbroker_ingest WITH LOGIN PASSWORD :'ingest_password';
-- Ingest must not acknowledge a message the database could still lose: every commit is
-- flushed (and, with synchronous standbys configured, replicated) before it returns.
-- This is the server's default; set on the role, a server tuned with it off for speed
-- does not take the broker along.
ALTER ROLE mmbroker_ingest SET synchronous_commit = on;
SELECT 'CREATE ROLE mmbroker_reader LOGIN'
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mmbroker_reader') \gexec
ALTER ROLE mmbroker_reader WITH LOGIN PASSWORD :'reader_password';
ALTER ROLE mmbroker_reader SET default_transaction_read_only = on;
GRANT ALL ON DATABASE mmbroker TO mmbroker_ingest;
GRANT CONNECT ON DATABASE mmbroker TO mmbroker_reader;
-- Since PostgreSQL 15 nobody but the owner may create in schema public: the migrations
-- run as mmbroker_ingest, and the reader reads what they create.
GRANT USAGE, CREATE ON SCHEMA public TO mmbroker_ingest;
GRANT USAGE ON SCHEMA public TO mmbroker_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE mmbroker_ingest IN SCHEMA public
  GRANT SELECT ON TABLES TO mmbroker_reader;
