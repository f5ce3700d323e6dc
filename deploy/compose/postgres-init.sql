-- mmbroker's database roles. Passwords are set by the operator afterwards
-- (ALTER ROLE ... PASSWORD), never written here.
CREATE ROLE mmbroker_ingest LOGIN;
-- Ingest must not acknowledge a message the database could still lose: every commit is
-- flushed (and, with synchronous standbys configured, replicated) before it returns.
-- This is the server's default; set on the role, a server tuned with it off for speed
-- does not take the broker along.
ALTER ROLE mmbroker_ingest SET synchronous_commit = on;
CREATE ROLE mmbroker_reader LOGIN;
ALTER ROLE mmbroker_reader SET default_transaction_read_only = on;
GRANT ALL ON DATABASE mmbroker TO mmbroker_ingest;
GRANT CONNECT ON DATABASE mmbroker TO mmbroker_reader;
-- Since PostgreSQL 15 nobody but the owner may create in schema public: the migrations
-- run as mmbroker_ingest, and the reader reads what they create.
GRANT USAGE, CREATE ON SCHEMA public TO mmbroker_ingest;
GRANT USAGE ON SCHEMA public TO mmbroker_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE mmbroker_ingest IN SCHEMA public
  GRANT SELECT ON TABLES TO mmbroker_reader;
