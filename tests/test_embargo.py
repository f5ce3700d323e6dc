"""Embargoed and proprietary VOEvents are held in the outbox (issue 14 item 1): the logic.

Through the real pipeline (normalizer, archive, cross-match, publisher, outbox) on
SQLite and PostgreSQL; the outbox's clock is passed in, so "after the embargo" needs no
waiting.  tests/test_embargo_outputs.py checks the same against a running broker, a
stock Comet subscriber and Kafka.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from broker.archive.store import Archive, utcnow
from broker.publish import outbox
from broker.publish.outbox import hold
from listeners.envelope import RawMessage

PUBLIC = ("vtp", "kafka-xml", "kafka-json")
TARGETS = (*PUBLIC, "kafka-private")


def _pipeline(archive: Archive) -> Any:
    from broker.config import get_settings
    from broker.runtime.assembly import make_pipeline

    pipeline = make_pipeline(get_settings(comet=False), archive, targets=list(TARGETS))
    pipeline.publisher.private_targets = ["kafka-private"]
    return pipeline


def _demo() -> tuple[dict[str, Any], RawMessage]:
    """The demo's neutrino trigger (as a document to edit) and its Fermi GBM burst: a
    hen-grb coincidence when both are ingested."""
    from broker import demo

    messages = {label: raw for label, raw, _ in demo.scenario_messages()}
    return json.loads(messages["trigger"].data), messages["grb"]


def _trigger(doc: dict[str, Any], **changes: Any) -> RawMessage:
    return RawMessage("detector", json.dumps({**doc, **changes}).encode())


def _embargoed(until: datetime) -> dict[str, str]:
    return {"level": "embargoed", "embargo_until": until.isoformat().replace("+00:00", "Z")}


def _claim_all(archive: Archive, now: datetime) -> dict[str, set[str]]:
    """Every delivery due at ``now`` per target (as its IVORN), marked sent."""
    out: dict[str, set[str]] = {}
    for target in TARGETS:
        due = outbox.claim_due(archive, target, now=now, limit=1000)
        if due:
            out[target] = {d.ivorn for d in due}
        outbox.mark_sent(archive, [(d, now) for d in due])
    return out


def _states(archive: Archive) -> dict[str, dict[str, dict[str, Any]]]:
    return {e["ivorn"]: e["targets"] for e in outbox.status(archive, limit=1000)}


def test_hold_follows_the_viewer_rule() -> None:
    now = utcnow()
    soon, past = now + timedelta(seconds=30), now - timedelta(seconds=1)
    assert hold((), now) == (False, None)
    assert hold((("public", None), ("embargoed", past)), now) == (False, None)
    assert hold((("embargoed", soon),), now) == (True, soon)
    later = soon + timedelta(hours=1)
    assert hold((("embargoed", soon), ("public", None), ("embargoed", later)), now) \
        == (True, later)
    assert hold((("embargoed", soon), ("proprietary", None)), now) == (True, None)
    assert hold((("proprietary", None),), now) == (True, None)


def test_hidden_voevents_are_held_and_released_at_the_embargo_end(archive: Archive) -> None:
    pipeline = _pipeline(archive)
    trigger, grb = _demo()
    now = utcnow()
    until = now + timedelta(minutes=10)
    pipeline.ingest([_trigger(trigger, event_id="EMB-1", data_rights=_embargoed(until))])
    pipeline.ingest([grb])
    pipeline.ingest([_trigger(trigger, event_id="PROP-1", data_rights={"level": "proprietary"},
                              ra_deg=20.0, dec_deg=60.0)])
    pipeline.ingest([_trigger(trigger, event_id="PUB-1", ra_deg=120.0, dec_deg=-60.0)])
    ivorns = {e["ivorn"] for e in outbox.status(archive)}
    (emb,) = [i for i in ivorns if "EMB-1" in i]
    (prop,) = [i for i in ivorns if "PROP-1" in i]
    (pub,) = [i for i in ivorns if "PUB-1" in i]
    (coinc,) = [i for i in ivorns if "/coincidence#" in i]  # hen-grb with the hidden trigger

    first = _claim_all(archive, utcnow() + timedelta(seconds=1))
    for target in PUBLIC:
        assert first[target] == {pub}, target  # nothing hidden leaves...
    assert first["kafka-private"] == {emb, prop, pub, coinc}  # ...but to the private target
    states = _states(archive)
    for target in PUBLIC:
        assert states[emb][target]["state"] == "held"
        assert states[emb][target]["held_until"] == until
        assert states[coinc][target]["held_until"] == until
        assert states[prop][target]["state"] == "held"
        assert states[prop][target]["held_until"] is None
    assert _claim_all(archive, until - timedelta(milliseconds=1)) == {}
    released_at = until + timedelta(milliseconds=300)
    second = _claim_all(archive, released_at)
    for target in PUBLIC:
        assert second[target] == {emb, coinc}, target
    states = _states(archive)
    assert states[emb]["vtp"]["released_at"] == released_at
    assert states[emb]["vtp"]["state"] == "sent"
    # Proprietary: never, however long one waits.
    assert _claim_all(archive, now + timedelta(days=36500)) == {}
    assert {states[prop][t]["state"] for t in PUBLIC} == {"held"}


def test_a_retraction_of_a_never_released_alert_publishes_nothing(archive: Archive) -> None:
    pipeline = _pipeline(archive)
    trigger, grb = _demo()
    now = utcnow()
    until = now + timedelta(minutes=10)
    pipeline.ingest([_trigger(trigger, event_id="EMB-R", data_rights=_embargoed(until))])
    pipeline.ingest([grb])
    # Public, as retractions are: it must not tell the world of the hidden alert either.
    pipeline.ingest([_trigger(trigger, event_id="EMB-R", revision=1, retraction=True)])
    states = _states(archive)
    triggers = [i for i in states if "EMB-R" in i]
    coincidences = [i for i in states if "/coincidence#" in i]
    assert len(triggers) == 2 and len(coincidences) == 2  # the coincidence retracted too
    for ivorn in triggers + coincidences:
        for target in PUBLIC:
            assert states[ivorn][target]["state"] == "withdrawn", (ivorn, target)
    assert _claim_all(archive, utcnow() + timedelta(seconds=1)).keys() == {"kafka-private"}
    assert _claim_all(archive, until + timedelta(days=1)) == {}


def test_a_retraction_of_a_released_alert_is_published(archive: Archive) -> None:
    pipeline = _pipeline(archive)
    trigger, _ = _demo()
    now = utcnow()
    until = now + timedelta(seconds=5)
    pipeline.ingest([_trigger(trigger, event_id="EMB-S", data_rights=_embargoed(until))])
    released = _claim_all(archive, until + timedelta(seconds=1))
    assert all(len(released[t]) == 1 for t in PUBLIC)
    pipeline.ingest([_trigger(trigger, event_id="EMB-S", revision=1, retraction=True)])
    after = _claim_all(archive, utcnow() + timedelta(seconds=10))
    assert all(len(after[t]) == 1 and "EMB-S" in next(iter(after[t])) for t in PUBLIC)


def test_a_held_revision_overtaken_by_a_public_one_is_withdrawn(archive: Archive) -> None:
    pipeline = _pipeline(archive)
    trigger, _ = _demo()
    now = utcnow()
    until = now + timedelta(minutes=10)
    pipeline.ingest([_trigger(trigger, event_id="EMB-U", data_rights=_embargoed(until))])
    pipeline.ingest([_trigger(trigger, event_id="EMB-U", revision=1, p_astro=0.7)])
    states = _states(archive)
    old, new = sorted((i for i in states if "EMB-U" in i), key=lambda i: i[-1])
    assert {states[old][t]["state"] for t in PUBLIC} == {"withdrawn"}
    assert {states[new][t]["state"] for t in PUBLIC} == {"pending"}
    # Subscribers get the newest revision now, and never the old one after it.
    first = _claim_all(archive, utcnow() + timedelta(seconds=1))
    assert all(first[t] == {new} for t in PUBLIC), first
    assert _claim_all(archive, until + timedelta(days=1)) == {}


@pytest.mark.parametrize("scale", [200])
def test_releasing_reads_only_what_is_due(archive: Archive, scale: int) -> None:
    """Many held rows (proprietary, far embargoes) cost the release poll nothing: it reads
    the (state, held_until) index range whose time has passed."""
    from sqlalchemy import text

    from broker.publish.outbox import Outgoing, queue

    now = utcnow()
    queue(archive, [Outgoing(f"ivo://test.mmbroker/detector#H{i}", b"<x/>", "test", {},
                             rights=(("proprietary", None),) if i % 2 else
                             (("embargoed", now + timedelta(days=1 + i)),))
                    for i in range(scale)], PUBLIC)
    assert outbox.release_held(archive, "vtp", now + timedelta(seconds=1)) == 0
    with archive.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            plan = " ".join(str(r[-1]) for r in conn.execute(text(
                "EXPLAIN QUERY PLAN SELECT id FROM deliveries WHERE state = 'held' "
                "AND held_until <= '2030-01-01' AND target = 'vtp'")))
            assert "ix_deliveries_state_held_until" in plan, plan
    assert outbox.release_held(archive, "vtp", now + timedelta(days=2, hours=1)) == 1


class _Recorder:
    """A sender that accepts everything and notes when (the loop's timing is under test)."""

    target = "vtp"

    def __init__(self) -> None:
        self.sent: dict[str, datetime] = {}

    def send(self, ivorn: str, xml: bytes,
             on_wire: Callable[[], None] = lambda: None) -> None:
        on_wire()
        self.sent.setdefault(ivorn, utcnow())

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_delivery_loop_releases_by_itself_within_a_second(archive: Archive) -> None:
    """What `serve` and `stage publish` run: no call but the loop's own polling."""
    import threading

    from broker.publish.outbox import Outgoing, queue
    from broker.publish.senders import DeliveryLoop
    from tests.servers import wait_for

    sender = _Recorder()
    loop = DeliveryLoop(archive, sender)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    try:
        until = utcnow() + timedelta(seconds=3)
        queue(archive, [
            Outgoing("ivo://test.mmbroker/detector#E-0", b"<e/>", "test", {},
                     rights=(("embargoed", until),)),
            Outgoing("ivo://test.mmbroker/detector#P-0", b"<p/>", "test", {},
                     rights=(("proprietary", None),)),
            Outgoing("ivo://test.mmbroker/detector#O-0", b"<o/>", "test", {})], ["vtp"])
        assert wait_for(lambda: "ivo://test.mmbroker/detector#E-0" in sender.sent, 10)
        sent = sender.sent["ivo://test.mmbroker/detector#E-0"]
        assert until <= sent <= until + timedelta(seconds=1.5), sent - until
        assert "ivo://test.mmbroker/detector#O-0" in sender.sent
        time.sleep(1.0)
        assert "ivo://test.mmbroker/detector#P-0" not in sender.sent
        (entry,) = [e for e in outbox.status(archive) if e["ivorn"].endswith("E-0")]
        assert until <= entry["targets"]["vtp"]["released_at"] <= sent
    finally:
        stop.set()
        loop.wake.set()
        thread.join(10)


def test_a_private_topic_named_like_a_public_one_is_refused() -> None:
    from alerts_schema.errors import ConfigurationError
    from broker.config import get_settings
    from broker.runtime.assembly import delivery_targets, private_targets

    settings = get_settings(kafka_bootstrap="127.0.0.1:9", kafka_private_topic="collab.v")
    assert delivery_targets(settings)[-1] == "kafka-private"
    assert private_targets(settings) == ["kafka-private"]
    with pytest.raises(ConfigurationError, match="public output topic"):
        delivery_targets(get_settings(kafka_bootstrap="127.0.0.1:9",
                                      kafka_private_topic="mmbroker.voevent"))
