"""Bearer-token authentication for the HTTP API (FastAPI dependencies).

Tokens are created with ``mmbroker token create`` and stored as SHA-256
(:mod:`broker.web.tokens`).  A route that needs a scope depends on
``require_scope("ack")`` (or, when it works in a worker thread anyway,
``require_scope_in_worker``); ``admin`` holds every scope.  Failures
answer 401 (no or unknown token, with ``WWW-Authenticate: Bearer``) or 403
(a valid token without the scope), never saying which tokens exist.

A token found valid is trusted for ``token_cache_s`` (1 s) without reading the archive
again (:class:`~broker.web.tokens.TokenCache`): a token revoked meanwhile acts for at
most that long, as an open live stream does.

Failed authentications (a bearer token that is unknown, expired or revoked,
and a failed dashboard sign-in) are counted per client address
(``failed_auth_limiter``): past its burst the address gets ``429`` with
``Retry-After`` for every token it presents, valid or not, until its bucket
refills.  Writes (any method but GET/HEAD on a route that requires a scope)
are limited per token (``write_limiter``).

The dashboard signs a shifter in by storing their token in an HttpOnly,
``SameSite=Strict`` cookie (:data:`SESSION_COOKIE`): a browser then sends it
with every same-site request (pages, images, the live feed) and never with a
request another site starts.  A bearer header wins over the cookie; a cookie
whose token is no longer valid counts as no token at all, so a revoked
shifter sees the public dashboard rather than errors.  The cookie is only
honoured for reads and for acknowledging (:data:`COOKIE_WRITES`): every
other write (triggers, tokens) needs the bearer header, and the dashboard's
own writes also refuse requests another site started (:func:`same_origin`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from broker.web.ratelimit import RateLimiter, retry_after_header
from broker.web.tokens import TokenInfo, verify_token

SESSION_COOKIE = "mmbroker_session"
"""The cookie holding a signed-in dashboard user's token."""

COOKIE_WRITES = re.compile(r"^/api/v1/coincidences/.+/acknowledgements$")
"""The only non-read requests a sign-in cookie authenticates."""

_bearer = HTTPBearer(auto_error=False, description="A token from `mmbroker token create`.")
_session = APIKeyCookie(name=SESSION_COOKIE, auto_error=False,
                        description="The dashboard's sign-in cookie (a token).")


def client_address(request: Request) -> str:
    """The caller's address as the server saw it (a proxy's, behind one)."""
    return request.client.host if request.client else "-"


def _too_many(wait_s: float, what: str) -> HTTPException:
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                         f"{what}: slow down and retry after {retry_after_header(wait_s)} s",
                         headers={"Retry-After": retry_after_header(wait_s)})


def _limiter(request: Request, name: str) -> RateLimiter | None:
    return getattr(request.app.state, name, None)


def refuse_locked_out(request: Request) -> None:
    """429 before any token is checked when this address used up its failed attempts."""
    limiter = _limiter(request, "failed_auth_limiter")
    wait = limiter.peek_s(f"ip:{client_address(request)}") if limiter else None
    if wait is not None:
        raise _too_many(wait, "too many failed authentications from this address")


def record_failed_auth(request: Request) -> None:
    """Count one failed authentication against the address; 429 once it is over its burst."""
    limiter = _limiter(request, "failed_auth_limiter")
    wait = limiter.retry_after_s(f"ip:{client_address(request)}") if limiter else None
    if wait is not None:
        raise _too_many(wait, "too many failed authentications from this address")


def current_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    session: Annotated[str | None, Depends(_session)] = None,
) -> TokenInfo | None:
    """The caller's valid token, None for an anonymous caller; 401 for a bad bearer token
    (429 when its address has failed too often)."""
    if credentials is None:
        if not session or (request.method not in ("GET", "HEAD")
                           and not COOKIE_WRITES.match(request.url.path)):
            return None
        # A stale cookie is a browser's leftover, not a guess: it reads as anonymous.
        return _verify(request, session)
    refuse_locked_out(request)
    return _verified_bearer(request, credentials.credentials)


def _verified_bearer(request: Request, token: str) -> TokenInfo:
    """The bearer token's record; 401 (counted against the address) when it is unknown,
    expired or revoked."""
    info = _verify(request, token)
    if info is None:
        record_failed_auth(request)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid, expired or revoked token",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return info


def _verify(request: Request, token: str) -> TokenInfo | None:
    """:func:`~broker.web.tokens.verify_token` through the app's token cache, when it has
    one (a revoked token acts for at most ``token_cache_s`` more)."""
    return verify_token(request.app.state.archive, token,
                        cache=getattr(request.app.state, "token_cache", None))


def limit_writes(request: Request, token: TokenInfo | None) -> None:
    """429 when this caller (its token, else its address) is over the write limit."""
    limiter = _limiter(request, "write_limiter")
    key = f"token:{token.id}" if token else f"ip:{client_address(request)}"
    wait = limiter.retry_after_s(key) if limiter else None
    if wait is not None:
        raise _too_many(wait, "write rate limit exceeded")


def require_scope(scope: str) -> Callable[..., Awaitable[TokenInfo]]:
    """A dependency that admits only tokens holding ``scope`` (or ``admin``); a write
    (not GET/HEAD) also takes one request from the token's write limit.

    A coroutine (it does no I/O): a plain function would cost every such request a
    worker-thread hop.  :func:`current_token`, which reads the archive, stays one."""

    async def dependency(request: Request,
                   token: Annotated[TokenInfo | None, Depends(current_token)]) -> TokenInfo:
        if token is None:
            raise _bearer_required()
        return _admitted(request, token, scope)

    return dependency


def require_scope_in_worker(scope: str) -> Callable[..., Awaitable[Callable[[], TokenInfo]]]:
    """:func:`require_scope` for a route that does its work in a worker thread anyway
    (posting triggers): the dependency takes the bearer token without reading the
    archive (401 without one, 429 for a locked-out address) and returns the check,
    which the route calls first thing in its thread.  The same answers, in the same
    order, for one thread hop per request instead of two (a trigger's latency).  The
    body, bounded by the path's limit (:mod:`broker.web.bodylimit`), is thus read
    before the token is checked; nothing of a refused request is kept.

    Bearer tokens only: the sign-in cookie never authenticates such a write."""

    async def dependency(request: Request,
                         credentials: Annotated[HTTPAuthorizationCredentials | None,
                                                Depends(_bearer)]) -> Callable[[], TokenInfo]:
        if credentials is None:
            raise _bearer_required()
        refuse_locked_out(request)
        token = credentials.credentials
        return lambda: _admitted(request, _verified_bearer(request, token), scope)

    return dependency


def _bearer_required() -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required",
                         headers={"WWW-Authenticate": "Bearer"})


def _admitted(request: Request, token: TokenInfo, scope: str) -> TokenInfo:
    """``token`` if it holds ``scope`` (or ``admin``), 403 otherwise; a write also takes
    one request from the token's write limit (429 when over it)."""
    if scope not in token.scopes and "admin" not in token.scopes:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"the token lacks scope {scope}")
    if request.method not in ("GET", "HEAD"):
        limit_writes(request, token)
    return token


def same_origin(request: Request) -> None:
    """403 for a browser request another site started (login CSRF, forced sign-out,
    acknowledging on a shifter's behalf).  Clients that are not browsers send
    neither header and pass."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site request refused")
    origin = request.headers.get("origin")
    if origin and origin != "null":
        if urlsplit(origin).netloc != request.headers.get("host", ""):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site request refused")
    elif origin == "null":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "request from an opaque origin refused")
