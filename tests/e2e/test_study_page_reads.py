"""The study page reads as a person would write it, in headless Chromium against a real
`stagetune serve` that ran a small version of the demo study (examples/digits.yaml: lr split
per optimizer family by the LR probe): numbers to three significant figures, no suggested
edit that the search already applied, stage names as the spec writes them, log axes
labelled at powers of ten, and a log without the libraries' remarks."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Page

from stagetune.service.client import Client
from stagetune.studies.search.lr_ranges import FAMILIES
from stagetune.studies.search.stages import ORDER
from stagetune.studies.store import Store
from tests.service.server import Server
from tests.service.test_api import wait_for_status
from tests.service.test_dashboard import ALL_RENDERED, visit
from tests.service.test_quiet_log import NOISE

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits.yaml"
STUDY = "reads-demo"
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?:e[-−]?\d+)?")


def small_demo() -> dict[str, Any]:
    """The demo's task and space with small stages (no budget, no goal)."""
    spec = yaml.safe_load(EXAMPLE.read_text())
    del spec["budget"], spec["goal"]
    spec["name"] = STUDY
    spec["stages"] = {"overfit": {"steps": 100}, "coarse": {"trials": 6, "epochs": 1},
                      "refine": {"trials": 3, "epochs": 3, "warm_start": 2},
                      "confirm": {"top": 1, "seeds": 2, "epochs": 3}}
    return spec


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with its own Ray, whose runners keep the winner's weights where the
    server's Grad-CAM figure finds them."""
    tmp = tmp_path_factory.mktemp("page-reads")
    server = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data").start()
    try:
        with Client(server.url) as api:
            api.submit(small_demo())
            study = wait_for_status(api, STUDY, ("completed", "stopped", "failed"), 420)
            assert study.status == "completed", study.message
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(server: Server, browser: Browser) -> Iterator[Page]:
    opened, errors = visit(browser, f"{server.url}/studies/{STUDY}")
    opened.wait_for_function(ALL_RENDERED, timeout=120_000)
    yield opened
    assert errors == [], errors
    opened.close()


def too_precise(text: str) -> list[str]:
    """The decimals in `text` written with more than three significant figures."""
    found = []
    for number in DECIMAL.findall(text):
        mantissa = re.split("e", number)[0].replace(".", "").lstrip("0")
        if len(mantissa) > 3:
            found.append(number)
    return found


def test_too_precise_finds_what_the_page_showed_before() -> None:
    shown = ('set lr: {"high": 0.2420128264794383, "log": true, "low": 0.008067094215981277}; '
             "best val_accuracy 0.9972, held near 1.000")
    assert too_precise(shown) == ["0.2420128264794383", "0.008067094215981277", "0.9972", "1.000"]
    assert too_precise("lr: 0.00807–0.242, log; 1,437 rows; loss 2.48; 1.5e-5; 0.990") == []


@pytest.mark.slow
def test_sentences_tables_and_edits_show_three_figures_at_most(page: Page) -> None:
    texts = page.eval_on_selector_all(
        "#fixes, #head .facts, #diagnosis-box, #stages td.message, .stage-section .message, "
        "#trials tbody", "els => els.map(e => e.innerText)")
    assert len(texts) >= 2 * len(ORDER)  # the stages table and the sections, at least
    assert [n for t in texts for n in too_precise(t)] == []


@pytest.mark.slow
def test_no_edit_is_suggested_that_the_search_already_applied(server: Server, page: Page) -> None:
    stored = Store(server.db, create=False).study(STUDY)
    probe = next(s for s in stored.stages if s.name == "lr_probe")
    suggested, taken = probe.figures.get("fixes") or [], probe.hand_on.get("lr_ranges") or {}
    assert suggested and taken, "the LR probe found a range, suggested it, and the search took it"
    applied = {o for family in taken for o in FAMILIES[family]}
    with Client(server.url) as api:
        shown = next(s for s in api.study(STUDY).stages if s.name == "lr_probe").fixes
    assert [f.model_dump(exclude_none=True) for f in shown] == [
        f for f in suggested if f["when"]["optimizer"] not in applied]
    on_page = [e for e in page.locator("#fixes li").all_inner_texts() if e.startswith("lr_probe")]
    assert len(on_page) == len(shown)


@pytest.mark.slow
def test_stage_names_read_as_the_spec_writes_them(page: Page) -> None:
    body = page.inner_text("body")  # innerText follows CSS text-transform
    assert "Lr Probe" not in body and "Init Check" not in body and "Lr probe" not in body
    for name in ("init_check", "overfit", "lr_probe", "coarse", "refine", "confirm"):
        assert page.inner_text(f"#stage-{name} h2").startswith(f"{name} ")


@pytest.mark.slow
def test_log_axes_are_labelled_at_powers_of_ten(page: Page) -> None:
    axis = page.evaluate("document.getElementById('plot-lr_probe').layout.xaxis")
    assert axis["type"] == "log" and axis["dtick"] == 1, axis
    labels = page.eval_on_selector_all("#plot-lr_probe .xtick text", "ts => ts.map(t => t.textContent)")
    values = [float(t.replace("−", "-")) for t in labels]
    assert len(values) >= 3 and all(math.log10(v).is_integer() for v in values), labels
    # every log axis on the page: each label a whole number, no "2, 5, 0.01, 2, 5"
    axes = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(d =>
        Object.keys(d.layout).filter(k => /^[xy]axis\\d*$/.test(k) && d.layout[k].type === 'log')
          .map(k => [d.id + ' ' + k, [...d.querySelectorAll('.' + k.replace('axis', '') + 'tick text')]
            .map(t => t.textContent)]))""")
    assert len(axes) >= 3, axes
    for name, ticks in axes:
        numbers = [float(t.replace("−", "-")) for t in ticks]
        assert numbers == sorted(set(numbers)), f"{name}: {ticks}"


@pytest.mark.slow
def test_the_log_holds_no_library_remarks(server: Server, page: Page) -> None:
    noisy = [line for line in server.log.read_text().splitlines() if any(n in line for n in NOISE)]
    assert noisy == [], "\n".join(noisy)
