-- mmbroker's database roles. Passwords are set by the operator afterwards
-- (ALTER ROLE ... PASSWORD), never written here.
CREATE ROLE mmbroker_ingest LOGIN;
-- Ingest must not acknowledge a message the database could still lose: every commit is
-- flushed (and, with synchronous standbys configured, replicated) before it returns.
ALTER ROLE mmbroker_ingest SET synchronous_commit = on;
CREATE ROLE mmbroker_reader LOGIN;
ALTER ROLE mmbroker_reader SET default_transaction_read_only = on;
GRANT ALL ON DATABASE mmbroker TO mmbroker_ingest;
GRANT CONNECT ON DATABASE mmbroker TO mmbroker_reader;
