"""The dashboard's server side on both backends: state, live feed, sign-in, acknowledgements,
stream health, latency chain and provenance drawing (the browser tests are in
``test_dashboard_e2e.py``)."""

from __future__ import annotations

import html
import json
import re
import socket
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from broker.archive.models import AlertRow, Delivery, VOEventRow
from broker.archive.store import Archive
from broker.config import Settings, get_settings
from broker.runtime.ingest import Ingestor
from broker.web.app import create_app
from broker.web.auth import SESSION_COOKIE
from broker.web.latency import STEPS, distribution, step_times
from broker.web.streamhealth import health_view
from broker.web.tokens import create_token
from listeners.envelope import RawMessage
from tests.conftest import chain_forks, ingest_demo
from tests.servers import live_app, wait_for

FUTURE = "2099-01-01T00:00:00Z"


def _settings(**kw: Any) -> Settings:
    return get_settings(api_rate_limit_per_s=0, comet=False, live_poll_s=0.05,
                        alarm_roles=["observation", "test"], **kw)


@pytest.fixture
def world(archive: Archive) -> Iterator[tuple[TestClient, Archive, dict[str, str]]]:
    ingest_demo(archive, embargoed_until=FUTURE)
    tokens = {name: create_token(archive, name, scopes)[0] for name, scopes in
              (("alice", ["ack"]), ("bob", ["read:embargoed"]), ("admin", ["admin"]))}
    with TestClient(create_app(_settings(), archive=archive)) as client:
        yield client, archive, tokens


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_state_lists_rows_alarms_health_and_latency(
        world: tuple[TestClient, Archive, dict[str, str]]) -> None:
    client, _, tokens = world
    admin = client.get("/dashboard/state", headers=_auth(tokens["admin"])).json()
    assert [a["messenger"] for a in admin["alerts"]] == [
        "gravitational_wave", "gamma_ray", "neutrino"]  # newest arrival first
    assert {c["pairing"] for c in admin["coincidences"]} == {"hen-grb", "gw_cbc-grb", "gw-hen"}
    assert all(c["significant"] and c["ack"] is None for c in admin["coincidences"])
    assert {a["ivorn"] for a in admin["alarms"]} == {c["ivorn"] for c in admin["coincidences"]}
    assert admin["user"] == {"name": "admin", "scopes": ["admin"], "can_ack": True}
    assert admin["latency"]["alerts"] == 3
    received = admin["latency"]["intervals"]["received->matched"]
    assert received["count"] == 3 and 0 <= received["p50"] < 60
    # The public sees neither the embargoed trigger nor the coincidences it is in.
    public = client.get("/dashboard/state").json()
    assert [a["messenger"] for a in public["alerts"]] == ["gravitational_wave", "gamma_ray"]
    assert [c["pairing"] for c in public["coincidences"]] == ["gw_cbc-grb"]
    assert [c["pairing"] for c in public["alarms"]] == ["gw_cbc-grb"]
    assert public["user"]["name"] is None
    # Health and latency would show that an embargoed alert arrived: not for the public.
    assert public["health"] is None and public["latency"] is None
    assert client.get("/dashboard/latency").status_code == 403
    assert client.get("/dashboard/latency", headers=_auth(tokens["bob"])).json()["alerts"] == 3


def test_acknowledging_needs_the_scope_and_is_recorded(
        world: tuple[TestClient, Archive, dict[str, str]]) -> None:
    client, _, tokens = world
    alarms = client.get("/dashboard/state", headers=_auth(tokens["admin"])).json()["alarms"]
    target = next(a for a in alarms if a["pairing"] == "gw_cbc-grb")
    url = f"/api/v1/coincidences/{quote(target['ivorn'], safe='')}/acknowledgements"
    assert client.post(url).status_code == 401
    assert client.post(url, headers=_auth(tokens["bob"])).status_code == 403
    hidden = next(a for a in alarms if a["pairing"] == "hen-grb")
    hidden_url = f"/api/v1/coincidences/{quote(hidden['ivorn'], safe='')}/acknowledgements"
    # alice may acknowledge, but not what she may not see (the embargoed trigger's).
    assert client.post(hidden_url, headers=_auth(tokens["alice"])).status_code == 404
    before = datetime.now(UTC)
    reply = client.post(url, headers=_auth(tokens["alice"]), json={"note": "Swift ToO sent"})
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["acked_by"] == "alice" and body["note"] == "Swift ToO sent"
    acked_at = datetime.fromisoformat(body["acked_at"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= acked_at <= datetime.now(UTC)
    assert client.post(url, headers=_auth(tokens["alice"]),
                       json={"note": "x" * 2001}).status_code == 422
    state = client.get("/dashboard/state", headers=_auth(tokens["admin"])).json()
    assert target["ivorn"] not in {a["ivorn"] for a in state["alarms"]}
    acked = next(c for c in state["coincidences"] if c["ivorn"] == target["ivorn"])
    assert acked["ack"]["acked_by"] == "alice"
    page = client.get(f"/dashboard/coincidences/{quote(target['ivorn'], safe='')}")
    assert page.status_code == 200 and "alice at" in page.text and "Swift ToO sent" in page.text
    missing = "/api/v1/coincidences/ivo%3A%2F%2Fx%2Fy%23z/acknowledgements"
    assert client.post(missing, headers=_auth(tokens["alice"])).status_code == 404


def test_signing_in_keeps_the_token_in_a_strict_httponly_cookie(
        world: tuple[TestClient, Archive, dict[str, str]]) -> None:
    client, _, tokens = world
    bad = client.post("/dashboard/login", data={"token": "mmb_nope"}, follow_redirects=False)
    assert bad.status_code == 401 and "Sign-in failed" in bad.text
    good = client.post("/dashboard/login", data={"token": tokens["bob"], "next": "//evil.test/"},
                       follow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/"
    cookie = good.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    # The cookie reads what the token may read (here the embargoed trigger), everywhere.
    state = client.get("/dashboard/state").json()
    assert state["user"]["name"] == "bob" and len(state["alerts"]) == 3
    assert client.get("/api/v1/alerts").json()["items"][-1]["messenger"] == "neutrino"
    assert "signed in as" in client.get("/").text
    client.post("/dashboard/logout", follow_redirects=False)
    client.cookies.clear()
    assert client.get("/dashboard/state").json()["user"]["name"] is None
    # A stale cookie is no token at all, not an error.
    client.cookies.set(SESSION_COOKIE, "mmb_revoked")
    assert client.get("/dashboard/state").status_code == 200


def test_detail_pages_show_what_the_viewer_may_see(
        world: tuple[TestClient, Archive, dict[str, str]]) -> None:
    client, archive, tokens = world
    with archive.engine.connect() as conn:
        rows = {r.messenger: r.ivorn for r in conn.execute(
            AlertRow.__table__.select().order_by(AlertRow.id))}
    grb = client.get(f"/dashboard/alerts/{quote(rows['gamma_ray'], safe='')}")
    assert grb.status_code == 200 and "Fermi" in grb.text
    # The sky map the page shows is served, and is a PNG.
    (src,) = set(re.findall(r'<img[^>]* src="([^"]*skymap\.png[^"]*)"', grb.text))
    image = client.get(html.unescape(src))
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG\r\n\x1a\n")
    hidden = client.get(f"/dashboard/alerts/{quote(rows['neutrino'], safe='')}")
    assert hidden.status_code == 404 and "text/html" in hidden.headers["content-type"]
    shown = client.get(f"/dashboard/alerts/{quote(rows['neutrino'], safe='')}",
                       headers=_auth(tokens["bob"]))
    assert shown.status_code == 200
    assert "&lt;voe:VOEvent" in shown.text  # the trigger's own VOEvent, escaped
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="prov-graph"' in shown.text
    unknown = client.get("/dashboard/coincidences/ivo%3A%2F%2Fnowhere%2Fx%231")
    assert unknown.status_code == 404 and "no coincidence" in unknown.text


def _events(url: str, headers: dict[str, str], stop: threading.Event,
            out: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Read ``/dashboard/events`` as a browser would, until ``stop``; events go to ``out``.

    A plain socket with a timeout (so ``stop`` is honoured) and a chunked-body
    decoder: buffered HTTP readers cannot be read again after a timeout.
    """
    host, port = url.removeprefix("http://").split(":")
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET /dashboard/events HTTP/1.1\r\nHost: {host}\r\n"
                     f"Accept: text/event-stream\r\n{extra}\r\n".encode())
        sock.settimeout(0.2)
        raw, body = b"", b""
        head_done = False
        while not stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            raw += data
            if not head_done:
                if b"\r\n\r\n" not in raw:
                    continue
                head, raw = raw.split(b"\r\n\r\n", 1)
                assert head.startswith(b"HTTP/1.1 200"), head
                head_done = True
            while b"\r\n" in raw:  # chunks: size line, data, CRLF
                size_line, rest = raw.split(b"\r\n", 1)
                size = int(size_line, 16)
                if size == 0:
                    return  # the last chunk: the server ended the stream
                if len(rest) < size + 2:
                    break
                body += rest[:size]
                raw = rest[size + 2:]
            while b"\n\n" in body:
                block, body = body.split(b"\n\n", 1)
                fields = dict(line.split(": ", 1) for line in block.decode().split("\n")
                              if ": " in line and not line.startswith(":"))
                if "event" in fields:
                    out.append((fields.get("id", ""), fields["event"],
                                json.loads(fields["data"])))


ROWS = ("alert", "coincidence", "ack")


def _rows(events: list[Any]) -> list[Any]:
    return [e for e in events if e[1] in ROWS]


@pytest.mark.timeout(120)
def test_the_live_feed_pushes_new_rows_only_to_those_who_may_see_them(
        archive: Archive) -> None:
    admin_token, _ = create_token(archive, "admin", ["admin"])
    app = create_app(_settings(), archive=archive)
    with live_app(app) as url:
        stop = threading.Event()
        public: list[Any] = []
        admin: list[Any] = []
        threads = [threading.Thread(target=_events, args=(url, {}, stop, public)),
                   threading.Thread(target=_events, args=(url, _auth(admin_token), stop, admin))]
        for t in threads:
            t.start()
        try:
            assert wait_for(lambda: [e[1] for e in public[:1] + admin[:1]] == ["hello"] * 2, 10)
            assert admin[0][2]["user"] == "admin" and public[0][2]["user"] is None
            ingest_demo(archive, embargoed_until=FUTURE)
            assert wait_for(lambda: len(_rows(admin)) >= 6, 20), admin
            assert wait_for(lambda: len(_rows(public)) >= 3, 20), public
            assert sorted(e[1] for e in _rows(admin)) == ["alert"] * 3 + ["coincidence"] * 3
            pub = [e[2] for e in _rows(public)]
            assert sorted(d.get("messenger") or d.get("pairing") for d in pub) == [
                "gamma_ray", "gravitational_wave", "gw_cbc-grb"]
            # An acknowledgement goes where its coincidence goes.
            hidden = next(e[2] for e in _rows(admin) if e[2].get("pairing") == "hen-grb")
            archive.acknowledge(archive.coincidence_row_ids([hidden["ivorn"]])[hidden["ivorn"]],
                                "alice")
            assert wait_for(lambda: any(e[1] == "ack" for e in admin), 10)
            (ack,) = [e[2] for e in admin if e[1] == "ack"]
            assert ack["coincidence"] == hidden["ivorn"] and ack["acked_by"] == "alice"
            ids = [e[0] for e in _rows(admin)]
            assert len(set(ids)) == len(ids) and all(ids), ids
            # A browser reconnecting with Last-Event-ID gets what came after it...
            replay: list[Any] = []
            last = _rows(admin)[2][0]
            again = threading.Thread(target=_events, args=(
                url, {**_auth(admin_token), "Last-Event-ID": last}, stop, replay))
            again.start()
            threads.append(again)
            assert wait_for(lambda: len(_rows(replay)) >= 4, 10), replay
            assert [e[0] for e in _rows(replay)] == [e[0] for e in _rows(admin)[3:]]
            # ...and one from another process's feed is told to reload its state.
            stale: list[Any] = []
            other = threading.Thread(target=_events, args=(
                url, {"Last-Event-ID": "0badc0de-7"}, stop, stale))
            other.start()
            threads.append(other)
            assert wait_for(lambda: [e[1] for e in stale[:2]] == ["hello", "reset"], 10), stale
            # Stream health comes every second, to those with the scope only.
            assert wait_for(lambda: any(s["stream"] == "igwn.gwalert" for e in admin
                                        if e[1] == "health" for s in e[2]["streams"]), 10)
            assert not any(e[1] == "health" for e in public)
            assert not any(e[1] == "ack" for e in public)
        finally:
            stop.set()
            for t in threads:
                t.join(10)


def test_the_feed_looks_again_for_ids_it_skipped() -> None:
    """Ids need not commit in order: one skipped over is looked for until the grace ends."""
    from sqlalchemy.dialects import sqlite

    from broker.web.livefeed import GAP_GRACE_S, _Marks

    marks = _Marks(10)
    marks.advance([11, 12, 15], mono_s=0.0)
    assert marks.last == 15 and sorted(marks.gaps) == [13, 14]
    sql = str(marks.unseen(AlertRow.id).compile(dialect=sqlite.dialect(),
                                                compile_kwargs={"literal_binds": True}))
    assert "alerts.id > 15" in sql and "alerts.id BETWEEN 13 AND 14" in sql
    marks.advance([14], mono_s=1.0)  # the late commit is found, and not looked for again
    assert sorted(marks.gaps) == [13]
    marks.advance([], mono_s=GAP_GRACE_S + 1)  # a rolled-back id is given up on
    assert marks.gaps == {}


def test_polls_find_new_rows_late_commits_and_ended_embargoes(archive: Archive) -> None:
    """The poll's statements are built once with bind parameters (issue 17): against the
    archive, new rows come once, an id skipped over is found when it commits (the gap
    path), and a row whose embargo ended in the window comes again."""
    from alerts_schema import Alert
    from alerts_schema.synthetic import alert_documents
    from broker.archive.db import transaction
    from broker.archive.store import alert_row_values, utcnow
    from broker.web.livefeed import LiveFeed

    docs = alert_documents(4, seed=11, prefix="feed")
    raws = [RawMessage("file", json.dumps(d).encode()) for d in docs]
    archive.store_raw(raws)
    values = [alert_row_values(Alert.model_validate(d), r) for d, r in zip(docs, raws,
                                                                          strict=True)]
    ends = utcnow() + timedelta(seconds=1)
    values[1].update(data_rights="embargoed", embargo_until=ends)

    def insert(row_id: int, row: dict[str, Any]) -> None:
        with transaction(archive.engine) as conn:
            conn.execute(AlertRow.__table__.insert().values(id=row_id, **row))

    feed = LiveFeed(archive, _settings())
    feed._start_marks()

    rights: dict[str, list[Any]] = {}

    def poll() -> list[str]:
        fresh, seen = feed._poll()
        for kind, ids in seen.items():
            feed._marks[kind].advance(ids, 0.0)
        rights.update({data["ivorn"]: r for kind, data, r in fresh if kind == "alert"})
        return [data["ivorn"] for kind, data, _ in fresh if kind == "alert"]

    insert(1, values[0])
    insert(2, values[1])
    insert(4, values[3])  # id 3 is taken but not committed yet
    assert poll() == [docs[0]["id"], docs[1]["id"], docs[3]["id"]]
    assert sorted(feed._marks["alert"].gaps) == [3]
    assert poll() == []
    insert(3, values[2])  # the late commit
    assert poll() == [docs[2]["id"]]
    assert feed._marks["alert"].gaps == {}
    assert poll() == []  # the fast path: nothing new
    wait_for(lambda: utcnow() > ends, 10)
    assert poll() == [docs[1]["id"]]  # its embargo ended: again, for those it was hidden from
    assert poll() == []
    # Each row goes out with its rights, which the feed offers by (the embargoed one's too).
    assert rights[docs[1]["id"]] == [("embargoed", ends)]
    assert rights[docs[0]["id"]] == [(values[0]["data_rights"], values[0]["embargo_until"])]


def test_dashboard_writes_refuse_other_sites(
        world: tuple[TestClient, Archive, dict[str, str]]) -> None:
    client, _, tokens = world
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null"}):
        reply = client.post("/dashboard/login", data={"token": tokens["alice"]},
                            headers=headers, follow_redirects=False)
        assert reply.status_code == 403, headers
        assert client.post("/dashboard/logout", headers=headers,
                           follow_redirects=False).status_code == 403
    same = client.post("/dashboard/login", data={"token": tokens["alice"]},
                       headers={"Origin": str(client.base_url)}, follow_redirects=False)
    assert same.status_code == 303
    alarms = client.get("/dashboard/state").json()["alarms"]
    url = f"/api/v1/coincidences/{quote(alarms[0]['ivorn'], safe='')}/acknowledgements"
    assert client.post(url, headers={"Origin": "https://evil.example"}).status_code == 403
    # The cookie signs acknowledgements, never other writes such as triggers.
    assert client.post("/api/v1/triggers", json={}).status_code == 401
    assert client.post(url, json={}).status_code == 201


def test_stream_health_states(archive: Archive) -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    settings = _settings(streams=["snews"], kafka_topics=["gcn.notices.fermi.gbm"],
                         vtp_peers=["peer.example:8099"],
                         stream_stale_overrides="gcn.heartbeat=10")
    then = now - timedelta(seconds=30)
    Ingestor(archive, authority="test.mmbroker").ingest([
        RawMessage("gcn.heartbeat", b"{}", received_at=then),
        RawMessage("igwn.gwalert", b"{}", received_at=then)])
    archive.set_stream_connected(["vtp:peer.example:8099"], False,
                                 at=now - timedelta(seconds=5))
    view = {(r["stream"], r["detector"]): r for r in
            health_view(archive, settings, deque(), 0.0, now=now)}
    assert view[("gcn.heartbeat", "")]["state"] == "stale"  # 30 s > its 10 s
    assert view[("igwn.gwalert", "")]["state"] == "ok"  # 30 s < the default 900 s
    assert view[("igwn.gwalert", "")]["last_message_age_s"] == 30
    assert view[("snews", "")]["state"] == "stale"  # configured, never heard from
    assert view[("gcn.notices.fermi.gbm", "")]["messages_total"] == 0
    assert view[("vtp:peer.example:8099", "")]["state"] == "disconnected"
    assert view[("vtp:peer.example:8099", "")]["connection_age_s"] == 5  # disconnected since
    assert view[("igwn.gwalert", "")]["quarantined_total"] == 1  # b"{}" is no GW alert


def test_connection_changes_move_only_on_a_change(archive: Archive) -> None:
    t0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    archive.set_stream_connected(["a", "b"], True, at=t0)
    archive.set_stream_connected(["a"], True, at=t0 + timedelta(seconds=5))
    archive.set_stream_connected(["b"], False, at=t0 + timedelta(seconds=7))
    rows = {r["stream"]: r for r in archive.stream_health()}
    assert rows["a"]["connected"] is True and rows["a"]["connection_changed_at"] == t0
    assert rows["b"]["connected"] is False
    assert rows["b"]["connection_changed_at"] == t0 + timedelta(seconds=7)


def test_latency_chain_runs_forward(archive: Archive) -> None:
    from broker.archive.store import utcnow
    from broker.publish import outbox

    ingest_demo(archive, targets=("vtp",))
    # Comet accepts every queued VOEvent (the outbox's own record of it).
    outbox.mark_sent(archive, [(due, utcnow()) for due in outbox.claim_due(archive, "vtp")])
    with archive.engine.connect() as conn:
        ivorns = dict(conn.execute(select(AlertRow.id, AlertRow.ivorn)).all())
        steps = step_times(conn, list(ivorns))
        summary = distribution(conn)
        sent = dict(conn.execute(select(VOEventRow.ivorn, Delivery.delivered_at)
                                 .join(Delivery, Delivery.voevent_id == VOEventRow.id)).all())
    assert len(steps) == 3
    for s in steps.values():
        assert all(s[name] is not None for name in STEPS), s  # every step reached
        assert s["acknowledged"] == sent[s["voevent_ivorn"]]
    # The demo's neutrino trigger by its own VOEvent; the other two complete coincidences.
    assert chain_forks(steps, ivorns) == 1
    intervals = summary["intervals"]
    assert set(intervals) == {"event->received", "received->matched",
                              "received->published", "published->acknowledged",
                              "event->acknowledged"}
    assert all(intervals[k]["count"] == 3 for k in intervals)
    assert all(intervals[k]["p50"] >= 0 for k in intervals)


def test_provenance_graph_draws_every_record(world: tuple[TestClient, Archive, dict[str, str]]
                                             ) -> None:
    from broker.archive.models import ProvenanceDoc
    from broker.web.provenance_graph import to_svg

    _, archive, _ = world
    with archive.engine.connect() as conn:
        docs = [r.document for r in conn.execute(ProvenanceDoc.__table__.select())]
    assert docs
    for doc in docs:
        svg = ElementTree.fromstring(to_svg(doc))
        ns = {"s": "http://www.w3.org/2000/svg"}
        nodes = svg.findall(".//s:g", ns)
        expected = sum(len(doc.get(k, {})) for k in ("entity", "activity", "agent"))
        assert len(nodes) == expected
        assert len(svg.findall("s:line", ns)) >= 3


def test_stale_overrides_setting_parses() -> None:
    s = get_settings(stream_stale_overrides="gcn.heartbeat=10, snews = 120")
    assert s.stale_after_s("gcn.heartbeat") == 10 and s.stale_after_s("snews") == 120
    assert s.stale_after_s("other") == s.stream_stale_after_s
    from alerts_schema.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="not stream=seconds"):
        get_settings(stream_stale_overrides="gcn.heartbeat")


def test_hostile_text_from_a_stream_is_shown_as_text(archive: Archive) -> None:
    """A facility name carrying markup reaches pages escaped and the feed as plain JSON."""
    from importlib import resources

    trigger = json.loads(resources.files("alerts_schema").joinpath(
        "examples", "trigger-track-single.example.json").read_text())
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    trigger.update(detector=hostile, event_id="HOSTILE-1")
    outcome, = Ingestor(archive, authority="test.mmbroker").ingest(
        [RawMessage("detector", json.dumps(trigger).encode())])
    assert outcome.status == "archived", outcome
    with TestClient(create_app(_settings(), archive=archive)) as client:
        page = client.get(f"/dashboard/alerts/{quote(outcome.ivorn, safe='')}")
        assert page.status_code == 200
        assert hostile not in page.text and "&lt;script&gt;alert(" in page.text
        state = client.get("/dashboard/state").json()
        assert state["alerts"][0]["facility"] == hostile  # data, for textContent
        from importlib import resources

        for script in resources.files("broker.web").joinpath("static").iterdir():
            if script.name.endswith(".js"):
                served = client.get(f"/static/{script.name}")
                # Module scripts: a browser runs them only with a JavaScript type.
                assert "javascript" in served.headers["content-type"], script.name
                assert "innerHTML" not in served.text, script.name


def test_rows_that_never_alarm_cannot_hide_an_alarm(archive: Archive) -> None:
    """Drill coincidences with a small FAR never alarm (their role is not in
    ``alarm_roles``), so nobody acknowledges them; 100 newer ones must not push the real
    alarms out of the page's first state (the alarm query's limit)."""
    from sqlalchemy import insert

    from broker.archive import query as q
    from broker.archive.db import transaction
    from broker.archive.models import CoincidenceMember, CoincidenceRow
    from broker.web.dashboard import _alarms

    ingest_demo(archive)
    settings = get_settings(comet=False, alarm_roles=["observation", "test"])
    now = datetime.now(UTC)
    with transaction(archive.engine, readonly=True) as conn:
        before = sorted(d["pairing"] for d in _alarms(conn, q.ARCHIVIST, now, settings))
    assert before == ["gw-hen", "gw_cbc-grb", "hen-grb"]
    with transaction(archive.engine) as conn:
        alert = dict(conn.execute(select(AlertRow.__table__).limit(1)).one()._mapping)
        alert.pop("id")
        alert.update(role="drill", event_id="DRILL-1", ivorn=alert["ivorn"] + "-drill",
                     match_seq=None)
        drill = conn.execute(insert(AlertRow.__table__).values(**alert)).inserted_primary_key[0]
        template = dict(conn.execute(select(CoincidenceRow.__table__).limit(1)).one()._mapping)
        template.pop("id")
        for i in range(120):
            row = {**template, "ivorn": f"{template['ivorn']}-drill{i}", "result_key": f"d{i}",
                   "supersedes_id": None, "created_at": now}
            cid = conn.execute(insert(CoincidenceRow.__table__).values(**row)
                               ).inserted_primary_key[0]
            conn.execute(insert(CoincidenceMember.__table__).values(
                coincidence_id=cid, alert_id=drill, time_offset_s=0.0))
    with transaction(archive.engine, readonly=True) as conn:
        after = sorted(d["pairing"] for d in _alarms(conn, q.ARCHIVIST, now, settings))
    assert after == before


def test_stream_health_is_read_only_while_someone_looks(archive: Archive) -> None:
    """The poller leaves stream health alone while no page listens (an API replica
    nobody watches must not query the archive every second); a page's first state
    computes it on demand."""
    import asyncio

    from broker.web.livefeed import LiveFeed

    Ingestor(archive, authority="test.mmbroker").ingest([RawMessage("igwn.gwalert", b"{}")])
    feed = LiveFeed(archive, _settings())

    async def idle() -> None:
        await feed.start()
        await asyncio.sleep(0.5)  # ten polls at live_poll_s = 0.05
        await feed.stop()

    asyncio.run(idle())
    assert feed.health == []
    assert [h["stream"] for h in feed.current_health()] == ["igwn.gwalert"]


def test_messages_per_minute_spans_a_window_and_no_gap(archive: Archive) -> None:
    """The rate is over at least a minute of readings, and none across a gap (nobody
    watching for a while): no figure rather than a few seconds' noise."""
    from broker.web.streamhealth import RATE_WINDOW_S

    settings = _settings(streams=["s"])
    totals: deque = deque()

    def rate(mono_s: float) -> float | None:
        (row,) = [r for r in health_view(archive, settings, totals, mono_s)
                  if r["stream"] == "s"]
        return row["messages_per_min"]

    ingest = Ingestor(archive, authority="test.mmbroker")
    assert rate(0.0) is None
    ingest.ingest([RawMessage("s", b"{}")])
    assert rate(5.0) is None  # five seconds: too short to tell
    ingest.ingest([RawMessage("s", b"{1}")])
    assert rate(RATE_WINDOW_S) == 2.0  # two messages over the minute since the first
    assert rate(10 * RATE_WINDOW_S) is None  # readings stopped for minutes: none yet


def test_concurrent_health_refreshes_compute_once(archive: Archive,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Page loads and the poller refresh from threads of their own: one computes, the
    others wait for its result (two at once mutated the shared readings)."""
    from broker.web.livefeed import LiveFeed

    feed = LiveFeed(archive, _settings())
    calls: list[int] = []
    started = threading.Barrier(8)
    original = archive.stream_health

    def counted() -> list:
        calls.append(1)
        return original()

    monkeypatch.setattr(archive, "stream_health", counted)
    results: list = []

    def load() -> None:
        started.wait()
        results.append(feed.current_health())

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 8 and len(calls) == 1


# -- issue 14: revocation and expiry reach open streams; ids reveal no hidden row ----------


def _triggers(archive: Archive, rights: list[str]) -> list[str]:
    """One detector trigger per entry of ``rights`` ("public" or "embargoed" until 2099),
    archived in that order; their IVORNs."""
    from broker import demo

    _, raw, _ = demo.scenario_messages()[0]
    template = json.loads(raw.data)
    ingestor = Ingestor(archive, authority="test.mmbroker")
    ivorns = []
    for right in rights:
        trigger = {**template, "event_id": f"I14-{len(ivorns)}-{datetime.now(UTC):%H%M%S%f}"}
        if right == "embargoed":
            trigger["data_rights"] = {"level": "embargoed", "embargo_until": FUTURE}
        (result,) = ingestor.ingest([RawMessage(raw.source, json.dumps(trigger).encode())])
        ivorns.append(result.ivorn)
    return ivorns


def _stream(url: str, headers: dict[str, str], stop: threading.Event
            ) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=_events, args=(url, headers, stop, out), daemon=True)
    thread.start()
    assert wait_for(lambda: out[:1] and out[0][1] == "hello", 10), out
    return thread, out


def _ivorns(events: list[Any]) -> list[str]:
    return [e[2]["ivorn"] for e in events if e[1] == "alert"]


@pytest.mark.timeout(120)
def test_revoking_a_token_ends_its_open_streams_within_5_s(archive: Archive,
                                                           db_url: str) -> None:
    """A read:embargoed token revoked (`mmbroker token revoke`, another process) while its
    streams are open (bearer and sign-in cookie): both end within 5 s and carry no
    embargoed row after that; an anonymous stream is not touched.  The check that ends
    them also drops the token from the app's token cache: reconnecting with it at once
    is refused, even with a cache that would trust it for a minute more."""
    import time

    from tests.conftest import mmbroker

    token, info = create_token(archive, "bob", ["read:embargoed"])
    app = create_app(_settings(token_cache_s=60), archive=archive)
    stop = threading.Event()
    with live_app(app) as url:
        try:
            bearer, by_bearer = _stream(url, _auth(token), stop)
            cookie, by_cookie = _stream(url, {"Cookie": f"{SESSION_COOKIE}={token}"}, stop)
            public, by_public = _stream(url, {}, stop)
            (before,) = _triggers(archive, ["embargoed"])
            assert wait_for(lambda: before in _ivorns(by_bearer)
                            and before in _ivorns(by_cookie), 10), (by_bearer, by_cookie)
            assert before not in _ivorns(by_public)
            started = time.monotonic()
            mmbroker("--db", db_url, "token", "revoke", str(info.id), timeout=60)
            revoked = time.monotonic()  # committed by now (the CLI has exited)
            assert wait_for(lambda: not bearer.is_alive() and not cookie.is_alive(), 5), \
                "a revoked token's stream was still open after 5 s"
            request = urllib.request.Request(f"{url}/dashboard/state", headers=_auth(token))
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            refused.value.close()
            assert refused.value.code == 401
            print(f"streams ended {time.monotonic() - revoked:.2f} s after the CLI exited, "
                  f"{time.monotonic() - started:.2f} s after it started")
            (after,) = _triggers(archive, ["embargoed"])
            (shown,) = _triggers(archive, ["public"])
            assert wait_for(lambda: shown in _ivorns(by_public), 10)
            assert after not in _ivorns(by_bearer) + _ivorns(by_cookie)
            assert public.is_alive()
        finally:
            stop.set()


@pytest.mark.timeout(120)
def test_an_expiring_token_ends_its_open_stream_within_5_s(archive: Archive) -> None:
    """A read:embargoed token that expires 3 s after its stream opened: the stream ends
    within 5 s of the expiry, and no embargoed row archived after it reaches the stream."""
    import time

    token, info = create_token(archive, "short", ["read:embargoed"],
                               expires_in=timedelta(seconds=3))
    app = create_app(_settings(), archive=archive)
    stop = threading.Event()
    with live_app(app) as url:
        try:
            thread, seen = _stream(url, _auth(token), stop)
            (before,) = _triggers(archive, ["embargoed"])
            assert wait_for(lambda: before in _ivorns(seen), 10), seen
            assert info.expires_at is not None
            expires_in_s = (info.expires_at - datetime.now(UTC)).total_seconds()
            assert thread.is_alive() and expires_in_s > 0  # the test is not too late
            time.sleep(max(0.0, expires_in_s))
            expired = time.monotonic()
            assert wait_for(lambda: not thread.is_alive(), 5), \
                "an expired token's stream was still open 5 s after the expiry"
            print(f"stream ended {time.monotonic() - expired:.2f} s after the expiry")
            (after,) = _triggers(archive, ["embargoed"])
            time.sleep(1.0)  # several polls at live_poll_s = 0.05
            assert after not in _ivorns(seen)
        finally:
            stop.set()


@pytest.mark.timeout(120)
def test_feed_ids_reveal_nothing_of_hidden_rows_and_resume_for_everyone(
        archive: Archive) -> None:
    """One public alert, three embargoed ones, another public one.  The anonymous viewer's
    event ids and the state's ``last_event_id`` are opaque (never the feed's sequence
    number, new at every reading, so that two readings tell nothing of what came between);
    both viewers resume from their own ids (``Last-Event-ID``) and get exactly what they
    may see after it."""
    token, _ = create_token(archive, "bob", ["read:embargoed"])
    app = create_app(_settings(), archive=archive)
    stop = threading.Event()
    with live_app(app) as url, TestClient(app) as client:
        try:
            anonymous = {}
            state = [client.get("/dashboard/state").json()["last_event_id"] for _ in range(2)]
            # Nothing came between two readings, and they differ: a difference says nothing.
            assert state[0] != state[1], state
            assert not any(re.fullmatch(r"[0-9a-f]+-\d+", s) for s in state), state
            _, anon = _stream(url, anonymous, stop)
            _, bob = _stream(url, _auth(token), stop)
            ivorns = _triggers(archive, ["public", "embargoed", "embargoed", "embargoed",
                                         "public"])
            public = [ivorns[0], ivorns[4]]
            assert wait_for(lambda: _ivorns(bob) == ivorns, 10), bob
            assert wait_for(lambda: _ivorns(anon) == public, 10), anon
            ids = [e[0] for e in anon if e[1] == "alert"]
            for _, kind, data in anon + bob:  # rows by IVORN, no database ids
                if kind in ROWS:
                    assert not {"id", "supersedes_id", "coincidence_id"} & set(data), data
            epoch = anon[0][2]["epoch"]
            for event_id in ids:
                prefix, _, sealed = event_id.partition("-")
                assert prefix == epoch and not sealed.isdigit() and len(sealed) >= 16, ids
            # Resume: each from its own id, each exactly what it may see after it.
            for headers, seen, expected in ((anonymous, anon, public[1:]),
                                            (_auth(token), bob, ivorns[1:])):
                first = next(e[0] for e in seen if e[1] == "alert")
                _, replay = _stream(url, {**headers, "Last-Event-ID": first}, stop)
                assert wait_for(lambda r=replay, x=expected: _ivorns(r) == x, 10), replay
                assert not any(e[1] == "reset" for e in replay)
            # From a page's state read before the alerts: all of them, and no reset.
            for headers, expected in ((anonymous, public), (_auth(token), ivorns)):
                _, replay = _stream(url, {**headers, "Last-Event-ID": state[1]}, stop)
                assert wait_for(lambda r=replay, x=expected: _ivorns(r) == x, 10), replay
                assert not any(e[1] == "reset" for e in replay)
            # A forged id (the old form, or a tampered one) cannot resume: reset.
            for forged in (f"{epoch}-1", ids[0][:-2] + ("AA" if ids[0][-2:] != "AA" else "BB")):
                _, replay = _stream(url, {"Last-Event-ID": forged}, stop)
                assert wait_for(lambda r=replay: [e[1] for e in r[:2]] == ["hello", "reset"],
                                10), replay
        finally:
            stop.set()


def test_a_hidden_revision_neither_clears_nor_shows_a_public_alarm(
        world: tuple[TestClient, Archive, dict[str, str]]) -> None:
    """A public coincidence's next revision takes in the embargoed trigger (so it is
    hidden): the public still sees the alarm it saw (its going would tell that a hidden
    revision exists), the admin sees the new revision's alarm instead; no row is named
    by a database id, whose gaps would count hidden rows."""
    from sqlalchemy import insert

    from broker.archive.db import transaction
    from broker.archive.models import CoincidenceMember, CoincidenceRow

    client, archive, tokens = world
    public = client.get("/dashboard/state").json()
    (alarm,) = public["alarms"]
    for row in public["alerts"] + public["coincidences"] + public["alarms"]:
        assert not {"id", "supersedes_id", "coincidence_id"} & set(row), row
    with transaction(archive.engine) as conn:
        old = dict(conn.execute(select(CoincidenceRow.__table__).where(
            CoincidenceRow.ivorn == alarm["ivorn"])).one()._mapping)
        members = [m.alert_id for m in conn.execute(select(CoincidenceMember.alert_id).where(
            CoincidenceMember.coincidence_id == old["id"]))]
        hidden = conn.execute(select(AlertRow.id).where(
            AlertRow.data_rights == "embargoed")).scalar_one()
        old_id = old.pop("id")
        new = {**old, "ivorn": old["ivorn"] + "-r1", "result_key": old["result_key"][:-3] + "-r1",
               "revision": old["revision"] + 1, "supersedes_id": old_id,
               "state": "updated", "created_at": datetime.now(UTC)}
        new_id = conn.execute(insert(CoincidenceRow.__table__).values(**new)
                              ).inserted_primary_key[0]
        for alert_id in [*members, hidden]:
            conn.execute(insert(CoincidenceMember.__table__).values(
                coincidence_id=new_id, alert_id=alert_id, time_offset_s=0.0))
    after = client.get("/dashboard/state").json()
    assert [a["ivorn"] for a in after["alarms"]] == [alarm["ivorn"]]
    admin = client.get("/dashboard/state", headers=_auth(tokens["admin"])).json()
    ivorns = {a["ivorn"] for a in admin["alarms"]}
    assert new["ivorn"] in ivorns and alarm["ivorn"] not in ivorns
    (revised,) = [c for c in admin["coincidences"] if c["ivorn"] == new["ivorn"]]
    assert revised["supersedes"] == alarm["ivorn"]


_PAST = datetime(2020, 1, 1, tzinfo=UTC)
_RIGHTS = [("public", None), ("embargoed", datetime(2099, 1, 1, tzinfo=UTC)),
           ("embargoed", _PAST), ("proprietary", None)]
_SCOPES = ["read:embargoed", "read:proprietary", "ack", "admin"]


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(rows=st.lists(st.lists(st.sampled_from(_RIGHTS), min_size=1, max_size=3), max_size=25),
       scopes=st.sets(st.sampled_from(_SCOPES)))
def test_a_viewer_is_offered_and_replayed_exactly_what_it_may_see(
        rows: list[list[tuple[str, datetime | None]]], scopes: set[str]) -> None:
    """Random rows (each with its members' rights) x random scopes, in the feed's own logic:
    the viewer's queue holds exactly the rows it may see, in order; resuming from any id
    it got, or from a page's ``last_event_id`` taken before, replays exactly the visible
    rows after it; every id is new and of one shape, whatever came between."""
    from broker.archive.query import Viewer
    from broker.web.livefeed import LiveFeed, _Subscriber

    feed = LiveFeed(None, _settings())  # type: ignore[arg-type]  # no archive: not polled
    viewer = Viewer(frozenset(scopes))
    sub = _Subscriber(viewer, None)
    feed.subscribers.add(sub)
    start = feed.last_event_id
    for n, rights in enumerate(rows):
        feed._publish("coincidence", {"n": n}, list(rights))
    now = datetime.now(UTC)
    expected = [n for n, rights in enumerate(rows)
                if all(viewer.may_see(r, until, now) for r, until in rights)]
    got = []
    while not sub.queue.empty():
        event = sub.queue.get_nowait()
        assert event is not None
        got.append(event)
    assert [e.data["n"] for e in got] == expected

    def replay(last: str) -> list[int]:
        backlog = feed._backlog(last)
        assert backlog is not None, last
        return [e.data["n"] for e in backlog if e.visible_to(viewer, now)]

    assert replay(start) == expected
    for k, event in enumerate(got):
        assert replay(event.id or "") == expected[k + 1:]
    ids = [start, feed.last_event_id, *(e.id for e in got)]
    assert len(set(ids)) == len(ids)
    assert {(i.partition("-")[0], len(i)) for i in ids if i} == {(feed.epoch, len(start))}
