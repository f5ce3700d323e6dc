"""OIDC client-credentials tokens (GCN's Kafka login) against a local token endpoint."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alerts_schema.errors import ConfigurationError
from listeners.oidc import OIDCTokenProvider, TokenError

pytestmark = pytest.mark.timeout(60)


class _TokenEndpoint(BaseHTTPRequestHandler):
    requests: list[dict[str, list[str]]]
    lifetime_s = 300
    status = 200

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        type(self).requests.append(form)
        ok = (form.get("grant_type") == ["client_credentials"]
              and form.get("client_id") == ["mmbroker"] and form.get("client_secret") == ["s3"])
        status = type(self).status if ok else 401
        body = json.dumps({"access_token": f"token-{len(type(self).requests)}",
                           "token_type": "Bearer", "expires_in": type(self).lifetime_s}
                          if status == 200 else {"error": "invalid_client"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[tuple[str, type[_TokenEndpoint]]]:
    handler = type("Handler", (_TokenEndpoint,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/oauth2/token", handler
    server.shutdown()
    server.server_close()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_is_fetched_once_and_refreshed_before_expiry(endpoint) -> None:
    url, handler = endpoint
    clock = _Clock()
    provider = OIDCTokenProvider(url, "mmbroker", "s3", scope="gcn.nasa.gov/kafka-public",
                                 clock=clock)
    assert provider.token() == "token-1"
    assert provider.token() == "token-1"  # reused, not re-fetched
    clock.now += 300 - 61  # still more than a minute of life left
    assert provider.token() == "token-1"
    clock.now += 2  # inside the refresh margin
    assert provider.token() == "token-2"
    assert handler.requests[0]["scope"] == ["gcn.nasa.gov/kafka-public"]
    assert provider.fetches == 2


def test_refused_credentials_are_a_clear_error(endpoint) -> None:
    url, _ = endpoint
    provider = OIDCTokenProvider(url, "mmbroker", "wrong")
    with pytest.raises(TokenError, match="HTTP 401"):
        provider.token()


def test_unreachable_endpoint_is_retryable() -> None:
    provider = OIDCTokenProvider("http://127.0.0.1:9/token", "a", "b", timeout_s=2)
    with pytest.raises(TokenError, match="unreachable"):
        provider.token()


def test_bad_configuration() -> None:
    with pytest.raises(ConfigurationError):
        OIDCTokenProvider("ftp://x/token", "a", "b")
    with pytest.raises(ConfigurationError):
        OIDCTokenProvider("https://x/token", "a", "")
