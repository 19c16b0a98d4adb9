"""Who may call: with STAGETUNE_API_TOKENS set, every API call and page needs a token.

Scripts send `Authorization: Bearer <token>`. A browser logs in once at /login and gets a
session cookie instead: signed (itsdangerous) and expiring, HttpOnly, SameSite=Strict, and
Secure over TLS. The session names its token only by a keyed hash, so the cookie never
carries a token, and taking a token out of STAGETUNE_API_TOKENS ends its sessions. Writes
made with a session also need the session's CSRF token (service/web/security.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request, Response, Security
from fastapi.security import HTTPBearer
from itsdangerous import BadData, URLSafeTimedSerializer

from stagetune.service.settings import Settings

bearer = HTTPBearer(auto_error=False, description="one of STAGETUNE_API_TOKENS")
SESSION_COOKIE = "stagetune_session"


@dataclass(frozen=True)
class Session:
    """A logged-in browser: which token it logged in with (by keyed hash), and a nonce of
    its own that its CSRF token derives from."""

    token_id: str
    nonce: str


class Sessions:
    """Checks tokens, and issues and reads the signed session cookies."""

    def __init__(self, tokens: frozenset[str], secret: str, max_age_s: int) -> None:
        self._key = secret.encode()
        self._serializer = URLSafeTimedSerializer(secret, salt="stagetune.session")
        self._tokens = tokens
        self._token_ids = frozenset(self._digest("token", t) for t in tokens)
        self._owners = {self._digest("token", t): token_owner(t) for t in tokens}
        self.max_age_s = max_age_s

    @classmethod
    def from_settings(cls, settings: Settings) -> Sessions:
        return cls(settings.tokens, settings.session_secret or secrets.token_urlsafe(32),
                   settings.session_max_age_s)

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def token_valid(self, given: str) -> bool:
        return any(hmac.compare_digest(given.encode(), t.encode()) for t in self._tokens)

    def issue(self, token: str) -> str:
        """The cookie value for a browser that logged in with `token` (a valid one)."""
        return self._serializer.dumps({"t": self._digest("token", token),
                                       "n": secrets.token_urlsafe(16)})

    def read(self, cookie: str | None) -> Session | None:
        """The session in `cookie`; None when it is absent, forged, expired, or its token
        has been revoked."""
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age_s)
        except BadData:
            return None
        if not isinstance(data, dict) or data.get("t") not in self._token_ids:
            return None
        return Session(str(data["t"]), str(data.get("n", "")))

    def owner(self, session: Session) -> str:
        """The `token_owner` of the token the session logged in with."""
        return self._owners.get(session.token_id, "")

    def csrf_token(self, session: Session) -> str:
        return self._digest("csrf", session.nonce)

    def _digest(self, purpose: str, value: str) -> str:
        mac = hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode()


def sessions(request: Request) -> Sessions:
    return request.app.state.sessions  # type: ignore[no-any-return]


def bearer_token(request: Request) -> str | None:
    """The request's bearer credentials, or None without an Authorization header."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, credentials = header.partition(" ")
    return credentials if scheme.lower() == "bearer" else ""


def current_session(request: Request) -> Session | None:
    return sessions(request).read(request.cookies.get(SESSION_COOKIE))


def authenticated(request: Request) -> bool:
    """Whether the request carries a valid bearer token, else a valid session; always
    true when the service has no tokens."""
    known = sessions(request)
    if not known.required:
        return True
    given = bearer_token(request)
    if given is not None:
        return known.token_valid(given)
    return current_session(request) is not None


def token_owner(token: str) -> str:
    """What the store records as a token's: a digest that stays the same across restarts
    (the session key may not) and tells nothing of a random token."""
    return hashlib.sha256(f"stagetune.owner:{token}".encode()).hexdigest()[:32]


def caller(request: Request) -> str:
    """Who asks, for the limits per token: the `token_owner` of the request's bearer token
    or of its session's; "" without tokens, where callers cannot be told apart (the service
    listens on loopback by default, for one user): the limits are the whole service's."""
    if not sessions(request).required:
        return ""
    given = bearer_token(request)
    if given is not None:
        return token_owner(given)
    session = current_session(request)
    return sessions(request).owner(session) if session is not None else ""


def start_session(request: Request, response: Response, token: str) -> None:
    """Give the browser a session for `token`: Secure over https, or as the setting says."""
    settings: Settings = request.app.state.settings
    secure = (request.url.scheme == "https" if settings.secure_cookies is None
              else settings.secure_cookies)
    known = sessions(request)
    response.set_cookie(SESSION_COOKIE, known.issue(token), max_age=known.max_age_s,
                        httponly=True, secure=secure, samesite="strict")


def require_token(request: Request) -> None:
    if not authenticated(request):
        raise HTTPException(401, "a valid 'Authorization: Bearer <token>' header is required "
                       "(or log in at /login in a browser)", {"WWW-Authenticate": "Bearer"})


# What a route that needs a token depends on: the bearer scheme, so that OpenAPI shows it
# (`authenticated` reads the header itself, a session cookie too), then the check.
SECURED = [Security(bearer), Depends(require_token)]
