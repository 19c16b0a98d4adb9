"""The dashboard that acts, in headless Chromium against one real `stagetune serve` with a
token: the buttons cancel, resume and delete a running study through the session's CSRF
token; the trial table sorts, filters and pages a 10,000-trial study (how fast:
bench/table_updates.py); the compare page draws two studies. The 10,000 trials are written into the store's Optuna
studies in bulk (no training), as finished coarse and refine stages."""

from __future__ import annotations

import html
import json
import math
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.storages._rdb import models  # bulk rows: see add_trials_in_bulk
from optuna.trial import TrialState
from playwright.sync_api import Browser, BrowserContext, Page
from sqlalchemy import insert, select

from stagetune.service.client import Client
from stagetune.studies.search.stages import ORDER
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store
from tests.service.server import Server
from tests.service.test_api import long_study

pytestmark = pytest.mark.slow  # 10,000 trials written, a study driven from Chromium

TOKEN = "dash-token-0123"
BIG, SMALL_A, SMALL_B = "table-10k", "cmp-a", "cmp-b"
DISTS = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "width": IntDistribution(8, 128),
         "optimizer": CategoricalDistribution(["sgd", "adamw"])}
SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
         "width": {"type": "int", "low": 8, "high": 128},
         "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]}}


# -- a store holding finished studies, written without training --------------------------

def add_trials_in_bulk(store: Store, study: str, stage: str, count: int, seed: int,
                       ) -> list[dict[str, Any]]:
    """`count` finished trials in the stage's Optuna study, as the runner would leave them
    (params, value, user attributes), inserted into Optuna's own tables (its models name
    them) in one transaction: `study.add_trial` costs some 85 ms a trial on this machine,
    so 10,000 would take a quarter of an hour. Returns what was written."""
    optuna_study = store.optuna_study(study, stage, "maximize", metric="val_accuracy")
    study_id = store.optuna_storage.get_study_id_from_name(optuna_study.study_name)
    rng, start = random.Random(seed), datetime.now(UTC) - timedelta(hours=3)
    written = []
    for number in range(count):
        params = {"lr": 10 ** rng.uniform(-4, -1), "width": rng.randint(8, 128),
                  "optimizer": rng.choice(["sgd", "adamw"])}
        pruned = stage == "refine" and number % 5 == 4
        value = None if pruned else round(0.95 - abs(math.log10(params["lr"]) + 2) * 0.1
                                          + params["width"] / 2000 + rng.gauss(0, 0.01), 6)
        written.append({"number": number, "params": params, "value": value,
                        "state": TrialState.PRUNED if pruned else TrialState.COMPLETE,
                        "attrs": {"status": "pruned" if pruned else "completed",
                                  "epochs": 1 if pruned else 3,
                                  "seconds": round(rng.uniform(0.5, 20.0), 3)}})
    tables = {m: m.__table__ for m in (models.TrialModel, models.TrialParamModel,  # type: ignore[attr-defined]
                                       models.TrialUserAttributeModel, models.TrialValueModel)}
    moment = start.replace(tzinfo=None)  # Optuna stores naive UTC
    with store.optuna_storage.engine.begin() as db:
        db.execute(insert(tables[models.TrialModel]), [
            {"number": t["number"], "study_id": study_id, "state": t["state"],
             "datetime_start": moment, "datetime_complete": moment} for t in written])
        ids = dict(db.execute(select(models.TrialModel.number, models.TrialModel.trial_id)
                              .where(models.TrialModel.study_id == study_id)).all())
        db.execute(insert(tables[models.TrialParamModel]), [
            {"trial_id": ids[t["number"]], "param_name": k,
             "param_value": DISTS[k].to_internal_repr(v),
             "distribution_json": distribution_to_json(DISTS[k])}
            for t in written for k, v in t["params"].items()])
        db.execute(insert(tables[models.TrialUserAttributeModel]), [
            {"trial_id": ids[t["number"]], "key": k, "value_json": json.dumps(v)}
            for t in written for k, v in t["attrs"].items()])
        db.execute(insert(tables[models.TrialValueModel]), [
            {"trial_id": ids[t["number"]], "objective": 0, "value": t["value"],
             "value_type": models.TrialValueModel.TrialValueType.FINITE}
            for t in written if t["value"] is not None])
    return written


def finished_study(store: Store, name: str, trials: dict[str, int], seed: int) -> None:
    """A completed study whose search stages hold `trials` (stage -> count), the best
    trial's curves recorded, and every other stage skipped."""
    spec = load_spec({"name": name, "task": {"dataset": "digits", "model": "convnet"},
                      "space": SPACE})
    store.open_study(name, spec.model_dump(mode="json"), list(ORDER))
    best: dict[str, Any] | None = None
    for stage in ORDER:
        store.start_stage(name, stage)
        hand_on: dict[str, Any] = {"baseline": 0.8} if stage == "baseline" else {}
        if stage in trials:
            written = add_trials_in_bulk(store, name, stage, trials[stage], seed)
            top = max((t for t in written if t["value"] is not None), key=lambda t: t["value"])
            store.record_history(name, stage, top["number"], [
                {"epoch": e, "val_accuracy": top["value"] * e / 3, "train_loss": 1.5 / e,
                 "val_loss": 1.6 / e, "train_accuracy": top["value"] * e / 3}
                for e in (1, 2, 3)])
            best = {"params": top["params"], "value": top["value"], "stage": stage}
            hand_on["best"] = best
        store.finish_stage(name, stage, "passed" if stage in trials else "skipped",
                           f"{trials.get(stage, 0)} trials", {}, hand_on, 1.0, 1.0)
    store.set_status(name, "completed")


def build_store(url: str) -> None:
    store = Store(url)
    finished_study(store, BIG, {"coarse": 6000, "refine": 4000}, seed=1)
    finished_study(store, SMALL_A, {"coarse": 30, "refine": 20}, seed=2)
    finished_study(store, SMALL_B, {"coarse": 30}, seed=3)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
           ) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("dash-actions")
    url = f"sqlite:///{tmp / 'store.db'}"
    with ThreadPoolExecutor(1) as pool:  # the store fills while Ray starts
        built = pool.submit(build_store, url)
        ray_address = request.getfixturevalue("ray_local")
        built.result()
    server = Server(url, tmp / "data", tokens=TOKEN, ray_address=ray_address).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def session(server: Server, browser: Browser) -> Iterator[BrowserContext]:
    """A browser logged in through the login page: its writes carry the session cookie,
    so each needs the page's CSRF token."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{server.url}/login")
    page.fill("input[name=token]", TOKEN)
    with page.expect_response(f"{server.url}/login") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 204
    page.close()
    yield context
    context.close()


def open_page(context: BrowserContext, url: str) -> tuple[Page, list[str]]:
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return page, errors


# -- the buttons -----------------------------------------------------------------------------

def test_the_buttons_cancel_resume_and_delete_a_running_study(
        server: Server, session: BrowserContext) -> None:
    name = "act-live"
    with Client(server.url, token=TOKEN) as api:
        api.submit(long_study(name, trials=4, epochs=40))
        page, errors = open_page(session, f"{server.url}/studies/{name}")
        page.on("dialog", lambda dialog: dialog.accept())  # the delete's confirm
        page.wait_for_selector("#status:text('running')", timeout=60_000)
        assert page.is_visible("#action-cancel") and not page.is_visible("#action-resume")
        assert not page.is_visible("#action-delete")  # a running study cannot be deleted

        page.click("#action-cancel")
        page.wait_for_selector("#status:text('cancelled')", timeout=60_000)
        assert api.study(name).status == "cancelled"
        page.wait_for_selector("#action-resume", state="visible")
        assert not page.is_visible("#action-cancel")

        page.click("#action-resume")
        page.wait_for_selector("#status:text('running')", timeout=60_000)
        assert api.study(name).status in ("pending", "running")
        page.click("#action-cancel")
        page.wait_for_selector("#status:text('cancelled')", timeout=60_000)

        other, _ = open_page(session, f"{server.url}/studies/{name}")  # a second tab
        with page.expect_navigation(url=f"{server.url}/"):
            page.click("#action-delete")  # confirmed (the dialog above), then home
        assert name not in [s.id for s in api.studies().items]

        # an action that fails says why, as text: the study is gone under the second tab
        other.click("#action-resume")
        other.wait_for_function("document.getElementById('action-error').textContent")
        assert f"no study named '{name}'" in other.inner_text("#action-error")
        assert other.locator("#action-error *").count() == 0  # text, not markup
        other.close()
    assert errors == [], errors


# -- the trial table ----------------------------------------------------------------------------

def cells(page: Page, column: int) -> list[str]:
    return page.eval_on_selector_all(
        "#trials tbody tr", f"rows => rows.map(r => r.cells[{column}].textContent)")


def update(page: Page, action: Any) -> int:
    """Run `action` (a click, a submit) and wait for the table to update; the update's
    time in ms as the page measured it (request, answer, rows drawn), which
    bench/table_updates.py holds to the dashboard's 1 s goal."""
    before = int(page.get_attribute("#trials", "data-loaded") or 0)
    started = time.perf_counter()
    action()
    page.wait_for_function(f"Number(document.getElementById('trials').dataset.loaded || 0) > {before}")
    waited = (time.perf_counter() - started) * 1000
    measured = int(page.get_attribute("#trials", "data-ms") or -1)
    assert 0 <= measured <= waited + 50  # the page times the update it drew
    return measured


def sort_by(page: Page, column: str) -> None:
    """Click `column`'s header: another column sorts ascending, the sorted one turns round."""
    update(page, lambda: page.click(f"th[data-sort='{column}'] button"))


def column_of(page: Page, label: str) -> int:
    headers = page.eval_on_selector_all("#trials thead th", "ths => ths.map(t => t.dataset.sort)")
    return int(headers.index(label))


def test_the_trial_table_sorts_filters_and_pages_10000_trials(
        server: Server, session: BrowserContext) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=120) as http:  # the first read loads the trials from the store
        assert http.get(f"/api/studies/{BIG}/trials", params={"limit": 1}).json()["total"] == 10_000
    page, errors = open_page(session, f"{server.url}/studies/{BIG}")
    page.wait_for_function("[...document.querySelectorAll('.plot')].every(d => d.dataset.rendered)",
                           timeout=120_000)
    # the page opens on the best trials: value, descending (accuracy is maximised)
    assert page.inner_text("#trials-range") == "1–20 of 10,000"
    values = [float(v) for v in cells(page, 4)]
    assert values == sorted(values, reverse=True)
    sort_by(page, "value")
    values = [float(v) for v in cells(page, 4)]
    assert values == sorted(values) and page.get_attribute("th[data-sort=value]", "aria-sort") == "ascending"
    sort_by(page, "value")  # a second click turns the order round
    values = [float(v) for v in cells(page, 4)]
    assert values == sorted(values, reverse=True)
    assert page.get_attribute("th[data-sort=value]", "aria-sort") == "descending"

    width = column_of(page, "param:width")
    sort_by(page, "param:width")
    widths = [int(w) for w in cells(page, width)]
    assert widths == sorted(widths) and widths[0] == 8

    sort_by(page, "duration")
    seconds = [float(s) for s in cells(page, 6)]
    assert seconds == sorted(seconds)

    def filter_by(text: str) -> None:
        page.fill("input[name=q]", text)
        page.click("#trial-filter button[type=submit]")

    update(page, lambda: filter_by("optimizer=adamw lr<0.001"))
    total = int(page.inner_text("#trials-range").split(" of ")[1].replace(",", ""))
    assert 500 < total < 3000  # about a sixth of 10,000
    lr, optimizer = column_of(page, "param:lr"), column_of(page, "param:optimizer")
    assert set(cells(page, optimizer)) == {"adamw"}
    assert all(float(v) < 0.001 for v in cells(page, lr))

    update(page, lambda: page.select_option("select[name=state]", "pruned"))
    assert set(cells(page, 2)) == {"pruned"} and set(cells(page, 1)) == {"refine"}
    update(page, lambda: page.click("#trials-next"))
    assert page.inner_text("#trials-range").startswith("21–")

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        expected = http.get(f"/api/studies/{BIG}/trials", params={
            "state": "pruned", "q": "optimizer=adamw lr<0.001", "sort": "duration",
            "offset": 20, "limit": 20}).json()
    assert [int(n) for n in cells(page, 0)] == [t["number"] for t in expected["items"]]
    assert "sort=duration" in page.url and "offset=20" in page.url  # a reload keeps the view

    # a filter that names nothing is refused, and the page says why, as text
    update(page, lambda: filter_by("<b>wd</b><0.1"))
    assert "names nothing" in page.inner_text("#trial-error")
    assert page.locator("#trial-error *").count() == 0
    assert [e for e in errors if "status of 422" not in e] == [], errors  # the refused filter


def test_the_trials_api_sorts_filters_and_names_the_columns_it_can_sort_by(server: Server) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        def trials(**params: Any) -> Any:
            reply = http.get(f"/api/studies/{SMALL_A}/trials", params=params)
            assert reply.status_code == 200, reply.text
            return reply.json()

        plain = trials(limit=500)  # the old parameters work as before: number order
        assert [t["number"] for t in plain["items"]] == list(range(50))
        ranked = trials(sort="value", order="desc", limit=500)["items"]
        values = [t["value"] for t in ranked]
        assert values[:46] == sorted(values[:46], reverse=True)
        assert values[46:] == [None] * 4  # pruned trials, without a value, come last
        assert trials(sort="value", order="desc", limit=1)["items"][0] == ranked[0]
        lrs = [t["params"]["lr"] for t in trials(sort="param:lr", limit=500)["items"]]
        assert lrs == sorted(lrs)
        stages = [t["stage"] for t in trials(sort="stage", order="desc", limit=500)["items"]]
        assert stages == ["refine"] * 20 + ["coarse"] * 30  # by run order, not by name
        sgd = trials(q="optimizer=sgd width>=64", limit=500)
        assert sgd["total"] and all(t["params"]["optimizer"] == "sgd" and t["params"]["width"] >= 64
                                    for t in sgd["items"])
        assert trials(q="ADAM")["total"] == trials(q="optimizer=adamw")["total"]
        assert trials(q="value>2")["total"] == 0

        for params, says in (({"sort": "color"}, "sort by one of: number, stage, state, value, "
                              "duration, epochs, param:lr, param:optimizer, param:width"),
                             ({"sort": "param:momentum"}, "cannot sort by 'param:momentum'"),
                             ({"q": "momentum>0.5"}, "'momentum' in the filter names nothing"),
                             ({"q": "lr<small"}, "< compares numbers")):
            reply = http.get(f"/api/studies/{SMALL_A}/trials", params=params)
            assert reply.status_code == 422, reply.text
            assert says in reply.json()["detail"][0]["msg"]
        assert http.get(f"/api/studies/{SMALL_A}/trials", params={"order": "up"}).status_code == 422
        assert http.get("/api/studies/nope/trials", params={"sort": "value"}).status_code == 404


# -- the compare page -----------------------------------------------------------------------------

def test_the_compare_page_draws_two_studies(server: Server, session: BrowserContext) -> None:
    page, errors = open_page(session, f"{server.url}/")
    page.click("#compare-button")  # nothing ticked: it says what to do
    assert "tick 2 to 8 studies" in page.inner_text("#compare-error")
    page.check(f"input.pick[value={SMALL_A}]")
    page.wait_for_timeout(2500)  # the list refreshes every 2 s: a ticked box stays ticked
    page.check(f"input.pick[value={SMALL_B}]")
    assert page.is_checked(f"input.pick[value={SMALL_A}]")
    with page.expect_navigation():
        page.click("#compare-button")
    path, _, names = page.url.partition("/compare?studies=")
    order = names.split(",")  # as the list shows them, newest first
    assert path == server.url and sorted(order) == [SMALL_A, SMALL_B]
    page.wait_for_function("[...document.querySelectorAll('.plot')].every(d => d.dataset.rendered)")
    drawn = page.eval_on_selector_all(".plot", "ds => ds.map(d => [d.dataset.kind, "
                                      "d.data.map(t => t.name)])")
    best, winners = dict(drawn)["best_so_far"], dict(drawn)["winners"]
    assert best == [f"{n} (val_accuracy)" for n in order]
    assert {n.split(":")[0] for n in winners if n} == {SMALL_A, SMALL_B}
    table = page.locator("#compare-table")
    assert table.locator("thead th").all_inner_texts()[1:] == order
    params = table.locator("tr.param th").all_inner_texts()
    assert params == ["lr", "optimizer", "width"]
    assert errors == [], errors
    page.close()

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        for query, status, says in ((f"studies={SMALL_A}", 400, "compare 2 to 8 studies"),
                                    (f"studies={SMALL_A},<script>", 400, "is not a study name"),
                                    ("studies=" + ",".join(f"s{i}" for i in range(9)), 400,
                                     "compare 2 to 8 studies"),
                                    (f"studies={SMALL_A}&studies=nope", 404, "no study named 'nope'")):
            reply = http.get(f"/compare?{query}")
            assert reply.status_code == status and says in html.unescape(reply.text), query
            assert "<script>" not in reply.text.split("</head>")[1]  # escaped, never markup
        repeated = http.get(f"/compare?studies={SMALL_A}&studies={SMALL_B}")
        assert repeated.status_code == 200
