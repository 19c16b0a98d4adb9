"""Bearer tokens: with STAGETUNE_API_TOKENS set, every API call and page needs one.
Scripts send `Authorization: Bearer <token>`; a browser logs in once at /login and the
token rides in an HttpOnly, same-site cookie."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="one of STAGETUNE_API_TOKENS")
TOKEN_COOKIE = "stagetune_token"


def token_ok(request: Request, given: str | None = None) -> bool:
    """Whether `given` (else the request's bearer header or cookie) is a valid token;
    always true when the service has no tokens."""
    tokens: frozenset[str] = request.app.state.settings.tokens
    if not tokens:
        return True
    if given is None:
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        given = credentials if scheme.lower() == "bearer" else request.cookies.get(TOKEN_COOKIE, "")
    return any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens)


def require_token(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                  ) -> None:
    if not token_ok(request):
        raise ApiError(401, "a valid 'Authorization: Bearer <token>' header is required "
                       "(or log in at /login in a browser)", {"WWW-Authenticate": "Bearer"})
