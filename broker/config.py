"""Settings: one typed object, read from ``MMBROKER_*`` environment variables.

An optional TOML file named by ``MMBROKER_CONFIG_FILE`` supplies defaults;
environment variables override it, and command-line options override both.
Each setting is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from alerts_schema.errors import ConfigurationError
from listeners.secretfiles import secret_from_env


def default_data_dir() -> Path:
    """The per-user data directory (``~/.local/share/mmbroker`` on Linux)."""
    return Path(platformdirs.user_data_dir("mmbroker", appauthor=False))


SKYMAP_HOSTS = ("gracedb.ligo.org", "heasarc.gsfc.nasa.gov", "gcn.gsfc.nasa.gov",
                "roc.icecube.wisc.edu", "opendata.km3net.de")
"""The hosts the real streams' sky map URLs name (``../shared/samples``: LVK VOEvent
``skymap_fits``; Fermi GBM and BurstCube ``healpix_url``/``LocationMap_URL``; GBM
sub-threshold ``HealPix_URL``; IceCube and KM3NeT ``healpix_url``): the default of
``skymap_fetch_hosts``."""

SECRET_SETTINGS = ("database_url", "hop_password")
"""Settings that may hold credentials: also read from ``MMBROKER_<NAME>_FILE`` (owner-only)."""


class _SecretFiles(PydanticBaseSettingsSource):
    """``MMBROKER_<NAME>_FILE`` for the secret settings (see :mod:`listeners.secretfiles`)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out = {}
        for name in SECRET_SETTINGS:
            env_name = f"MMBROKER_{name.upper()}"
            if f"{env_name}_FILE" in os.environ:
                out[name] = secret_from_env(env_name, os.environ)
        return out


class Settings(BaseSettings):
    """Every setting of the broker, with its default."""

    model_config = SettingsConfigDict(env_prefix="MMBROKER_", extra="forbid",
                                      validate_default=True)

    data_dir: Path = Field(default_factory=default_data_dir,
                           description="Where the embedded SQLite archive and Comet's event "
                                       "database live.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the archive, e.g. "
                    "postgresql+psycopg://user@host:5432/mmbroker. Unset: a SQLite file "
                    "mmbroker.sqlite3 in data_dir.")
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API binds to.")
    http_port: int = Field(default=8000, ge=0, le=65535, description="HTTP API port.")
    ops_port: int = Field(
        default=0, ge=0, le=65535,
        description="Port of the ops listener: /health, /ready and /metrics without a token, "
                    "for probes and Prometheus (0: none). Every stage and `serve` open it "
                    "when set; on the HTTP port /metrics needs a read:metrics token.")
    ops_host: str = Field(
        default="127.0.0.1",
        description="Address the ops port listens on. Loopback by default; a container "
                    "whose probes and Prometheus come from outside sets 0.0.0.0.")
    vtp_receive_port: int = Field(default=8098, ge=0, le=65535,
                                  description="Comet's VTP receiver port (authors submit here).")
    vtp_broadcast_port: int = Field(default=8099, ge=0, le=65535,
                                    description="Comet's VTP broadcast port (subscribers "
                                                "connect here).")
    kafka_bootstrap: str | None = Field(
        default=None, description="The broker's own Kafka cluster, host:port[,host:port]: the "
                                  "alerts topic joining the stages and the VOEvent output "
                                  "topics (client properties from MMBROKER_BUS_KAFKA_*). "
                                  "Unset: the stages are joined by an in-process bus.")
    ivorn_authority: str = Field(default="local.mmbroker", pattern=r"^[A-Za-z0-9._~-]+$",
                                 description="Authority part of every IVORN this broker issues.")
    max_message_bytes: int = Field(default=16 * 1024 * 1024, gt=0,
                                   description="Largest raw message accepted, in bytes; larger "
                                               "ones are quarantined (truncated) as hostile.")
    ingest_batch_size: int = Field(default=500, gt=0, le=10_000,
                                   description="Messages per archive transaction when "
                                               "ingesting in bulk.")
    log_level: str = Field(default="INFO", description="Python logging level name.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as text, or one JSON object per line (with "
                                    "alert IVORNs and stream names as fields) for a log "
                                    "shipper.")
    http_max_body_bytes: int = Field(
        default=65536, gt=0,
        description="Largest request body the HTTP API accepts (bytes; 413 beyond it), except "
                    "detector triggers, which have their own limit.")
    kafka_topics: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Kafka topics `serve` listens to (JSON list or comma-separated). The "
                    "cluster and its credentials come from KAFKA_* variables, named as "
                    "gcn-kafka names them (KAFKA_BOOTSTRAP_SERVERS, KAFKA_GROUP_ID, "
                    "KAFKA_CLIENT___ID, ...).")
    kafka_group_id: str | None = Field(
        default=None, description="Stable Kafka consumer group id; default "
                                  "mmbroker.<ivorn_authority>.")
    vtp_peers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="VTP brokers `serve` subscribes to, host:port (JSON list or "
                    "comma-separated).")
    crossmatch_config: Path | None = Field(
        default=None, description="Cross-match pairings file (TOML); unset: the shipped "
                                  "crossmatch/pairings.toml. Its SHA-256 goes into every "
                                  "coincidence.")
    crossmatch_late_slack_s: float = Field(
        default=3600.0, gt=0,
        description="Late-arrival slack of the cross-match engine's memory, seconds. An "
                    "alert some pairing reaches further back for is held for the longest "
                    "reach (hen-optical's 10 days in the shipped pairings) plus a day or "
                    "the slack if longer; others, survey transients among them, for the "
                    "slack alone. An alert later than this reads the rest of its window "
                    "from the archive: memory against archive queries, not results.")
    crossmatch_live_window_s: float | None = Field(
        default=None, gt=0,
        description="Upper bound on how long the cross-match engine holds any alert in "
                    "memory, seconds; unset: no bound (see crossmatch_late_slack_s for what "
                    "is held how long). Older partners are looked up in the archive.")
    public_base_url: str | None = Field(
        default=None, description="Base URL subscribers reach this broker's API at (links to "
                                  "provenance and sky maps in VOEvents); unset: "
                                  "http://<http_host>:<http_port>.")
    author_ivorn: str | None = Field(
        default=None, description="AuthorIVORN of published VOEvents; unset: "
                                  "ivo://<ivorn_authority>/mmbroker.")
    author_short_name: str = Field(default="mmbroker",
                                   description="Who/Author/shortName of published VOEvents.")
    contact_name: str | None = Field(default=None,
                                     description="Who/Author/contactName of published VOEvents.")
    contact_email: str | None = Field(
        default=None, description="Who/Author/contactEmail of published VOEvents.")
    comet: bool = Field(default=True,
                        description="Run a Comet broker as a child process of `mmbroker serve` "
                                    "and publish VOEvents through it over VTP.")
    comet_eventdb: Literal["sqlite", "dbm"] = Field(
        default="sqlite",
        description="The Comet child's event database (its \"previously seen\" dedup): "
                    "`sqlite`, one SQLite file (broker/publish/comet_eventdb.py), or `dbm`, "
                    "Comet's own, which on a Python without gdbm/ndbm is dbm.dumb, rereading "
                    "its index for every event (about 13 VOEvents/s after a few thousand).")
    comet_subscriber_whitelist: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1/32"],
        description="Networks (CIDR, comma-separated) allowed to subscribe to the Comet "
                    "broker's broadcast port. Authors are always loopback only.")
    kafka_alerts_topic: str = Field(
        default="mmbroker.alerts",
        description="Kafka topic on which the listen stage announces archived alerts to the "
                    "match stage (`mmbroker stage ...`).")
    kafka_alerts_partitions: int = Field(
        default=6, ge=1, le=1000,
        description="Partitions of the alerts topic when the broker creates it: at least the "
                    "number of match workers.")
    kafka_replication_factor: int = Field(
        default=1, ge=1, le=10,
        description="Replication of the topics the broker creates (3 in production, with "
                    "min.insync.replicas one less).")
    kafka_output_xml_topic: str = Field(
        default="mmbroker.voevent", description="Kafka topic for published VOEvent XML "
                                                "(when MMBROKER_KAFKA_BOOTSTRAP is set).")
    kafka_output_json_topic: str = Field(
        default="mmbroker.voevent.json", description="Kafka topic for the JSON form of "
                                                     "published VOEvents.")
    hop_url: str | None = Field(
        default=None, pattern=r"^kafka://[^/\s]+/?$",
        description="SCiMMA Hopskotch cluster the broker also publishes to, as hop-client "
                    "names it (`kafka://kafka.scimma.org/`). Unset: no Hopskotch output. "
                    "Needs MMBROKER_HOP_USERNAME/PASSWORD unless the host is loopback.")
    hop_voevent_topic: str = Field(
        default="mmbroker.voevent", pattern=r"^[A-Za-z0-9._-]+$",
        description="Hopskotch topic for published VOEvents (hop format `voevent`, the XML "
                    "as issued).")
    hop_json_topic: str = Field(
        default="mmbroker.coincidence", pattern=r"^[A-Za-z0-9._-]+$",
        description="Hopskotch topic for the JSON form of published VOEvents (hop format "
                    "`json`: IVORN, VOEvent XML and the coincidence or alert document).")
    hop_username: str | None = Field(
        default=None, description="Hopskotch credential name (SCRAM), from scimma.org.")
    hop_password: SecretStr | None = Field(
        default=None, description="Hopskotch credential secret; better as "
                                  "MMBROKER_HOP_PASSWORD_FILE (owner-only file).")
    hop_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism of the Hopskotch credential "
                                             "(always over TLS).")
    api_rate_limit_per_s: float = Field(
        default=50.0, ge=0,
        description="Sustained requests per second the query API allows one caller (a token, "
                    "or a client address when anonymous); 0 turns rate limiting off.")
    api_rate_limit_burst: int = Field(
        default=200, ge=1,
        description="Requests one caller may make at once before api_rate_limit_per_s applies "
                    "(token-bucket size).")
    alarm_far_hz: float = Field(
        default=3.858e-7, gt=0,
        description="A coincidence with a false-alarm rate at or below this (Hz; default one "
                    "per month) raises the dashboard's alarm until a shifter acknowledges it.")
    alarm_roles: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["observation"],
        description="Roles (comma-separated) of coincidences that raise the alarm; `serve "
                    "--demo` adds test so the demo's coincidence is seen.")
    alarm_window_s: float = Field(
        default=86400.0, gt=0,
        description="How long (s) after it was found an unacknowledged significant "
                    "coincidence keeps the alarm up.")
    stream_stale_after_s: float = Field(
        default=900.0, gt=0,
        description="A stream whose newest message or heartbeat is older than this (s) is "
                    "shown stale (red) on the dashboard.")
    stream_stale_overrides: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="Per-stream stale ages, `stream=seconds` comma-separated (e.g. "
                    "`gcn.heartbeat=10,snews=120`): heartbeat streams go red within seconds, "
                    "quiet alert streams only after hours.")
    streams: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Input streams (comma-separated) the dashboard always lists, even before "
                    "their first message; configured Kafka topics and VTP peers are added.")
    health_scope: str = Field(
        default="read:embargoed",
        description="Scope a dashboard viewer needs to see stream health and the latency "
                    "figures, which would show that an embargoed alert arrived; empty: "
                    "everyone (`serve --demo` does this).")
    live_poll_s: float = Field(
        default=0.25, gt=0, le=10,
        description="How often (s) the dashboard's live feed looks for new rows in the "
                    "archive; five small indexed queries (one per table, and two for "
                    "embargoes just ended) per interval per process, "
                    "whatever the number of "
                    "browsers, and it sees what every process wrote.")
    rubin_schema_dir: Path | None = Field(
        default=None, description="Folder of Rubin alert Avro schemas (.avsc/.json), looked "
                                  "up by the Confluent schema id of each Rubin message.")
    # -- issue 14, items 2 and 9: who may write triggers, and how much ----------------------
    allow_unbound_trigger_tokens: bool = Field(
        default=False,
        description="Let a write:triggers token bound to no detector (made before `token "
                    "create --detector` existed) post triggers for any detector. Off: such a "
                    "token is refused (403) and the attempt kept in quarantine. admin tokens "
                    "may always write any detector.")
    max_triggers_per_request: int = Field(
        default=100, ge=1, le=100_000,
        description="Most triggers one POST /api/v1/triggers may carry (a JSON list); a "
                    "longer list is refused whole (413, kept in quarantine, nothing archived).")
    write_rate_limit_per_s: float = Field(
        default=20.0, ge=0,
        description="Sustained write requests per second (triggers, acknowledgements) one "
                    "caller may make (keyed by token, else client address); 0 turns it off.")
    write_rate_limit_burst: int = Field(
        default=200, ge=1,
        description="Write requests one caller may make at once before write_rate_limit_per_s "
                    "applies (token-bucket size).")
    failed_auth_rate_limit_per_s: float = Field(
        default=0.5, ge=0,
        description="Sustained failed authentications per second (unknown, expired or revoked "
                    "tokens) allowed from one client address; beyond the burst, that address "
                    "gets 429 with Retry-After for every token it presents. 0 turns it off.")
    failed_auth_rate_limit_burst: int = Field(
        default=30, ge=1,
        description="Failed authentications one client address may make at once before "
                    "failed_auth_rate_limit_per_s applies.")
    token_cache_s: float = Field(
        default=1.0, ge=0, le=60,
        description="How long (s) a bearer token or sign-in cookie found valid is trusted "
                    "without reading the archive again (its expiry is checked on every "
                    "request): a token revoked meanwhile (`mmbroker token revoke`) still "
                    "authenticates for at most this long (at the default, the bound an open "
                    "live stream has; the live feed drops the tokens it finds revoked). "
                    "Unknown, expired and revoked tokens are never cached. 0: every request "
                    "reads the archive.")

    # -- issue 14, item 5: messages that kill a process --------------------------------
    inflight_lease_s: float = Field(
        default=600.0, gt=0,
        description="How long (s) a message another host marked in flight counts as being "
                    "normalized; after that a restart elsewhere takes the mark for a process "
                    "that died (marks of this host are judged by their process id and start "
                    "time instead).")
    probe_timeout_s: float = Field(
        default=60.0, gt=0,
        description="How long (s) the child process that re-normalizes messages a dead "
                    "process left in flight may take before the message it is on is "
                    "quarantined as hanging.")

    # -- issue 14 item 1: embargoed and proprietary VOEvents ----------------------------------
    kafka_private_topic: str | None = Field(
        default=None,
        description="Kafka topic (on MMBROKER_KAFKA_BOOTSTRAP) that gets every published "
                    "VOEvent XML at once, embargoed and proprietary ones included: a "
                    "collaboration's own target (restrict who may read it with Kafka ACLs). "
                    "Every other target is public and never gets a VOEvent before all it "
                    "shows is public. Unset: none.")

    @field_validator("kafka_private_topic")
    @classmethod
    def _private_topic(cls, topic: str | None) -> str | None:
        return (topic or "").strip() or None

    # Issue 14 items 10-11: the Comet child's restarts (hold and resend), its start back-off.
    comet_restart_grace_s: float = Field(
        default=5.0, ge=0, le=600,
        description="After the Comet child (re)starts, VTP delivery waits this long (s) so "
                    "subscribers reconnect before anything is broadcast. A stock Comet "
                    "subscriber retries 1 s after losing its broker, then 3.7 s, 11 s, 31 s "
                    "(Twisted's back-off, jitter 12%); measured here it was back 0.7-1.1 s "
                    "after a kill -9. When Comet was down past a retry, the hold is "
                    "lengthened to that subscriber's next one (up to 60 s). Used only when "
                    "the Comet before had no subscribers counted (the first start of a data "
                    "directory): otherwise delivery waits until as many are back (up to "
                    "60 s).")
    comet_resend_window_s: float = Field(
        default=10.0, ge=0, le=3600,
        description="When the Comet child died, VOEvents it acknowledged in this many seconds "
                    "before are sent again after the restart (the same bytes: subscribers "
                    "drop what they already have), as its broadcast may not have left it.")
    comet_start_max_backoff_s: float = Field(
        default=60.0, ge=1, le=3600,
        description="Longest wait (s) between attempts to start a Comet child that keeps "
                    "failing (1, 2, 4 ... s up to this); the reason is logged once.")

    # -- issue 19, the shifter's sky ---------------------------------------------------------
    dashboard_sky_hours: float = Field(
        default=24.0, gt=0, le=720,
        description="Span (h) of the dashboard's all-sky view when the page does not choose "
                    "one: alerts whose event time is at most this old, and coincidences found "
                    "in it. The page's span control goes up to 168 h.")

    # -- issue 16 item 2: sky maps by URL ---------------------------------------------------
    skymap_fetch: bool = Field(
        default=True,
        description="Fetch the sky maps alerts name by URL (GCN healpix_url, LVK skymap_fits, "
                    "Fermi GBM LocationMap_URL ...) in the background and make each its "
                    "alert's localization, matching the alert again (`serve`, `listen`, "
                    "`stage listen`). Off: the URL stays in the alert's extra.skymap_url and "
                    "its fetch stays queued for a process that fetches.")
    skymap_fetch_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(SKYMAP_HOSTS),
        description="Hosts sky maps may be fetched from, redirects included (comma-separated, "
                    "exact names). Default: the hosts the real streams name: gracedb.ligo.org "
                    "(LVK), heasarc.gsfc.nasa.gov (Fermi GBM, BurstCube), gcn.gsfc.nasa.gov "
                    "(GBM sub-threshold and ground maps), roc.icecube.wisc.edu (IceCube), "
                    "opendata.km3net.de (KM3NeT).")
    skymap_fetch_allow_http: bool = Field(
        default=False,
        description="Fetch plain http:// URLs over HTTP when their host is loopback (tests). "
                    "Otherwise an http:// URL is fetched as https:// from the same host, and "
                    "no other scheme is ever fetched.")
    skymap_fetch_max_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0,
        description="Largest sky map fetched, bytes as sent (the map reader bounds what a "
                    "gzipped map expands to).")
    skymap_fetch_timeout_s: float = Field(
        default=30.0, gt=0,
        description="Longest wait for one socket operation of a sky map fetch (connect, a "
                    "read), seconds.")
    skymap_fetch_deadline_s: float = Field(
        default=120.0, gt=0,
        description="Longest one sky map fetch may take, redirects included, seconds.")
    skymap_fetch_attempts: int = Field(
        default=9, ge=1, le=100,
        description="Attempts at a sky map whose fetch fails in a way worth retrying "
                    "(timeouts, connection errors, HTTP 404 while it is not yet published, "
                    "429, 5xx) before the failure is recorded as final.")
    skymap_fetch_backoff_s: float = Field(
        default=10.0, gt=0,
        description="Wait before the second attempt at a sky map, seconds; doubled for each "
                    "further one (10, 20, 40 ... s), up to skymap_fetch_backoff_max_s.")
    skymap_fetch_backoff_max_s: float = Field(
        default=300.0, gt=0, description="Longest wait between attempts at a sky map, seconds.")
    skymap_fetch_workers: int = Field(
        default=2, ge=1, le=32,
        description="Threads fetching sky maps in each process that fetches.")

    @field_validator("skymap_fetch_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        hosts = cls._comma_list(value)
        if not isinstance(hosts, list):
            return hosts
        out = []
        for host in hosts:
            name = str(host).strip().lower().rstrip(".")
            if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[?[0-9a-f:]+\]?", name):
                raise ValueError(f"sky map host {host!r} is not a host name (no scheme, "
                                 "port, path or wildcard)")
            out.append(name.strip("[]"))
        return out

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings,
                                                     _SecretFiles(settings_cls)]
        config_file = os.environ.get("MMBROKER_CONFIG_FILE")
        if config_file:
            if not Path(config_file).is_file():
                raise ConfigurationError(f"MMBROKER_CONFIG_FILE={config_file}: no such file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @field_validator("stream_stale_overrides", mode="before")
    @classmethod
    def _stream_ages(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("{"):
            return json.loads(value)
        ages = {}
        for item in cls._comma_list(value):
            stream, sep, age = item.rpartition("=")
            if not sep or not stream:
                raise ValueError(f"stale age {item!r} is not stream=seconds")
            ages[stream.strip()] = float(age)
        return ages

    @field_validator("kafka_topics", "vtp_peers", "comet_subscriber_whitelist", "alarm_roles",
                     "streams", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("vtp_peers")
    @classmethod
    def _host_port(cls, peers: list[str]) -> list[str]:
        for peer in peers:
            host, _, port = peer.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"VTP peer {peer!r} is not host:port")
        return peers

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return value

    @model_validator(mode="after")
    def _hop_credentials(self) -> Settings:
        if (self.hop_username is None) != (self.hop_password is None):
            raise ValueError("MMBROKER_HOP_USERNAME and MMBROKER_HOP_PASSWORD go together")
        if self.hop_url and self.hop_username is None:
            host = self.hop_url.removeprefix("kafka://").rstrip("/").rsplit(":", 1)[0]
            if host not in {"127.0.0.1", "localhost", "::1", "[::1]"}:
                raise ValueError(f"MMBROKER_HOP_URL={self.hop_url} needs a credential "
                                 "(MMBROKER_HOP_USERNAME and MMBROKER_HOP_PASSWORD): only a "
                                 "loopback Hopskotch may be written anonymously")
        return self

    def stale_after_s(self, stream: str) -> float:
        """The age (s) after which ``stream`` shows stale on the dashboard."""
        return self.stream_stale_overrides.get(stream, self.stream_stale_after_s)

    @property
    def effective_public_base_url(self) -> str:
        return (self.public_base_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    @property
    def effective_kafka_group_id(self) -> str:
        """The consumer group: stable across restarts, so committed offsets are found."""
        return self.kafka_group_id or f"mmbroker.{self.ivorn_authority}"

    @property
    def effective_database_url(self) -> str:
        """``database_url``, or the embedded SQLite file in ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'mmbroker.sqlite3'}"


def database_url_from_option(value: str) -> str:
    """Accept a SQLAlchemy URL or a plain file path (taken as a SQLite file).

    Something that starts like a URL but is not one (``htp:/foo``, ``postgres:host``) is
    refused rather than taken as a file name in a new ``htp:`` folder."""
    if "://" in value:
        return value
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", value):
        raise ConfigurationError(
            f"--db {value!r} is neither a URL (scheme://...) nor a plain file path; for a "
            f"SQLite file whose name has a colon, write ./{value}")
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def get_settings(**overrides: Any) -> Settings:
    """The process's settings; ``overrides`` win over the environment and config file."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(settings_error_message(exc)) from exc
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc


def settings_error_message(exc: Any) -> str:
    """One line per bad setting, named as the operator sets it (``MMBROKER_HTTP_PORT``,
    not pydantic's ``http_port``), with the value given."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error.get("loc") else ""
        name = f"MMBROKER_{field.upper()}" if field in Settings.model_fields else field
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        given = error.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"{name or 'settings'}: {message}{shown}")
    return "; ".join(lines)
