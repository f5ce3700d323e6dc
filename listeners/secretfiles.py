"""Secrets from files only their owner can read.

A secret setting may be given in the environment (``MMBROKER_DATABASE_URL``,
``KAFKA_SASL_PASSWORD``) or, better, as a file named by the same variable
with ``_FILE`` appended (``MMBROKER_DATABASE_URL_FILE=/run/secrets/db``), the
way container orchestrators mount secrets.  A file that its group or others
may read is refused: the broker will not start on a leaked secret.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path

from alerts_schema.errors import ConfigurationError


def read_secret_file(path: str | Path) -> str:
    """The file's text, stripped; refused unless only its owner may read it (0600, 0400)."""
    p = Path(path)
    try:  # (missing, or owned by another user: say which file, not a traceback)
        mode = p.stat().st_mode
        if not stat.S_ISREG(mode):
            raise ConfigurationError(f"secret file {p} is not a regular file")
        if mode & 0o077:
            raise ConfigurationError(
                f"secret file {p} is readable or writable by others (mode {mode & 0o777:o}); "
                f"make it the owner's only: chmod 600 {p}")
        return p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"secret file {p}: {exc.strerror}") from exc


def secret_from_env(name: str, env: Mapping[str, str]) -> str | None:
    """``env[name]``, or the contents of the file ``env[name + "_FILE"]``; never both."""
    file_name = env.get(name + "_FILE")
    if file_name is not None and name in env:
        raise ConfigurationError(f"both {name} and {name}_FILE are set: keep one")
    if file_name is not None:
        return read_secret_file(file_name)
    return env.get(name)
