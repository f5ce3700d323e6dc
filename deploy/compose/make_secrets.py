#!/usr/bin/env python3
"""Make every secret compose.yaml reads, in ./secrets beside this script (or --dir).

    python3 deploy/compose/make_secrets.py            # GCN credentials from the environment
    python3 deploy/compose/make_secrets.py --no-gcn   # no GCN account yet: listen stays idle

Random passwords for the PostgreSQL superuser and the two mmbroker roles, and the
database URL built from the ingest role's password; the GCN client credentials are
taken from KAFKA_CLIENT___ID and KAFKA_CLIENT___SECRET (the names gcn-kafka uses).
Every file is written mode 0600; an existing secret is never replaced unless --force
is given, and a database URL that does not match the ingest password is reported.

Run as root (or with sudo) on a Linux Docker host: Docker mounts these files with
their host owner, and the files the mmbroker containers read (database_url, gcn_*)
must belong to the image's user (uid 10001, --uid) since the broker refuses a secret
file that others may read. Standard library only: no venv needed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

PASSWORDS = ("postgres_password", "db_ingest_password", "db_reader_password")
"""Random secrets (read by the postgres and db-init containers, as root)."""
BROKER_READ = ("database_url", "gcn_client_id", "gcn_client_secret")
"""Secrets the mmbroker containers read as the image's user."""
INGEST_ROLE, DATABASE, DB_HOST = "mmbroker_ingest", "mmbroker", "postgres:5432"
IMAGE_UID = 10001


def database_url(password: str) -> str:
    """The ingest role's SQLAlchemy URL on the compose network."""
    return (f"postgresql+psycopg://{INGEST_ROLE}:{quote(password, safe='')}@{DB_HOST}"
            f"/{DATABASE}")


def _read(path: Path) -> str | None:
    """The secret's text, or None when absent or empty (an empty file counts as missing)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def _write(path: Path, value: str, uid: int | None) -> None:
    """Write ``value`` atomically, mode 0600 from its creation, owned by ``uid`` if given."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, value.encode("utf-8"))
        if uid is not None:
            os.fchown(fd, uid, -1)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent / "secrets",
                        help="where compose.yaml reads its secrets (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="replace existing secrets (new passwords: the database's roles "
                             "take them at the next `docker compose up`)")
    parser.add_argument("--no-gcn", action="store_true",
                        help="no GCN credentials: write empty GCN files (listen then fails "
                             "to log in to GCN until they are filled)")
    parser.add_argument("--uid", type=int, default=IMAGE_UID,
                        help="owner of the files the mmbroker containers read "
                             "(default: %(default)s, the image's user; applied when run as root)")
    args = parser.parse_args(argv)
    out: Path = args.dir
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    as_root = os.geteuid() == 0
    owner = args.uid if as_root else None
    made: list[str] = []

    for name in PASSWORDS:
        if args.force or _read(out / name) is None:
            _write(out / name, secrets.token_urlsafe(32), None)
            made.append(name)

    ingest = _read(out / "db_ingest_password")
    assert ingest is not None
    url = _read(out / "database_url")
    if url is None or args.force or "db_ingest_password" in made:
        _write(out / "database_url", database_url(ingest), owner)
        made.append("database_url")
    elif unquote(urlsplit(url).password or "") != ingest:
        print(f"error: {out / 'database_url'} does not use the password in "
              f"{out / 'db_ingest_password'}: rerun with --force to make both anew",
              file=sys.stderr)
        return 1

    gcn = {"gcn_client_id": os.environ.get("KAFKA_CLIENT___ID", "").strip(),
           "gcn_client_secret": os.environ.get("KAFKA_CLIENT___SECRET", "").strip()}
    missing = [name for name, value in gcn.items() if not value and _read(out / name) is None]
    if missing and not args.no_gcn:
        print("error: no GCN client credentials: export KAFKA_CLIENT___ID and "
              "KAFKA_CLIENT___SECRET (from https://gcn.nasa.gov/quickstart) and run again, "
              "or pass --no-gcn to start without GCN", file=sys.stderr)
        return 2
    for name, value in gcn.items():
        current = _read(out / name)
        if value and (current is None or args.force):
            _write(out / name, value, owner)
            made.append(name)
        elif value and current != value:
            print(f"kept {out / name} (differs from the environment): --force replaces it",
                  file=sys.stderr)
        elif current is None:  # --no-gcn: compose needs the file to exist
            _write(out / name, "", owner)
            made.append(name)

    for name in (*PASSWORDS, *BROKER_READ):  # secrets made earlier by hand, too
        path = out / name
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        if owner is not None and name in BROKER_READ and path.stat().st_uid != owner:
            os.chown(path, owner, -1)
    print(f"{out}: made {', '.join(made) or 'nothing (every secret was there)'}")
    if not as_root:
        files = " ".join(str(out / n) for n in BROKER_READ)
        print(f"not root: on a Linux Docker host, give the mmbroker containers their files: "
              f"sudo chown {args.uid} {files}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
