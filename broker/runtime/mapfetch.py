"""Sky maps by URL are fetched (issue 16, item 2), in the background, and become the
alert's localization.

A normalizer does no I/O: an alert that names its sky map by URL only (GCN JSON
``healpix_url``, LVK VOEvent ``skymap_fits``, Fermi GBM ``LocationMap_URL`` ...)
records it in ``extra["skymap_url"]`` (:data:`listeners.base.SKYMAP_URL`) and is
archived and matched at once with what it has.  The archive queues a fetch for it in
the same transaction (table ``skymap_fetches``), and the fetch workers of this module
take it from there, in threads of their own that the composition root starts
(:func:`broker.runtime.assembly.start_listeners`): nothing here ever runs on the ingest
or match path.

**The fetcher** (:func:`fetch`) is plain HTTP, transport-independent, with a policy
(:class:`FetchPolicy`, from ``MMBROKER_SKYMAP_FETCH_*``):

* only hosts on the allowlist (by default the hosts the real streams name: GraceDB,
  HEASARC, GCN, IceCube, KM3NeT); a redirect is followed only to a host on it, at most
  :data:`MAX_REDIRECTS` times;
* HTTPS only.  An ``http://`` URL (GCN's Fermi notices still write them; HEASARC and
  GCN serve the same files over HTTPS) is fetched as ``https://`` from the same host
  and path, as gwcelery and SkyPortal do; plain HTTP only with
  ``MMBROKER_SKYMAP_FETCH_ALLOW_HTTP`` and only to a loopback host (tests).  No
  ``file:``, ``ftp:``, ``data:`` or any other scheme, no credentials in the URL;
* a size cap (``Content-Length`` checked first, then the bytes as they come), a
  timeout on every socket operation and a deadline on the whole fetch (a server that
  trickles a byte a second is cut off), and the first bytes must be FITS or gzip;
* retryable and permanent failures kept apart, as gwcelery does (``gracedb.
  RetryableHTTPError`` for 502-504 and connection errors, and 404 for a sky map
  not yet published: GCN says a GBM map appears minutes after its notice):
  :class:`MapFetchUnavailable` (timeouts, connection and DNS errors, HTTP 404, 408,
  425, 429, 500, 502-504) is tried again after 10 s, 20 s, 40 s ... up to
  ``MMBROKER_SKYMAP_FETCH_BACKOFF_MAX_S``, ``MMBROKER_SKYMAP_FETCH_ATTEMPTS`` times in
  all; :class:`MapFetchError` (a host or scheme not allowed, a redirect off the list,
  any other HTTP status, too big, not FITS, not a readable sky map) is final at once.

**The map** goes through the same hardened reader as inline maps
(:func:`crossmatch.skymap.read_multiorder`, its decompression-bomb limit included) and
is stored once by SHA-256 in ``skymaps``, as maps that come inline are.

**The alert** is then updated in place (same IVORN, same revision): its localization
becomes the map, exactly as if it had come inline (item 1: the position it states, if
any, stays the summary point and its region moves to ``extra.position``), and
``extra.skymap_fetch`` records where the map came from (``url``, ``fetched_url``,
``sha256``, ``bytes``, ``attempts``, ``fetched_at``).  A fetch that fails for good is
recorded there too (``error``, ``attempts``, ``failed_at``) and logged; the alert keeps
what it had.  The cross-match engine takes the alert with its map as a newer version
of the same revision (:func:`crossmatch.events.supersedes`): it is matched again, its
coincidences get an ``updated`` revision (or are retracted when the map rules the
partner out), new partners the map reaches are found, and each new revision is
published as a VOEvent like any other.  The map is stored with the alert's
``matched_at`` and ``match_seq`` cleared, in one transaction, so the alert counts as
not matched until it is matched again with its map.  In ``serve`` the worker hands the
alert to the pipeline (a ``serve`` that dies first matches it when it starts:
``Pipeline.warm``); in a staged deployment it announces it again, so a match worker
matches it again and numbers it anew (the others catch up on it), the sweep covering a
lost announcement.

The stored row's ``content_sha256`` stays the hash of the alert as normalized from its
bytes, so the same message arriving again is still a duplicate, not a conflict.

Several processes may run fetch workers on one archive: a worker leases a queued fetch
as the outbox's senders lease deliveries (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
the lease moving ``next_attempt_at`` forward), so a fetch is never run twice at once,
and a worker that dies leaves its lease to run out.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urljoin, urlsplit

from sqlalchemy import select, update

import broker
from alerts_schema import (
    Alert,
    EllipseLocalization,
    PointLocalization,
    SkymapLocalization,
    validation_errors,
)
from alerts_schema.errors import (
    HostileInput,
    ImplausibleValue,
    MalformedInput,
    PermanentError,
    RetryableError,
)
from broker.archive.db import insert_ignoring_conflicts, transaction
from broker.archive.models import AlertRow, Skymap, SkymapFetch
from broker.archive.store import Archive, localization_columns, utcnow
from broker.metrics import SKYMAP_FETCHES
from crossmatch.events import FETCHED_MAP
from crossmatch.skymap import MultiOrderMap, read_multiorder
from listeners.base import SkymapFile, skymap_url_to_fetch
from listeners.common import check_plausible
from listeners.envelope import Outcome

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
"""Most redirects followed for one map (each to a host on the allowlist)."""
RETRYABLE_STATUS = frozenset({404, 408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses tried again: 404 because a map is often published minutes after the
notice that names it (GBM's quick-look map, GraceDB's upload), the rest transient."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 65536
_FITS_START = b"SIMPLE  ="
_GZIP_START = b"\x1f\x8b"


class MapFetchError(PermanentError):
    """A sky map named by URL that will not be fetched: a host or scheme not allowed, a
    redirect off the allowlist, an HTTP status other than a transient one, too big, not
    FITS, or not a readable sky map.  Recorded on the alert (``extra.skymap_fetch``) and
    logged; the alert keeps the localization it had (:mod:`broker.runtime.mapfetch`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MapFetchUnavailable(RetryableError):
    """A sky map fetch that may succeed later: a timeout, a connection or DNS error, HTTP
    404 (not published yet), 408, 425, 429, 500 or 502-504.  Tried again with back-off;
    after the last attempt it is recorded on the alert like a :class:`MapFetchError`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- the fetcher ------------------------------------------------------------------------

@dataclass(frozen=True)
class FetchPolicy:
    """What the fetcher may fetch and how long and how much it may take.

    Parameters
    ----------
    hosts
        Host names (lower case) maps may be fetched from, redirects included.
    allow_http
        Plain HTTP to a loopback host (tests); otherwise ``http://`` is fetched over
        HTTPS.
    max_bytes
        Largest map accepted, bytes, as sent (the reader bounds what a gzip expands to).
    timeout_s
        Longest wait for any one socket operation (connect, a read), seconds.
    deadline_s
        Longest a whole fetch may take, redirects included, seconds.
    """

    hosts: frozenset[str]
    allow_http: bool = False
    max_bytes: int = 64 * 1024 * 1024
    timeout_s: float = 30.0
    deadline_s: float = 120.0
    user_agent: str = "mmbroker (sky map fetcher)"

    @classmethod
    def from_settings(cls, settings: Any) -> FetchPolicy:
        return cls(hosts=frozenset(settings.skymap_fetch_hosts),
                   allow_http=settings.skymap_fetch_allow_http,
                   max_bytes=settings.skymap_fetch_max_bytes,
                   timeout_s=settings.skymap_fetch_timeout_s,
                   deadline_s=settings.skymap_fetch_deadline_s,
                   user_agent=f"mmbroker/{broker.__version__} (sky map fetcher)")


@dataclass(frozen=True)
class Fetched:
    """A fetched file: its bytes and the URL they came from (after redirects)."""

    data: bytes
    url: str


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int | None
    path: str

    @property
    def url(self) -> str:
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        if self.port is not None:
            netloc += f":{self.port}"
        return f"{self.scheme}://{netloc}{self.path}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, policy: FetchPolicy) -> str:
    """The URL the fetcher would request for ``url`` (``http`` upgraded to ``https``), or
    :class:`MapFetchError` saying why it may not be fetched."""
    return _target(url, policy).url


def _target(url: str, policy: FetchPolicy) -> _Target:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise MapFetchError(f"{url!r} is not a URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise MapFetchError(f"{scheme or 'no'} scheme: only https URLs are fetched ({url})")
    if parts.username is not None or parts.password is not None:
        raise MapFetchError(f"credentials in the URL are never sent ({parts.hostname})")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise MapFetchError(f"no host in {url!r}")
    if host not in policy.hosts:
        raise MapFetchError(f"host {host} is not on the sky map host list "
                            "(MMBROKER_SKYMAP_FETCH_HOSTS)")
    if scheme == "http" and not (policy.allow_http and _is_loopback(host)):
        scheme = "https"  # the same file over TLS (see the module docstring)
        port = None if port == 80 else port
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~-._")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=~-._?")
    return _Target(scheme, host, port, path)


def fetch(url: str, policy: FetchPolicy) -> Fetched:
    """GET ``url`` under ``policy``: the bytes of a FITS (or gzipped FITS) file.

    Raises
    ------
    MapFetchError
        Not to be fetched, or the server's answer will not change (see the module
        docstring).
    MapFetchUnavailable
        Worth trying again later.
    """
    deadline = time.monotonic() + policy.deadline_s
    target = _target(url, policy)
    for _ in range(MAX_REDIRECTS + 1):
        location, data = _get(target, policy, deadline)
        if data is not None:
            return Fetched(data, target.url)
        following = urljoin(target.url, location)
        try:
            target = _target(following, policy)
        except MapFetchError as exc:
            raise MapFetchError(f"{target.url} redirects to {following}: {exc.reason}") from exc
    raise MapFetchError(f"{url}: more than {MAX_REDIRECTS} redirects")


def _get(target: _Target, policy: FetchPolicy, deadline: float) -> tuple[str, bytes | None]:
    """One request: (redirect location, None) or ("", the body)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise MapFetchUnavailable(f"{target.url}: not done within {policy.deadline_s:g} s")
    timeout = min(policy.timeout_s, left)
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        conn.request("GET", target.path, headers={
            "User-Agent": policy.user_agent, "Accept": "application/fits, */*",
            "Accept-Encoding": "identity", "Connection": "close"})
        response = conn.getresponse()
        status = response.status
        if status in _REDIRECTS:
            location = response.getheader("Location")
            if not location:
                raise MapFetchError(f"{target.url}: HTTP {status} without a Location")
            return location, None
        if status != 200:
            what = f"{target.url}: HTTP {status} {response.reason}".rstrip()
            if status in RETRYABLE_STATUS:
                raise MapFetchUnavailable(what)
            raise MapFetchError(what)
        return "", _read(response, conn, target, policy, deadline)
    except (MapFetchError, MapFetchUnavailable):
        raise
    except ssl.SSLCertVerificationError as exc:
        raise MapFetchError(f"{target.url}: TLS certificate not trusted "
                            f"({exc.verify_message})") from exc
    except TimeoutError as exc:
        raise MapFetchUnavailable(f"{target.url}: timed out (no answer within "
                                  f"{timeout:.3g} s)") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise MapFetchUnavailable(f"{target.url}: {type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()


def _read(response: http.client.HTTPResponse, conn: http.client.HTTPConnection,
          target: _Target, policy: FetchPolicy, deadline: float) -> bytes:
    """The body, within the size cap and the deadline; the first bytes must be FITS/gzip."""
    length = response.getheader("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > policy.max_bytes:
        raise MapFetchError(f"{target.url}: {int(length)} bytes, over the "
                            f"{policy.max_bytes}-byte limit (MMBROKER_SKYMAP_FETCH_MAX_BYTES)")
    chunks: list[bytes] = []
    total = 0
    head = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise MapFetchUnavailable(f"{target.url}: not done within {policy.deadline_s:g} s "
                                      f"({total} bytes read)")
        if conn.sock is not None:
            conn.sock.settimeout(min(policy.timeout_s, left))
        chunk = response.read1(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > policy.max_bytes:
            raise MapFetchError(f"{target.url}: over the {policy.max_bytes}-byte limit "
                                "(MMBROKER_SKYMAP_FETCH_MAX_BYTES)")
        if len(head) < len(_FITS_START):
            head += chunk[:len(_FITS_START) - len(head)]
            if not _could_be_fits(head):
                raise MapFetchError(f"{target.url}: not a FITS file (starts {head!r}, "
                                    f"Content-Type {response.getheader('Content-Type')})")
        chunks.append(chunk)
    if length is not None and length.strip().isdigit() and total < int(length):
        raise MapFetchUnavailable(f"{target.url}: {total} of {int(length)} bytes arrived")
    data = b"".join(chunks)
    if not data.startswith((_FITS_START, _GZIP_START)):
        raise MapFetchError(f"{target.url}: not a FITS file ({len(data)} bytes, starts "
                            f"{data[:16]!r})")
    return data


def _could_be_fits(head: bytes) -> bool:
    """Whether the first bytes may still be a FITS file or a gzip stream."""
    return (_FITS_START.startswith(head) or head.startswith(_GZIP_START)
            or _GZIP_START.startswith(head))


def read_map(data: bytes, url: str) -> tuple[SkymapFile, MultiOrderMap]:
    """The fetched bytes as a map to store and the map read, through the same hardened
    reader inline maps take; :class:`MapFetchError` for what it refuses."""
    try:
        sky = read_multiorder(data)
    except (MalformedInput, HostileInput) as exc:
        raise MapFetchError(f"{url}: not a readable sky map: {exc.reason}") from exc
    layout: Literal["multiorder", "flat"] = "flat" if str(sky.meta.get(
        "ORDERING", "")).upper() in ("RING", "NESTED") else "multiorder"
    return SkymapFile(data=data, format=layout, area_90_deg2=sky.area_deg2(0.9)), sky


# -- the alert with its map -------------------------------------------------------------

def relocalized(alert: Alert, skymap: SkymapFile, sky: MultiOrderMap,
                record: dict[str, Any]) -> Alert:
    """``alert`` with the fetched map as its localization, as if it had come inline.

    The position the alert states, if any, stays its summary point (the map
    localization's ``ra_deg``/``dec_deg``) and its stated region moves to
    ``extra.position`` (issue 16, item 1); without one the map's densest pixel is
    the summary point.  ``record`` (``url``, ``fetched_url``, ``attempts`` ...) is kept
    in ``extra.skymap_fetch`` with the map's SHA-256.
    """
    loc = alert.localization
    extra = dict(alert.extra)
    if isinstance(loc, PointLocalization | EllipseLocalization):
        extra["position"] = loc.model_dump(mode="json")
        ra, dec = loc.ra_deg, loc.dec_deg
    else:
        ra, dec = sky.max_position()
    extra[FETCHED_MAP] = {**record, "sha256": skymap.sha256, "format": skymap.format,
                          "bytes": len(skymap.data)}
    url = record.get("url")
    document = alert.to_document()
    document["localization"] = SkymapLocalization(
        skymap_sha256=skymap.sha256, format=skymap.format,
        url=url if isinstance(url, str) and len(url) <= 1024 else None,
        area_90_deg2=skymap.area_90_deg2, ra_deg=ra % 360.0, dec_deg=dec).model_dump(
            mode="json")
    document["extra"] = extra
    return Alert.model_validate(document)


# -- the queue in the archive -----------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """A queued fetch, leased to one worker: the row, the alert as archived, the URL."""

    id: int
    alert_row: int
    url: str
    attempts: int  # counting this one
    alert: Alert


def claim(archive: Archive, *, lease_s: float, now: datetime | None = None) -> Job | None:
    """The oldest due fetch, leased for ``lease_s`` seconds (its attempt counted), or None."""
    now = now or utcnow()
    f, a = SkymapFetch.__table__, AlertRow.__table__
    pick = (select(f.c.id).where(f.c.state == "pending", f.c.next_attempt_at <= now)
            .order_by(f.c.next_attempt_at, f.c.id).limit(1))
    with transaction(archive.engine, readonly=True) as conn:
        if conn.execute(pick).scalar() is None:
            return None  # (an idle worker takes no write lock: SQLite has one for all)
    with transaction(archive.engine) as conn:
        if conn.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        job_id = conn.execute(pick).scalar()
        if job_id is None:
            return None
        conn.execute(update(f).where(f.c.id == job_id).values(
            attempts=f.c.attempts + 1, next_attempt_at=now + timedelta(seconds=lease_s)))
        row = conn.execute(select(f.c.id, f.c.alert_id, f.c.url, f.c.attempts, a.c.document)
                           .join(a, a.c.id == f.c.alert_id).where(f.c.id == job_id)).one()
        try:
            alert = Alert.model_validate(row.document)
        except ValueError as exc:  # never archived so; a fetch cannot mend it
            conn.execute(update(f).where(f.c.id == job_id).values(
                state="failed", finished_at=now,
                last_error=f"the archived alert does not validate: {exc}"[:2000]))
            log.error("sky map fetch %d dropped: its archived alert does not validate",
                      job_id)
            return None
    return Job(row.id, row.alert_id, row.url, row.attempts, alert)


def complete(archive: Archive, job: Job, alert: Alert, skymap: SkymapFile) -> bool:
    """Store the map, the alert with it, and the fetch as done, in one transaction.

    The alert's ``match_seq`` and ``matched_at`` are cleared with it: it is not matched
    with its map until it is matched again, and a process that dies before doing so
    matches it when it starts (``Pipeline.warm``; a staged deployment's sweep finds it
    unnumbered).  False when the
    fetch was no longer this worker's (another took it after the lease ran out).
    """
    now = utcnow()
    f, a = SkymapFetch.__table__, AlertRow.__table__
    with transaction(archive.engine) as conn:
        done = conn.execute(update(f).where(f.c.id == job.id, f.c.state == "pending").values(
            state="fetched", skymap_sha256=skymap.sha256, last_error=None, finished_at=now))
        if done.rowcount != 1:
            return False
        insert_ignoring_conflicts(conn, Skymap.__table__, [{
            "sha256": skymap.sha256, "data": skymap.data, "format": skymap.format,
            "size_bytes": len(skymap.data), "area_90_deg2": skymap.area_90_deg2,
            "received_at": now}])
        conn.execute(update(a).where(a.c.id == job.alert_row).values(
            document=alert.to_document(), match_seq=None, matched_at=None,
            **localization_columns(alert.localization)))
    return True


def postpone(archive: Archive, job: Job, error: str, delay_s: float) -> None:
    """Due again in ``delay_s`` seconds, the error kept."""
    f = SkymapFetch.__table__
    with transaction(archive.engine) as conn:
        conn.execute(update(f).where(f.c.id == job.id, f.c.state == "pending").values(
            last_error=error[:2000], next_attempt_at=utcnow() + timedelta(seconds=delay_s)))


def give_up(archive: Archive, job: Job, error: str) -> bool:
    """The fetch failed for good: recorded on the queue and on the alert
    (``extra.skymap_fetch``), whose localization stays what it was."""
    now = utcnow()
    f, a = SkymapFetch.__table__, AlertRow.__table__
    extra = dict(job.alert.extra)
    extra[FETCHED_MAP] = {"url": job.url, "error": error[:2000], "attempts": job.attempts,
                          "failed_at": now.isoformat().replace("+00:00", "Z")}
    document = {**job.alert.to_document(), "extra": extra}
    with transaction(archive.engine) as conn:
        done = conn.execute(update(f).where(f.c.id == job.id, f.c.state == "pending").values(
            state="failed", last_error=error[:2000], finished_at=now))
        if done.rowcount != 1:
            return False
        conn.execute(update(a).where(a.c.id == job.alert_row).values(document=document))
    return True


def queue_status(archive: Archive) -> list[dict[str, Any]]:
    """Every queued fetch, newest first: alert IVORN, URL, state, attempts, last error."""
    f, a = SkymapFetch.__table__, AlertRow.__table__
    with transaction(archive.engine, readonly=True) as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(a.c.ivorn, f.c.url, f.c.state, f.c.attempts, f.c.last_error,
                   f.c.skymap_sha256, f.c.next_attempt_at, f.c.finished_at)
            .join(a, a.c.id == f.c.alert_id).order_by(f.c.id.desc()))]


# -- the workers ------------------------------------------------------------------------

Rematch = Callable[[Alert], None]
"""What a worker does with an alert whose map it stored: match it again (``serve``: the
pipeline; a staged listener: announce it to the match stage)."""


class MapFetchLoop:
    """Fetch queued sky maps until stopped; any number of threads may run one loop.

    Parameters
    ----------
    archive
        Where the queue, the maps and the alerts are.
    policy
        What may be fetched (:class:`FetchPolicy`).
    rematch
        Called with each alert whose map arrived (see :data:`Rematch`); None: stored only.
    attempts
        Attempts in all before a retryable failure is recorded as final.
    backoff_s, backoff_max_s
        Wait before the second attempt, doubled for each further one up to the maximum
        (with up to 10% jitter), seconds.
    poll_s
        How often an idle worker looks for due fetches, seconds; :meth:`offer` wakes it
        at once.
    """

    def __init__(self, archive: Archive, policy: FetchPolicy, rematch: Rematch | None = None,
                 *, attempts: int = 9, backoff_s: float = 10.0, backoff_max_s: float = 300.0,
                 poll_s: float = 1.0) -> None:
        self.archive = archive
        self.policy = policy
        self.rematch = rematch
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.poll_s = poll_s
        self.lease_s = 2 * policy.deadline_s + 60.0
        self.wake = threading.Event()
        self.fetched = 0  # maps stored by this loop, and fetches it gave up (all threads)
        self.failed = 0
        self._count = threading.Lock()

    def offer(self, outcomes: Sequence[Outcome]) -> None:
        """Wake the workers when a batch archived an alert whose map is to be fetched."""
        if any(o.status == "archived" and o.alert is not None
               and skymap_url_to_fetch(o.alert) for o in outcomes):
            self.wake.set()

    def run(self, stop: threading.Event) -> None:
        """Fetch until ``stop`` is set; nothing a server, a map or the database does ends it."""
        while not stop.is_set():
            try:
                worked = self.run_once()
            except RetryableError as exc:
                log.warning("sky map fetch queue unavailable (%s); retrying", exc)
                stop.wait(min(5.0, self.poll_s * 5))
                continue
            except Exception:  # a fetch worker must outlive anything one round throws
                log.exception("sky map fetch round failed; retrying")
                stop.wait(min(5.0, self.poll_s * 5))
                continue
            if not worked:
                self.wake.wait(self.poll_s)
                self.wake.clear()

    def run_once(self) -> bool:
        """Take one due fetch and see it through; False when none was due."""
        job = claim(self.archive, lease_s=self.lease_s)
        if job is None:
            return False
        self.process(job)
        return True

    def process(self, job: Job) -> None:
        """Fetch, read, store and match again; or postpone, or record the failure."""
        ivorn = job.alert.id
        if job.attempts > self.attempts:
            # Leased more often than it may be tried: a worker died (or outran its lease)
            # fetching it each time.
            self._fail(job, f"abandoned after {job.attempts - 1} attempts that never "
                            "finished (a worker died or outran its lease)")
            return
        try:
            fetched = fetch(job.url, self.policy)
            skymap, sky = read_map(fetched.data, fetched.url)
            alert = relocalized(job.alert, skymap, sky, {
                "url": job.url, "fetched_url": fetched.url, "attempts": job.attempts,
                "fetched_at": utcnow().isoformat().replace("+00:00", "Z")})
            _check(alert)
        except MapFetchUnavailable as exc:
            if job.attempts < self.attempts:
                SKYMAP_FETCHES.labels("retry").inc()
                delay = self._backoff(job.attempts)
                log.warning("sky map of %s not fetched yet (attempt %d of %d): %s; again in "
                            "%.0f s", ivorn, job.attempts, self.attempts, exc.reason, delay,
                            extra={"ivorn": ivorn})
                postpone(self.archive, job, exc.reason, delay)
                return
            self._fail(job, f"{exc.reason} (gave up after {job.attempts} attempts)")
            return
        except MapFetchError as exc:
            self._fail(job, exc.reason)
            return
        except Exception as exc:  # a bug here must cost this map, not the worker
            log.exception("sky map of %s: the fetcher failed", ivorn, extra={"ivorn": ivorn})
            self._fail(job, f"fetcher error {type(exc).__name__}: {exc}")
            return
        if not complete(self.archive, job, alert, skymap):
            return
        SKYMAP_FETCHES.labels("fetched").inc()
        with self._count:
            self.fetched += 1
        log.info("sky map of %s fetched (%d bytes, 90%% area %.1f deg2): its localization "
                 "now", ivorn, len(skymap.data), skymap.area_90_deg2 or float("nan"),
                 extra={"ivorn": ivorn, "skymap_sha256": skymap.sha256})
        if self.rematch is not None:
            try:
                self.rematch(alert)
            except Exception:  # recorded above; matching again is the pipeline's to retry
                log.exception("matching %s again with its sky map failed", ivorn,
                              extra={"ivorn": ivorn})

    def _fail(self, job: Job, error: str) -> None:
        if give_up(self.archive, job, error):
            SKYMAP_FETCHES.labels("failed").inc()
            with self._count:
                self.failed += 1
            log.error("sky map of %s not fetched: %s", job.alert.id, error,
                      extra={"ivorn": job.alert.id})

    def _backoff(self, attempts: int) -> float:
        delay = min(self.backoff_max_s, self.backoff_s * 2.0 ** max(0, attempts - 1))
        return delay * random.uniform(0.9, 1.0)  # jitter: workers do not retry in step


def _check(alert: Alert) -> None:
    """The alert with its map still meets the contract and the plausibility rule."""
    errors = validation_errors("alert", alert.to_document())
    if errors:
        raise MapFetchError("the alert with its map breaks the Alert schema: "
                            + "; ".join(errors[:3]))
    try:
        check_plausible(alert, alert.received_time or datetime.now(UTC))
    except ImplausibleValue as exc:
        raise MapFetchError(f"the alert with its map is implausible: {exc.reason}") from exc
