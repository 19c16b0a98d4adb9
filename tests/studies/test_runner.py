"""Whole staged studies on real data, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from studies.runner import Runner
from studies.spec import load_spec
from studies.store import Store

EXAMPLES = Path(__file__).parents[2] / "examples"


def spec_from_example(example: str, **changes: Any) -> Any:
    data = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    data = copy.deepcopy(data)
    for key, value in changes.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return load_spec(data)


def test_a_full_staged_study_on_digits_reaches_98_percent(store_url: str) -> None:
    # the example, on a smaller budget so that the suite stays short
    spec = spec_from_example("digits", **{
        "stages.coarse": {"trials": 10, "epochs": 2},
        "stages.refine": {"trials": 8, "epochs": 8, "warm_start": 3},
        "stages.confirm": {"top": 2, "seeds": 2}})
    store = Store(store_url)
    report = Runner(spec, store).run()
    assert report.status == "completed", report.message
    assert [s["name"] for s in report.stages] == ["baseline", "init_check", "overfit",
                                                  "lr_probe", "coarse", "refine", "confirm"]
    assert all(s["verdict"] in ("passed", "warned") for s in report.stages), report.stages
    assert report.best is not None and report.best["value"] >= 0.98
    assert report.baseline is not None and report.best["value"] > report.baseline
    assert report.compute["epochs"] > 0 and report.compute["seconds"] > 0
    # every stage is its own Optuna study in the store, named <study>:<stage>
    names = {s.study_name for s in optuna.get_all_study_summaries(store.optuna_storage)}
    assert {"digits-convnet:coarse", "digits-convnet:refine", "digits-convnet:confirm"} <= names
    coarse = optuna.load_study(study_name="digits-convnet:coarse", storage=store.optuna_storage)
    assert len(coarse.trials) == spec.stages.coarse.trials
    assert store.curves("digits-convnet", "refine")  # per-epoch metrics were recorded
    # a second run on the same store finds the study done and changes nothing
    again = Runner(spec, store).run()
    assert again.best == report.best


def test_logits_scaled_by_50_stop_the_study_at_init_check(tmp_path: Path) -> None:
    spec = spec_from_example("digits", name="scaled", **{"task.model": "logits_x50_convnet"})
    report = Runner(spec, Store(f"sqlite:///{tmp_path / 's.db'}")).run()
    assert report.status == "stopped"
    verdicts = {s["name"]: s["verdict"] for s in report.stages}
    assert verdicts["init_check"] == "failed" and verdicts["overfit"] is None
    assert "too high" in report.message and report.message.startswith("init_check:")


def test_a_model_that_cannot_learn_stops_at_overfit(tmp_path: Path) -> None:
    spec = spec_from_example("digits", name="frozen", **{"task.model": "frozen_convnet"})
    report = Runner(spec, Store(f"sqlite:///{tmp_path / 'f.db'}")).run()
    assert report.status == "stopped"
    verdicts = {s["name"]: s["verdict"] for s in report.stages}
    assert verdicts["overfit"] == "failed" and verdicts["coarse"] is None
    assert "cannot" in report.message


def test_continue_on_failure_goes_past_a_failed_gate(tmp_path: Path) -> None:
    spec = spec_from_example("digits", name="go-on", **{
        "task.model": "logits_x50_convnet", "stages.continue_on_failure": True,
        "stages.coarse": {"trials": 2, "epochs": 1}, "stages.refine": {"enabled": False},
        "stages.confirm": {"enabled": False}})
    report = Runner(spec, Store(f"sqlite:///{tmp_path / 'g.db'}")).run()
    verdicts = {s["name"]: s["verdict"] for s in report.stages}
    assert verdicts["init_check"] == "failed"
    assert verdicts["coarse"] in ("passed", "warned") and verdicts["refine"] == "skipped"
    assert report.status == "completed"


def test_a_spec_that_differs_from_the_stored_one_is_refused(tmp_path: Path) -> None:
    from studies.errors import StudyConflictError

    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    quick = {"stages.coarse": {"trials": 1, "epochs": 1}, "stages.refine": {"enabled": False},
             "stages.confirm": {"enabled": False}}
    Runner(spec_from_example("digits", **quick), store).run()
    with pytest.raises(StudyConflictError, match="different spec"):
        Runner(spec_from_example("digits", seed=1, **quick), store).run()
