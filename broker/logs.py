"""Process logging: plain text or one JSON object per line, and tokens never written.

``configure(settings)`` is called once by every long-running command.  With
``MMBROKER_LOG_FORMAT=json`` each record is a JSON object with ``time``
(UTC, ISO 8601), ``level``, ``logger`` and ``message``, plus whatever the
call site passed in ``extra`` (``ivorn``, ``alert_id``, ``stream``,
``target`` ...), so a log shipper can index records by alert.  Both formats
replace anything shaped like an API token (``mmb_...``) with
``mmb_[redacted]`` in the finished line, tracebacks and ``extra`` fields
included, whichever library logged it.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

TOKEN_PATTERN = re.compile(r"mmb_[A-Za-z0-9_\-]{8,}")
"""What an API token looks like (broker.web.tokens.TOKEN_PREFIX and its secret part)."""
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact(text: str) -> str:
    """``text`` with every API token replaced by ``mmb_[redacted]``."""
    return TOKEN_PATTERN.sub("mmb_[redacted]", text) if "mmb_" in text else text


class TextFormatter(logging.Formatter):
    """The plain text line, tokens redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JSONFormatter(logging.Formatter):
    """One JSON object per record, with the call site's ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                body[key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(body, default=str))


def configure(level: str, fmt: str = "text") -> None:
    """Set up the root logger (and uvicorn's) for this process."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic says at INFO what it does on every start ("Context impl SQLiteImpl", each
    # migration): noise on a first screen; shown at DEBUG.
    logging.getLogger("alembic").setLevel(
        logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
