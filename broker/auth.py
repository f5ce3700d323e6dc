"""Bearer-token authentication for the HTTP API (FastAPI dependencies).

Tokens are created with ``mmbroker token create`` and stored as SHA-256
(:mod:`broker.tokens`).  A route that needs a scope depends on
``require_scope("write:triggers")``; ``admin`` holds every scope.  Failures
answer 401 (no or unknown token, with ``WWW-Authenticate: Bearer``) or 403
(a valid token without the scope), never saying which tokens exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from broker.tokens import TokenInfo, verify_token

_bearer = HTTPBearer(auto_error=False, description="A token from `mmbroker token create`.")


def current_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenInfo | None:
    """The caller's valid token, None for an anonymous caller; 401 for a bad token."""
    if credentials is None:
        return None
    info = verify_token(request.app.state.archive, credentials.credentials)
    if info is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid, expired or revoked token",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return info


def require_scope(scope: str) -> Callable[..., TokenInfo]:
    """A dependency that admits only tokens holding ``scope`` (or ``admin``)."""

    def dependency(token: Annotated[TokenInfo | None, Depends(current_token)]) -> TokenInfo:
        if token is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        if scope not in token.scopes and "admin" not in token.scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"the token lacks scope {scope}")
        return token

    return dependency
