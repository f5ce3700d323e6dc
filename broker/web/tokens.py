"""API bearer tokens: created once, shown once, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update

from alerts_schema.errors import ConfigurationError
from broker.archive.db import transaction
from broker.archive.models import ApiToken
from broker.archive.store import Archive, utcnow

SCOPES = {
    "read:embargoed": "read embargoed alerts before their release time",
    "read:proprietary": "read proprietary alerts (never public)",
    "write:triggers": "POST detector triggers to /api/v1/triggers (for its --detector ones)",
    "ack": "acknowledge coincidences on the dashboard",
    "read:metrics": "read Prometheus /metrics on the public HTTP listener",
    "admin": "everything, including token management",
}
TOKEN_PREFIX = "mmb_"
TOKENS = ApiToken.__table__
_BY_HASH = select(TOKENS).where(TOKENS.c.token_hash == bindparam("token_hash"))
"""The lookup of every authenticated request, built once: building it was about a third
of a lookup's 0.4 ms of CPU on SQLite."""


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    detectors: frozenset[str] | None = None
    """The detectors a ``write:triggers`` token may write; None: bound to none (legacy)."""

    def may_write(self, detector: str, *, allow_unbound: bool) -> bool:
        """Whether this token may post, revise or retract triggers of ``detector``.

        ``admin`` writes any detector; a bound token only its own; an unbound
        one (made before tokens were bound) only when ``allow_unbound``.
        """
        if "admin" in self.scopes:
            return True
        if self.detectors is None:
            return allow_unbound
        return detector in self.detectors

    def describe(self) -> str:
        """``token 7 (km3net-online, detectors KM3NeT)``, for reasons and logs."""
        bound = ", ".join(sorted(self.detectors)) if self.detectors is not None else "none"
        return f"token {self.id} ({self.name}, detectors {bound})"


def _info(row: Any) -> TokenInfo:
    return TokenInfo(row.id, row.name, frozenset(row.scopes.split()), row.created_at,
                     row.expires_at, row.revoked_at,
                     frozenset(row.detectors) if row.detectors is not None else None)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(archive: Archive, name: str, scopes: list[str],
                 expires_in: timedelta | None = None,
                 detectors: list[str] | None = None) -> tuple[str, TokenInfo]:
    """Create a token; returns the plaintext (shown once, never stored) and its record.

    ``detectors`` binds a ``write:triggers`` token to the detectors (the
    trigger's ``detector`` field) it may post, revise and retract triggers for.
    """
    if expires_in is not None and expires_in <= timedelta(0):
        raise ConfigurationError("a token's lifetime must be positive (omit it for a token "
                                 "that never expires)")
    unknown = sorted(set(scopes) - SCOPES.keys())
    if unknown or not scopes:
        raise ConfigurationError(f"unknown or missing scope(s) {unknown}; known: "
                                 f"{', '.join(sorted(SCOPES))}")
    bound = sorted(set(detectors)) if detectors else None
    if bound is not None:
        if "write:triggers" not in scopes:
            raise ConfigurationError("--detector binds a write:triggers token; add "
                                     "--scope write:triggers")
        bad = [d for d in bound if not 1 <= len(d) <= 128 or not d.isprintable()
               or d != d.strip()]
        if bad:
            raise ConfigurationError(f"detector name(s) {bad!r}: 1 to 128 printable "
                                     "characters, no surrounding spaces")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    expires = now + expires_in if expires_in is not None else None
    with transaction(archive.engine) as conn:
        token_id = conn.execute(TOKENS.insert().returning(TOKENS.c.id), {
            "name": name, "token_hash": _hash(token), "scopes": " ".join(sorted(set(scopes))),
            "created_at": now, "expires_at": expires, "detectors": bound}).scalar_one()
    return token, TokenInfo(token_id, name, frozenset(scopes), now, expires, None,
                            frozenset(bound) if bound is not None else None)


LAST_USED_RESOLUTION = timedelta(seconds=60)
"""How stale a token's ``last_used_at`` may be: a request records its use only when the
recorded one is older, so a busy client's requests are reads, not one archive write
each (on SQLite every write takes the database's one write lock)."""


class TokenCache:
    """Tokens found valid lately, so that a busy client's requests do not each read the
    archive (on a trigger's path the read was 0.75 ms of about 12).

    A token found valid is trusted for ``ttl_s`` seconds (monotonic clock, counted from
    the archive read that found it valid) without another read; its expiry is still
    checked on every request.  A token revoked meanwhile (``mmbroker token revoke``,
    another process) thus still authenticates for at most ``ttl_s``; at the default
    (1 s) that is the bound the live feed's open streams already have
    (:data:`broker.web.livefeed.TOKEN_CHECK_S`), and the live feed's check drops the
    tokens it finds revoked or expired from here (:meth:`forget`).  Unknown, expired
    and revoked tokens are never cached: each such request reads the archive (a bearer
    token's failure counts against the failed-authentication limit), so a failure is
    never remembered as a success.  Entries are keyed by the token's SHA-256, never by
    the token.

    Parameters
    ----------
    ttl_s
        How long (s) a verified token is trusted; 0 turns the cache off.
    max_entries
        Most tokens kept; past it the oldest entry goes.
    clock
        Monotonic seconds (tests give a fake one).
    """

    def __init__(self, ttl_s: float, *, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[TokenInfo, float]] = {}
        self._lock = threading.Lock()

    def get(self, token_hash: str, now: datetime) -> TokenInfo | None:
        """The cached record, if verified less than ``ttl_s`` ago and unexpired at ``now``."""
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        info, verified_mono = entry
        if self._clock() - verified_mono >= self.ttl_s or (
                info.expires_at is not None and info.expires_at <= now):
            with self._lock:
                self._entries.pop(token_hash, None)
            return None
        return info

    def stamp(self) -> float:
        """The clock's reading, taken just before the archive read a :meth:`put` follows."""
        return self._clock()

    def put(self, token_hash: str, info: TokenInfo, read_at: float) -> None:
        """Trust ``info`` until ``ttl_s`` after ``read_at`` (a :meth:`stamp` taken before
        the read that found it valid: a slow write after the read does not stretch it)."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._entries.pop(token_hash, None)
            self._entries[token_hash] = (info, read_at)
            while len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]

    def forget(self, token_ids: Collection[int]) -> None:
        """Drop the entries of these tokens (found revoked or expired elsewhere)."""
        if not token_ids:
            return
        with self._lock:
            for key in [k for k, (info, _) in self._entries.items() if info.id in token_ids]:
                del self._entries[key]


def verify_token(archive: Archive, token: str, *,
                 cache: TokenCache | None = None) -> TokenInfo | None:
    """The token's record if it is known, unrevoked and unexpired; else None.

    Its ``last_used_at`` is brought up to date when older than
    :data:`LAST_USED_RESOLUTION`, on a read of the archive (a ``cache`` hit records
    nothing: ``last_used_at`` may then lag by that resolution plus the cache's
    ``ttl_s``).
    """
    if not token.startswith(TOKEN_PREFIX):
        return None
    now = utcnow()
    digest = _hash(token)
    if cache is not None and (cached := cache.get(digest, now)) is not None:
        return cached
    read_at = cache.stamp() if cache is not None else 0.0
    with transaction(archive.engine, readonly=True) as conn:
        tok = conn.execute(_BY_HASH, {"token_hash": digest}).first()
    if tok is None:
        return None
    if tok.revoked_at is not None or (tok.expires_at is not None and tok.expires_at <= now):
        return None
    if tok.last_used_at is None or now - tok.last_used_at >= LAST_USED_RESOLUTION:
        with transaction(archive.engine) as conn:
            conn.execute(update(ApiToken).where(ApiToken.id == tok.id)
                         .values(last_used_at=now))
    info = _info(tok)
    if cache is not None:
        cache.put(digest, info, read_at)
    return info


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
        return [_info(t) for t in rows]


def revoke_token(archive: Archive, token_id: int) -> bool:
    """Revoke token ``token_id``; False if there is no such live token."""
    with transaction(archive.engine) as conn:
        result = conn.execute(update(ApiToken)
                              .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                              .values(revoked_at=utcnow()))
        return result.rowcount == 1
