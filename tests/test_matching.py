"""The match stage's own interface, no Kafka: announcement keys, the broker's own bus
settings, the match lock and its fence, and what a match worker reloads and reads back
from the archive.  Real archives (both backends; PostgreSQL for the advisory lock)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from broker.archive.models import AlertRow, CoincidenceRow
from broker.archive.store import Archive
from tests.stage_support import GRBS, TRIGGERS


def test_announcements_keep_an_event_together_and_spread_a_stream() -> None:
    """Keyed by event: every revision of an event goes to one partition (in order), while
    the events of one busy stream spread over every partition, so over every match
    worker (a key per stream left one worker doing all of it)."""
    from types import SimpleNamespace

    from kafka.partitioner.default import murmur2

    from broker.runtime.announce import announcement_key

    partitions = list(range(4))

    def partition(event_id: str, revision: int) -> int:
        key = announcement_key(SimpleNamespace(  # type: ignore[arg-type]
            source="gcn.fermi.gbm", facility="Fermi", event_id=event_id, revision=revision))
        return (murmur2(key) & 0x7FFFFFFF) % len(partitions)  # the Java client's and ours

    assert {partition("bn261121001", r) for r in range(5)} == {partition("bn261121001", 0)}
    assert {partition(f"bn2611{i:05d}", 0) for i in range(64)} == set(partitions)


def test_the_broker_s_own_kafka_takes_its_own_credentials_not_the_input_streams() -> None:
    """``KAFKA_*`` configure the input streams (GCN's OIDC credentials, say); the alerts
    topic, the VOEvent output and the match stage's consumer use ``MMBROKER_BUS_KAFKA_*``."""
    from broker.config import get_settings
    from broker.runtime.announce import bus_client_kwargs, bus_consumer_properties
    from listeners.kafka import consumer_kwargs

    settings = get_settings(kafka_bootstrap="bus:9092", comet=False)
    gcn = {"KAFKA_DOMAIN": "gcn.example", "KAFKA_CLIENT___ID": "cid",
           "KAFKA_CLIENT___SECRET": "not-for-the-bus", "KAFKA_AUTO_OFFSET_RESET": "latest"}
    consumer = consumer_kwargs(bus_consumer_properties(settings, "g.match", gcn))
    assert consumer["bootstrap_servers"] == ["bus:9092"] and consumer["group_id"] == "g.match"
    assert consumer["auto_offset_reset"] == "earliest"
    assert not {k for k in consumer if k.startswith(("sasl", "security"))}
    assert bus_client_kwargs(gcn) == {}
    bus = {**gcn, "MMBROKER_BUS_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
           "MMBROKER_BUS_KAFKA_SASL_MECHANISMS": "SCRAM-SHA-512",
           "MMBROKER_BUS_KAFKA_SASL_USERNAME": "mmbroker",
           "MMBROKER_BUS_KAFKA_SASL_PASSWORD": "bus-secret"}
    expected = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": "mmbroker", "sasl_plain_password": "bus-secret"}
    assert bus_client_kwargs(bus) == expected
    consumer = consumer_kwargs(bus_consumer_properties(settings, "g.match", bus))
    assert {k: consumer[k] for k in expected} == expected


def test_a_round_that_lost_the_match_lock_numbers_nothing_and_is_matched_again(
        archive: Archive) -> None:
    """Two match workers on one archive, in one process (no Kafka: the workers' own
    interface).  The pair of an ordinary round is found once, by the worker holding the
    later member.  Then worker A's round runs as if its lock had been lost (a database
    restart drops PostgreSQL's advisory locks): B numbers a trigger A never caught up
    with.  A's numbering refuses (MatchOrderLost), A rebuilds its engine, and the round
    read again finds the pair the first attempt could not."""
    from datetime import UTC, datetime, timedelta

    from alerts_schema.errors import MatchOrderLost
    from broker.config import get_settings
    from broker.runtime.assembly import make_ingestor, match_worker
    from tests.dashboard_support import scenario

    settings = get_settings(comet=False)
    ingestor = make_ingestor(settings, archive)

    def archived(source: str, data: bytes) -> str:
        (outcome,) = ingestor.ingest([ingestor.receive(source, data)])
        assert outcome.status == "archived", outcome
        return outcome.ivorn

    now = datetime.now(UTC)
    pairs = []
    for k, when in enumerate((now - timedelta(minutes=30), now - timedelta(minutes=10))):
        trigger, grb = scenario(when, ra_deg=40.0 + 90 * k, dec_deg=10.0)
        pairs.append((archived(TRIGGERS, json.dumps(trigger).encode()),
                      archived(GRBS, grb)))
    a, b = match_worker(settings, archive), match_worker(settings, archive)
    a.warm()
    b.warm()
    assert a.handle([pairs[0][0]]) == 1 and b.handle([pairs[0][1]]) == 1
    assert (a.seq, b.seq) == (1, 2)
    assert len(b.pipeline.coincidences) == 1 and a.pipeline.coincidences == []

    b.handle([pairs[1][0]])  # numbered 3, while A's lock is (as if) lost:
    stale = a.pipeline
    a._catch_up = lambda: None  # type: ignore[method-assign]  # A never sees it
    refused = []
    number = archive.mark_matched

    def recorded(*args: Any, **kwargs: Any) -> Any:
        try:
            return number(*args, **kwargs)
        except MatchOrderLost:
            refused.append(kwargs["after"])
            raise

    archive.mark_matched = recorded  # type: ignore[method-assign]
    # The numbering refuses the stale round; A rebuilds from the archive (which knows
    # the trigger B numbered) and reads the round again, in place.
    assert a.handle([pairs[1][1]]) == 1
    assert refused == [1] and a.pipeline is not stale and a.seq == 4
    assert len(a.pipeline.coincidences) == 1
    with archive.engine.connect() as conn:
        seqs = sorted(conn.execute(select(AlertRow.match_seq)).scalars())
        found = conn.execute(select(CoincidenceRow.pairing)).scalars().all()
    assert seqs == [1, 2, 3, 4]
    assert found == ["hen-grb", "hen-grb"]


def test_a_restarted_match_worker_updates_a_coincidence_whose_survey_member_it_let_go(
        archive: Archive) -> None:
    """A survey transient is held for the slack only, and a restart reloads only the
    slack's worth of the survey; the members of stored coincidences are reloaded however
    old, so a neutrino's update hours later updates its neutrino-optical coincidence
    (revision 1 of the same series) instead of starting another."""
    from datetime import UTC, datetime, timedelta

    from broker.config import get_settings
    from broker.runtime.assembly import make_ingestor, match_worker

    settings = get_settings(comet=False, crossmatch_late_slack_s=600.0)
    ingestor = make_ingestor(settings, archive)
    now = datetime.now(UTC)

    def archived(event_id: str, messenger: str, facility: str, when: datetime,
                 ra_deg: float, radius_deg: float, revision: int = 0) -> str:
        return _file_alert(ingestor, event_id, messenger, facility, when, ra_deg, radius_deg,
                           revision)

    neutrino = archived("N1", "neutrino", "IceCube", now - timedelta(hours=3), 40.0, 1.0)
    member = archived("Z1", "optical", "ZTF", now - timedelta(hours=2), 40.2, 0.0003)
    other = archived("Z2", "optical", "ZTF", now - timedelta(hours=2), 200.0, 0.0003)
    first = match_worker(settings, archive)
    first.warm()
    assert first.handle([neutrino, member, other]) == 3
    assert [c.coincidence.pairing for c in first.pipeline.coincidences] == ["hen-optical"]
    series = first.pipeline.coincidences[0].coincidence.id.rsplit("-", 1)[0]

    restarted = match_worker(settings, archive)
    restarted.warm()
    update = archived("N1", "neutrino", "IceCube", now - timedelta(hours=3), 40.1, 0.8,
                      revision=1)
    assert restarted.handle([update]) == 1
    (result,) = [r.coincidence for r in restarted.pipeline.coincidences]
    assert (result.pairing, result.state, result.revision) == ("hen-optical", "updated", 1)
    assert result.id == f"{series}-1"
    assert [m.alert_id for m in result.members] == [update, member]
    held = {doc.id for doc in restarted.pipeline.engine._events.values()}
    assert member in held and other not in held  # two hours old: past the slack


def _file_alert(ingestor: Any, event_id: str, messenger: str, facility: str, when: Any,
                ra_deg: float, radius_deg: float, revision: int = 0, *,
                retraction: bool = False) -> str:
    """Archive one Alert document as a file would deliver it; its IVORN here."""
    document = {
        "schema_version": "1.0", "id": f"ivo://test.mmbroker/file#{event_id}-{revision}",
        "source": f"test.{facility.lower()}", "messenger": messenger,
        "facility": facility, "event_id": event_id, "revision": revision,
        "alert_type": "retraction" if retraction else "update" if revision else "initial",
        "role": "observation", "trigger_time": when.isoformat().replace("+00:00", "Z"),
        "data_rights": {"level": "public"},
        "localization": {"kind": "none"} if retraction else {
            "kind": "point", "ra_deg": ra_deg, "dec_deg": 10.0,
            "error_radius_deg": radius_deg, "containment": 0.9}}
    (outcome,) = ingestor.ingest([ingestor.receive("file", json.dumps(document).encode())])
    assert outcome.status == "archived", outcome
    return str(outcome.ivorn)


def test_the_engine_s_archive_window_sees_a_retraction_without_a_position(
        archive: Archive) -> None:
    """The engine's cone + time query finds matched transients by position; a retraction
    has none, and comes back with its transient, so the engine never takes a retracted
    transient for a partner."""
    from datetime import UTC, datetime, timedelta

    from broker.config import get_settings
    from broker.runtime.assembly import archive_history, make_ingestor

    ingestor = make_ingestor(get_settings(comet=False), archive)
    when = datetime.now(UTC) - timedelta(hours=2)
    kept = _file_alert(ingestor, "Z1", "optical", "ZTF", when, 40.0, 0.0003)
    gone = _file_alert(ingestor, "Z2", "optical", "ZTF", when, 40.1, 0.0003)
    gone_1 = _file_alert(ingestor, "Z2", "optical", "ZTF", when, 0.0, 0.0, 1, retraction=True)
    outside = _file_alert(ingestor, "Z3", "optical", "ZTF", when, 200.0, 0.0003)
    _file_alert(ingestor, "Z4", "optical", "ZTF", when, 40.0, 0.0003)
    archive.mark_matched([kept, gone, gone_1, outside], datetime.now(UTC))
    t = when.timestamp()
    found = archive_history(archive)(t - 60, t + 60, 40.0, 10.0, 1.0)
    # Not Z3 (outside the cone), nor Z4 (archived, not yet matched: its own search will
    # find what it pairs with, as an engine holding everything would).
    assert sorted(a.id for a in found) == sorted([kept, gone, gone_1])


def test_the_match_lock_knows_when_it_is_lost(pg_url: str) -> None:
    """A database restart drops the advisory lock with its connection: ``held()`` says so,
    and a round checks it before it stores anything."""
    from sqlalchemy import text

    from broker.runtime.match_stage import LOCK_KEY, match_lock

    archive = Archive.open(pg_url)
    try:
        with match_lock(archive) as held:
            assert held()
            with archive.engine.connect() as conn:
                # This schema's lock only: pg_locks is the whole server's, where other tests
                # (the suite's other worker, other checkouts) hold the match lock of theirs.
                (pid,) = conn.execute(text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = :k"
                    " AND objid = hashtext(current_schema())::oid"
                    " AND database = (SELECT oid FROM pg_database"
                    "                 WHERE datname = current_database())"),
                    {"k": LOCK_KEY}).scalars().all()
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            assert not held()
    finally:
        archive.close()


def _survey_fixture(archive: Archive) -> tuple[Any, Any, Any]:
    """(settings, a function archiving an alert by (event id, messenger, facility, hours
    ago, RA deg, error radius deg, revision)) on ``archive``, and ``counts()``: the
    coincidences stored, as (pairing, state, revision, member IVORNs) sorted."""
    from datetime import UTC, datetime, timedelta

    from broker.archive.models import CoincidenceMember
    from broker.config import get_settings
    from broker.runtime.assembly import make_ingestor

    settings = get_settings(comet=False)
    ingestor = make_ingestor(settings, archive)
    now = datetime.now(UTC)

    def archived(event_id: str, messenger: str, facility: str, hours_ago: float,
                 ra_deg: float, radius_deg: float, revision: int = 0) -> str:
        return _file_alert(ingestor, event_id, messenger, facility,
                           now - timedelta(hours=hours_ago), ra_deg, radius_deg, revision)

    def stored() -> list[tuple[str, str, int, list[str]]]:
        with archive.engine.connect() as conn:
            rows = conn.execute(select(CoincidenceRow.id, CoincidenceRow.pairing,
                                       CoincidenceRow.state, CoincidenceRow.revision)).all()
            members = conn.execute(select(CoincidenceMember.coincidence_id, AlertRow.ivorn)
                                   .join(AlertRow, AlertRow.id == CoincidenceMember.alert_id)
                                   ).all()
        of: dict[int, list[str]] = {}
        for m in members:
            of.setdefault(m.coincidence_id, []).append(m.ivorn)
        return sorted((r.pairing, r.state, r.revision, sorted(of[r.id])) for r in rows)

    return settings, archived, stored


@pytest.mark.timeout(180)
def test_survey_alerts_are_matched_apart_and_each_pair_is_found_once_in_either_order(
        archive: Archive) -> None:
    """Optical transients (the survey: only ever side b) are matched by any worker against
    its copy of the rare set, not numbered; a neutrino (rare) in the numbered order.  A
    transient matched before its neutrino is found by the neutrino's search of the
    archive; one archived after the neutrino was numbered finds it in the copy.  Either
    way once, and announcements read again change nothing."""
    from broker.runtime.assembly import match_worker

    settings, archived, stored = _survey_fixture(archive)
    neutrino = archived("N1", "neutrino", "IceCube", 3, 40.0, 1.0)
    before = archived("Z1", "optical", "ZTF", 2, 40.2, 0.0003)
    a, b = match_worker(settings, archive), match_worker(settings, archive)
    assert a.survey == b.survey and "optical" in a.survey and "neutrino" not in a.survey
    a.warm()
    b.warm()
    assert b.handle([before]) == 1  # the neutrino is not numbered yet: nothing found
    assert stored() == []
    assert a.handle([neutrino]) == 1  # its search reads the transient from the archive
    after = archived("Z2", "optical", "ZTF", 1, 39.8, 0.0003)
    far = archived("Z3", "optical", "ZTF", 1, 200.0, 0.0003)
    assert b.handle([after, far]) == 2  # caught up with the neutrino: found here
    # Announcements read again, by either worker: nothing is matched twice.
    assert a.handle([neutrino, before, after, far]) == 0
    assert b.handle([neutrino, before, after, far]) == 0
    assert stored() == [("hen-optical", "new", 0, sorted([neutrino, before])),
                        ("hen-optical", "new", 0, sorted([neutrino, after]))]
    with archive.engine.connect() as conn:
        rows = dict(conn.execute(select(AlertRow.ivorn, AlertRow.match_seq)
                                 .where(AlertRow.matched_at.is_not(None))).all())
    assert rows == {neutrino: 1, before: None, after: None, far: None}


@pytest.mark.timeout(180)
def test_a_survey_round_waits_for_a_rare_round_and_finds_nothing_it_found(
        archive: Archive) -> None:
    """A transient announced while another worker's rare round holds the match lock: its
    survey round (the lock in shared mode) waits for the rare round to end, then knows the
    coincidence that round stored (the neutrino's search found the transient archived,
    unmatched) and finds it not again.  Survey rounds do not wait for each other."""
    import threading

    from broker.runtime.assembly import match_worker
    from broker.runtime.match_stage import match_lock

    settings, archived, stored = _survey_fixture(archive)
    neutrino = archived("N1", "neutrino", "IceCube", 3, 40.0, 1.0)
    transient = archived("Z1", "optical", "ZTF", 2, 40.2, 0.0003)
    a, b = match_worker(settings, archive), match_worker(settings, archive)
    a.warm()
    b.warm()
    done: list[int] = []
    survey = threading.Thread(target=lambda: done.append(b.handle([transient])))
    match = a.pipeline.match
    blocked: list[bool] = []

    def rare_round(*args: Any, **kwargs: Any) -> Any:
        survey.start()  # announced now, mid-round
        survey.join(1.5)
        blocked.append(survey.is_alive())
        return match(*args, **kwargs)

    a.pipeline.match = rare_round  # type: ignore[method-assign]
    try:
        assert a.handle([neutrino]) == 1
        survey.join(30)
    finally:
        a.pipeline.match = match  # type: ignore[method-assign]
    assert blocked == [True] and done == [1]
    assert b.pipeline.coincidences == []  # known from the archive, not found again
    assert stored() == [("hen-optical", "new", 0, sorted([neutrino, transient]))]
    # Shared holders do not exclude each other.
    with match_lock(archive, shared=True), match_lock(archive, shared=True):
        pass


@pytest.mark.timeout(180)
def test_a_survey_worker_killed_after_storing_leaves_one_timeline(archive: Archive) -> None:
    """A survey round dies after storing its coincidence, before marking its transient
    matched.  The neutrino's next revision, matched by another worker meanwhile, updates
    that coincidence (revision 1 of its series, not a second "new"); the transient matched
    again by a fresh worker adds nothing."""
    from broker.runtime.assembly import match_worker

    settings, archived, stored = _survey_fixture(archive)
    neutrino = archived("N1", "neutrino", "IceCube", 3, 40.0, 1.0)
    a = match_worker(settings, archive)
    a.warm()
    assert a.handle([neutrino]) == 1
    transient = archived("Z1", "optical", "ZTF", 2, 40.2, 0.0003)
    dying = match_worker(settings, archive)
    dying.warm()
    mark = archive.mark_matched

    def killed(ivorns: Any, at: Any, **kwargs: Any) -> Any:
        if not kwargs.get("number"):
            raise KeyboardInterrupt("killed")  # (as kill -9: nothing after it runs)
        return mark(ivorns, at, **kwargs)

    archive.mark_matched = killed  # type: ignore[method-assign]
    try:
        dying.handle([transient])
    except KeyboardInterrupt:
        pass
    finally:
        archive.mark_matched = mark  # type: ignore[method-assign]
    assert stored() == [("hen-optical", "new", 0, sorted([neutrino, transient]))]
    update = archived("N1", "neutrino", "IceCube", 3, 40.1, 0.8, revision=1)
    assert a.handle([update]) == 1
    fresh = match_worker(settings, archive)
    fresh.warm()
    assert fresh.handle([transient]) == 1
    assert fresh.pipeline.coincidences == []
    assert stored() == [("hen-optical", "new", 0, sorted([neutrino, transient])),
                        ("hen-optical", "updated", 1, sorted([transient, update]))]
