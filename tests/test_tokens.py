"""API tokens on both backends: stored hashed, scoped, revocable, expiring."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from alerts_schema.errors import ConfigurationError
from broker.archive.models import ApiToken
from broker.archive.store import Archive, utcnow
from broker.web.tokens import (
    TokenCache,
    TokenInfo,
    _hash,
    create_token,
    list_tokens,
    revoke_token,
    verify_token,
)
from tests.conftest import mmbroker


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


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_a_cached_token_is_trusted_for_the_ttl_then_read_again(archive: Archive) -> None:
    """The documented bound: a token revoked elsewhere (here straight in the archive, as
    `mmbroker token revoke` in another process does) authenticates until its cache entry
    is ``ttl_s`` old, and not a moment after."""
    clock = FakeClock()
    cache = TokenCache(1.0, clock=clock)
    token, info = create_token(archive, "shift", ["write:triggers"], detectors=["KM3NeT"])
    assert verify_token(archive, token, cache=cache) == info
    assert revoke_token(archive, info.id)
    clock.now_s += 0.99
    assert verify_token(archive, token, cache=cache) == info  # not read again: cached
    clock.now_s += 0.01
    assert verify_token(archive, token, cache=cache) is None
    assert verify_token(archive, token, cache=cache) is None  # and never cached again


def test_only_valid_tokens_are_cached(archive: Archive) -> None:
    """Unknown, revoked and expired tokens are read every time: a failed one is never
    remembered as good."""
    clock = FakeClock()
    cache = TokenCache(60.0, clock=clock)
    assert verify_token(archive, "mmb_unknown", cache=cache) is None
    assert cache.get(_hash("mmb_unknown"), utcnow()) is None
    revoked, info = create_token(archive, "gone", ["ack"])
    assert revoke_token(archive, info.id)
    assert verify_token(archive, revoked, cache=cache) is None
    assert cache.get(_hash(revoked), utcnow()) is None
    expired, _ = create_token(archive, "short", ["ack"], expires_in=timedelta(microseconds=1))
    assert verify_token(archive, expired, cache=cache) is None
    assert cache.get(_hash(expired), utcnow()) is None
    fresh, _ = create_token(archive, "new", ["ack"])
    assert verify_token(archive, fresh, cache=cache) is not None


def test_a_cached_token_expires_on_time(archive: Archive) -> None:
    """The cache never stretches a token's expiry: it is checked on every hit."""
    cache = TokenCache(60.0, clock=FakeClock())
    token, info = create_token(archive, "short", ["ack"], expires_in=timedelta(hours=1))
    assert verify_token(archive, token, cache=cache) == info
    assert info.expires_at is not None
    assert cache.get(_hash(token), info.expires_at - timedelta(seconds=1)) == info
    assert cache.get(_hash(token), info.expires_at) is None


def test_a_zero_ttl_reads_the_archive_every_time(archive: Archive) -> None:
    cache = TokenCache(0.0, clock=FakeClock())
    token, info = create_token(archive, "shift", ["ack"])
    assert verify_token(archive, token, cache=cache) == info
    assert revoke_token(archive, info.id)
    assert verify_token(archive, token, cache=cache) is None


def test_the_cache_keeps_at_most_max_entries_dropping_the_oldest() -> None:
    clock = FakeClock()
    cache = TokenCache(60.0, max_entries=2, clock=clock)
    now = utcnow()
    info = replace(_any_token(), expires_at=None)
    for key in ("a", "b", "c"):
        cache.put(key, replace(info, name=key), cache.stamp())
    assert cache.get("a", now) is None
    assert [cache.get(k, now).name for k in ("b", "c")] == ["b", "c"]  # type: ignore[union-attr]


def test_trust_runs_from_the_read_not_from_when_the_entry_is_stored() -> None:
    """A slow step between the archive read and the store (the ``last_used_at`` write
    waiting for SQLite's write lock) does not stretch the bound."""
    clock = FakeClock()
    cache = TokenCache(1.0, clock=clock)
    read_at = cache.stamp()
    clock.now_s += 0.9  # the write after the read
    cache.put("h", _any_token(), read_at)
    clock.now_s += 0.1
    assert cache.get("h", utcnow()) is None


def test_forgotten_tokens_are_read_again(archive: Archive) -> None:
    cache = TokenCache(60.0, clock=FakeClock())
    token, info = create_token(archive, "shift", ["ack"])
    other, other_info = create_token(archive, "other", ["ack"])
    assert verify_token(archive, token, cache=cache) == info
    assert verify_token(archive, other, cache=cache) == other_info
    assert revoke_token(archive, info.id)
    cache.forget({info.id})
    assert verify_token(archive, token, cache=cache) is None
    assert cache.get(_hash(other), utcnow()) == other_info  # the others stay


def _any_token() -> TokenInfo:
    return TokenInfo(1, "x", frozenset({"ack"}), utcnow(), None, None)


def test_expired_token(archive: Archive) -> None:
    token, _ = create_token(archive, "short", ["admin"], expires_in=timedelta(microseconds=1))
    assert verify_token(archive, token) is None


def test_unknown_scope(archive: Archive) -> None:
    with pytest.raises(ConfigurationError):
        create_token(archive, "x", ["superuser"])
    with pytest.raises(ConfigurationError):
        create_token(archive, "x", [])


def test_trigger_token_bound_to_detectors(archive: Archive) -> None:
    token, info = create_token(archive, "online", ["write:triggers"],
                               detectors=["KM3NeT", "ANTARES", "KM3NeT"])
    assert info.detectors == {"KM3NeT", "ANTARES"}
    verified = verify_token(archive, token)
    assert verified is not None and verified.detectors == {"KM3NeT", "ANTARES"}
    assert verified.may_write("KM3NeT", allow_unbound=False)
    assert not verified.may_write("IceCube", allow_unbound=True)
    _, legacy = create_token(archive, "legacy", ["write:triggers"])
    assert legacy.detectors is None
    assert not legacy.may_write("KM3NeT", allow_unbound=False)
    assert legacy.may_write("KM3NeT", allow_unbound=True)
    _, admin = create_token(archive, "root", ["admin"])
    assert admin.may_write("anything", allow_unbound=False)
    assert [t.detectors for t in list_tokens(archive)] == [
        {"KM3NeT", "ANTARES"}, None, None]
    with pytest.raises(ConfigurationError, match="write:triggers"):
        create_token(archive, "x", ["ack"], detectors=["KM3NeT"])
    with pytest.raises(ConfigurationError, match="detector name"):
        create_token(archive, "x", ["write:triggers"], detectors=["bad\x00name"])


def test_token_cli_binds_and_lists_detectors(tmp_path: Path) -> None:
    import json

    from tests.conftest import mmbroker

    db = str(tmp_path / "tokens.sqlite3")
    mmbroker("--db", db, "db", "upgrade")
    made = mmbroker("--db", db, "token", "create", "--scope", "write:triggers",
                    "--detector", "KM3NeT", "--detector", "IceCube Gen2", "--name", "online")
    assert made.stdout.strip().startswith("mmb_")
    assert "detectors: IceCube Gen2, KM3NeT" in made.stderr
    unbound = mmbroker("--db", db, "token", "create", "--scope", "write:triggers")
    assert "bound to no detector" in unbound.stderr
    listed = json.loads(mmbroker("--db", db, "token", "list", "--format", "json").stdout)
    assert [(t["name"], t["detectors"]) for t in listed] == [
        ("online", "IceCube Gen2, KM3NeT"), ("unnamed", None)]
    table = mmbroker("--db", db, "token", "list").stdout
    assert "detectors" in table and "KM3NeT" in table


@pytest.mark.parametrize("days", ["0", "-1", "-0.5", "nan", "inf", "1e300"])
def test_token_create_refuses_a_lifetime_that_is_not_a_future_time(tmp_path: Path,
                                                                   days: str) -> None:
    """`--expires-days 0` made a token that never expires: now one clear line, exit 2,
    and no token stored."""
    db = str(tmp_path / "t.sqlite3")
    mmbroker("--db", db, "db", "upgrade")
    proc = mmbroker("--db", db, "token", "create", "--scope", "read:embargoed",
                    f"--expires-days={days}", check=False)
    assert proc.returncode != 0 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: --expires-days"), line
    assert mmbroker("--db", db, "token", "list", "--format", "json").stdout.strip() == "[]"
    ok = mmbroker("--db", db, "token", "create", "--scope", "ack", "--expires-days", "0.5")
    assert ok.stdout.strip().startswith("mmb_")


def test_a_token_lifetime_must_be_positive(archive: Archive) -> None:
    for lifetime in (timedelta(0), timedelta(seconds=-1)):
        with pytest.raises(ConfigurationError, match="positive"):
            create_token(archive, "x", ["ack"], expires_in=lifetime)
    assert list_tokens(archive) == []


def test_valid_token_ids_is_one_query_for_many(archive: Archive) -> None:
    """What the live feed re-checks its open streams with: revoked and expired ids drop."""
    from broker.web.tokens import valid_token_ids

    ids = {name: create_token(archive, name, ["read:embargoed"], expires_in=life)[1].id
           for name, life in (("live", None), ("later", timedelta(days=1)),
                              ("revoked", None), ("expired", timedelta(microseconds=1)))}
    assert revoke_token(archive, ids["revoked"])
    assert valid_token_ids(archive, set(ids.values()) | {9999}) == {ids["live"], ids["later"]}
    assert valid_token_ids(archive, set()) == set()


def test_a_busy_token_s_requests_are_reads(archive: Archive) -> None:
    """``last_used_at`` is recorded at most once a minute: a client's burst of requests
    does not make each one an archive write."""
    from sqlalchemy import event, update

    from broker.archive.db import transaction
    from broker.archive.store import utcnow
    from broker.web.tokens import LAST_USED_RESOLUTION

    token, info = create_token(archive, "busy", ["write:triggers"], detectors=["KM3NeT"])

    def last_used() -> object:
        with transaction(archive.engine, readonly=True) as conn:
            return conn.execute(select(ApiToken.last_used_at)
                                .where(ApiToken.id == info.id)).scalar_one()

    updates: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_TOKENS"):
            updates.append(statement)

    event.listen(archive.engine, "before_cursor_execute", seen)
    try:
        for _ in range(20):
            assert verify_token(archive, token) is not None
        first = last_used()
        assert first is not None and len(updates) == 1
        with transaction(archive.engine) as conn:  # a minute and more ago
            conn.execute(update(ApiToken).where(ApiToken.id == info.id).values(
                last_used_at=utcnow() - LAST_USED_RESOLUTION - timedelta(seconds=1)))
        assert verify_token(archive, token) is not None
        assert len(updates) == 3 and last_used() > first  # type: ignore[operator]
    finally:
        event.remove(archive.engine, "before_cursor_execute", seen)


@pytest.mark.timeout(120)
def test_a_token_revoked_elsewhere_is_refused_on_every_route_within_the_cache_ttl(
        db_url: str) -> None:
    """Over HTTP: a write route and a read route authenticate through the one cache, and a
    token revoked by another process (another archive handle, as `mmbroker token revoke`)
    is refused on both once ``token_cache_s`` has passed."""
    from fastapi.testclient import TestClient

    import alerts_schema
    from broker.config import get_settings
    from broker.web.app import create_app

    track = next(p for p in alerts_schema.example_paths("trigger")
                 if "track-single" in p.name).read_bytes()
    ttl_s = 0.5
    with TestClient(create_app(get_settings(database_url=db_url,
                                            token_cache_s=ttl_s))) as client:
        archive = client.app.state.archive  # type: ignore[attr-defined]
        writer, w_info = create_token(archive, "km3", ["write:triggers"], detectors=["KM3NeT"])
        reader, r_info = create_token(archive, "prom", ["read:metrics"])

        def post() -> int:
            return client.post("/api/v1/triggers", content=track, headers={
                "Authorization": f"Bearer {writer}",
                "Content-Type": "application/json"}).status_code

        def scrape() -> int:
            return client.get("/metrics",
                              headers={"Authorization": f"Bearer {reader}"}).status_code

        assert post() == 201 and scrape() == 200
        _revoke_elsewhere(db_url, w_info.id, r_info.id)
        time.sleep(ttl_s)
        assert post() == 401 and scrape() == 401


@pytest.mark.timeout(120)
def test_the_app_reads_a_token_once_per_ttl(db_url: str) -> None:
    """Every authenticated route goes through the app's cache: with a long TTL, requests
    after the first read no token from the archive."""
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from broker.config import get_settings
    from broker.web.app import create_app

    with TestClient(create_app(get_settings(database_url=db_url,
                                            token_cache_s=60))) as client:
        archive = client.app.state.archive  # type: ignore[attr-defined]
        token, _ = create_token(archive, "prom", ["read:metrics"])
        headers = {"Authorization": f"Bearer {token}"}
        reads: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            if "FROM api_tokens" in statement:
                reads.append(statement)

        event.listen(archive.engine, "before_cursor_execute", count)
        try:
            assert client.get("/metrics", headers=headers).status_code == 200
            assert len(reads) == 1
            for _ in range(3):
                assert client.get("/metrics", headers=headers).status_code == 200
            assert len(reads) == 1
        finally:
            event.remove(archive.engine, "before_cursor_execute", count)


@pytest.mark.timeout(120)
def test_a_revoked_embargo_readers_token_opens_no_pull_output_after_the_ttl(
        archive: Archive, db_url: str) -> None:
    """The embargo boundary under the cache, output by output: a read:embargoed token sees
    an embargoed alert through the REST detail and list (JSON, VOTable, CSV), SCS and TAP;
    revoked by another process, every one of them refuses it once ``token_cache_s`` has
    passed, and the anonymous answer still hides the alert."""
    from urllib.parse import quote

    from fastapi.testclient import TestClient

    from broker.config import get_settings
    from broker.web.app import create_app
    from tests.test_query_api import _archive_docs, _documents, _visible

    docs = _archive_docs(archive, _documents(40, seed=5, prefix="rv"))
    hidden = next(d["id"] for d in docs if not _visible(d, set())
                  and _visible(d, {"read:embargoed"}))
    token, info = create_token(archive, "reader", ["read:embargoed"])
    ttl_s = 0.5
    outputs = {
        "alert": (f"/api/v1/alerts/{quote(hidden, safe='')}", {}),
        **{f"alerts.{fmt}": ("/api/v1/alerts", {"limit": 1000, "format": fmt})
           for fmt in ("json", "votable", "csv")},
        "scs": ("/scs", {"RA": 0, "DEC": 0, "SR": 180, "MAXREC": 10000}),
        "tap": ("/tap/sync", {"LANG": "ADQL", "QUERY": "SELECT obs_id FROM ivoa.obscore"}),
    }
    with TestClient(create_app(get_settings(database_url=db_url, token_cache_s=ttl_s,
                                            api_rate_limit_per_s=0),
                               archive=archive)) as client:
        def read(path: str, params: dict[str, object], bearer: str | None) -> tuple[int, str]:
            headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
            reply = client.get(path, params=params, headers=headers)
            return reply.status_code, reply.text

        for name, (path, params) in outputs.items():
            status, body = read(path, params, token)
            assert status == 200 and hidden in body, name
            status, body = read(path, params, None)
            # The detail's 404 names the IVORN asked for; the rest must not carry it.
            assert status == 404 if name == "alert" else hidden not in body, name
        _revoke_elsewhere(db_url, info.id)
        time.sleep(ttl_s)
        for name, (path, params) in outputs.items():
            status, body = read(path, params, token)
            assert status == 401 and hidden not in body, name


def _revoke_elsewhere(db_url: str, *token_ids: int) -> None:
    """Revoke through an archive handle of its own, as `mmbroker token revoke` in another
    process does: nothing shared with the app's token cache."""
    elsewhere = Archive.open(db_url)
    try:
        for token_id in token_ids:
            assert revoke_token(elsewhere, token_id)
    finally:
        elsewhere.engine.dispose()
