"""From raw bytes to archived Alerts: store raw, normalize, archive or quarantine.

Every transport (files, Kafka, VTP, HTTP) hands its messages to
:class:`Ingestor`.  The raw bytes are committed first, so a message that
crashes a parser is still on disk; then each is normalized by the route
:mod:`listeners.registry` picks, checked against the Alert schema, and
archived idempotently.  Anything that cannot become an Alert is quarantined
with its reason; nothing raised by a bad message escapes to the transport.

**A message that kills the process** (a decoder crashing in C, say) raises
nothing to catch.  So each message is marked in flight, for this process, in
the transaction that stores its raw bytes, and the mark is cleared in the one
that stores its results.  A mark whose owner is dead (:func:`owner_alive`: same
host and boot, its pid gone or reused; another host, its lease over) names a
message that was being normalized when a process died.  Such a message is never
normalized again in a long-lived process: at start-up (the first batch) and
whenever its bytes arrive again, it is first normalized in a throwaway child
process (:func:`probe`).  If the child dies or hangs too, the message is
quarantined as :class:`~alerts_schema.errors.ProcessDied` ("the process died while
normalizing it"), and so is every later copy of it; otherwise it was an
innocent bystander (the batch of a process killed for another reason) and is
normalized as usual.  Marks of live owners (other workers on PostgreSQL) are
left alone.

**A retraction keeps its event's time** (issue 16, item 9).  An LVK retraction
names no event (igwn.gwalert sends ``"event": null``): its normalizer lets the
notice time stand in, flagged ``extra.event_time_known`` false.  Before it is
archived, a retraction takes the event time of the newest earlier revision of the
same event the archive holds (or the same batch brings): ``trigger_time`` becomes
that time, ``extra.trigger_time_from`` "earlier_revision" and
``extra.event_time_alert_id`` names the revision; the time it stated is kept in
``extra.stated_trigger_time``.  With no earlier revision known it is archived as
it came, flagged; it still supersedes and retracts (the engine keeps each
retracted coincidence's reference time and offsets, see
:meth:`crossmatch.engine.Engine.process`).  A retraction the archive already
holds (a replay) is given the time its archived copy was given, whatever has
arrived since, so that it is a duplicate, never a conflict.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import json
import logging
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from alerts_schema import Alert, validation_errors
from alerts_schema.errors import (
    ArchiveUnavailable,
    HostileInput,
    ImplausibleValue,
    InputError,
    PermanentError,
    ProcessDied,
    SchemaValidationError,
)
from alerts_schema.model import format_utc
from broker.archive.store import Archive, utcnow
from broker.config import Settings, get_settings
from broker.metrics import INGEST_SECONDS, MESSAGES
from listeners import registry, rubin
from listeners.base import MessageMeta, Normalized
from listeners.common import check_plausible
from listeners.envelope import Outcome, RawMessage

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)
DIED_REASON = "the process died while normalizing it"
INFLIGHT_LEASE_S = 600.0
PROBE_TIMEOUT_S = 60.0
PROBE_STARTUP_S = 120.0
"""How long (s) a probe child may take to import and configure itself before its first
message; apart from the per-message timeout, which a loaded machine's slow start-up
must not use up (it did: the child was killed before it read anything)."""


# -- who is normalizing what ---------------------------------------------------------

def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:8]
    except OSError:
        return "-"


def _start_ticks(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (None: unknown)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count after its ')'.
    return stat[stat.rindex(b")") + 2:].split()[19].decode()


_identity: dict[int, str] = {}


def process_identity() -> str:
    """``host:boot id:pid:start ticks``: names this process, and no later one with its pid.

    Computed once per pid, so a forked worker gets its own.
    """
    pid = os.getpid()
    if pid not in _identity:
        _identity[pid] = (f"{socket.gethostname()[:120]}:{_boot_id()}:{pid}:"
                          f"{_start_ticks(pid) or '-'}")
    return _identity[pid]


def owner_alive(owner: str, started_at: datetime, *, lease_s: float = INFLIGHT_LEASE_S,
                now: datetime | None = None) -> bool:
    """Whether the process named ``owner`` may still be normalizing what it marked.

    On this host (same boot): its pid exists and started when the mark's owner
    did.  Elsewhere nothing can be asked, so the mark is a lease: alive for
    ``lease_s`` (s) after ``started_at``.
    """
    parts = owner.rsplit(":", 3)
    if len(parts) == 4 and parts[0] == socket.gethostname()[:120]:
        _host, boot, pid_text, ticks = parts
        if boot != _boot_id():
            return False  # the machine rebooted since
        try:
            pid = int(pid_text)
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by another user
        except (ValueError, OverflowError):
            return False
        return ticks == "-" or _start_ticks(pid) in (None, ticks)
    age_s = ((now or utcnow()) - started_at.replace(tzinfo=started_at.tzinfo or UTC)
             ).total_seconds()
    return age_s < lease_s


# -- the throwaway child that normalizes suspects ------------------------------------

def probe(messages: Sequence[RawMessage], authority: str, *,
          timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, ProcessDied]:
    """Normalize ``messages`` in a child process; the ones that killed (or hung) it.

    The child says which message it starts and which it finished; when it
    dies, or spends over ``timeout_s`` (s) on one message, the one started and
    not finished is the culprit, and a new child carries on with the rest.
    Returns a :class:`ProcessDied` per culprit hash.
    """
    culprits: dict[str, ProcessDied] = {}
    pending = list({m.sha256: m for m in messages}.values())
    while pending:
        started, finished, code, hung = _run_probe(pending, authority, timeout_s)
        if code == 0 and not hung:
            break
        if started is None or started in finished:
            # It died outside any message (start-up): nothing to blame; normalize here.
            log.error("the probe process exited %s before normalizing anything", code)
            break
        culprit = next(m for m in pending if m.sha256 == started)
        how = (f"it hung for over {timeout_s:g} s" if hung
               else f"it died again in a child process, exit status {code}")
        culprits[started] = ProcessDied(f"{DIED_REASON} ({how})")
        log.error("message %s from %s killed a process: quarantined (%s)", started[:12],
                  culprit.source, how)
        pending = pending[pending.index(culprit) + 1:]
    return culprits


def _run_probe(pending: Sequence[RawMessage], authority: str, timeout_s: float
               ) -> tuple[str | None, set[str], int, bool]:
    """One child over ``pending``: (last hash started, hashes finished, exit code, hung)."""
    started: str | None = None
    finished: set[str] = set()
    hung = False
    with tempfile.TemporaryFile() as feed:  # a file, not a pipe: no deadlock on big batches
        for m in pending:
            feed.write(json.dumps({
                "sha256": m.sha256, "source": m.source,
                "received_at": m.received_at.isoformat(), "transport": dict(m.transport),
                "data": base64.b64encode(m.data).decode()}).encode() + b"\n")
        feed.seek(0)
        proc = subprocess.Popen(
            [sys.executable, "-c", "from broker.runtime.ingest import probe_main; probe_main()",
             authority], stdin=feed, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            buffer = b""
            # Start-up has its own allowance; from "ready" on, every line renews the
            # per-message deadline.
            deadline = time.monotonic() + max(timeout_s, PROBE_STARTUP_S)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    hung = started is not None
                    proc.kill()
                    break
                if not selector.select(left):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    word, _, sha = line.decode(errors="replace").partition(" ")
                    if word == "start":
                        started = sha
                    elif word == "done":
                        finished.add(sha)
                    deadline = time.monotonic() + timeout_s
        proc.stdout.close()
        code = proc.wait()
    return started, finished, code, hung


def configure_normalizers(settings: Settings) -> None:
    """Apply settings the normalizers need (the Rubin schema registry)."""
    if settings.rubin_schema_dir:
        rubin.use_registry(rubin.SchemaRegistry(settings.rubin_schema_dir))


def probe_main() -> None:
    """The child of :func:`probe`: normalize each JSON-line message from stdin."""
    try:
        configure_normalizers(get_settings())
    except Exception:  # the probe judges crashes, not settings
        log.exception("probe: normalizer settings not applied")
    authority = sys.argv[1]
    print("ready", flush=True)
    for line in sys.stdin:
        item = json.loads(line)
        meta = MessageMeta(item["source"], datetime.fromisoformat(item["received_at"]),
                           authority, item["transport"])
        print("start", item["sha256"], flush=True)
        with contextlib.suppress(Exception):  # errors are fine here: only a death counts
            registry.normalize(base64.b64decode(item["data"]), meta)
        print("done", item["sha256"], flush=True)


def with_event_time(retraction: Alert,
                    revisions: Iterable[tuple[int, str, str, datetime]]) -> Alert:
    """``retraction`` with the event time of the newest earlier revision of its event.

    ``revisions`` are (revision, alert type, IVORN, event time) of revisions of the same
    event (any; retractions and later ones are passed over).  Unchanged when there is
    none, or when it states that time already; else ``trigger_time`` is that time and
    ``extra`` says where it came from and keeps the time stated.
    """
    earlier = [r for r in revisions if r[0] < retraction.revision and r[1] != "retraction"]
    if not earlier:
        return retraction
    revision, _, ivorn, event_time = max(earlier, key=lambda r: r[0])
    if event_time == retraction.trigger_time:
        return retraction
    extra = {**retraction.extra, "trigger_time_from": "earlier_revision",
             "event_time_known": True, "event_time_alert_id": ivorn,
             "event_time_revision": revision,
             "stated_trigger_time": format_utc(retraction.trigger_time)}
    return retraction.model_copy(update={"trigger_time": event_time, "extra": extra})


_EVENT_TIME_KEYS = ("trigger_time_from", "event_time_known", "event_time_alert_id",
                    "event_time_revision", "stated_trigger_time")


def as_archived(retraction: Alert, document: dict[str, Any] | None) -> Alert:
    """``retraction`` with the event time its archived copy (``document``) was given."""
    if document is None or "event_time_alert_id" not in (document.get("extra") or {}):
        return retraction
    extra = {**retraction.extra, **{k: document["extra"][k] for k in _EVENT_TIME_KEYS
                                    if k in document["extra"]}}
    when = Alert.model_validate(document).trigger_time
    return retraction.model_copy(update={"trigger_time": when, "extra": extra})


@dataclass
class IngestReport:
    """Counts of what became of the messages ingested, per source."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            self.outcomes.append(outcome)
            self.counts[(outcome.source, outcome.status)] += 1

    def total(self, status: str) -> int:
        return sum(n for (_, s), n in self.counts.items() if s == status)

    def by_source(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for (source, status), n in sorted(self.counts.items()):
            table.setdefault(source, {"archived": 0, "duplicate": 0, "quarantined": 0,
                                      "heartbeat": 0})
            table[source][status] = n
        return table


class Ingestor:
    """Turns batches of :class:`RawMessage` into archived alerts and quarantine entries.

    The plainest :class:`~listeners.envelope.Sink`: the others wrap one.

    Parameters
    ----------
    archive
        Where everything is stored.
    authority
        IVORN authority for the alert ids this broker issues.
    max_message_bytes
        Messages longer than this are quarantined as hostile, keeping their head.
    inflight_lease_s
        How long (s) another host's in-flight mark counts as alive (see the module
        docstring); marks of this host are judged by their process instead.
    probe_timeout_s
        How long (s) :func:`probe`'s child may take before the message it is on
        counts as hanging the process.
    """

    def __init__(self, archive: Archive, *, authority: str,
                 max_message_bytes: int = 16 * 1024 * 1024,
                 retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
                 inflight_lease_s: float = INFLIGHT_LEASE_S,
                 probe_timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.archive = archive
        self.authority = authority
        self.max_message_bytes = max_message_bytes
        self.retry_delays_s = tuple(retry_delays_s)
        self.inflight_lease_s = inflight_lease_s
        self.probe_timeout_s = probe_timeout_s
        self._recovered = False
        # Told of every stored batch's outcomes (the sky map fetchers wake on it): called
        # after the commit, each hook's failure logged and ignored.
        self.stored_hooks: list[Callable[[Sequence[Outcome]], None]] = []

    def receive(self, source: str, data: bytes, *, received_at: datetime | None = None,
                transport: dict[str, Any] | None = None) -> RawMessage:
        """Wrap bytes from a transport, keeping only the head of an oversize message."""
        oversize = len(data) > self.max_message_bytes
        return RawMessage(source, data[: self.max_message_bytes] if oversize else data,
                          received_at=received_at or utcnow(), transport=transport or {},
                          full_size=len(data) if oversize else None)

    def set_stream_connected(self, streams: Sequence[str], connected: bool) -> None:
        """Record a transport's connection state for ``streams`` in the archive."""
        self.archive.set_stream_connected(streams, connected)

    def ingest(self, messages: Sequence[RawMessage]) -> list[Outcome]:
        """Store, normalize and archive one batch; retries while the archive is unavailable."""
        if not messages:
            return []
        recovered = [] if self._recovered else self.recover()
        with INGEST_SECONDS.time():
            repeats = self._retrying(lambda: self.archive.store_raw(messages, owner=self.owner))
            verdicts, dead_marks = self._suspects(messages, repeats) if repeats else ({}, [])
            results = [(m, verdicts.get(m.sha256) or self.normalize(m)) for m in messages]
            results = self._event_times(results)
            try:
                outcomes = self._retrying(lambda: self.archive.store_results(
                    results, owner=self.owner, cleared=dead_marks))
            except SQLAlchemyError as exc:
                outcomes = self._one_by_one(results, exc)
        # Counted, not returned: they are other messages' (a dead process's), and a caller
        # answers its own sender from what it gets back (an HTTP poster must not be told
        # of them); they are in quarantine, and recover() logs them.
        for outcome in [*outcomes, *recovered]:
            MESSAGES.labels(outcome.source, outcome.status).inc()
        for hook in self.stored_hooks:
            try:
                hook(outcomes)
            except Exception:  # a hook is a courtesy: the batch is stored
                log.exception("a stored-batch hook failed")
        return outcomes

    @property
    def owner(self) -> str:
        """The in-flight marks' owner: this process (see :func:`process_identity`)."""
        return process_identity()

    def recover(self) -> list[Outcome]:
        """Deal with the messages dead processes left in flight (run before the first batch).

        Each is normalized in a child process (:func:`probe`): those that kill
        it too are quarantined as :class:`ProcessDied`; the marks of the others
        are dropped (their transport delivers them again, as it does any
        message whose offset was not committed).
        """
        self._recovered = True
        marks = self._retrying(self.archive.inflight_marks)
        dead = [m for m in marks if m["owner"] != self.owner
                and not owner_alive(m["owner"], m["started_at"], lease_s=self.inflight_lease_s)]
        if not dead:
            return []
        by_sha: dict[str, RawMessage] = {}
        for mark in dead:
            if mark["raw_sha256"] in by_sha:
                continue
            data = self.archive.raw_payload(mark["raw_sha256"]) or b""
            by_sha[mark["raw_sha256"]] = RawMessage(
                mark["source"], data, received_at=mark["received_at"],
                transport=mark["transport"] or {}, full_size=mark["full_size"])
        log.warning("%d message(s) were in flight when a process died; probing them",
                    len(by_sha))
        culprits = probe(list(by_sha.values()), self.authority, timeout_s=self.probe_timeout_s)
        pairs = [(m["raw_sha256"], m["owner"]) for m in dead]
        self._retrying(lambda: self.archive.clear_inflight(
            [p for p in pairs if p[0] not in culprits]))
        if not culprits:
            return []
        return self._retrying(lambda: self.archive.store_results(
            [(by_sha[sha], err) for sha, err in culprits.items()],
            cleared=[p for p in pairs if p[0] in culprits]))

    def _suspects(self, messages: Sequence[RawMessage], repeats: set[str]
                  ) -> tuple[dict[str, PermanentError], list[tuple[str, str]]]:
        """Verdicts for repeated messages a process died on, and the dead marks to clear."""
        died = self._retrying(lambda: self.archive.died_on(repeats))
        verdicts: dict[str, PermanentError] = {sha: ProcessDied(DIED_REASON) for sha in died}
        dead = [(m["raw_sha256"], m["owner"])
                for m in self._retrying(lambda: self.archive.inflight_marks(repeats))
                if m["owner"] != self.owner and not owner_alive(
                    m["owner"], m["started_at"], lease_s=self.inflight_lease_s)]
        suspects = {sha for sha, _ in dead} - died
        if suspects:
            verdicts.update(probe([m for m in messages if m.sha256 in suspects],
                                  self.authority, timeout_s=self.probe_timeout_s))
        return verdicts, dead

    def normalize(self, message: RawMessage) -> Normalized | PermanentError:
        """What the message became, its alerts validated against the contract, or the error."""
        if message.truncated:
            return HostileInput(f"message of {message.full_size} bytes exceeds the "
                                f"{self.max_message_bytes}-byte limit (head kept)")
        meta = MessageMeta(message.source, message.received_at, self.authority,
                           message.transport)
        try:
            _, result = registry.normalize(message.data, meta)
        except PermanentError as exc:
            return exc
        except Exception as exc:  # a normalizer bug must not take the listener down
            log.exception("normalizer crashed on a message from %s", message.source,
                          extra={"stream": message.source, "raw_sha256": message.sha256})
            return InputError(f"normalizer error {type(exc).__name__}: {exc}")
        for alert in result.alerts:
            errors = validation_errors("alert", alert.to_document())
            if errors:
                return SchemaValidationError("alert", errors)
            try:  # the one range rule of every stream (docs/errors.md)
                check_plausible(alert, message.received_at)
            except ImplausibleValue as exc:
                return exc
        return result

    def _event_times(self, results: list[tuple[RawMessage, Normalized | PermanentError]]
                     ) -> list[tuple[RawMessage, Normalized | PermanentError]]:
        """The batch's retractions with their event's time (see the module docstring)."""
        events = {(a.source, a.event_id) for _, r in results if isinstance(r, Normalized)
                  for a in r.alerts if a.alert_type == "retraction"}
        if not events:
            return results
        known = self._retrying(lambda: self.archive.revisions_of(events))
        archived = {(source, event_id, rev): ivorn for (source, event_id), revs in known.items()
                    for rev, _, ivorn, _ in revs}
        # A retraction archived already (a replay) is given the time it was archived
        # with, whatever has arrived since: its copy must be a duplicate, not a conflict.
        again = [archived[k] for _, r in results if isinstance(r, Normalized) for a in r.alerts
                 if a.alert_type == "retraction"
                 and (k := (a.source, a.event_id, a.revision)) in archived]
        stored = self._retrying(lambda: self.archive.get_alerts(again)) if again else {}
        revisions = {event: list(revs) for event, revs in known.items()}
        for _, result in results:  # and the earlier revisions this batch brings
            if isinstance(result, Normalized):
                for a in result.alerts:
                    if (a.source, a.event_id) in events:
                        revisions.setdefault((a.source, a.event_id), []).append(
                            (a.revision, a.alert_type, a.id, a.trigger_time))
        out: list[tuple[RawMessage, Normalized | PermanentError]] = []
        for raw, result in results:
            if isinstance(result, Normalized) and any(a.alert_type == "retraction"
                                                      for a in result.alerts):
                result = dataclasses.replace(result, alerts=tuple(
                    a if a.alert_type != "retraction"
                    else as_archived(a, stored.get(archived[k]))
                    if (k := (a.source, a.event_id, a.revision)) in archived
                    else with_event_time(a, revisions.get((a.source, a.event_id), []))
                    for a in result.alerts))
            out.append((raw, result))
        return out

    def _one_by_one(self, results: list[tuple[RawMessage, Normalized | PermanentError]],
                    batch_error: Exception) -> list[Outcome]:
        """Store a batch the database refused one message at a time.

        A value the database will not take (a permanent error, not an outage)
        must cost one message, quarantined with the database's reason, not the
        batch and not the listener.
        """
        log.error("archive refused a batch of %d (%s); storing one by one", len(results),
                  batch_error)
        outcomes: list[Outcome] = []
        for raw, result in results:
            try:
                outcomes += self._retrying(functools.partial(
                    self.archive.store_results, [(raw, result)], owner=self.owner))
            except SQLAlchemyError as exc:
                orig = getattr(exc, "orig", None) or exc
                refused = PermanentError(f"the archive refused it: {type(orig).__name__}: "
                                         f"{str(orig).strip().splitlines()[0][:300]}")
                outcomes += self._retrying(functools.partial(
                    self.archive.store_results, [(raw, refused)], owner=self.owner))
        return outcomes

    def _retrying(self, action: Callable[[], T]) -> T:
        for delay in (*self.retry_delays_s, None):
            try:
                return action()
            except ArchiveUnavailable as exc:
                if delay is None:
                    raise
                log.warning("archive unavailable (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")
