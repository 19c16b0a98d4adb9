"""A budgeted study on real digits, run in-process: it never spends more than its budget,
records planned against spent, continues coarse survivors from their checkpoints, and
draws conditional parameters only when their condition holds."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from stagetune.studies.planning.plan import make_plan
from stagetune.studies.run.runner import Runner, StudyReport
from stagetune.studies.spec import SpecError, load_spec
from stagetune.studies.spec.space import suggest
from stagetune.studies.store import Store

BUDGET = 40
SPEC: dict[str, Any] = {
    "name": "budget-40", "task": {"dataset": "digits", "model": "mlp"},
    "space": {"optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
              "momentum": {"type": "float", "low": 0.5, "high": 0.95,
                           "when": {"optimizer": ["sgd"]}},
              "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
              "width": {"type": "int", "low": 16, "high": 96, "log": True}},
    "stages": {"refine": {"epochs": 6}},
    "budget": {"epochs": BUDGET},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, StudyReport]:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('budget') / 'store.db'}")
    report = Runner(load_spec(SPEC), store).run()
    assert report.status == "completed", report.message
    return store, report


def counted_epochs(store: Store, name: str) -> float:
    """Epochs spent, counted from the store the way the benchmark counts them: probes by
    their epoch equivalents, every recorded epoch of every trial, and a diverged trial's
    last epoch."""
    record = store.study(name)
    total = sum(s.epochs for s in record.stages if s.name in ("init_check", "overfit", "lr_probe"))
    for stage in ("coarse", "refine", "confirm"):
        curves = store.curves(name, stage)
        total += sum(len(c) for c in curves.values())
        total += sum(t.user_attrs.get("status") == "diverged" for t in store.trials(name, stage))
    return total


@pytest.mark.slow
def test_a_study_with_a_budget_of_40_epochs_never_spends_more(study: tuple[Store, StudyReport]
                                                              ) -> None:
    store, report = study
    assert report.compute["epochs"] <= BUDGET
    assert counted_epochs(store, "budget-40") <= BUDGET + 1e-9
    assert counted_epochs(store, "budget-40") == pytest.approx(report.compute["epochs"], abs=1e-3)
    assert report.compute["epochs"] > 0.8 * BUDGET  # and it does use what it was given


@pytest.mark.slow
def test_planned_and_spent_are_recorded_per_stage(study: tuple[Store, StudyReport]) -> None:
    _, report = study
    stages = {s["name"]: s for s in report.stages}
    plan = make_plan(load_spec(SPEC))
    assert sum(p.epochs or 0 for p in plan.values()) == pytest.approx(BUDGET)
    for name in ("init_check", "overfit", "lr_probe", "coarse", "refine", "confirm"):
        assert stages[name]["planned"]["epochs"] == pytest.approx(plan[name].epochs)
        assert stages[name]["spent"]["epochs"] >= 0
    assert stages["confirm"]["spent"]["epochs"] <= 0.15 * BUDGET
    assert stages["coarse"]["planned"]["sizes"]["rungs"] == [1, 2]


@pytest.mark.slow
def test_a_coarse_survivor_continues_from_its_checkpoint(study: tuple[Store, StudyReport]) -> None:
    store, _ = study
    coarse = {t.number: t for t in store.trials("budget-40", "coarse")}
    continued = [t for t in store.trials("budget-40", "refine") if "continues" in t.user_attrs]
    assert continued, "refine continued no coarse survivor"
    coarse_curves = store.curves("budget-40", "coarse")
    for trial in continued:
        source = coarse[trial.user_attrs["continues"]]
        before = coarse_curves[source.number]
        after = store.curves_of("budget-40", "refine", trial.number)
        last = int(before[-1]["epoch"])
        assert trial.user_attrs["start"] == last == source.user_attrs["checkpoint"]["epoch"]
        # epoch numbers pick up after the checkpoint, and training did not restart: the
        # first continued epoch's training loss is below a fresh model's first epoch
        assert [int(m["epoch"]) for m in after] == list(range(last + 1, last + 1 + len(after)))
        assert after[0]["train_loss"] < before[0]["train_loss"]
        assert trial.user_attrs["started_after"] == last
        # Optuna sees the whole curve, coarse epochs first
        assert sorted(trial.intermediate_values)[: len(before)] == list(range(1, last + 1))


@pytest.mark.slow
def test_refine_is_told_what_coarse_saw(study: tuple[Store, StudyReport]) -> None:
    store, _ = study
    refine = optuna.load_study(study_name="budget-40:refine", storage=store.optuna_storage)
    told = [t for t in refine.get_trials(deepcopy=False) if t.user_attrs.get("from") == "coarse"]
    continued = {t.user_attrs["continues"] for t in refine.get_trials(deepcopy=False)
                 if "continues" in t.user_attrs}
    coarse = store.trials("budget-40", "coarse")
    assert len(told) + len(continued) == len([t for t in coarse if t.intermediate_values])
    assert all(t.state == TrialState.PRUNED and "completed_rung_0" in t.system_attrs
               for t in told)


def test_conditional_parameters_are_drawn_only_when_their_condition_holds(
        study: tuple[Store, StudyReport]) -> None:
    store, _ = study
    trials = [t for stage in ("coarse", "refine") for t in store.trials("budget-40", stage)]
    assert {t.params["optimizer"] for t in trials} == {"sgd", "adamw"}
    for t in trials:
        assert ("momentum" in t.params) == (t.params["optimizer"] == "sgd"), t.params
        # lr is split per optimizer family, each with the probe's range for that family
        assert [n for n in t.params if n.startswith("lr")] == [
            "lr[optimizer=sgd]" if t.params["optimizer"] == "sgd" else "lr[optimizer=adamw]"]


def test_conditional_sampling_on_its_own() -> None:
    space = load_spec(SPEC).space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        params = suggest(trial, space)
        seen.add(params["optimizer"])
        assert ("momentum" in params) == (params["optimizer"] == "sgd")
        study.tell(trial, 0.0)
    assert seen == {"sgd", "adamw"}


@pytest.mark.parametrize("space, where, what", [
    ({"momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimiser": "sgd"}}},
     "space.momentum.when", "'optimiser' is not an unconditional categorical parameter"),
    ({"optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
      "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": "sgdd"}}},
     "space.momentum.when.optimizer", "'sgdd' is not one of optimizer's choices (sgd, adamw)"),
    ({"optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
      "lr": [{"type": "float", "low": 1e-3, "high": 1, "when": {"optimizer": ["sgd"]}},
             {"type": "float", "low": 1e-5, "high": 1e-2, "when": {"optimizer": ["sgd", "adamw"]}}]},
     "space.lr", "variants 0 and 1 both apply (optimizer=sgd)"),
    ({"optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
      "lr": [{"type": "float", "low": 1e-3, "high": 1}, {"type": "float", "low": 1e-5, "high": 1e-2}]},
     "space.lr.0", "each variant of a parameter needs a 'when' condition"),
    ({"lr": {"type": "float", "low": 1e-3, "high": math.inf}}, "space.lr.high",
     "inf is not allowed; give a finite number"),
])
def test_bad_conditions_name_their_field(space: dict[str, Any], where: str, what: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec({**SPEC, "space": space})
    assert any(w == where and what in m for w, m in info.value.problems), info.value.problems


def test_a_budget_needs_epochs_or_seconds() -> None:
    with pytest.raises(SpecError, match="budget: give epochs, seconds or both"):
        load_spec({**SPEC, "budget": {}})


def test_a_budget_in_seconds_only_plans_from_the_sections() -> None:
    # it once failed the study: confirm's runs were counted as floor(inf / epochs)
    plan = make_plan(load_spec({**SPEC, "budget": {"seconds": 600}}))
    assert plan["confirm"].sizes == {"top": 3, "seeds": 3, "epochs": 6}
    assert plan["confirm"].seconds == pytest.approx(90) and plan["confirm"].epochs is None
    assert plan["coarse"].seconds == pytest.approx(600 * 0.73 * 0.25)


def test_the_stored_spec_plans_as_the_written_one() -> None:
    """The store keeps what the user wrote: defaults read back from it would count as the
    user's own sizes and override the planner (32 coarse trials and 3 x 3 confirm runs
    where the plan gives 15 and 1 x 2 for this budget)."""
    from stagetune.studies.spec import StudySpec

    written = load_spec({"name": "p", "task": {"dataset": "digits", "model": "mlp"},
                         "budget": {"epochs": 146}})
    stored = StudySpec.model_validate(written.to_store())
    assert "stages" not in written.to_store()
    for stage in ("coarse", "refine", "confirm"):
        assert make_plan(stored)[stage] == make_plan(written)[stage]
    assert make_plan(stored)["coarse"].sizes["trials"] < written.stages.coarse.trials


@pytest.mark.slow
def test_a_trial_the_budget_cut_short_says_so(study: tuple[Store, StudyReport]) -> None:
    """A refine trial that ran fewer epochs than a full one, not pruned, did so because the
    budget granted it no more: its status says so, not `completed`."""
    store, _ = study
    short = [t for t in store.trials("budget-40", "refine")
             if t.state == TrialState.COMPLETE and t.intermediate_values
             and max(t.intermediate_values) < SPEC["stages"]["refine"]["epochs"]]
    assert short, "the 40-epoch budget cuts refine's last trial short"
    assert {t.user_attrs.get("status") for t in short} == {"cut_by_budget"}


def test_a_warm_started_study_gives_coarse_a_smaller_share() -> None:
    """Refine is told the earlier study's trials: coarse gets 10% of what the probes and
    confirm leave, not 25% (studies.planning.plan)."""
    written = {**SPEC, "budget": {"epochs": 100}}
    cold = make_plan(load_spec(written, worker_checks=False))
    warm = make_plan(load_spec({**written, "warm_start_from": "earlier"}, worker_checks=False))
    rest = (cold["coarse"].epochs or 0) + (cold["refine"].epochs or 0)
    assert cold["coarse"].epochs == pytest.approx(0.25 * rest)
    assert warm["coarse"].epochs == pytest.approx(0.10 * rest)
    assert warm["refine"].epochs == pytest.approx(0.90 * rest)


@pytest.mark.slow
def test_a_tiny_dataset_keeps_the_probes_inside_their_shares(tmp_path: Any) -> None:
    """On 142 training rows an epoch is 3 batches: the LR probe's 10-step sweep would cost
    4.5 epochs per optimizer family, far over its 6% share of 50 epochs. It is skipped
    instead, with the sum, and coarse still gets its share."""
    spec = {"name": "wine-50", "task": {"dataset": "wine", "model": "mlp"},
            "space": {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
                      "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
                      "width": {"type": "int", "low": 8, "high": 64, "log": True}},
            "budget": {"epochs": 50}}
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    report = Runner(load_spec(spec), store).run()
    assert report.status == "completed", report.message
    stages = {s.name: s for s in store.study("wine-50").stages}
    assert stages["lr_probe"].epochs == 0.0 and "Not run" in stages["lr_probe"].message
    plan = make_plan(load_spec(spec))
    for probe in ("overfit", "lr_probe"):
        assert stages[probe].epochs <= plan[probe].epochs + 1e-9  # type: ignore[operator]
    assert len(store.trials("wine-50", "coarse")) >= 2
    assert counted_epochs(store, "wine-50") <= 50 + 1e-9
