"""The browser's defences: a request naming a host the service does not answer to is
refused (service/web/_hosts.py), a write from another origin is refused, a write made
with a session cookie needs the session's CSRF token, and every response carries the
security headers (a Content-Security-Policy that allows only the service's own files)."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stagetune.service.auth import SESSION_COOKIE, Sessions, bearer_token
from stagetune.service.settings import Settings
from stagetune.service.web._hosts import HostGuard, host_allowed
from stagetune.service.web._throttle import FailureLimiter

CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

# Every response, the login, /docs and /redoc: scripts and styles from the service only.
# Inline styles are allowed because plotly.js, Swagger UI and ReDoc set them as they draw;
# no inline script and no javascript: URL runs anywhere. ReDoc searches in a worker that it
# starts from a blob: URL.
_POLICY = ["default-src 'self'", "script-src 'self'", "style-src 'self' 'unsafe-inline'",
           "img-src 'self' data: blob:", "font-src 'self' data:", "connect-src 'self'",
           "worker-src 'self' blob:", "object-src 'none'", "base-uri 'none'",
           "form-action 'self'", "frame-ancestors 'none'"]
PAGE_POLICY = "; ".join(_POLICY)
# The dashboard's pages with figures: plotly.js's WebGL traces (the parallel-coordinate
# figure) compile their shaders' code with Function(), which needs 'unsafe-eval'; still no
# inline script, so nothing injected into a page runs.
FIGURE_POLICY = PAGE_POLICY.replace("script-src 'self'", "script-src 'self' 'unsafe-eval'")
# The report (the API's only HTML) inlines plotly.js and its figures so that it opens
# offline; served by the API it runs sandboxed, in an origin of its own, and reaches nothing.
REPORT_POLICY = "; ".join([
    "default-src 'none'", "script-src 'unsafe-inline'", "style-src 'unsafe-inline'",
    "img-src data: blob:", "font-src data:", "frame-ancestors 'none'",
    "sandbox allow-scripts allow-downloads"])
HEADERS = {"x-frame-options": "DENY", "x-content-type-options": "nosniff",
           "referrer-policy": "same-origin", "cross-origin-opener-policy": "same-origin"}


def install_security(app: FastAPI, settings: Settings) -> None:
    """Sessions, the login limiter, the CSRF guard, the host check and the headers (the
    outermost layer, so that the guards' refusals carry the headers too)."""
    app.state.sessions = Sessions.from_settings(settings)
    app.state.login_limiter = FailureLimiter(settings.login_max_failures, settings.login_window_s)
    app.add_middleware(CsrfGuard, public_origin=settings.public_origin,
                       host_names=settings.host_names)
    app.add_middleware(HostGuard, names=settings.host_names)
    app.add_middleware(SecurityHeaders)


class SecurityHeaders:
    """The headers on every response; a response that sets one keeps its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                html = headers.get("content-type", "").startswith("text/html")
                policy = REPORT_POLICY if is_api and html else PAGE_POLICY
                headers.setdefault("content-security-policy", policy)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class CsrfGuard:
    """Refuses (403) a write whose Origin (else Referer) is not the service's own origin:
    STAGETUNE_PUBLIC_ORIGIN when set, else the address the request was sent to, port
    included (SameSite cookies reach every port of a host), and only under an allowed host
    name (a page that re-pointed its own name at the service is on "the same" origin);
    and a write authenticated by the session cookie that lacks the session's token in
    X-CSRF-Token.

    The token is derived from the HttpOnly session and handed to the page in a
    <meta> tag, rather than kept in a cookie of its own as a plain double-submit
    (starlette-csrf) keeps it: JavaScript must read such a cookie, so a page on another
    port of the same host could read it too, or plant one of its own. A request with an
    Authorization header is authenticated by that header alone, and a page of another
    origin cannot send one."""

    def __init__(self, app: ASGIApp, public_origin: str | None = None,
                 host_names: list[str] | None = None) -> None:
        self.app = app
        self.public_origin = public_origin.rstrip("/") if public_origin else None
        self.host_names = host_names or ["*"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            refusal = self.refusal(Request(scope))
            if refusal is not None:
                await JSONResponse({"detail": refusal}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, request: Request) -> str | None:
        own = self.public_origin or f"{request.url.scheme}://{request.url.netloc}"
        sender = request.headers.get("origin") or _origin(request.headers.get("referer"))
        allowed = self.public_origin is not None or host_allowed(
            request.url.netloc, self.host_names)
        if sender is not None and (sender != own or not allowed):
            return f"a write from another origin ({sender}) is refused: send it from {own}"
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is None or bearer_token(request) is not None:
            return None
        sessions: Sessions = request.app.state.sessions
        session = sessions.read(cookie)
        if session is None:  # it authenticates nothing: the request stands on its own
            return None
        given = request.headers.get(CSRF_HEADER, "")
        if given and _equal(given, sessions.csrf_token(session)):
            return None
        return ("a write with the session cookie needs its CSRF token in the X-CSRF-Token "
                "header (the pages send it), or send 'Authorization: Bearer <token>' instead")


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "null"


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def csrf_context(request: Request) -> dict[str, Any]:
    """What a page template needs to send the CSRF token: empty without a session."""
    sessions: Sessions = request.app.state.sessions
    session = sessions.read(request.cookies.get(SESSION_COOKIE))
    return {"csrf_token": sessions.csrf_token(session) if session else ""}
