"""API bearer tokens: created once, shown once, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from broker.archive import Archive, utcnow
from broker.db import transaction
from broker.errors import ConfigurationError
from broker.models import ApiToken

SCOPES = {
    "read:embargoed": "read embargoed alerts before their release time",
    "read:proprietary": "read proprietary alerts (never public)",
    "write:triggers": "POST detector triggers to /api/v1/triggers",
    "ack": "acknowledge coincidences on the dashboard",
    "read:metrics": "read Prometheus /metrics on the public HTTP listener",
    "admin": "everything, including token management",
}
TOKEN_PREFIX = "mmb_"
TOKENS = ApiToken.__table__


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(archive: Archive, name: str, scopes: list[str],
                 expires_in: timedelta | None = None) -> tuple[str, TokenInfo]:
    """Create a token; returns the plaintext (shown once, never stored) and its record."""
    if expires_in is not None and expires_in <= timedelta(0):
        raise ConfigurationError("a token's lifetime must be positive (omit it for a token "
                                 "that never expires)")
    unknown = sorted(set(scopes) - SCOPES.keys())
    if unknown or not scopes:
        raise ConfigurationError(f"unknown or missing scope(s) {unknown}; known: "
                                 f"{', '.join(sorted(SCOPES))}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    expires = now + expires_in if expires_in is not None else None
    with transaction(archive.engine) as conn:
        token_id = conn.execute(TOKENS.insert().returning(TOKENS.c.id), {
            "name": name, "token_hash": _hash(token), "scopes": " ".join(sorted(set(scopes))),
            "created_at": now, "expires_at": expires}).scalar_one()
    return token, TokenInfo(token_id, name, frozenset(scopes), now, expires, None)


def verify_token(archive: Archive, token: str) -> TokenInfo | None:
    """The token's record if it is known, unrevoked and unexpired; else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    now = utcnow()
    with transaction(archive.engine) as conn:
        tok = conn.execute(select(TOKENS).where(TOKENS.c.token_hash == _hash(token))).first()
        if tok is None:
            return None
        if tok.revoked_at is not None or (tok.expires_at is not None and tok.expires_at <= now):
            return None
        conn.execute(update(ApiToken).where(ApiToken.id == tok.id).values(last_used_at=now))
    return TokenInfo(tok.id, tok.name, frozenset(tok.scopes.split()), tok.created_at,
                     tok.expires_at, tok.revoked_at)


def valid_token_ids(archive: Archive, ids: set[int]) -> set[int]:
    """Those of ``ids`` that are still unrevoked and unexpired: one query however many
    (live streams re-check the tokens they were opened with)."""
    if not ids:
        return set()
    now = utcnow()
    with transaction(archive.engine, readonly=True) as conn:
        return set(conn.execute(select(TOKENS.c.id).where(
            TOKENS.c.id.in_(sorted(ids)), TOKENS.c.revoked_at.is_(None),
            (TOKENS.c.expires_at.is_(None)) | (TOKENS.c.expires_at > now))).scalars())


def list_tokens(archive: Archive) -> list[TokenInfo]:
    with transaction(archive.engine, readonly=True) as conn:
        rows = conn.execute(select(TOKENS).order_by(TOKENS.c.id))
        return [TokenInfo(t.id, t.name, frozenset(t.scopes.split()), t.created_at,
                          t.expires_at, t.revoked_at) for t in rows]


def revoke_token(archive: Archive, token_id: int) -> bool:
    """Revoke token ``token_id``; False if there is no such live token."""
    with transaction(archive.engine) as conn:
        result = conn.execute(update(ApiToken)
                              .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                              .values(revoked_at=utcnow()))
        return result.rowcount == 1
