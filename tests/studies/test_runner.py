"""Whole staged studies on real data, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

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
