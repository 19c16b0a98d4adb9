"""The login's `next` against a public open-redirect payload list (PayloadsAllTheThings',
vendored in data/open_redirect_payloads.txt), in headless Chromium against a real
`stagetune serve` with a token: whatever a link puts in `next`, the browser ends on the
service's own origin after logging in, and nothing reaches the attacker's site (a second
port of 127.0.0.1) or runs a script. The hand-picked spellings and the unit tests of
`safe_next` are in tests/service/test_security.py."""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, quote, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.service.server import Server, free_port

TOKEN = "redirect-token-0123"
PAYLOADS = Path(__file__).with_name("data") / "open_redirect_payloads.txt"
# The list's attacker, 216.58.214.206 (google.com), spelled in each of its notations, and
# 127.0.0.1 spelled the same way: the payloads then point at the attacker's port here
ADDRESSES = {"0xd8.0x3a.0xd6.0xce": "0x7f.0x0.0x0.0x1", "0xd83ad6ce": "0x7f000001",
             "3627734734": "2130706433", "472.314.470.462": "383.256.256.257",
             "0330.072.0326.0316": "0177.00.00.01",
             "00330.00072.0000326.00000316": "00177.00000.0000000.00000001",
             "0xd8.072.54990": "0x7f.00.1", "0xd8.3856078": "0x7f.1", "00330.3856078": "00177.1",
             "00330.0x3a.54990": "00177.0x0.1"}
IPV6 = {"[::216.58.214.206]": "[::127.0.0.1]", "[::ffff:216.58.214.206]": "[::ffff:127.0.0.1]"}


def payloads(own: str, attacker_port: int) -> list[str]:
    """The list's lines, its hosts replaced: www.whitelisteddomain.tld by the service's
    `own` host:port, google.com (in each spelling) by 127.0.0.1 at `attacker_port`."""
    port = f":{attacker_port}"
    names = {"google%E3%80%82com": "127%E3%80%820%E3%80%820%E3%80%821" + port,  # "。"
             "google%00.com": "127.0.0%00.1" + port,
             "%67%6f%6f%67%6c%65%2e%63%6f%6d": "".join(f"%{b:02x}" for b in f"127.0.0.1{port}".encode()),
             "www.google.com": "127.0.0.1" + port, "google.com:80": "127.0.0.1" + port,
             "google.com": "127.0.0.1" + port, "www.whitelisteddomain.tld": own,
             **{k: v + port for k, v in {**ADDRESSES, **IPV6}.items()}}
    spelled = re.compile("|".join(re.escape(k) for k in sorted(names, key=len, reverse=True)))
    lines = [line for line in PAYLOADS.read_text().splitlines() if line and not line.startswith("#")]
    return [spelled.sub(lambda found: names[found.group(0)], line) for line in lines]


class Attacker:
    """The attacker's site: another port of 127.0.0.1 that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                seen.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(b"<p>phished</p>")

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ray_local: str) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("redirects")
    server = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data", tokens=TOKEN,
                    ray_address=ray_local).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    site = Attacker()
    yield site
    site.http.shutdown()


def test_the_vendored_list_is_whole_and_every_payload_aims_at_the_attacker() -> None:
    lines = payloads("own.test:1", 9)
    assert len(lines) == 240  # the list as published
    left = [line for line in lines if re.search(r"google|216\.58|0xd8|3627734734|whitelisted", line)]
    assert left == []  # every spelling of the list's hosts was replaced


@pytest.mark.slow  # some 240 logins: about a minute on 2 busy cores
def test_no_payload_of_the_list_leaves_the_origin_after_login(
        server: Server, browser: Browser, attacker: Attacker) -> None:
    """Each payload as a link carries it, as the list writes it (the browser parses the
    link first): what the login page keeps must resolve, by the browser's own URL parser,
    to this origin; after logging in, the browser must be on this origin; no request may
    reach the attacker, and no script of the payload may run."""
    own = urlsplit(server.url)
    context = browser.new_context()
    # every page loads plotly.js (3.5 MB), which neither the login nor the landing uses
    context.route("**/vendor/plotly.min.js", lambda route: route.fulfill(
        body="", content_type="text/javascript"))
    page = context.new_page()
    dialogs: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    left: dict[str, str] = {}
    before = len(attacker.seen)
    try:
        for payload in payloads(own.netloc, attacker.port):
            context.clear_cookies()  # logged out: a session's POST /login needs its CSRF token
            page.goto(f"{server.url}/login?next={payload}", wait_until="domcontentloaded")
            kept, resolved = page.evaluate("""() => {
                const kept = document.getElementById("login").dataset.next;
                return [kept, new URL(kept, location.href).href]; }""")
            if not _on(own, resolved):
                left[payload] = f"the page kept {kept!r}, which is {resolved}"
                continue
            landed = _log_in(page, server)
            if not _on(own, landed):
                left[payload] = f"landed on {landed}"
        assert left == {}, left
        assert attacker.seen[before:] == [] and dialogs == [], (attacker.seen[before:], dialogs)
    finally:
        context.close()


def test_every_payload_as_the_server_gets_it_is_kept_on_the_origin(
        server: Server, browser: Browser, attacker: Attacker) -> None:
    """The server's own check, without the page's: each payload percent-encoded in the
    link, so that `next` is exactly the payload; what the login page keeps of it, resolved
    by Chromium's URL parser against the login page's address, is on this origin."""
    own = urlsplit(server.url)
    listed = payloads(own.netloc, attacker.port)
    with httpx.Client(base_url=server.url) as http:
        kept = [html.unescape(_DATA_NEXT.search(http.get(
            f"/login?next={quote(payload, safe='')}").text).group(1))  # type: ignore[union-attr]
            for payload in listed]
    page = browser.new_page()
    try:
        page.goto(f"{server.url}/login", wait_until="domcontentloaded")
        resolved = page.evaluate("kept => kept.map((k) => new URL(k, location.href).href)", kept)
    finally:
        page.close()
    left = {p: f"kept {k!r}, which is {r}" for p, k, r in zip(listed, kept, resolved, strict=True)
            if not _on(own, r)}
    assert left == {}, left
    assert len(set(kept)) > 1  # not all turned into "/": the check reads each payload


_DATA_NEXT = re.compile(r'id="login" data-next="([^"]*)"')


def _on(own: SplitResult, url: str) -> bool:
    parts = urlsplit(url)
    return (parts.scheme, parts.netloc) == (own.scheme, own.netloc)


def _log_in(page: Page, server: Server) -> str:
    """Log in on the open login page; where the browser goes after it."""
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    try:
        page.wait_for_url(lambda url: not url.startswith(f"{server.url}/login"),
                          wait_until="commit", timeout=10_000)
    except PlaywrightTimeout:
        pass  # still on the login page: reported by its URL
    return page.url
