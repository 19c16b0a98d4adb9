"""Bearer tokens: with STAGETUNE_API_TOKENS set, every API call and page needs one."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="one of STAGETUNE_API_TOKENS")


def require_token(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                  ) -> None:
    tokens: frozenset[str] = request.app.state.settings.tokens
    if not tokens:
        return
    given = credentials.credentials if credentials is not None else ""
    if not any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens):
        raise ApiError(401, "a valid 'Authorization: Bearer <token>' header is required",
                       {"WWW-Authenticate": "Bearer"})
