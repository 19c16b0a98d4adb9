"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright,
against a real `stagetune serve` that ran a real digits study."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from stagetune.service.client import Client
from stagetune.studies.reporting.plots import PLOTS
from tests.service.server import STAGETUNE, Server
from tests.service.test_api import long_study, wait_for_status
from tests.studies.ray_support import digits_spec, wait_until

pytestmark = pytest.mark.slow  # a study run to the end, then every page in Chromium
# the kinds a study of one objective shows: all but those for some studies only (a front)
EVERY_STUDYS = {k: kind for k, kind in PLOTS.items() if kind.only_if is None}

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
STUDY = "dash-digits"
ALL_RENDERED = "[...document.querySelectorAll('.plot')].every(d => d.dataset.rendered)"


def finished_spec() -> dict[str, Any]:
    """Every stage on, small budgets: each figure has something to draw."""
    spec = digits_spec(STUDY, resources={"max_concurrent": 2},
                       stages={"overfit": {"steps": 100}, "lr_probe": {"iterations": 40},
                               "coarse": {"trials": 6, "epochs": 1},
                               "refine": {"trials": 4, "epochs": 3, "warm_start": 2},
                               "confirm": {"top": 2, "seeds": 2, "epochs": 3}})
    spec["space"]["optimizer"] = {"type": "categorical", "choices": ["sgd", "adamw"]}
    return spec


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with its own Ray (its runners keep the winner's weights for Grad-CAM),
    holding one finished study."""
    tmp = tmp_path_factory.mktemp("dashboard")
    server = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data").start()
    try:
        with Client(server.url) as api:
            api.submit(finished_spec())
            study = wait_for_status(api, STUDY, ("completed", "stopped", "failed"), 300)
            assert study.status == "completed", study.message
        yield server
    finally:
        server.stop()


def visit(browser: Browser, url: str, offline: bool = False) -> tuple[Page, list[str]]:
    """Open `url` with every console error and page error collected; `offline` aborts
    any request that is not for the file itself."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    if offline:
        page.route("**/*", lambda route: route.continue_() if route.request.url == url
                   else route.abort())
    page.goto(url)
    return page, errors


def assert_every_figure_rendered(page: Page) -> int:
    page.wait_for_function(ALL_RENDERED, timeout=60_000)
    states = page.eval_on_selector_all(".plot", "ds => ds.map(d => [d.dataset.kind, "
                                       "d.dataset.rendered, !!d.querySelector('.main-svg')])")
    assert states and all(rendered == "true" and svg for _, rendered, svg in states), states
    return len(states)


def test_every_page_of_a_finished_study_loads_and_every_figure_renders(
        server: Server, browser: Browser) -> None:
    study_kinds = {k for k, kind in EVERY_STUDYS.items() if not kind.per_trial}
    for path, figures in ((f"/studies/{STUDY}", len(study_kinds)),
                          (f"/studies/{STUDY}/trials/8", 1), ("/", 0)):
        page, errors = visit(browser, server.url + path)
        assert page.title().endswith("stagetune")
        assert assert_every_figure_rendered(page) == figures if figures else True
        if path == f"/studies/{STUDY}":
            assert page.inner_text("#status") == "completed"
            assert page.inner_text("#diagnosis-kind")  # the winner's diagnosis is shown
            assert page.locator("#stages tbody tr").count() == 8  # data_check .. confirm
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "study-page.png"), full_page=True)
        if path == "/":
            assert page.locator(f"tr[data-id='{STUDY}'] .badge").inner_text() == "completed"
        assert errors == [], f"{path}: {errors}"
        page.close()
    shot = ARTIFACTS / "study-page.png"
    assert shot.stat().st_size > 100_000  # a full page of figures, not a blank one


def test_the_studies_page_updates_while_a_study_runs(server: Server, browser: Browser) -> None:
    page, errors = visit(browser, server.url + "/")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    with Client(server.url) as api:
        api.submit(long_study("dash-live", trials=4, epochs=30))
        try:
            row = "tr[data-id='dash-live']"
            page.wait_for_selector(f"{row} .badge:text('running')", timeout=60_000)
            page.wait_for_function(f"document.querySelector(\"{row}\").cells[5].textContent"
                                   ".includes('running')", timeout=60_000)
            refreshed = int(page.get_attribute("table[data-live]", "data-refreshed") or 0)
            wait_until(lambda: int(page.get_attribute("table[data-live]", "data-refreshed")
                                   or 0) > refreshed, 10, "the table refreshed again")
            assert page.evaluate("window.sameDocument") is True
        finally:
            api.cancel("dash-live")
    assert errors == []


def test_the_report_opens_offline(server: Server, browser: Browser, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    subprocess.run([STAGETUNE, "report", STUDY, "-o", str(report), "--url", server.url],
                   check=True, capture_output=True)
    page, errors = visit(browser, report.as_uri(), offline=True)
    assert assert_every_figure_rendered(page) == sum(not k.per_trial for k in EVERY_STUDYS.values())
    assert errors == []


def test_every_figure_is_plotly_json_and_an_unknown_kind_lists_the_known(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        listed = http.get(f"/api/studies/{STUDY}/plots").json()
        assert [p["kind"] for p in listed] == list(EVERY_STUDYS)  # no front: one objective
        for kind in EVERY_STUDYS:
            reply = http.get(f"/api/studies/{STUDY}/plots/{kind}", params={"number": 3})
            assert reply.status_code == 200 and reply.json()["data"], kind
        front = http.get(f"/api/studies/{STUDY}/plots/pareto_front").json()  # not listed
        assert "has one objective" in front["layout"]["annotations"][0]["text"]
        unknown = http.get(f"/api/studies/{STUDY}/plots/parallel")
        assert unknown.status_code == 404
        assert "known kinds: timeline, init_loss" in unknown.json()["detail"]
        assert http.get("/api/studies/nope/plots/timeline").status_code == 404
        assert http.get("/vendor/plotly.min.js").headers["content-type"].startswith("text/javascript")
