#!/bin/sh
# The db-init service (postgres image, as root, so it reads the secret files whatever their
# host owner): create mmbroker's roles if missing and give them the passwords in the secret
# files, then exit. Runs at every `docker compose up`, before the migrations.
# Variables (defaults for compose): SECRETS_DIR, PGHOST, PGPORT, PGUSER, PGDATABASE, INIT_SQL.
set -eu
secrets=${SECRETS_DIR:-/run/secrets}
export PGHOST="${PGHOST:-postgres}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}" \
       PGDATABASE="${PGDATABASE:-mmbroker}"
PGPASSWORD=$(cat "$secrets/postgres_password")  # (an assignment: no word splitting)
export PGPASSWORD
# The server may still be starting: wait (up to 60 s) until it answers over TCP.
i=0
until pg_isready --quiet; do
  i=$((i + 1))
  [ "$i" -ge 60 ] && { echo "db-init: PostgreSQL at $PGHOST:$PGPORT did not answer" >&2; exit 1; }
  sleep 1
done
# psql reads each password from its file itself (a backquoted \set): never on a command
# line other processes may read, and no quoting to get wrong.
{
  printf '\\set ingest_password `cat %s`\n' "$secrets/db_ingest_password"
  printf '\\set reader_password `cat %s`\n' "$secrets/db_reader_password"
  cat "${INIT_SQL:-/postgres-init.sql}"
} | psql --no-psqlrc --quiet -v ON_ERROR_STOP=1
echo "db-init: mmbroker roles ready"
