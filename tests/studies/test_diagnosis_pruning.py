"""Diagnosis-based pruning in a study: coarse stops hopeless trials within their first
epoch, records them pruned with the reason and the share of the epoch they cost, and
spends less than the same study pruned on accuracy only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from stagetune.studies.reporting import views
from stagetune.studies.run.runner import Runner, StudyReport
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store

# lr far too low for half the draws: those learn nothing in a 2-epoch coarse stage
SPACE = {"lr": {"type": "float", "low": 1e-8, "high": 1e-2, "log": True}}


def study(tmp_path: Path, diagnose: bool) -> tuple[Store, StudyReport]:
    name = "vitals-on" if diagnose else "vitals-off"
    spec = load_spec({
        "name": name, "task": {"dataset": "digits", "model": "mlp"}, "space": SPACE,
        "stages": {"data_check": {"enabled": False}, "baseline": {"enabled": False},
                   "init_check": {"enabled": False}, "overfit": {"enabled": False},
                   "lr_probe": {"enabled": False},
                   "coarse": {"trials": 6, "epochs": 2, "diagnose": diagnose},
                   "refine": {"enabled": False}, "confirm": {"enabled": False}},
        "seed": 0})
    store = Store(f"sqlite:///{tmp_path / f'{name}.db'}")
    return store, Runner(spec, store).run()


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, tuple[Store, StudyReport]]:
    tmp = tmp_path_factory.mktemp("vitals")
    return {flag: study(tmp, flag) for flag in (True, False)}


def coarse_trials(store: Store, name: str) -> list[Any]:
    return store.optuna_study(name, "coarse", "maximize").get_trials(deepcopy=False)


def test_hopeless_trials_are_pruned_with_their_reason_and_their_share_of_an_epoch(
        both: dict[bool, tuple[Store, StudyReport]]) -> None:
    store, _ = both[True]
    hopeless = [t for t in coarse_trials(store, "vitals-on")
                if t.user_attrs.get("status") == "hopeless"]
    assert hopeless, "no trial with lr down to 1e-8 was stopped as hopeless"
    for t in hopeless:
        assert t.state == TrialState.PRUNED
        assert t.user_attrs["message"].startswith("hopeless: ")
        assert 0 < t.user_attrs["epochs"] < 1 or "chance level" in t.user_attrs["message"]
    rows = [views.trial_row(t.number, "coarse", t) for t in hopeless]
    assert all(r["state"] == "pruned" and r["reason"].startswith("hopeless: ") for r in rows)


def test_diagnosis_spends_less_than_accuracy_only_pruning(
        both: dict[bool, tuple[Store, StudyReport]]) -> None:
    on, off = (sum(t.user_attrs.get("epochs", 0) for t in coarse_trials(both[flag][0], name))
               for flag, name in ((True, "vitals-on"), (False, "vitals-off")))
    assert on < off
    store, _ = both[False]
    assert not any(t.user_attrs.get("status") == "hopeless"
                   for t in coarse_trials(store, "vitals-off"))
