"""Which Host names the service answers to (STAGETUNE_ALLOWED_HOSTS).

A page on evil.test whose name its owner re-points at 127.0.0.1 (DNS rebinding) is, to the
browser, on the same origin as a service listening there: it may read and write whatever
that service allows without a token. Its requests still carry `Host: evil.test`, so a
service that answers only to its own names refuses them.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stagetune.service.settings import Settings

log = logging.getLogger(__name__)

# Container and orchestrator probes address the service by whatever IP they see, and the
# answers hold nothing a page of another name could use.
PROBES = frozenset({"/healthz", "/readyz"})
_PASSED = "stagetune.host_allowed"


class HostGuard:
    """400, saying what to set, for a request whose Host is not an allowed name; Starlette's
    TrustedHostMiddleware decides (its own answer names neither the host nor the setting)."""

    def __init__(self, app: ASGIApp, names: list[str]) -> None:
        self.app, self.names = app, names
        self._trusted = TrustedHostMiddleware(_mark_passed, allowed_hosts=names,
                                              www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "*" in self.names or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        await self._trusted(scope, receive, _discard)
        if scope.pop(_PASSED, False):
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")[:200]
        detail = (f"this service does not answer to the host name in {host!r}: reach it as "
                  f"{', '.join(self.names)}, or add the name to STAGETUNE_ALLOWED_HOSTS")
        await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)


async def _mark_passed(scope: Scope, _receive: Receive, _send: Send) -> None:
    scope[_PASSED] = True


async def _discard(_message: Message) -> None:
    """TrustedHostMiddleware's own refusal: HostGuard answers instead."""


def host_allowed(netloc: str, names: list[str]) -> bool:
    """Whether the host of `netloc` (host[:port]) is one of `names`, by the rule of
    TrustedHostMiddleware: equal, or under a `*.domain` pattern; any host for `*`."""
    try:
        parts = urlsplit(f"//{netloc}")
        host, _ = parts.hostname, parts.port  # a port that is not a number raises
    except ValueError:
        return False
    if not host:
        return False
    bare = [n.strip("[]") for n in names]  # urlsplit unwraps an IPv6 address too
    return any(n == "*" or host == n or (n.startswith("*.") and host.endswith(n[1:]))
               for n in bare)


def warn_if_any_host(settings: Settings) -> None:
    """A service reachable from other machines answers to any name unless told otherwise."""
    if settings.allowed_hosts is None and settings.host_names == ["*"]:
        log.warning("the service listens on %s and answers to any host name: set "
                    "STAGETUNE_ALLOWED_HOSTS to the names it is reached by (the CSRF guard "
                    "then also accepts only pages of those names)", settings.bind_host)
