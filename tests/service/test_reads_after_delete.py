"""Every read of a real `stagetune serve` shows what the store holds after studies are
deleted and created again: SQLite hands a deleted study's ids (its Optuna studies' and
trials') to the next one, and a name may be used again, through the API or by another
process writing to the same store. The service caches trials, reads and figures; none of
them may show a study that is gone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from optuna.trial import TrialState

from stagetune.service.web._templates import number
from stagetune.studies.reporting import views
from stagetune.studies.search.stages import ORDER
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store
from tests.service.server import Server
from tests.studies.ray_support import NO_PROBES, digits_spec

pytestmark = pytest.mark.slow  # a server per store, studies deleted and written again

# stage -> the values of its trials, in order (None: pruned); each study's differ
Trials = dict[str, list[float | None]]
FIRST_A: Trials = {"coarse": [100.0, 101.5, None, 103.25], "refine": [110.0, None, 112.5]}
B: Trials = {"coarse": [0.25, 0.5], "refine": [0.75]}
SECOND_A: Trials = {"coarse": [None, 7.125], "confirm": [8.5]}
THIRD_A: Trials = {"refine": [42.0, 43.0]}


def write_study(url: str, name: str, trials: Trials) -> None:
    """A finished study whose stages hold these trials, written through Optuna as the
    runner writes them (finished at once: no runner takes it up)."""
    store = Store(url, create=False)
    spec = load_spec(digits_spec(name, stages=NO_PROBES, resources={}))
    store.open_study(name, spec.model_dump(mode="json"), list(ORDER))
    store.set_status(name, "completed")
    for stage, values in trials.items():
        study = store.optuna_study(name, stage, "maximize", metric="val_accuracy")
        for value in values:
            trial = study.ask()
            trial.suggest_float("lr", 3e-3, 3e-2, log=True)
            trial.set_user_attr("status", "pruned" if value is None else "completed")
            study.tell(trial, value, state=TrialState.PRUNED if value is None else None)


def expected_trials(store: Store, name: str) -> list[tuple[Any, ...]]:
    return [(n, stage, t.number, views.STATE_NAMES[t.state], t.value, t.params)
            for n, stage, t in views.all_trials(store, name)]


def trial_counts(detail: dict[str, Any]) -> dict[str, Any]:
    """Per search stage, its trials by state."""
    return {s["name"]: s["trials"] for s in detail["stages"] if s.get("trials") is not None}


def assert_reads_match_the_store(http: httpx.Client, url: str, names: list[str],
                                 listed: bool = True) -> None:
    """Each study's detail, trial table, trials, trial pages and a figure, and (`listed`)
    the studies list, against a Store of this process built now (caches of its own)."""
    store = Store(url, create=False)
    for name in names:
        want = expected_trials(store, name)
        page = http.get(f"/api/studies/{name}/trials", params={"limit": 500}).json()
        got = [(i["number"], i["stage"], i["stage_number"], i["state"], i["value"], i["params"])
               for i in page["items"]]
        assert (got, page["total"]) == (want, len(want)), name
        detail = http.get(f"/api/studies/{name}").json()
        summary = views.summary(store, store.study(name))
        assert detail["trials"] == summary["trials"], name
        assert trial_counts(detail) == trial_counts(views.detail(store, store.study(name)))
        for n, stage, stage_number, state, value, params in want:
            one = http.get(f"/api/studies/{name}/trials/{n}").json()
            assert (one["stage"], one["state"], one["value"], one["params"]) == \
                (stage, state, value, params), (name, n)
            html = http.get(f"/studies/{name}/trials/{n}").text
            assert f"<dd>{stage} (#{stage_number} in the stage)</dd>" in html, (name, n)
            assert f"<dt>value</dt><dd>{number(value)}</dd>" in html, (name, n)
        assert http.get(f"/api/studies/{name}/trials/{len(want)}").status_code == 404
        history = http.get(f"/api/studies/{name}/plots/refine_history").json()
        drawn = sorted(y for trace in history["data"] if trace.get("mode") == "markers"
                       for y in trace.get("y", []))
        assert drawn == sorted(value for _, stage, _, _, value, _ in want
                               if stage == "refine" and value is not None), name
    if listed:
        records, total = store.list_studies(limit=100)
        listing = http.get("/api/studies").json()
        assert listing["total"] == total
        assert {i["id"]: i["trials"] for i in listing["items"]} == \
            {r.name: views.summary(store, r)["trials"] for r in records}


def read_everything(http: httpx.Client, name: str) -> None:
    """What a dashboard polls: it fills every cache of the service."""
    http.get("/api/studies")
    http.get(f"/api/studies/{name}")
    http.get(f"/api/studies/{name}/trials", params={"sort": "value", "order": "desc"})
    http.get(f"/studies/{name}")
    http.get(f"/api/studies/{name}/plots/refine_history")


def test_reads_after_deletes_and_reused_ids_match_the_store(
        store_url: str, tmp_path: Path, ray_local: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    server = Server(store_url, tmp_path / "data", ray_address=ray_local).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            # a study is read (every cache fills), deleted through the API, and another
            # takes its place: on SQLite it gets the same Optuna ids
            write_study(store_url, "study-a", FIRST_A)
            read_everything(http, "study-a")
            assert_reads_match_the_store(http, store_url, ["study-a"])
            assert http.delete("/api/studies/study-a").status_code == 204
            assert http.get("/api/studies/study-a").status_code == 404
            assert http.get("/api/studies").json()["total"] == 0
            write_study(store_url, "study-b", B)
            assert_reads_match_the_store(http, store_url, ["study-b"])

            # the first name used again, with other stages and values
            read_everything(http, "study-b")
            assert http.delete("/api/studies/study-b").status_code == 204
            write_study(store_url, "study-a", SECOND_A)
            assert_reads_match_the_store(http, store_url, ["study-a"])

            # deleted and written again by another process (`stagetune run --db` on the
            # same store): the study's own reads show the new one at once
            read_everything(http, "study-a")
            Store(store_url, create=False).delete_study("study-a")
            assert http.get("/api/studies/study-a").status_code == 404
            write_study(store_url, "study-a", THIRD_A)
            assert_reads_match_the_store(http, store_url, ["study-a"])
    finally:
        server.stop()
