"""Opaque tokens: short payloads encrypted and authenticated with a secret key.

What a caller gets back to hand in later (a live-feed event id, a page cursor)
must not tell it anything about rows it may not see: a database row id in the
clear does (the gap between two public rows counts the hidden ones between
them).  A :class:`Sealer` turns such a payload into a token only its key can
open: the payload XORed with an HMAC-SHA256 keystream under a fresh random
nonce, then a truncated HMAC tag over nonce and ciphertext.  Two seals of the
same payload differ, and a token that was forged or altered opens to ``None``.

The standard library has no block cipher; HMAC-SHA256 as a pseudo-random
function in counter mode is the textbook construction with what it has.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import weakref
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from broker.archive.db import transaction
from broker.archive.models import BrokerKey

__all__ = ["KEY_BYTES", "Sealer", "archive_sealer"]

KEY_BYTES = 32
"""Length of a sealing key (bytes)."""


class Sealer:
    """Seal and open short byte payloads with one secret key.

    Parameters
    ----------
    key
        At least 16 secret bytes (:data:`KEY_BYTES` by default when made with
        :meth:`random`).  Whoever shares the key can open what the others sealed:
        every API replica of one archive shares the archive's cursor key.
    """

    NONCE = 8
    TAG = 8

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a sealing key needs at least 16 bytes")
        self._key = key

    @classmethod
    def random(cls) -> Sealer:
        """A sealer with a fresh key of this process (tokens die with it)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    def _mac(self, label: bytes, data: bytes) -> bytes:
        return hmac.new(self._key, label + data, hashlib.sha256).digest()

    def _pad(self, nonce: bytes, length: int) -> bytes:
        blocks = (self._mac(b"pad", nonce + i.to_bytes(4, "big"))
                  for i in range(-(-length // 32)))
        return b"".join(blocks)[:length]

    def seal(self, payload: bytes) -> str:
        """``payload`` as an opaque URL-safe token (base64 without padding)."""
        nonce = secrets.token_bytes(self.NONCE)
        cipher = bytes(a ^ b for a, b in zip(payload, self._pad(nonce, len(payload)),
                                             strict=True))
        body = nonce + cipher
        tag = self._mac(b"tag", body)[:self.TAG]
        return base64.urlsafe_b64encode(body + tag).decode("ascii").rstrip("=")

    def open(self, token: str) -> bytes | None:
        """The payload sealed in ``token``; None if this key did not seal it."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, binascii.Error):
            return None
        if len(raw) < self.NONCE + self.TAG:
            return None
        body, tag = raw[:-self.TAG], raw[-self.TAG:]
        if not hmac.compare_digest(tag, self._mac(b"tag", body)[:self.TAG]):
            return None
        nonce, cipher = body[:self.NONCE], body[self.NONCE:]
        return bytes(a ^ b for a, b in zip(cipher, self._pad(nonce, len(cipher)), strict=True))


_ARCHIVE_SEALERS: weakref.WeakKeyDictionary[Engine, dict[str, Sealer]] = \
    weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def archive_sealer(conn: Connection, name: str) -> Sealer:
    """The sealer with the archive's key ``name`` (table ``broker_keys``), which every
    process serving the archive shares; read once per engine, made if missing.

    ``conn`` is the caller's connection (the key is read in its transaction); a key
    that is missing is made in a transaction of its own.
    """
    engine = conn.engine
    with _LOCK:
        known = _ARCHIVE_SEALERS.setdefault(engine, {})
        if name in known:
            return known[name]
    value: Any = conn.execute(select(BrokerKey.value).where(BrokerKey.name == name)).scalar()
    if value is None:
        value = _make_key(engine, name)
    sealer = Sealer(bytes(value))
    with _LOCK:
        return _ARCHIVE_SEALERS.setdefault(engine, {}).setdefault(name, sealer)


def _make_key(engine: Engine, name: str) -> bytes:
    try:
        with transaction(engine) as conn:
            conn.execute(BrokerKey.__table__.insert().values(
                name=name, value=secrets.token_bytes(KEY_BYTES), created_at=datetime.now(UTC)))
    except IntegrityError:
        pass  # another process made it first: theirs is the key
    with transaction(engine, readonly=True) as conn:
        return bytes(conn.execute(select(BrokerKey.value)
                                  .where(BrokerKey.name == name)).scalar_one())
