"""API tokens on both backends: stored hashed, scoped, revocable, expiring."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from broker.archive import Archive
from broker.errors import ConfigurationError
from broker.models import ApiToken
from broker.tokens import create_token, list_tokens, revoke_token, verify_token


def test_token_lifecycle(archive: Archive) -> None:
    token, info = create_token(archive, "shift", ["ack", "read:embargoed"])
    with archive.engine.connect() as conn:
        stored = conn.execute(select(ApiToken.token_hash)).scalar_one()
    assert token not in stored and len(stored) == 64
    verified = verify_token(archive, token)
    assert verified is not None and verified.scopes == {"ack", "read:embargoed"}
    assert verify_token(archive, token + "x") is None
    assert verify_token(archive, "not-a-token") is None
    assert revoke_token(archive, info.id)
    assert verify_token(archive, token) is None
    assert list_tokens(archive)[0].revoked_at is not None


def test_expired_token(archive: Archive) -> None:
    token, _ = create_token(archive, "short", ["admin"], expires_in=timedelta(microseconds=1))
    assert verify_token(archive, token) is None


def test_unknown_scope(archive: Archive) -> None:
    with pytest.raises(ConfigurationError):
        create_token(archive, "x", ["superuser"])
    with pytest.raises(ConfigurationError):
        create_token(archive, "x", [])
