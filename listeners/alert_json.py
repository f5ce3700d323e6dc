"""Already-normalized Alert documents (JSON following ``alert.schema.json``).

Another mmbroker instance's JSON output topic, a file exported with
``mmbroker alerts list --format json``, or a hand-written test alert all
arrive in this form.  The document keeps its facility fields; the broker
re-issues the id under its own authority and records its own receipt.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from alerts_schema import Alert, validation_errors
from alerts_schema.errors import NormalizationError, SchemaValidationError
from listeners import json_limits
from listeners.base import MessageMeta, Normalized

# Alert documents carry their own source, role and key, so only transports an
# operator controls may deliver them: files, the demo, and another mmbroker's
# output topics.  From anywhere else (e.g. a detector's trigger endpoint) they
# would let a sender write into other streams' keys.
TRUSTED_SOURCES = ("file", "demo")
TRUSTED_PREFIX = "mmbroker."


def trusted(meta: MessageMeta) -> bool:
    """Whether ``meta.source`` may deliver Alert documents as they are."""
    return meta.source in TRUSTED_SOURCES or meta.source.startswith(TRUSTED_PREFIX)


def looks_like_alert(document: Any) -> bool:
    """True for a JSON object that claims to be an Alert document."""
    return (isinstance(document, dict) and "schema_version" in document
            and isinstance(document.get("id"), str) and document["id"].startswith("ivo://")
            and "event_id" in document)


def normalize(data: bytes, meta: MessageMeta) -> Normalized:
    """One Alert from an Alert JSON document, or several from a JSON array of them."""
    return normalize_decoded(json_limits.loads(data), meta)


def normalize_decoded(decoded: Any, meta: MessageMeta) -> Normalized:
    """Like :func:`normalize`, for JSON already decoded (by the router)."""
    documents = decoded if isinstance(decoded, list) else [decoded]
    return Normalized(alerts=tuple(normalize_document(doc, meta) for doc in documents))


def normalize_document(document: Any, meta: MessageMeta) -> Alert:
    """Validate ``document`` against the contract and re-issue it under this broker."""
    if not trusted(meta):
        raise NormalizationError(f"Alert documents are accepted only from files, the demo and "
                                 f"{TRUSTED_PREFIX}* topics, not from {meta.source!r}")
    if not looks_like_alert(document):
        raise NormalizationError("not an Alert document (needs schema_version, id, event_id)")
    errors = validation_errors("alert", document)
    if errors:
        raise SchemaValidationError("alert", errors)
    try:
        alert = Alert.model_validate(document)
    except ValidationError as exc:  # schema and model agree, so this is a bug if reached
        raise NormalizationError(f"alert document rejected: {exc}") from exc
    stream = alert.id.split("/", 3)[3].split("#", 1)[0]
    local_id = f"{alert.event_id}-{alert.revision}"
    return alert.model_copy(update={
        "id": meta.alert_ivorn(stream, local_id),
        "source_ivorn": alert.source_ivorn or alert.id,
    })
