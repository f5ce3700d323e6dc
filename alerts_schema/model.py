"""Pydantic mirrors of the JSON Schemas, for typed access in Python.

The JSON Schema files are the contract; these classes follow them field for
field (``tests/test_schema.py`` proves it).  Times are timezone-aware UTC
:class:`~datetime.datetime` objects in Python and ``...Z`` strings in JSON.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

__all__ = [
    "MESSENGERS",
    "ROLES",
    "Alert",
    "AlertType",
    "Coincidence",
    "CoincidenceState",
    "DataRights",
    "EllipseLocalization",
    "Energy",
    "Localization",
    "Member",
    "Messenger",
    "NoLocalization",
    "Overlap",
    "PointLocalization",
    "Provenance",
    "Role",
    "Significance",
    "SkymapLocalization",
    "format_utc",
]


def format_utc(value: datetime) -> str:
    """ISO 8601 UTC with a ``Z`` suffix and microseconds only when non-zero."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: the contract needs UTC")
    text = value.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


# What the contract's "date-time" means: UTC with a Z suffix, at most microseconds.
UTC_DATETIME_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


def _z_string(value: Any) -> Any:
    """Parse a contract time string here, so strict and lax validation agree on it."""
    if isinstance(value, str):
        if not UTC_DATETIME_PATTERN.match(value):
            raise ValueError(f"time {value!r} is not ISO 8601 UTC with a Z suffix")
        return datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
    return value


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("time must carry a timezone (UTC, Z suffix)")
    return value.astimezone(UTC)


UTCDateTime = Annotated[datetime, BeforeValidator(_z_string), AfterValidator(_require_utc),
                        PlainSerializer(format_utc, return_type=str)]
# JSON Schema counts 2.0 as an integer; accept integral floats as pydantic's strict mode won't.
JsonInt = Annotated[int, BeforeValidator(
    lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)]
Messenger = Literal[
    "gravitational_wave", "neutrino", "gamma_ray", "x_ray", "ultraviolet", "optical",
    "infrared", "radio", "cosmic_ray", "other",
]
# The contract's enumerations, named once: query routes and normalizers use these.
Role = Literal["observation", "test", "drill", "utility", "prediction"]
AlertType = Literal["initial", "update", "retraction"]
CoincidenceState = Literal["new", "updated", "retracted"]
MESSENGERS: tuple[str, ...] = get_args(Messenger)
ROLES: tuple[str, ...] = get_args(Role)
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
IVORN_PATTERN = r"^ivo://[^/#\s]+/[^#\s]+#\S+$"


class _Model(BaseModel):
    # Non-finite floats are not JSON, and PostgreSQL's JSONB refuses them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PointLocalization(_Model):
    """A best position with a circular error region (ICRS degrees)."""

    kind: Literal["point"] = "point"
    ra_deg: float = Field(ge=0, lt=360)
    dec_deg: float = Field(ge=-90, le=90)
    error_radius_deg: float = Field(ge=0, le=180)
    containment: float = Field(gt=0, lt=1)
    systematic_deg: float | None = Field(default=None, ge=0)


class EllipseLocalization(_Model):
    """A best position with an elliptical error region (ICRS degrees)."""

    kind: Literal["ellipse"] = "ellipse"
    ra_deg: float = Field(ge=0, lt=360)
    dec_deg: float = Field(ge=-90, le=90)
    semi_major_deg: float = Field(ge=0, le=180)
    semi_minor_deg: float = Field(ge=0, le=180)
    position_angle_deg: float = Field(ge=-360, le=360)
    containment: float = Field(gt=0, lt=1)


class SkymapLocalization(_Model):
    """A HEALPix sky map stored once by hash and referenced.

    ``ra_deg``/``dec_deg`` are the alert's summary position: the best position
    the alert states when it states one, else the map's most probable pixel.
    """

    kind: Literal["skymap"] = "skymap"
    skymap_sha256: Sha256
    format: Literal["multiorder", "flat"]
    url: str | None = Field(default=None, max_length=1024)
    area_90_deg2: float | None = Field(default=None, ge=0)
    ra_deg: float | None = Field(default=None, ge=0, lt=360)
    dec_deg: float | None = Field(default=None, ge=-90, le=90)


class NoLocalization(_Model):
    """No sky position."""

    kind: Literal["none"] = "none"


Localization = Annotated[
    PointLocalization | EllipseLocalization | SkymapLocalization | NoLocalization,
    Field(discriminator="kind"),
]


class Energy(_Model):
    """Energy estimate or band in GeV."""

    best_gev: float | None = Field(default=None, ge=0)
    min_gev: float | None = Field(default=None, ge=0)
    max_gev: float | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _not_empty(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data:
            raise ValueError("energy needs at least one of best_gev, min_gev, max_gev")
        return data


class DataRights(_Model):
    """Access level; ``embargo_until`` is required when embargoed."""

    level: Literal["public", "embargoed", "proprietary"]
    embargo_until: UTCDateTime | None = None

    @model_validator(mode="after")
    def _embargo_has_end(self) -> Self:
        if self.level == "embargoed" and self.embargo_until is None:
            raise ValueError("embargoed data rights need embargo_until")
        return self


class Provenance(_Model):
    """How the facility produced the alert."""

    pipeline: str | None = Field(default=None, max_length=256)
    pipeline_version: str | None = Field(default=None, max_length=128)
    reco_method: str | None = Field(default=None, max_length=256)
    cuts: str | None = Field(default=None, max_length=1024)


class Alert(_Model):
    """One normalized alert revision; see ``alert.schema.json`` for each field's meaning."""

    schema_version: Literal["1.0"]
    id: str = Field(pattern=IVORN_PATTERN, max_length=512)
    source: str = Field(min_length=1, max_length=256)
    source_ivorn: str | None = Field(default=None, max_length=512)
    messenger: Messenger
    facility: str = Field(min_length=1, max_length=128)
    instrument: str | None = Field(default=None, max_length=128)
    event_id: str = Field(min_length=1, max_length=256)
    revision: JsonInt = Field(ge=0, le=1_000_000)
    alert_type: AlertType
    role: Role
    trigger_time: UTCDateTime
    trigger_time_error_s: float | None = Field(default=None, ge=0)
    received_time: UTCDateTime | None = None
    localization: Localization
    energy: Energy | None = None
    far_hz: float | None = Field(default=None, ge=0)
    p_value: float | None = Field(default=None, ge=0, le=1)
    signalness: float | None = Field(default=None, ge=0, le=1)
    data_rights: DataRights
    provenance: Provenance | None = None
    raw_sha256: Sha256 | None = None
    raw_ref: str | None = Field(default=None, max_length=512)
    extra: dict[str, Any] = Field(default_factory=dict)

    def to_document(self) -> dict[str, Any]:
        """The JSON-ready dict that ``alert.schema.json`` validates."""
        return self.model_dump(mode="json", exclude_none=False)


class Member(_Model):
    """One alert in a coincidence."""

    alert_id: str = Field(max_length=512)
    revision: JsonInt = Field(ge=0)
    source: str = Field(max_length=256)
    messenger: Messenger
    facility: str = Field(max_length=128)
    time_offset_s: float


class Overlap(_Model):
    """Spatial overlap integral I = 4*pi * integral p1*p2 dOmega."""

    integral: float = Field(ge=0)
    log10_integral: float | None = None
    method: str = Field(max_length=128)
    credible_level: float | None = Field(default=None, gt=0, le=1)


class Significance(_Model):
    """One significance figure with its definition."""

    name: str = Field(max_length=64)
    value: float
    unit: str = Field(max_length=32)
    definition: str = Field(max_length=2048)
    is_bound: bool


class Coincidence(_Model):
    """One coincidence revision; see ``coincidence.schema.json``."""

    schema_version: Literal["1.0"]
    id: str = Field(pattern=IVORN_PATTERN, max_length=512)
    pairing: str = Field(min_length=1, max_length=128)
    state: CoincidenceState
    revision: JsonInt = Field(ge=0)
    supersedes: str | None = Field(default=None, max_length=512)
    members: list[Member] = Field(min_length=2, max_length=64)
    reference_time: UTCDateTime | None = None
    localization: Localization | None = None
    spatial_overlap: Overlap | None = None
    significance: list[Significance] = Field(max_length=32)
    engine_version: str = Field(min_length=1, max_length=64)
    config_hash: Sha256
    created_time: UTCDateTime

    def to_document(self) -> dict[str, Any]:
        """The JSON-ready dict that ``coincidence.schema.json`` validates."""
        return self.model_dump(mode="json", exclude_none=False)
