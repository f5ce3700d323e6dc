"""mmbroker-client: the Python client of an mmbroker's HTTP query API.

>>> from mmbroker_client import Client
>>> client = Client("https://broker.example.org", token="mmb_...")  # doctest: +SKIP
>>> table = client.alerts(messenger="neutrino", since="2026-01-01")  # doctest: +SKIP

Pure Python; astropy (Tables with :class:`~astropy.time.Time` columns) and
pandas (DataFrames with timezone-aware UTC times) are optional extras.  The
public API is re-exported here; :mod:`mmbroker_client._client` is private.
"""

from mmbroker_client._client import (
    ALERT_FILTERS,
    COINCIDENCE_FILTERS,
    VOEVENT_FILTERS,
    BadRequest,
    Client,
    ClientError,
    NotFound,
    RateLimited,
    ResultTruncated,
    Unauthorized,
)

__version__ = "0.1.0"

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
    "__version__",
]
