"""CMA-ES as refine's sampler (`stages.refine.sampler: cmaes`), warm-started from what
coarse's trials scored at their first rung, on real digits in-process."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from stagetune.studies.run.runner import Runner
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store

pytestmark = pytest.mark.slow  # a whole study: some 30 s

SPEC = {
    "name": "cma", "task": {"dataset": "digits", "model": "mlp"},
    "space": {"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
              "width": {"type": "int", "low": 8, "high": 64, "log": True},
              "dropout": {"type": "float", "low": 0.0, "high": 0.5}},
    "fixed": {"optimizer": "adamw"},
    "stages": {"data_check": {"enabled": False}, "init_check": {"enabled": False},
               "overfit": {"enabled": False}, "lr_probe": {"enabled": False},
               "coarse": {"trials": 12, "epochs": 2}, "confirm": {"enabled": False},
               "refine": {"sampler": "cmaes", "trials": 8, "epochs": 4, "warm_start": 0,
                          "pruner": "none"}},
}


def test_cma_es_refines_from_coarse_and_beats_the_baseline(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    report = Runner(load_spec(SPEC), store).run()
    assert report.status == "completed", report.message
    own = [t for t in store.trials("cma", "refine") if t.user_attrs.get("from") != "coarse"]
    assert len(own) == 8
    assert {t.user_attrs["drawn_from"] for t in own} == {
        "CMA-ES, warm-started from coarse's first rung"}
    # CMA-ES proposed them (its generations), not the independent sampler
    assert all(any(k.startswith("cma:") for k in t.system_attrs) for t in own)
    completed = [t for t in own if t.state == optuna.trial.TrialState.COMPLETE]
    assert completed and max(t.value for t in completed) > 0.8  # type: ignore[operator]
    # the warm start centres CMA-ES on coarse's best at its first rung, where a cold one
    # starts at the declared ranges' centre: its first proposal lies nearer the former
    best = max((t for t in store.trials("cma", "coarse") if 1 in t.intermediate_values),
               key=lambda t: t.intermediate_values[1]).params
    first = own[0].params
    centre = {"lr": math.sqrt(1e-4 * 0.3), "width": math.sqrt(8 * 64)}  # both log ranges
    for knob in centre:
        def far(value: float, knob: str = knob) -> float:
            return abs(math.log(value) - math.log(best[knob]))
        assert far(first[knob]) < far(centre[knob]), (knob, first, best)
