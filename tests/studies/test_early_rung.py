"""Coarse's early rung (studies.search.stages._early): its first configurations run before
or beside the probes, on the declared space, and a failed probe still stops the study.
Here on one slot (the in-process executor); beside the probes on Ray in
tests/studies/test_ray_early_rung.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from stagetune.studies.planning.plan import make_plan
from stagetune.studies.run.runner import Runner
from stagetune.studies.search.stages import StageContext
from stagetune.studies.search.stages._coarse import EARLY
from stagetune.studies.search.stages._early import MIN_FAILED, early_count
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store


def digits_mlp(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "task": {"dataset": "digits", "model": "mlp"},
            "space": {"lr": {"type": "float", "low": 1e-4, "high": 3.0, "log": True},
                      "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
                      "width": {"type": "int", "low": 16, "high": 64, "log": True}},
            "budget": {"epochs": 60}, "stages": {"refine": {"epochs": 4}}, **extra}


def at(moment: datetime | None) -> float:
    """A store time (UTC, naive where SQLite dropped the zone) as a timestamp; Optuna's
    own times are local and naive, which `datetime.timestamp` reads right."""
    assert moment is not None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def count_for(spec: dict[str, Any], tmp_path: Path) -> int:
    parsed = load_spec(spec)
    store = Store(f"sqlite:///{tmp_path / 'count.db'}")
    return early_count(StageContext(parsed, store, None, "val_accuracy", "maximize",  # type: ignore[arg-type]
                                    plan=make_plan(parsed)))


def test_the_early_rung_holds_half_of_coarse_at_most_and_no_more_than_the_probes_cost(
        tmp_path: Path) -> None:
    spec = digits_mlp("count")
    plan = make_plan(load_spec(spec))
    probes = plan["overfit"].epochs + plan["lr_probe"].epochs  # type: ignore[operator]
    assert count_for(spec, tmp_path) == min(plan["coarse"].sizes["trials"] // 2, int(probes))
    # the probes' cost bounds it where coarse is large
    big = digits_mlp("big", stages={"refine": {"epochs": 4}, "coarse": {"trials": 200}})
    assert count_for(big, tmp_path) == int(probes) < 100
    # none where it has nothing to run beside, or no epochs to be sized by, or is told not to
    off = {"enabled": False}
    assert count_for(digits_mlp("np", stages={"overfit": off, "lr_probe": off}), tmp_path) == 0
    assert count_for(digits_mlp("s", budget={"seconds": 600}), tmp_path) == 0
    assert count_for(digits_mlp("no", stages={"coarse": {"early": False}}), tmp_path) == 0
    assert count_for(digits_mlp("w", warm_start_from="earlier"), tmp_path) == 0


def test_a_failed_overfit_still_stops_the_study_after_the_early_rung(tmp_path: Path) -> None:
    # lr fixed at 1e-7: every step is too small to move the loss, so overfit fails its gate
    # (init_check, which takes no step, passes); on one slot the early rung ran first
    spec = digits_mlp("tiny-lr", fixed={"lr": 1e-7},
                      space={"width": {"type": "int", "low": 16, "high": 64, "log": True}})
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    report = Runner(load_spec(spec), store).run()

    assert report.status == "stopped" and report.message.startswith("overfit:"), report.message
    verdicts = {s["name"]: s["verdict"] for s in report.stages}
    assert verdicts["overfit"] == "failed" and verdicts["lr_probe"] is None
    assert verdicts["coarse"] == "skipped" and verdicts["refine"] is None
    stages = {s.name: s for s in store.study("tiny-lr").stages}
    assert "stopped when overfit failed" in stages["coarse"].message

    # every one stays at chance level: after two, the declared space is judged to fail,
    # and the rest would have waited for the probes' ranges
    trials = store.trials("tiny-lr", "coarse")
    assert len(trials) == MIN_FAILED < count_for(spec, tmp_path)
    assert {t.user_attrs["status"] for t in trials} == {"hopeless"}
    assert all(t.user_attrs.get(EARLY) for t in trials)
    assert all(t.state != TrialState.RUNNING for t in trials)
    assert all(t.datetime_complete is not None and t.datetime_complete.timestamp()
               <= at(stages["overfit"].started_at) for t in trials)
    # what the early trials spent is coarse's, and counted in the study's compute
    charged = sum(t.user_attrs["epochs"] for t in trials)
    assert charged > 0 and stages["coarse"].epochs == pytest.approx(charged)
    assert report.compute["epochs"] == pytest.approx(sum(s.epochs for s in stages.values()),
                                                     abs=1e-3)


@pytest.mark.slow
def test_the_configurations_after_the_probes_use_their_lr_ranges(tmp_path: Path) -> None:
    spec = digits_mlp("ranges")
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    report = Runner(load_spec(spec), store).run()
    assert report.status == "completed", report.message
    assert report.compute["epochs"] <= 60 + 1e-9

    stages = {s.name: s for s in store.study("ranges").stages}
    ranges = stages["lr_probe"].hand_on["lr_ranges"]
    assert set(ranges) == {"sgd", "adam"}
    trials = sorted(store.trials("ranges", "coarse"), key=lambda t: t.number)
    count = count_for(spec, tmp_path)
    early = [t for t in trials if t.user_attrs.get(EARLY)]
    assert [t.number for t in early] == list(range(count))  # the first ones, all of them
    overfit_started, lr_done = at(stages["overfit"].started_at), at(stages["lr_probe"].finished_at)
    assert all(t.datetime_start.timestamp() <= overfit_started for t in early)  # type: ignore[union-attr]
    later = trials[count:]
    assert later and all(t.datetime_start.timestamp() >= lr_done for t in later)  # type: ignore[union-attr]
    for trial in later:  # drawn inside the probe's range for the trial's optimizer family
        family = "sgd" if trial.params["optimizer"] == "sgd" else "adam"
        (lr,) = [v for k, v in trial.params.items() if k.startswith("lr")]
        low, high = ranges[family]
        assert max(low, 1e-4) * (1 - 1e-9) <= lr <= min(high, 3.0) * (1 + 1e-9)
