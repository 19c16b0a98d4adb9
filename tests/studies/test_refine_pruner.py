"""Refine's pruner cuts a trial only in the first half of its epochs: ASHA's rungs for
10-epoch trials fall at 1, 3 and 9, and a cut at 9 saves one epoch of ten."""

from __future__ import annotations

import optuna
import pytest

from stagetune.studies.search.stages._refine import _pruner


def _bad_trial_at(pruner: optuna.pruners.BasePruner, step: int) -> bool:
    """Whether a trial worse than every earlier one is pruned at `step`."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # a fixed name: Hyperband assigns a trial's bracket by hashing it with the study's
    study = optuna.create_study(study_name="pruner", direction="maximize", pruner=pruner)
    for _ in range(6):  # good trials that reached every rung
        good = study.ask()
        for epoch in range(1, 11):
            good.report(0.9, epoch)
            good.should_prune()
        study.tell(good, 0.9)
    bad = study.ask()
    for epoch in range(1, step + 1):
        bad.report(0.1, epoch)
    return bad.should_prune()


@pytest.mark.parametrize("kind", ["asha", "hyperband", "median"])
def test_the_pruner_answers_in_the_first_half_of_a_trial_only(kind: str) -> None:
    wrapped = _pruner(kind, 10, 3)
    base = wrapped.base  # type: ignore[attr-defined]
    assert _bad_trial_at(wrapped, 3) == _bad_trial_at(base, 3)
    assert not _bad_trial_at(wrapped, 9)


@pytest.mark.parametrize("kind", ["asha", "median"])
def test_a_bad_trial_is_cut_early_where_optuna_would_also_cut_it_late(kind: str) -> None:
    assert _bad_trial_at(_pruner(kind, 10, 3), 3)
    assert _bad_trial_at(_pruner(kind, 10, 3).base, 9)  # type: ignore[attr-defined]
