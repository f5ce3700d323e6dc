"""A Python client for the broker's HTTP query API, for analysts.

This is its own distribution (``clients/python``, ``pip install
./clients/python``), pure Python: only the standard library is needed to
import it and to list and fetch alerts, coincidences and VOEvents as JSON;
:mod:`astropy` (extra ``astropy``) is imported when a method returns an
:class:`astropy.table.Table`, :mod:`pandas` (extra ``pandas``) when one
returns a DataFrame.  Nothing of the server is needed.

>>> from mmbroker_client import Client
>>> client = Client("https://broker.example.org", token="mmb_...")  # doctest: +SKIP
>>> table = client.alerts(messenger="neutrino", since="2026-01-01",
...                       cone=(83.63, 22.01, 5.0))  # doctest: +SKIP

Filters are keyword arguments named as the API's query parameters:

* times (``since``, ``until``, ...) are UTC; a :class:`~datetime.datetime`
  with a time zone is converted to UTC, a naive one is taken as UTC, a
  :class:`~datetime.date` is its midnight UTC, and a string is sent as given
  (ISO 8601);
* sky positions and radii are ICRS degrees; ``cone=(ra_deg, dec_deg,
  radius_deg)`` stands for ``ra``, ``dec`` and ``radius``;
* false-alarm rates are in Hz, energies in GeV;
* a list, tuple or set means any of its values (the parameter is repeated);
* booleans are sent as ``true``/``false``; ``None`` means no filter.

A filter name the resource does not know raises :class:`TypeError` here,
before any request: the server would silently ignore it.

Errors are :class:`ClientError` and its subclasses :class:`NotFound`,
:class:`Unauthorized`, :class:`BadRequest` and :class:`RateLimited`.  An
answer ``429 Too Many Requests`` is retried after its ``Retry-After``
(at most ``max_retries`` times) before :class:`RateLimited` is raised.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime
from email.message import Message
from http.client import HTTPMessage
from typing import TYPE_CHECKING, Any, Literal, overload

if TYPE_CHECKING:  # pragma: no cover - only for type checkers
    import pandas
    from astropy.table import Table

__all__ = [
    "ALERT_FILTERS",
    "COINCIDENCE_FILTERS",
    "VOEVENT_FILTERS",
    "BadRequest",
    "Client",
    "ClientError",
    "NotFound",
    "RateLimited",
    "ResultTruncated",
    "Unauthorized",
]

API = "/api/v1"
MAX_PAGE_SIZE = 1000
"""Most rows one page may hold (the server's ``limit`` cap)."""
DEFAULT_PAGE_SIZE = 500
DEFAULT_MAX_ROWS = 10_000
"""Most rows the Table and DataFrame methods fetch unless told otherwise."""
MAX_RETRY_WAIT_S = 60.0
"""Longest wait for one ``Retry-After`` unless the client is told otherwise, s."""

_SKY = frozenset({"ra", "dec", "radius"})
_REGION = frozenset({"skymap", "level"})
_TEXT = frozenset({"ivorn_prefix", "ivorn_contains"})

ALERT_FILTERS: frozenset[str] = frozenset({
    "since", "until", "received_since", "received_until", "messenger", "source", "facility",
    "instrument", "alert_type", "role", "data_rights", "event_id", "far_max", "energy_min",
    "energy_max", "pipeline", "pipeline_version", "reco_method", *_TEXT, *_SKY, *_REGION,
})
"""Filters of :meth:`Client.iter_alerts` and the other alert lists (plus ``cone``)."""

COINCIDENCE_FILTERS: frozenset[str] = frozenset({
    "since", "until", "created_since", "created_until", "pairing", "state", "messenger",
    "source", "facility", "role", "member", "far_max", "config_hash", "engine_version",
    *_TEXT, *_SKY, *_REGION,
})
"""Filters of :meth:`Client.iter_coincidences` and the other coincidence lists."""

VOEVENT_FILTERS: frozenset[str] = frozenset({
    "authored_since", "authored_until", "role", "kind", "stream", "ref_exact",
    "ref_contains", "ref_any", "cited", "cited_by", *_TEXT, *_SKY,
})
"""Filters of :meth:`Client.iter_voevents` and :meth:`Client.voevents`."""

_RESERVED = frozenset({"limit", "cursor", "count", "format"})

ProvenanceFormat = Literal["json", "xml", "provn"]


# -- errors ----------------------------------------------------------------------------------


class ClientError(Exception):
    """A request the broker did not answer as asked (or could not be made at all).

    Attributes
    ----------
    status
        The HTTP status code, or None when no answer came (connection
        refused, timeout).
    detail
        The ``detail`` of the JSON error body when it has one (a string, or
        for a 422 FastAPI's list of problems), else the error text found in
        the body, else None.
    url
        The URL that was requested.
    """

    def __init__(self, message: str, *, status: int | None = None, detail: Any = None,
                 url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.url = url


class NotFound(ClientError):
    """404: no such resource, or one the caller's data rights do not show."""


class Unauthorized(ClientError):
    """401 or 403: an invalid, expired or revoked token, or one lacking a scope."""


class BadRequest(ClientError):
    """400 or 422: a filter, cursor or parameter the API does not accept.

    A cone search answering a VOTable with ``QUERY_STATUS`` ``ERROR`` raises
    this too (with the HTTP status it came with, often 200).
    """


class RateLimited(ClientError):
    """429, still, after ``max_retries`` retries.

    Attributes
    ----------
    retry_after_s
        The last ``Retry-After`` the broker sent, s (None if it sent none).
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class ResultTruncated(UserWarning):
    """A Table or DataFrame stopped at ``max_rows`` while more rows matched."""


def _error_class(status: int) -> type[ClientError]:
    if status == 404:
        return NotFound
    if status in (401, 403):
        return Unauthorized
    if status in (400, 422):
        return BadRequest
    if status == 429:
        return RateLimited
    return ClientError


# -- encoding parameters ----------------------------------------------------------------------


def _iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``; a naive datetime is taken as UTC."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")


def _encode(value: Any) -> str:
    """One query-parameter value as text."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b":
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _iso_utc(value)
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00Z"
    if hasattr(value, "utc") and hasattr(value, "isot"):  # astropy.time.Time, duck-typed
        return f"{value.utc.isot}Z"
    if isinstance(value, int) or hasattr(value, "__index__"):
        return str(int(value))
    if isinstance(value, float) or hasattr(value, "__float__"):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"filter value {value!r} is not a finite number")
        return repr(number)
    return str(value)


def _filter_params(filters: Mapping[str, Any], allowed: frozenset[str], what: str
                   ) -> list[tuple[str, str]]:
    """Query parameters from keyword filters (see the module docstring)."""
    filters = dict(filters)
    cone = filters.pop("cone", None)
    reserved = sorted(_RESERVED & filters.keys())
    if reserved:
        raise TypeError(f"{', '.join(reserved)} are set by the client; use page_size= and "
                        "max_rows= instead")
    unknown = sorted(filters.keys() - allowed)
    if unknown:
        raise TypeError(f"unknown {what} filter(s) {', '.join(unknown)}; known: "
                        f"cone, {', '.join(sorted(allowed))}")
    if cone is not None:
        if any(filters.get(k) is not None for k in _SKY):
            raise TypeError("give either cone=(ra_deg, dec_deg, radius_deg) or ra, dec and "
                            "radius, not both")
        try:
            ra, dec, radius = (float(v) for v in cone)
        except (TypeError, ValueError):
            raise TypeError("cone must be (ra_deg, dec_deg, radius_deg), three numbers"
                            ) from None
        filters.update(ra=ra % 360.0, dec=dec, radius=radius)
    params: list[tuple[str, str]] = []
    for name in sorted(filters):
        value = filters[name]
        if value is None:
            continue
        if isinstance(value, Iterable) and not isinstance(value, str | bytes) \
                and not hasattr(value, "isot"):
            params += [(name, _encode(v)) for v in value if v is not None]
        else:
            params.append((name, _encode(value)))
    return params


def _check_paging(page_size: int, max_rows: int | None) -> None:
    if not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be an integer in 1..{MAX_PAGE_SIZE}, "
                         f"not {page_size!r}")
    if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 0):
        raise ValueError(f"max_rows must be None or a non-negative integer, not {max_rows!r}")


# -- reading answers ------------------------------------------------------------------------

_INFO = re.compile(rb"<INFO\b([^>]*?)(?:/>|>(.*?)</INFO>)", re.DOTALL)
_ATTR = re.compile(rb'([A-Za-z_:][-\w:.]*)\s*=\s*"([^"]*)"')


def _votable_infos(body: bytes) -> dict[str, tuple[str, str]]:
    """The INFO elements of a VOTable as name -> (value, text), without an XML library."""
    infos: dict[str, tuple[str, str]] = {}
    for attrs, content in _INFO.findall(body):
        fields = {k.decode(): html.unescape(v.decode("utf-8", "replace"))
                  for k, v in _ATTR.findall(attrs)}
        if "name" in fields:
            text = html.unescape(content.decode("utf-8", "replace")).strip()
            infos.setdefault(fields["name"], (fields.get("value", ""), text))
    return infos


def _error_detail(body: bytes, content_type: str) -> Any:
    """The error's ``detail`` from a JSON body, or the error text of a VOTable."""
    if "json" in content_type:
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        return parsed.get("detail") if isinstance(parsed, dict) else None
    if b"<VOTABLE" in body[:2000]:
        infos = _votable_infos(body)
        if "Error" in infos:
            return infos["Error"][0]
        status = infos.get("QUERY_STATUS")
        if status and status[0] == "ERROR":
            return status[1] or None
    text = body[:500].decode("utf-8", "replace").strip()
    return text or None


def _retry_after_s(headers: Message | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:  # an HTTP date: the broker never sends one; wait a second
        return 1.0
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _link_cursor(headers: Message) -> str | None:
    """The cursor of the ``Link: <...>; rel="next"`` header, if any."""
    for link in headers.get_all("Link") or []:
        for part in link.split(","):
            match = re.match(r'\s*<([^>]*)>\s*;.*\brel="?next"?', part)
            if match:
                query = urllib.parse.urlsplit(match.group(1)).query
                cursors = urllib.parse.parse_qs(query).get("cursor")
                if cursors:
                    return cursors[-1]
    return None


def _parse_votable(body: bytes) -> tuple[Table, dict[str, tuple[str, str]]]:
    """The first table of a VOTable (units, UCDs and descriptions kept) and its INFOs."""
    import io

    from astropy.io.votable import parse

    votable = parse(io.BytesIO(body))
    infos: dict[str, tuple[str, str]] = {}
    for resource in votable.resources:
        for info in resource.infos:
            infos.setdefault(info.name, (info.value or "", (info.content or "").strip()))
    table = votable.get_first_table().to_table(use_names_over_ids=True)
    return table, infos


def _timestamp_columns(table: Table) -> list[str]:
    return [name for name in table.colnames if table[name].meta.get("xtype") == "timestamp"]


def _with_times(table: Table) -> Table:
    """``table`` with its ISO 8601 timestamp columns as UTC :class:`~astropy.time.Time`.

    A missing time stays masked; the column keeps its description and UCD.
    """
    import numpy as np
    from astropy.table import MaskedColumn
    from astropy.time import Time
    from erfa import ErfaWarning

    for name in _timestamp_columns(table):
        column = table[name]
        filled = column.filled("") if isinstance(column, MaskedColumn) else column
        text = np.asarray(filled).astype(str)
        mask = text == ""  # a missing time is an empty cell in the VOTable
        text = np.where(mask, "2000-01-01T00:00:00", text)
        with warnings.catch_warnings():
            # A time past the leap-second table (an embargo to 2099, say) is "dubious"
            # to ERFA only in which leap seconds it will have: its UTC label is exact.
            warnings.simplefilter("ignore", ErfaWarning)
            values = Time([t.rstrip("Z") for t in text], format="isot", scale="utc",
                          precision=6)  # the archive keeps microseconds
        if mask.any():
            values[mask] = np.ma.masked
        values.info.description = column.info.description
        values.info.meta = dict(column.info.meta or {})
        table.replace_column(name, values)
    return table


def _to_pandas(table: Table) -> pandas.DataFrame:
    """A DataFrame of ``table``, its :class:`~astropy.time.Time` columns timezone-aware UTC."""
    import pandas as pd
    from astropy.time import Time

    times = [name for name in table.colnames if isinstance(table[name], Time)]
    plain = table.copy(copy_data=False)
    for name in times:  # ISO strings: pandas makes them aware; NaT where masked
        plain.replace_column(name, _isot(table[name]))
    frame = plain.to_pandas()
    for name in times:
        frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601")
    return frame


def _isot(times: Any) -> list[str | None]:
    import numpy as np
    from erfa import ErfaWarning

    mask = np.asarray(getattr(times, "mask", np.zeros(len(times), dtype=bool)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ErfaWarning)  # as in _with_times
        utc = times.utc
        utc.precision = 6
        text = utc.isot
    return [None if m else str(t) + "Z" for t, m in zip(text, np.broadcast_to(mask, len(text)),
                                                     strict=True)]


# -- the client ---------------------------------------------------------------------------------


class _SameOriginAuth(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but send the bearer token only to the origin it was meant for."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: HTTPMessage, newurl: str) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        old, target = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if new is not None and (old.scheme, old.netloc) != (target.scheme, target.netloc):
            new.remove_header("Authorization")
        return new


class Client:
    """The broker's query API over HTTP(S).

    Parameters
    ----------
    base_url
        Where the broker serves, e.g. ``https://broker.example.org`` (a path
        prefix is kept: ``https://example.org/mmbroker``).
    token
        A bearer token from ``mmbroker token create`` (scopes
        ``read:embargoed``, ``read:proprietary`` show embargoed and
        proprietary alerts).  Without one the client sees public data only.
    timeout_s
        Socket timeout of each request, s.
    max_retries
        How many times an answer 429 (rate limited) is retried after the
        wait its ``Retry-After`` asks for; 0 raises :class:`RateLimited` at
        once.
    max_retry_wait_s
        Longest wait for one retry, s, whatever ``Retry-After`` says.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 30.0,
                 max_retries: int = 3, *, max_retry_wait_s: float = MAX_RETRY_WAIT_S) -> None:
        scheme = urllib.parse.urlsplit(base_url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.max_retry_wait_s = float(max_retry_wait_s)
        self._opener = urllib.request.build_opener(_SameOriginAuth())

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, token={'***' if self.token else None})"

    # -- HTTP ------------------------------------------------------------------------------

    def _url(self, path: str, params: Iterable[tuple[str, str]] = ()) -> str:
        query = urllib.parse.urlencode(list(params))
        return f"{self.base_url}{path}" + (f"?{query}" if query else "")

    def _get(self, path: str, params: Iterable[tuple[str, str]] = (),
             accept: str = "*/*") -> tuple[bytes, Message]:
        """GET ``path``; the body and headers of a 2xx answer, else a :class:`ClientError`."""
        url = self._url(path, params)
        headers = {"Accept": accept, "User-Agent": "mmbroker-client"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        retries = 0
        while True:
            request = urllib.request.Request(url, headers=headers, method="GET")
            try:
                with self._opener.open(request, timeout=self.timeout_s) as response:
                    return response.read(), response.headers
            except urllib.error.HTTPError as exc:
                try:
                    body = exc.read()
                except OSError:
                    body = b""
                finally:
                    exc.close()
                status, answer_headers = exc.code, exc.headers
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ClientError(f"GET {url}: no answer ({reason})", url=url) from exc
            wait = _retry_after_s(answer_headers)
            if status == 429 and retries < self.max_retries:
                retries += 1
                time.sleep(min(self.max_retry_wait_s, 1.0 if wait is None else wait))
                continue
            detail = _error_detail(body, answer_headers.get("Content-Type", "") or "")
            cls = _error_class(status)
            message = f"GET {url}: {status}" + (f": {detail}" if detail else "")
            if cls is RateLimited:
                raise RateLimited(message + f" (after {retries} retries)", status=status,
                                  detail=detail, url=url, retry_after_s=wait)
            raise cls(message, status=status, detail=detail, url=url)

    def _get_json(self, path: str, params: Iterable[tuple[str, str]] = ()) -> Any:
        body, _ = self._get(path, params, accept="application/json")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ClientError(f"GET {self._url(path, params)}: the answer is not JSON",
                              url=self._url(path, params)) from exc

    @staticmethod
    def _path(kind: str, ivorn: str, tail: str = "") -> str:
        if not ivorn:
            raise ValueError("an IVORN is required")
        return f"{API}/{kind}/{urllib.parse.quote(ivorn, safe='')}{tail}"

    # -- lists: JSON pages -----------------------------------------------------------------

    def _iter(self, resource: str, allowed: frozenset[str], filters: Mapping[str, Any],
              page_size: int, max_rows: int | None) -> Iterator[dict[str, Any]]:
        _check_paging(page_size, max_rows)
        params = _filter_params(filters, allowed, resource.rstrip("s"))
        return self._pages(f"{API}/{resource}", params, page_size, max_rows)

    def _pages(self, path: str, params: list[tuple[str, str]], page_size: int,
               max_rows: int | None) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        seen = 0
        while max_rows is None or seen < max_rows:
            limit = page_size if max_rows is None else max(1, min(page_size, max_rows - seen))
            paging = [("limit", str(limit)), ("format", "json")]
            if cursor:
                paging.append(("cursor", cursor))
            page = self._get_json(path, params + paging)
            for item in page["items"]:
                if max_rows is not None and seen >= max_rows:
                    return
                seen += 1
                yield item
            cursor = page.get("next")
            if not cursor:
                return

    def iter_alerts(self, *, page_size: int = DEFAULT_PAGE_SIZE, max_rows: int | None = None,
                    **filters: Any) -> Iterator[dict[str, Any]]:
        """Alert documents matching the filters, newest event first, page by page.

        Pages are fetched as the iterator is consumed, following each page's
        ``next`` cursor; every matching alert comes exactly once even while
        new ones arrive.

        Parameters
        ----------
        page_size
            Alerts per request, 1 to 1000.
        max_rows
            Stop after this many alerts (None: all).
        **filters
            ``since``, ``until``: event (trigger) time, UTC.
            ``received_since``, ``received_until``: when the broker received
            it, UTC.
            ``cone``: (ra_deg, dec_deg, radius_deg), ICRS deg; or ``ra``,
            ``dec``, ``radius`` (deg).
            ``skymap``: SHA-256 of a sky map the archive holds, with
            ``level`` (credible level, default 0.9): alerts inside its
            credible region.
            ``messenger`` (``gravitational_wave``, ``neutrino``,
            ``gamma_ray``, ``x_ray``, ``ultraviolet``, ``optical``,
            ``infrared``, ``radio``, ``cosmic_ray``, ``other``), ``source``
            (input stream), ``facility``, ``instrument``, ``alert_type``
            (``initial``, ``update``, ``retraction``), ``role``
            (``observation``, ``test``, ``drill``, ``utility``,
            ``prediction``), ``data_rights`` (``public``, ``embargoed``,
            ``proprietary``), ``pipeline``, ``pipeline_version``,
            ``reco_method``: one value or a list of any of several.
            ``event_id``: the issuer's event id.
            ``far_max``: false-alarm rate at most, Hz.
            ``energy_min``, ``energy_max``: energy, GeV.
            ``ivorn_prefix``, ``ivorn_contains``: text of the IVORN.

        Yields
        ------
        dict
            An Alert document (``alerts_schema/alert.schema.json``); its
            ``id`` is the broker's IVORN of the revision.

        Raises
        ------
        TypeError
            For a filter name alerts do not have.
        BadRequest
            For a filter value the API refuses.
        """
        return self._iter("alerts", ALERT_FILTERS, filters, page_size, max_rows)

    def iter_coincidences(self, *, page_size: int = DEFAULT_PAGE_SIZE,
                          max_rows: int | None = None, **filters: Any
                          ) -> Iterator[dict[str, Any]]:
        """Coincidence documents matching the filters, newest found first, page by page.

        Only coincidences whose every member alert the caller may see are listed.

        Parameters
        ----------
        page_size
            Coincidences per request, 1 to 1000.
        max_rows
            Stop after this many (None: all).
        **filters
            ``since``, ``until``: reference (earliest member) time, UTC.
            ``created_since``, ``created_until``: when the engine found it, UTC.
            ``cone``: (ra_deg, dec_deg, radius_deg), ICRS deg, on the best
            position; or ``ra``, ``dec``, ``radius``; ``skymap`` and
            ``level`` as for alerts.
            ``pairing``, ``state`` (``new``, ``updated``, ``retracted``),
            ``config_hash``, ``engine_version``: one value or a list.
            ``messenger``, ``source``, ``facility``, ``role``: some member
            has one of the values.
            ``member``: IVORN of a member alert.
            ``far_max``: smallest false-alarm rate at most, Hz.
            ``ivorn_prefix``, ``ivorn_contains``: text of the IVORN.

        Yields
        ------
        dict
            A Coincidence document (``alerts_schema/coincidence.schema.json``).
        """
        return self._iter("coincidences", COINCIDENCE_FILTERS, filters, page_size, max_rows)

    def iter_voevents(self, *, page_size: int = DEFAULT_PAGE_SIZE, max_rows: int | None = None,
                      **filters: Any) -> Iterator[dict[str, Any]]:
        """Summaries of the VOEvents this broker issued, newest first, page by page.

        Parameters
        ----------
        page_size
            VOEvents per request, 1 to 1000.
        max_rows
            Stop after this many (None: all).
        **filters
            ``authored_since``, ``authored_until``: when it was issued, UTC.
            ``role`` (``observation``, ``test``, ``utility``; or a list),
            ``kind`` (``alert`` or ``coincidence``), ``stream``
            (``authority/stream`` of the IVORN).
            ``ref_exact``: cites this IVORN; ``ref_contains``: cites an IVORN
            containing the text; ``ref_any``: cites anything (True) or
            nothing (False); ``cited``: cited by another VOEvent (True) or
            not; ``cited_by``: cited by the VOEvent with this IVORN.
            ``cone``: (ra_deg, dec_deg, radius_deg), ICRS deg, on its
            subject's position; or ``ra``, ``dec``, ``radius``.
            ``ivorn_prefix``, ``ivorn_contains``: text of the IVORN.

        Yields
        ------
        dict
            ``ivorn``, ``role``, ``kind``, ``subject_ivorn``, ``created_at``
            (UTC), ``ra_deg``, ``dec_deg`` (deg), ``sha256``, ``size_bytes``,
            ``citations`` and ``url``; the VOEvent itself is
            :meth:`voevent`.
        """
        return self._iter("voevents", VOEVENT_FILTERS, filters, page_size, max_rows)

    # -- lists: tables ---------------------------------------------------------------------

    def _table(self, resource: str, allowed: frozenset[str], filters: Mapping[str, Any],
               page_size: int, max_rows: int | None) -> Table:
        from astropy.table import vstack

        _check_paging(page_size, max_rows)
        params = _filter_params(filters, allowed, resource.rstrip("s"))
        path = f"{API}/{resource}"
        tables: list[Table] = []
        cursor: str | None = None
        rows = 0
        while True:
            limit = page_size if max_rows is None else max(1, min(page_size, max_rows - rows))
            paging = [("limit", str(limit)), ("format", "votable")]
            if cursor:
                paging.append(("cursor", cursor))
            body, headers = self._get(path, params + paging,
                                      accept="application/x-votable+xml")
            table, infos = _parse_votable(body)
            tables.append(table)
            rows += len(table)
            cursor = (infos.get("next") or ("", ""))[0] or _link_cursor(headers)
            if not cursor or (max_rows is not None and rows >= max_rows):
                break
        result = tables[0] if len(tables) == 1 else \
            vstack(tables, join_type="exact", metadata_conflicts="silent")
        if max_rows is not None and len(result) > max_rows:  # max_rows=0
            result = result[:max_rows]
            cursor = cursor or "?"
        for key in ("ID", "name"):
            result.meta.pop(key, None)
        result.meta["truncated"] = bool(cursor)
        _with_times(result)
        if cursor:
            warnings.warn(f"{resource}: stopped at max_rows={max_rows} while more rows match; "
                          "pass a larger max_rows (or None for all)", ResultTruncated,
                          stacklevel=3)
        return result

    def alerts(self, *, page_size: int = DEFAULT_PAGE_SIZE,
               max_rows: int | None = DEFAULT_MAX_ROWS, **filters: Any) -> Table:
        """Alerts matching the filters as an astropy Table, newest event first.

        One row per alert revision with the columns of
        ``/api/v1/alerts?format=votable``, each with its unit and UCD (in
        ``table[name].meta["ucd"]``): ``ra_deg``, ``dec_deg``,
        ``error_radius_deg`` in deg, ``far_hz`` in Hz, ``energy_gev``,
        ``energy_min_gev``, ``energy_max_gev`` in GeV, ``event_time_error_s``
        in s; ``event_time``, ``received_at`` and ``embargo_until`` are
        :class:`~astropy.time.Time` columns (scale UTC).  Missing values are
        masked.

        Parameters
        ----------
        page_size
            Rows per request, 1 to 1000.
        max_rows
            Most rows to fetch (None: all); when more match, a
            :class:`ResultTruncated` warning says so and
            ``table.meta["truncated"]`` is True.
        **filters
            As :meth:`iter_alerts` (time UTC, sky deg, ``far_max`` Hz,
            energies GeV).

        Returns
        -------
        astropy.table.Table
        """
        return self._table("alerts", ALERT_FILTERS, filters, page_size, max_rows)

    def coincidences(self, *, page_size: int = DEFAULT_PAGE_SIZE,
                     max_rows: int | None = DEFAULT_MAX_ROWS, **filters: Any) -> Table:
        """Coincidences matching the filters as an astropy Table, newest found first.

        Columns: ``ivorn``, ``pairing``, ``state``, ``revision``,
        ``reference_time`` and ``created_at`` (:class:`~astropy.time.Time`, UTC), ``ra_deg``,
        ``dec_deg`` (deg), ``overlap``, ``far_hz`` (Hz), ``members``
        (space-separated IVORNs), ``engine_version``, ``config_hash``.

        Parameters
        ----------
        page_size
            Rows per request, 1 to 1000.
        max_rows
            Most rows to fetch (None: all); see :meth:`alerts`.
        **filters
            As :meth:`iter_coincidences`.

        Returns
        -------
        astropy.table.Table
        """
        return self._table("coincidences", COINCIDENCE_FILTERS, filters, page_size, max_rows)

    def voevents(self, *, page_size: int = DEFAULT_PAGE_SIZE,
                 max_rows: int | None = DEFAULT_MAX_ROWS, **filters: Any) -> Table:
        """The VOEvents this broker issued as an astropy Table, newest first.

        Columns: ``ivorn``, ``role``, ``kind``, ``subject_ivorn``,
        ``created_at`` (:class:`~astropy.time.Time`, UTC), ``ra_deg``, ``dec_deg`` (deg),
        ``sha256``, ``size_bytes`` (byte), ``cites`` (``cite:IVORN``,
        space-separated).

        Parameters
        ----------
        page_size
            Rows per request, 1 to 1000.
        max_rows
            Most rows to fetch (None: all); see :meth:`alerts`.
        **filters
            As :meth:`iter_voevents`.

        Returns
        -------
        astropy.table.Table
        """
        return self._table("voevents", VOEVENT_FILTERS, filters, page_size, max_rows)

    def alerts_df(self, *, page_size: int = DEFAULT_PAGE_SIZE,
                  max_rows: int | None = DEFAULT_MAX_ROWS, **filters: Any) -> pandas.DataFrame:
        """Alerts matching the filters as a pandas DataFrame, newest event first.

        The columns of :meth:`alerts` (``ra_deg``/``dec_deg`` deg, ``far_hz``
        Hz, energies GeV); ``event_time``, ``received_at`` and
        ``embargo_until`` are timezone-aware UTC datetimes; missing numbers
        are NaN.  Units are only in the column names here: use
        :meth:`alerts` to keep them.

        Parameters
        ----------
        page_size, max_rows, **filters
            As :meth:`alerts`.

        Returns
        -------
        pandas.DataFrame
        """
        return _to_pandas(self.alerts(page_size=page_size, max_rows=max_rows, **filters))

    def coincidences_df(self, *, page_size: int = DEFAULT_PAGE_SIZE,
                        max_rows: int | None = DEFAULT_MAX_ROWS, **filters: Any
                        ) -> pandas.DataFrame:
        """Coincidences matching the filters as a pandas DataFrame, newest found first.

        The columns of :meth:`coincidences`, with ``reference_time`` and
        ``created_at`` as timezone-aware UTC datetimes.

        Parameters
        ----------
        page_size, max_rows, **filters
            As :meth:`coincidences`.

        Returns
        -------
        pandas.DataFrame
        """
        return _to_pandas(self.coincidences(page_size=page_size, max_rows=max_rows,
                                            **filters))

    # -- counts ----------------------------------------------------------------------------

    def _count(self, resource: str, allowed: frozenset[str], filters: Mapping[str, Any]
               ) -> int:
        params = _filter_params(filters, allowed, resource.rstrip("s"))
        page = self._get_json(f"{API}/{resource}",
                              [*params, ("count", "true"), ("limit", "1"), ("format", "json")])
        return int(page["total"])

    def count_alerts(self, **filters: Any) -> int:
        """How many alerts match the filters (of those the caller may see).

        Parameters
        ----------
        **filters
            As :meth:`iter_alerts` (time UTC, sky deg, ``far_max`` Hz,
            energies GeV).

        Returns
        -------
        int
        """
        return self._count("alerts", ALERT_FILTERS, filters)

    def count_coincidences(self, **filters: Any) -> int:
        """How many coincidences match the filters (of those the caller may see).

        Parameters
        ----------
        **filters
            As :meth:`iter_coincidences` (times UTC, sky deg, ``far_max`` Hz).

        Returns
        -------
        int
        """
        return self._count("coincidences", COINCIDENCE_FILTERS, filters)

    def count_voevents(self, **filters: Any) -> int:
        """How many VOEvents match the filters (of those the caller may see).

        Parameters
        ----------
        **filters
            As :meth:`iter_voevents` (times UTC, sky deg).

        Returns
        -------
        int
        """
        return self._count("voevents", VOEVENT_FILTERS, filters)

    # -- one alert, coincidence or VOEvent -------------------------------------------------

    def alert(self, ivorn: str) -> dict[str, Any]:
        """One alert revision in detail.

        Parameters
        ----------
        ivorn
            The broker's IVORN of the revision (the ``id`` of an alert document).

        Returns
        -------
        dict
            ``alert`` (the document: times UTC, positions deg, FAR Hz,
            energies GeV), ``receipt`` (``raw_sha256``, ``received_at`` UTC,
            ``transport``) and ``links`` (URLs of the raw payload, sky map,
            provenance, VOEvent where they exist).

        Raises
        ------
        NotFound
            No such alert, or one the caller's data rights do not show.
        """
        return self._get_json(self._path("alerts", ivorn))

    def raw(self, ivorn: str) -> bytes:
        """The message an alert was normalized from, byte for byte as received.

        Raises
        ------
        NotFound
            No such alert (or not visible to the caller).
        """
        return self._get(self._path("alerts", ivorn, "/raw"))[0]

    def coincidence(self, ivorn: str) -> dict[str, Any]:
        """One coincidence revision in detail.

        Returns
        -------
        dict
            ``coincidence`` (the document: times UTC, positions deg, FARs Hz)
            and ``links`` (its member alerts, sky map image, VOEvent and
            provenance).

        Raises
        ------
        NotFound
            No such coincidence, or one with a member the caller may not see.
        """
        return self._get_json(self._path("coincidences", ivorn))

    def voevent(self, ivorn: str) -> bytes:
        """A VOEvent this broker issued, byte for byte as it was sent (XML).

        Parameters
        ----------
        ivorn
            The VOEvent's IVORN: for an alert or a coincidence the broker
            published, the same as the alert's or coincidence's.

        Raises
        ------
        NotFound
            No such VOEvent, or its subject is not visible to the caller.
        """
        return self._get(self._path("voevents", ivorn), accept="text/xml")[0]

    @overload
    def provenance(self, ivorn: str, format: Literal["json"] = "json") -> dict[str, Any]: ...

    @overload
    def provenance(self, ivorn: str, format: Literal["xml", "provn"]) -> bytes: ...

    def provenance(self, ivorn: str, format: ProvenanceFormat = "json"
                   ) -> dict[str, Any] | bytes:
        """The W3C PROV document of a VOEvent the broker issued.

        Parameters
        ----------
        ivorn
            The VOEvent's IVORN (for a published alert or coincidence, its own).
        format
            ``json`` (PROV-JSON, returned parsed), ``xml`` (PROV-XML) or
            ``provn`` (PROV-N), the latter two returned as bytes.

        Raises
        ------
        NotFound
            No such VOEvent or no provenance of it (the broker publishes
            VOEvents of coincidences and of detector triggers, not of every
            alert), or not visible to the caller.
        """
        if format not in ("json", "xml", "provn"):
            raise ValueError(f"format must be json, xml or provn, not {format!r}")
        path = self._path("voevents", ivorn, "/provenance")
        if format == "json":
            return self._get_json(path, [("format", "json")])
        return self._get(path, [("format", format)])[0]

    def skymap(self, ivorn: str) -> bytes:
        """The alert's HEALPix sky map, a FITS file as received.

        Raises
        ------
        NotFound
            No such alert, or no sky map of it is held by the broker.
        """
        return self._get(self._path("alerts", ivorn, "/skymap"),
                         accept="application/fits")[0]

    def skymap_by_sha256(self, sha256: str) -> bytes:
        """A sky map file by the SHA-256 of its bytes, as VOEvents reference them.

        Parameters
        ----------
        sha256
            Hex SHA-256 of the file (an alert's ``skymap_sha256``).

        Raises
        ------
        NotFound
            No such map, or only alerts the caller may not see cite it.
        """
        return self._get(f"{API}/skymaps/{urllib.parse.quote(sha256, safe='')}",
                         accept="application/fits")[0]

    def skymap_png(self, ivorn: str) -> bytes:
        """The alert's localization drawn on a Mollweide projection (PNG bytes).

        Raises
        ------
        NotFound
            No such alert, or it has no localization.
        """
        return self._get(self._path("alerts", ivorn, "/skymap.png"), accept="image/png")[0]

    def coincidence_skymap_png(self, ivorn: str) -> bytes:
        """The members' localizations of a coincidence on one Mollweide projection (PNG).

        Raises
        ------
        NotFound
            No such coincidence (or not visible to the caller), or no
            localization to draw.
        """
        return self._get(self._path("coincidences", ivorn, "/skymap.png"),
                         accept="image/png")[0]

    # -- IVOA cone search ------------------------------------------------------------------

    def cone_search(self, ra_deg: float, dec_deg: float, radius_deg: float, verb: int = 2,
                    maxrec: int | None = None) -> Table:
        """Alerts within a cone by IVOA Simple Cone Search (``/scs``), newest event first.

        Parameters
        ----------
        ra_deg, dec_deg
            Cone centre, ICRS deg.
        radius_deg
            Cone radius, deg (0 to 180).
        verb
            Columns: 1 ``ivorn``, ``ra_deg``, ``dec_deg``; 2 also time,
            messenger, facility, source, alert type, error radius (deg) and
            FAR (Hz); 3 every column of :meth:`alerts`.
        maxrec
            Most rows (the server's default, 1000, when None; at most 10000).

        Returns
        -------
        astropy.table.Table
            With units and UCDs; ``table.meta["QUERY_STATUS"]`` is
            ``OVERFLOW`` when more alerts match than ``maxrec``.

        Raises
        ------
        BadRequest
            When the service answers ``QUERY_STATUS`` ``ERROR``.
        """
        params = [("RA", _encode(float(ra_deg) % 360.0)), ("DEC", _encode(float(dec_deg))),
                  ("SR", _encode(float(radius_deg))), ("VERB", str(int(verb)))]
        if maxrec is not None:
            params.append(("MAXREC", str(int(maxrec))))
        url = self._url("/scs", params)
        body, headers = self._get("/scs", params, accept="application/x-votable+xml")
        status = _votable_infos(body).get("QUERY_STATUS", ("", ""))
        if status[0] == "ERROR":
            detail = _error_detail(body, headers.get("Content-Type", "") or "")
            raise BadRequest(f"GET {url}: {detail}", status=200, detail=detail, url=url)
        table, infos = _parse_votable(body)
        for key in ("ID", "name"):
            table.meta.pop(key, None)
        table.meta["QUERY_STATUS"] = infos.get("QUERY_STATUS", ("OK", ""))[0]
        return table
