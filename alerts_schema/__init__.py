"""The public contract of mmbroker: the normalized Alert and the Coincidence.

The JSON Schema files beside this module (``alert.schema.json``,
``coincidence.schema.json``) are the single source of truth.  The pydantic
models in :mod:`alerts_schema.model` mirror them for Python code; a test keeps
the two in agreement field by field.

>>> from alerts_schema import validate, Alert
>>> validate("alert", document)            # raises SchemaValidationError
>>> alert = Alert.model_validate(document)  # typed access in Python
"""

from alerts_schema._validate import (
    SCHEMA_NAMES,
    example_paths,
    fast_validator,
    is_valid,
    load_schema,
    validate,
    validation_errors,
    validator,
)
from alerts_schema.model import (
    Alert,
    Coincidence,
    DataRights,
    EllipseLocalization,
    Energy,
    Localization,
    Member,
    NoLocalization,
    Overlap,
    PointLocalization,
    Provenance,
    Significance,
    SkymapLocalization,
)

SCHEMA_VERSION = "1.0"

__all__ = [
    "SCHEMA_NAMES",
    "SCHEMA_VERSION",
    "Alert",
    "Coincidence",
    "DataRights",
    "EllipseLocalization",
    "Energy",
    "Localization",
    "Member",
    "NoLocalization",
    "Overlap",
    "PointLocalization",
    "Provenance",
    "Significance",
    "SkymapLocalization",
    "example_paths",
    "fast_validator",
    "is_valid",
    "load_schema",
    "validate",
    "validation_errors",
    "validator",
]
