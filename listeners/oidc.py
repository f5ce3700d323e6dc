"""OpenID Connect client-credentials tokens for Kafka's SASL/OAUTHBEARER (as GCN uses).

GCN's Kafka brokers authenticate clients with short-lived access tokens
obtained from an OIDC token endpoint with a client id and secret.  The
provider fetches a token when first asked, reuses it, and refreshes it a
minute before it expires, so reconnects never present a stale token.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from kafka.net.sasl.oauth import AbstractTokenProvider

from alerts_schema.errors import ConfigurationError, RetryableError

REFRESH_MARGIN_S = 60.0


class TokenError(RetryableError):
    """The token endpoint could not be reached or refused to issue a token."""


class OIDCTokenProvider(AbstractTokenProvider):
    """Client-credentials access tokens from an OIDC token endpoint.

    Parameters
    ----------
    token_url
        The endpoint (``https://auth.gcn.nasa.gov/oauth2/token`` for GCN).
    client_id, client_secret
        The client's credentials; never logged.
    scope
        Optional OAuth scope to request.
    timeout_s
        HTTP timeout for the token request, in seconds.
    clock
        Monotonic clock in seconds (injected by tests).
    """

    def __init__(self, token_url: str, client_id: str, client_secret: str, *,
                 scope: str | None = None, timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if not token_url.startswith(("https://", "http://")):
            raise ConfigurationError(f"OIDC token endpoint must be an http(s) URL: {token_url}")
        if not client_id or not client_secret:
            raise ConfigurationError("OIDC needs both a client id and a client secret")
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self.timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.fetches = 0

    def __repr__(self) -> str:  # never show the secret
        return f"OIDCTokenProvider({self.token_url!r}, client_id={self.client_id!r})"

    def token(self) -> str:
        """A valid access token, fetched or refreshed when needed."""
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - REFRESH_MARGIN_S:
                self._token, lifetime = self._fetch()
                self._expires_at = self._clock() + lifetime
            return self._token

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", "client_id": self.client_id,
                "client_secret": self._client_secret}
        if self.scope:
            form["scope"] = self.scope
        request = urllib.request.Request(
            self.token_url, data=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "Accept": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = json.loads(response.read(1 << 20))
        except urllib.error.HTTPError as exc:
            raise TokenError(f"token endpoint {self.token_url} answered HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:
            raise TokenError(f"token endpoint {self.token_url} unreachable: {exc}") from exc
        self.fetches += 1
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenError(f"token endpoint {self.token_url} returned no access_token")
        lifetime = body.get("expires_in", 3600)
        return token, float(lifetime) if isinstance(lifetime, int | float) else 3600.0
