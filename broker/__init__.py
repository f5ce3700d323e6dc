"""mmbroker: a real-time multimessenger alert broker.

The public Python API is re-exported here; everything in a module whose name
starts with an underscore is private.  Errors live in :mod:`alerts_schema.errors`.
"""

from importlib.metadata import PackageNotFoundError, version

from alerts_schema.errors import (
    ArchiveUnavailable,
    CometPortTaken,
    ConfigurationError,
    HostileInput,
    ImplausibleValue,
    IngestConflict,
    InputError,
    MalformedInput,
    MatchOrderLost,
    MMBrokerError,
    NormalizationError,
    OwnPublication,
    PermanentError,
    ProcessDied,
    RefusedAuthor,
    RequestError,
    RetryableError,
    SchemaValidationError,
    UnknownFormat,
)

try:
    __version__ = version("mmbroker")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

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
    "__version__",
]
