"""Nothing hidden leaves the broker, and everything does once released (issue 14 item 1).

One running ``mmbroker serve`` per archive backend (module-scoped, on SQLite then on
PostgreSQL: its Comet child, Kafka output topics on a real tansu broker, a Fermi GBM
notice on a GCN topic of that tansu for coincidences) is watched through every output
at once while detector triggers with random data rights and embargo ends are POSTed:

* VTP: a stock Comet subscriber (``twistd -n comet --remote ... --save-event``); a
  VOEvent's arrival is its saved file's modification time;
* Kafka: both output topics (``mmbroker.voevent``, ``mmbroker.voevent.json``), and the
  private topic (``MMBROKER_KAFKA_PRIVATE_TOPIC``) that gets everything at once;
* Hopskotch: both hop topics (``hop.voevent``, ``hop.coincidence``), written by
  hop-client through a ``kafka://`` URL to the same tansu;
* the dashboard's live feed (server-sent events), anonymous;
* REST ``/api/v1/alerts`` in JSON, VOTable and CSV, ``/api/v1/coincidences`` and
  ``/api/v1/voevents`` in JSON, ``/scs``,
  and the Python client, under each scope (anonymous, ``read:embargoed``,
  ``read:proprietary``, ``admin``);
* anonymous ``/metrics`` (refused: its counts would reveal hidden arrivals).

Pushed outputs must deliver a hidden item no earlier than its release and no later
than 5 s after it; polled ones must show it in no answer that ended before its release
and in every answer begun 5 s after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import alerts_schema
from tests.conftest import free_port, mmbroker, pg_schema
from tests.servers import (
    FAST_JOIN,
    FAST_JOIN_ENV,
    broker_up,
    comet_subscriber,
    http,
    produce,
    saved_ivorns,
    tansu,
    wait_for,
)

pytestmark = pytest.mark.timeout(900)

TRACK = json.loads(next(p for p in alerts_schema.example_paths("trigger")
                        if "track-single" in p.name).read_text())
RETRACTION = json.loads(next(p for p in alerts_schema.example_paths("trigger")
                             if "retraction" in p.name).read_text())
PRIVATE_TOPIC = "collab.voevent"
KAFKA_TOPICS = ("mmbroker.voevent", "mmbroker.voevent.json", "hop.voevent", "hop.coincidence")
PUBLIC_TARGETS = ("vtp", "kafka-xml", "kafka-json", "hop-voevent", "hop-json")
PUSHED = ("vtp", *KAFKA_TOPICS, "live")
SCOPES = ("anonymous", "read:embargoed", "read:proprietary", "admin")
WITHIN_S = 5.0
FOREVER = datetime(9000, 1, 1, tzinfo=UTC)
"""The release of what the anonymous viewer never sees (proprietary)."""


def now_utc() -> datetime:
    return datetime.now(UTC)




class Arrivals:
    """First arrival time (UTC) of each IVORN at a pushed output, filled by a thread."""

    def __init__(self) -> None:
        self.first: dict[str, datetime] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def saw(self, ivorn: str, at: datetime | None = None) -> None:
        with self.lock:
            self.first.setdefault(ivorn, at or now_utc())

    def get(self, ivorn: str) -> datetime | None:
        with self.lock:
            return self.first.get(ivorn)


def _kafka_watch(bootstrap: str, topic: str, arrivals: Arrivals) -> None:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=[bootstrap],
                             group_id=f"watch-{topic}-{os.getpid()}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             **{k.replace(".", "_"): int(v) for k, v in FAST_JOIN.items()})
    try:
        while not arrivals.stop.is_set():
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    arrivals.saw(r.key.decode())
    finally:
        consumer.close()


def _live_watch(base: str, arrivals: Arrivals) -> None:
    """The anonymous dashboard feed: every alert and coincidence event's IVORN."""
    while not arrivals.stop.is_set():
        try:
            with urllib.request.urlopen(f"{base}/dashboard/events", timeout=30) as stream:
                kind = ""
                for raw in stream:
                    if arrivals.stop.is_set():
                        return
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind in ("alert", "coincidence"):
                        arrivals.saw(json.loads(line[6:])["ivorn"])
        except OSError:
            time.sleep(0.2)


def _vtp_watch(saved: Path, arrivals: Arrivals) -> None:
    import re

    seen: set[str] = set()
    while not arrivals.stop.is_set():
        for path in sorted(saved.iterdir()):
            if path.name in seen:
                continue
            match = re.search(rb'ivorn="([^"]+)"', path.read_bytes())
            if match:
                seen.add(path.name)
                arrivals.saw(match.group(1).decode(),
                             datetime.fromtimestamp(path.stat().st_mtime, UTC))
        arrivals.stop.wait(0.1)


@dataclass
class World:
    base: str
    tokens: dict[str, str]
    db: str
    env: dict[str, str]
    bootstrap: str
    grb_ivorn: str
    pushed: dict[str, Arrivals]
    private: Arrivals
    release: dict[str, datetime] = field(default_factory=dict)
    """Each posted trigger's IVORN: when the anonymous viewer may see it (FOREVER: never)."""
    rights: dict[str, tuple[str, datetime | None]] = field(default_factory=dict)
    posted_at: dict[str, datetime] = field(default_factory=dict)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
          ) -> Iterator[World]:

    tmp = tmp_path_factory.mktemp("embargo")
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            request.getfixturevalue("pg_available")
            db = stack.enter_context(pg_schema("emb"))
        else:
            db = str(tmp / "broker.sqlite3")
        yield from _world(tmp, db)


def _world(tmp: Path, db: str) -> Iterator[World]:
    from broker import demo

    with tansu(tmp) as bootstrap:
        grb = next(raw for label, raw, _ in demo.scenario_messages() if label == "grb")
        produce(bootstrap, "gcn.notices.fermi.gbm", [grb.data])
        ports = {"http": free_port(), "receive": free_port(), "broadcast": free_port()}
        env = {**os.environ, "MMBROKER_DATA_DIR": str(tmp / "data"),
               "MMBROKER_HTTP_PORT": str(ports["http"]),
               "MMBROKER_VTP_RECEIVE_PORT": str(ports["receive"]),
               "MMBROKER_VTP_BROADCAST_PORT": str(ports["broadcast"]),
               "MMBROKER_KAFKA_BOOTSTRAP": bootstrap,
               "MMBROKER_KAFKA_TOPICS": "gcn.notices.fermi.gbm",
               "MMBROKER_KAFKA_PRIVATE_TOPIC": PRIVATE_TOPIC,
               "MMBROKER_HOP_URL": f"kafka://{bootstrap}/",
               "MMBROKER_HOP_VOEVENT_TOPIC": "hop.voevent",
               "MMBROKER_HOP_JSON_TOPIC": "hop.coincidence",
               "MMBROKER_API_RATE_LIMIT_PER_S": "0",
               "KAFKA_AUTO_OFFSET_RESET": "earliest",
               "MMBROKER_LOG_LEVEL": "INFO", **FAST_JOIN_ENV}
        mmbroker("--db", db, "db", "upgrade", env=env)
        bound = {"write:triggers": ("--detector", "KM3NeT")}
        tokens = {scope: mmbroker("--db", db, "token", "create", "--scope", scope,
                                  *bound.get(scope, ()), env=env).stdout.strip()
                  for scope in ("write:triggers", *SCOPES[1:])}
        exe = Path(sys.executable).with_name("mmbroker")
        log = open(tmp / "serve.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([str(exe), "--db", db, "serve"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{ports['http']}"
        pushed = {name: Arrivals() for name in PUSHED}
        private = Arrivals()
        threads: list[threading.Thread] = []
        try:
            assert wait_for(lambda: broker_up(base), 90), (tmp / "serve.log").read_text()
            with comet_subscriber(tmp, ports["broadcast"]) as saved:
                w = World(base, tokens, db, env, bootstrap, "", pushed, private)
                # The subscriber connects on its own schedule: probe until it has one.
                assert wait_for(lambda: _probe_reaches(w, saved), 90), "no subscriber"
                for target, fn, args in (
                        ("vtp", _vtp_watch, (saved, pushed["vtp"])),
                        ("live", _live_watch, (base, pushed["live"])),
                        *((t, _kafka_watch, (bootstrap, t, pushed[t]))
                          for t in KAFKA_TOPICS),
                        ("private", _kafka_watch, (bootstrap, PRIVATE_TOPIC, private))):
                    thread = threading.Thread(target=fn, args=args, daemon=True,
                                              name=f"watch-{target}")
                    thread.start()
                    threads.append(thread)
                probe = _post(w, {**TRACK, "event_id": f"PROBE-K-{time.monotonic_ns()}",
                                  "real": False, "time": _iso(now_utc())})
                for name in (*KAFKA_TOPICS, "live", "vtp"):
                    assert wait_for(lambda n=name: pushed[n].get(probe) is not None, 90), name
                assert wait_for(lambda: private.get(probe) is not None, 90)
                w.grb_ivorn = _grb_ivorn(w)
                yield w
        finally:
            for arrivals in (*pushed.values(), private):
                arrivals.stop.set()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            for thread in threads:
                thread.join(40)
            log.close()




def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _post(w: World, trigger: dict[str, Any]) -> str:
    """POST a trigger; its IVORN (``posted_at``: just before, for its VOEvent may arrive
    before the answer does)."""
    before = now_utc()
    status, body = http(f"{w.base}/api/v1/triggers", json.dumps(trigger).encode(),
                         w.tokens["write:triggers"])
    assert status == 201, body
    ivorn = json.loads(body)["id"]
    w.posted_at[ivorn] = before
    return ivorn


def _probe_reaches(w: World, saved: Path) -> bool:
    ivorn = _post(w, {**TRACK, "event_id": f"PROBE-{time.monotonic_ns()}", "real": False,
                      "time": _iso(now_utc())})
    return wait_for(lambda: ivorn in saved_ivorns(saved), 5)


def _grb_ivorn(w: World) -> str:
    def found() -> list[str]:
        status, body = http(f"{w.base}/api/v1/alerts?messenger=gamma_ray&limit=10")
        return [a["id"] for a in json.loads(body)["items"]] if status == 200 else []

    assert wait_for(lambda: bool(found()), 60), "the GBM notice was not consumed"
    return found()[0]


def _trigger(w: World, key: str, level: str, until: datetime | None, *, near: bool,
             rng: random.Random, **extra: Any) -> str:
    """POST a test trigger (near: inside the GBM burst's region, a hen-grb coincidence)."""
    from broker import demo

    ra, dec = demo.CENTRE_DEG if near else (rng.uniform(0, 360), rng.uniform(-80, -40))
    rights: dict[str, Any] = {"level": level}
    if until is not None:
        rights["embargo_until"] = _iso(until)
    doc = {**TRACK, "event_id": key, "real": False, "time": _iso(now_utc()),
           "ra_deg": ra + (rng.uniform(-0.3, 0.3) if near else 0.0), "dec_deg": dec,
           "data_rights": rights, **extra}
    ivorn = _post(w, doc)
    w.rights[ivorn] = (level, until)
    w.release[ivorn] = {"public": w.posted_at[ivorn], "proprietary": FOREVER}.get(
        level, max(until or FOREVER, w.posted_at[ivorn]))
    return ivorn


def _coincidences_of(w: World, ivorns: set[str]) -> dict[str, datetime]:
    """Coincidences (admin view) with a member among ``ivorns``: when the anonymous viewer
    may see each (all members visible)."""
    status, body = http(f"{w.base}/api/v1/coincidences?limit=1000", token=w.tokens["admin"])
    assert status == 200, body
    out = {}
    for c in json.loads(body)["items"]:
        members = [m["alert_id"] for m in c["members"]]
        if ivorns & set(members):
            out[c["id"]] = max(w.release.get(m, datetime.min.replace(tzinfo=UTC))
                               for m in members)
    return out


def _check_pushed(w: World, expected: dict[str, datetime], horizon: datetime) -> list[str]:
    """What each pushed output got wrong; ``horizon``: when the watching ended."""
    problems = []
    for name, arrivals in w.pushed.items():
        for ivorn, release in expected.items():
            got = arrivals.get(ivorn)
            if got is not None and got < release:
                problems.append(f"{name}: {ivorn} arrived {got}, {release - got} early")
            if release + timedelta(seconds=WITHIN_S) <= horizon and (
                    got is None or got > release + timedelta(seconds=WITHIN_S)):
                problems.append(f"{name}: {ivorn} released {release} arrived {got}")
    return problems


# -- the explicit cases ------------------------------------------------------------------


def _voevents_list(w: World) -> dict[str, dict[str, Any]]:
    out = mmbroker("--db", w.db, "voevents", "list", "--format", "json", "--limit", "1000",
                   env=w.env).stdout
    return {e["ivorn"]: e["targets"] for e in json.loads(out)}


def test_embargoed_and_proprietary_triggers_and_their_coincidences(world: World) -> None:
    """Held from every public output until the embargo's end, then out within 5 s; the
    proprietary one never; the private topic gets all at once; `voevents list` says so."""
    rng = random.Random(1)
    until = now_utc() + timedelta(seconds=8)
    emb = _trigger(world, f"EMB-{time.monotonic_ns()}", "embargoed", until, near=True, rng=rng)
    prop = _trigger(world, f"PROP-{time.monotonic_ns()}", "proprietary", None, near=True,
                    rng=rng)
    assert wait_for(lambda: len(_coincidences_of(world, {emb, prop})) == 2, 30)
    coincs = _coincidences_of(world, {emb, prop})
    expected = {emb: until, prop: FOREVER, **coincs}
    # Before the end: the private topic has all four, no public output has any.
    assert wait_for(lambda: all(world.private.get(i) for i in expected), 15)
    held = _voevents_list(world)
    assert held[emb]["vtp"]["state"] == "held"
    held_until = datetime.fromisoformat(held[emb]["vtp"]["held_until"])
    assert abs((held_until - until).total_seconds()) < 0.001
    assert held[prop]["kafka-xml"]["state"] == "held"
    assert held[prop]["kafka-xml"]["held_until"] is None
    time.sleep(max(0.0, (until - now_utc()).total_seconds()) + WITHIN_S + 1)
    horizon = now_utc()
    assert _check_pushed(world, expected, horizon) == []
    after = _voevents_list(world)
    for target in PUBLIC_TARGETS:
        assert after[emb][target]["state"] == "sent"
        assert after[emb][target]["released_at"] is not None
        assert after[prop][target]["state"] == "held"


def test_a_retraction_of_a_never_released_alert_publishes_nothing(world: World) -> None:
    rng = random.Random(2)
    until = now_utc() + timedelta(seconds=6)
    key = f"RET-{time.monotonic_ns()}"
    first = _trigger(world, key, "embargoed", until, near=True, rng=rng)
    assert wait_for(lambda: len(_coincidences_of(world, {first})) == 1, 30)
    retraction = _post(world, {**RETRACTION, "event_id": key, "revision": 1, "real": False,
                               "time": _iso(now_utc())})
    assert wait_for(lambda: len(_coincidences_of(world, {first, retraction})) >= 2, 30)
    coincs = set(_coincidences_of(world, {first, retraction}))
    ivorns = {first, retraction, *coincs}
    assert wait_for(lambda: all(world.private.get(i) for i in ivorns), 15)
    time.sleep(max(0.0, (until - now_utc()).total_seconds()) + WITHIN_S + 1)
    for name, arrivals in world.pushed.items():
        if name == "live":
            continue  # the archive's rows, not VOEvents: shown once the embargo ends
        assert [i for i in ivorns if arrivals.get(i)] == [], name
    states = _voevents_list(world)
    for ivorn in ivorns:
        assert {states[ivorn][t]["state"] for t in PUBLIC_TARGETS} \
            == {"withdrawn"}, ivorn


# -- the property ----------------------------------------------------------------------

RIGHTS = st.sampled_from(["public", "embargoed", "embargoed-over", "proprietary"])
PLAN = st.lists(st.tuples(RIGHTS, st.floats(2.0, 9.0), st.booleans()), min_size=3,
                max_size=7)


def _may_see(scope: str, level: str, until: datetime | None, at: datetime) -> bool:
    """The documented table of docs/api.md ("Who sees what"), written out for the test."""
    if level == "public" or scope == "admin":
        return True
    if level == "embargoed":
        return scope == "read:embargoed" or (until is not None and until <= at)
    return scope == "read:proprietary"


def _polled(w: World) -> list[tuple[str, str, str | None, Any]]:
    """(output, scope, ivorn-carrying answer) getters of every polled output."""
    from mmbroker_client import Client

    out: list[tuple[str, str, str | None, Any]] = []
    for scope in SCOPES:
        token = None if scope == "anonymous" else w.tokens[scope]
        for fmt in ("json", "votable", "csv"):
            out.append((f"alerts.{fmt}", scope, token,
                        f"{w.base}/api/v1/alerts?limit=1000&format={fmt}"))
        out.append(("voevents.json", scope, token,
                    f"{w.base}/api/v1/voevents?limit=1000&format=json"))
        out.append(("coincidences.json", scope, token,
                    f"{w.base}/api/v1/coincidences?limit=1000&format=json"))
        out.append(("scs", scope, token, f"{w.base}/scs?RA=0&DEC=0&SR=180&MAXREC=10000"))
        client = Client(w.base, token=token)
        out.append(("client", scope, token, client))
    out.append(("metrics", "anonymous", None, f"{w.base}/metrics"))
    return out


def _read(getter: Any, token: str | None) -> str:
    if isinstance(getter, str):
        status, body = http(getter, token=token)
        if getter.endswith("/metrics") and token is None:
            # Counts of arrivals would tell that a hidden alert exists: refused anonymously.
            assert status == 401, (getter, status, body[:300])
            return ""
        assert status == 200, (getter, status, body[:300])
        return body.decode()
    return "\n".join(a["id"] for a in getter.iter_alerts(page_size=1000))


@settings(max_examples=4, deadline=None, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(plan=PLAN, seed=st.integers(0, 2**32 - 1))
def test_nothing_hidden_before_release_everything_within_5_s_after(
        world: World, plan: list[tuple[str, float, bool]], seed: int) -> None:
    rng = random.Random(seed)
    start = now_utc()
    mine: set[str] = set()
    run = time.monotonic_ns()
    for n, (level, offset_s, near) in enumerate(plan):
        until = None
        if level == "embargoed":
            until = start + timedelta(seconds=offset_s)
        elif level == "embargoed-over":
            level, until = "embargoed", start - timedelta(seconds=offset_s)
        # Unique per run: Hypothesis runs a failing example again to report it.
        mine.add(_trigger(world, f"P{seed:x}-{run}-{n:02d}", level, until, near=near,
                          rng=rng))
    finite = [world.release[i] for i in mine if world.release[i] != FOREVER]
    horizon_at = max([*finite, now_utc()]) + timedelta(seconds=WITHIN_S + 1.5)
    polled = _polled(world)
    problems: list[str] = []
    while now_utc() < horizon_at:
        for output, scope, token, getter in polled:
            began = now_utc()
            text = _read(getter, token)
            ended = now_utc()
            if output.startswith("coincidences"):
                # No coincidence listed with a member this caller may not see yet.
                for c in json.loads(text)["items"]:
                    for m in c["members"]:
                        level, until = world.rights.get(m["alert_id"], ("public", None))
                        if not _may_see(scope, level, until, ended):
                            problems.append(f"coincidences as {scope} showed {c['id']} with "
                                            f"{m['alert_id']} ({level} until {until})")
                continue
            for ivorn in mine:
                level, until = world.rights[ivorn]
                event_id = ivorn.rsplit(":", 1)[-1].rsplit("-", 1)[0]
                shown = (ivorn in text or (output == "metrics" and event_id in text))
                if shown and not _may_see(scope, level, until, ended):
                    problems.append(f"{output} as {scope} showed {ivorn} ({level} until "
                                    f"{until}) in an answer ended {ended}")
                if output == "metrics":
                    continue  # never expected to name an alert
                visible_since = _visible_since(scope, level, until, world.posted_at[ivorn])
                if began >= visible_since + timedelta(seconds=WITHIN_S) and not shown:
                    problems.append(f"{output} as {scope} missed {ivorn} ({level} until "
                                    f"{until}) {began - visible_since} after its release")
    horizon = now_utc()
    coincs = _coincidences_of(world, mine)
    expected = {i: world.release[i] for i in mine} | coincs
    problems += _check_pushed(world, expected, horizon)
    # Every coincidence with a hidden member: absent from the anonymous list until then.
    status, body = http(f"{world.base}/api/v1/coincidences?limit=1000")
    assert status == 200, body
    listed = {c["id"] for c in json.loads(body)["items"]}
    for ivorn, release in coincs.items():
        if (ivorn in listed) != (release <= horizon):
            problems.append(f"anonymous coincidences: {ivorn} (release {release}) "
                            f"{'listed' if ivorn in listed else 'missing'} at {horizon}")
    assert problems == [], "\n".join(problems[:40])


def _visible_since(scope: str, level: str, until: datetime | None, posted: datetime
                   ) -> datetime:
    if _may_see(scope, level, until, posted):
        return posted
    if level == "embargoed" and until is not None:
        return max(until, posted)
    return FOREVER

