"""The exception tree of mmbroker, in one place.

Every error the broker raises on purpose derives from :class:`MMBrokerError`.
Two branches tell a caller what to do next:

``RetryableError``
    The operation may succeed if tried again later unchanged: a database that
    is restarting, a Kafka broker that is down, a Comet peer that refused the
    connection.  Transports back off and retry; nothing is quarantined.

``PermanentError``
    Trying again with the same input gives the same failure: a malformed or
    hostile message, a payload that conflicts with what the archive already
    holds, a document that breaks the contract.  The input is kept in
    quarantine with the reason and the caller moves on.

::

    MMBrokerError
    ├── ConfigurationError           bad settings or files; fix and restart
    ├── RetryableError
    │   ├── ArchiveUnavailable       the database cannot be reached now
    │   ├── MatchOrderLost           another match worker numbered alerts meanwhile
    │   ├── CometPortTaken           a VTP port is held by a process not our Comet
    │   ├── DeliveryError            a target refused a VOEvent (broker.publish.senders)
    │   ├── MapFetchUnavailable      a sky map URL not answering yet (broker.runtime.mapfetch)
    │   └── TokenError               an OIDC token endpoint said no (listeners.oidc)
    ├── PermanentError
    │   ├── InputError               the message cannot become an Alert
    │   │   ├── UnknownFormat        no normalizer recognizes the bytes
    │   │   ├── MalformedInput       recognized, but not parseable (bad JSON, XML, Avro)
    │   │   ├── HostileInput         entities, oversize frames, pickles, bombs
    │   │   │   ├── ProcessDied      a process died (or hung) normalizing it
    │   │   │   └── FrameTooLarge    a VTP frame announced over the limit (listeners.vtp_protocol)
    │   │   ├── NormalizationError   parseable, but lacks what an Alert needs
    │   │   │   └── ImplausibleValue off the sky, absurd error, time out of range
    │   │   └── OwnPublication       our own VOEvent, come back from a peer or our topic
    │   ├── SchemaValidationError    a document breaks the Alert/Coincidence schema
    │   ├── IngestConflict           same (source, event id, revision), other content
    │   ├── RefusedAuthor            a trigger its token may not write (another detector)
    │   ├── PublishError             a VOEvent that must not leave (broker.publish.voevent_build)
    │   └── MapFetchError            a sky map URL not to fetch, or no map (broker.runtime.mapfetch)
    └── RequestError (ValueError)    an HTTP request that cannot be answered as asked (4xx)
        ├── QueryError               bad cursor, region, unknown sky map (broker.archive.query)
        ├── ScsError                 a cone search without a usable RA, DEC, SR (broker.web.scs)
        ├── TapError                 a TAP request that cannot be answered (broker.web.tap)
        ├── AdqlError                an ADQL query this service will not run (broker.web.tap.adql)
        └── NotAcceptable            no output format the client accepts (broker.web.tabular)

The classes named with a module live beside the one component that raises them;
every other one is defined here.  ``tests/test_errors_tree.py`` fails on any
exception class of ``alerts_schema``, ``listeners``, ``crossmatch`` or ``broker``
outside this tree; ``docs/errors.md`` says what a caller does about each.
"""

from __future__ import annotations

__all__ = [
    "ArchiveUnavailable",
    "CometPortTaken",
    "ConfigurationError",
    "HostileInput",
    "ImplausibleValue",
    "IngestConflict",
    "InputError",
    "MMBrokerError",
    "MalformedInput",
    "MatchOrderLost",
    "NormalizationError",
    "OwnPublication",
    "PermanentError",
    "ProcessDied",
    "RefusedAuthor",
    "RequestError",
    "RetryableError",
    "SchemaValidationError",
    "UnknownFormat",
]


class MMBrokerError(Exception):
    """Base class of every error mmbroker raises on purpose."""


class ConfigurationError(MMBrokerError):
    """Settings or configuration files are invalid; the process cannot start."""


class RetryableError(MMBrokerError):
    """The operation may succeed later, unchanged: back off and retry."""


class ArchiveUnavailable(RetryableError):
    """The archive database cannot be reached or is restarting."""


class MatchOrderLost(RetryableError):
    """A match worker's round was not the only one since it caught up: its match lock was
    lost (a database restart drops advisory locks) and another worker numbered alerts it
    never saw.  Nothing of the round is numbered; the worker rebuilds its engine and reads
    the round again.  Checked before the round stores anything (the lock's connection)
    and when it numbers: a lock lost while the round matches may leave its results
    stored, computed against an incomplete past."""


class CometPortTaken(RetryableError):
    """A port the Comet child of ``serve`` needs is held by a process that is not a Comet of
    this data directory (named in the message); the start is retried with back-off."""


class PermanentError(MMBrokerError):
    """The same input will fail the same way: quarantine it and move on."""


class InputError(PermanentError):
    """A raw message cannot be turned into an Alert.

    ``reason`` is the text a person reads in the quarantine listing.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownFormat(InputError):
    """No normalizer recognizes the bytes."""


class MalformedInput(InputError):
    """The format is recognized but the bytes do not parse."""


class HostileInput(InputError):
    """The bytes try something a parser must refuse (entities, bombs, pickles, oversize)."""


class NormalizationError(InputError):
    """The message parses but lacks what an Alert needs, or holds impossible values."""


class ImplausibleValue(NormalizationError):
    """An Alert holds a value outside the one range every stream shares: a position off
    the sky, a non-finite or absurd error, a time outside the sane window (issue 14,
    item 6; the rule is :func:`listeners.common.check_plausible`).  Quarantined,
    never repaired."""


class ProcessDied(HostileInput):
    """A process died (or hung) while normalizing the message (issue 14, item 5).

    Found at restart from the in-flight mark the dead process left; the message
    is normalized again only in a throwaway child process, and quarantined with
    this error when that one dies too.
    """


class OwnPublication(InputError):
    """A VOEvent this broker published came back (via a VTP peer or its own Kafka topic).

    It is kept (quarantine, with this reason) but never becomes an alert again,
    so it can never be cross-matched or published a second time.
    """


class SchemaValidationError(PermanentError):
    """A document does not follow the Alert or Coincidence JSON Schema.

    ``errors`` lists one human-readable line per violation, each starting with
    the JSON path of the offending value.
    """

    def __init__(self, schema: str, errors: list[str]) -> None:
        self.schema = schema
        self.errors = errors
        shown = "; ".join(errors[:5]) + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else "")
        super().__init__(f"{schema} schema: {shown}")


class IngestConflict(PermanentError):
    """An alert with the same (source, event id, revision) is archived with other content.

    The hashes are of the normalized documents (``content_sha256``).  The
    archive keeps the first; the second is quarantined with this error as its
    reason rather than overwriting history.
    """

    def __init__(self, source: str, event_id: str, revision: int, existing_sha256: str,
                 new_sha256: str) -> None:
        self.source = source
        self.event_id = event_id
        self.revision = revision
        self.existing_sha256 = existing_sha256
        self.new_sha256 = new_sha256
        super().__init__(
            f"conflicting payload for ({source}, {event_id}, revision {revision}): archived "
            f"content sha256 {existing_sha256[:12]}..., received {new_sha256[:12]}..."
        )


class RequestError(MMBrokerError, ValueError):
    """An HTTP request that cannot be answered as asked: a bad parameter, cursor or region,
    or no output format the client accepts.  The route answers 4xx with the message; the
    same request fails the same way.  A :class:`ValueError` too, as parameter errors are."""


class RefusedAuthor(PermanentError):
    """A trigger posted with a token that may not write for its detector.

    A ``write:triggers`` token is bound to the detectors it may write
    (``mmbroker token create --detector NAME``); a trigger for any other
    detector, or from an unbound token while unbound tokens are not allowed,
    is refused (HTTP 403) and kept in quarantine with this error as its
    reason, naming the token and the detector.
    """
