"""Specs that could not run are refused when they are read, each problem with its field:
an image folder outside the data folder, a budget the plan cannot share among the stages,
an unknown field of an optional section. And a coarse stage whose budget ran out says so,
rather than tell a person to narrow the space."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stagetune.studies.planning.budget import Allowance
from stagetune.studies.planning.plan import make_plan, minimum_budget, needs, shortfalls
from stagetune.studies.search.stages._coarse import none_finished
from stagetune.studies.spec import SpecError, load_spec, stored_spec
from stagetune.workers.data import get_data_settings

BASE: dict[str, Any] = {"name": "refusals", "task": {"dataset": "digits", "model": "convnet"},
                        "space": {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}}}


def problems(spec: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as error:
        load_spec(spec)
    return error.value.problems


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data folder with one image tree (two classes), and a tree outside it."""
    data = tmp_path / "data"
    for cls in ("cats", "dogs"):
        (data / "pets" / cls).mkdir(parents=True)
        (tmp_path / "outside" / cls).mkdir(parents=True)
    (data / "one-class" / "cats").mkdir(parents=True)
    monkeypatch.setenv("STAGETUNE_DATA_DIR", str(data))
    get_data_settings.cache_clear()
    yield data
    get_data_settings.cache_clear()


def image_folder(path: str) -> dict[str, Any]:
    return {**BASE, "task": {"dataset": "image_folder", "model": "convnet",
                             "dataset_options": {"path": path}}}


@pytest.mark.parametrize("path", ["../outside", "/etc", "missing", "", "pets/../../outside"])
def test_an_image_folder_outside_the_data_folder_or_missing_is_refused(data_dir: Path, path: str
                                                                       ) -> None:
    (found,) = problems(image_folder(path))
    where, message = found
    assert where == "task.dataset_options.path"
    assert message == (f"image_folder: no folder {path!r} in the data folder; give the path of a "
                       "folder inside the data folder (STAGETUNE_DATA_DIR), relative to it, "
                       "with one subfolder per class")
    assert str(data_dir) not in message and str(data_dir.parent) not in message


def test_an_image_folder_inside_the_data_folder_is_accepted(data_dir: Path) -> None:
    assert load_spec(image_folder("pets")).task.dataset_options == {"path": "pets"}
    (found,) = problems(image_folder("one-class"))
    assert found == ("task.dataset_options.path",
                     "image_folder: 'one-class' needs at least two class subfolders")


def test_a_budget_below_the_plans_minimum_names_it() -> None:
    (found,) = problems({**BASE, "budget": {"epochs": 5}})
    least = minimum_budget(load_spec({**BASE, "budget": {"epochs": 1000}}))
    assert found[0] == "budget.epochs"
    assert f"give budget.epochs at least {least}," in found[1]
    assert "coarse needs 3.33 (2 configurations over rungs 1, 3) and would get 0.912" in found[1]
    assert "refine needs 10 (one full trial of 10 epochs)" in found[1]
    # the minimum is the plan's own: at it every stage gets what it needs, one less does not
    spec = load_spec({**BASE, "budget": {"epochs": least}})
    plan = make_plan(spec)
    assert all(plan[stage].epochs >= need for stage, (need, _) in needs(spec).items())
    assert shortfalls(spec, least - 1) and not shortfalls(spec, least)
    with pytest.raises(SpecError, match="budget.epochs"):
        load_spec({**BASE, "budget": {"epochs": least - 1}})


def test_the_minimum_follows_the_stages() -> None:
    short = {**BASE, "stages": {"refine": {"epochs": 3}, "confirm": {"enabled": False}}}
    assert minimum_budget(load_spec({**short, "budget": {"epochs": 100}})) < \
        minimum_budget(load_spec({**BASE, "budget": {"epochs": 100}}))
    load_spec({**short, "budget": {"epochs": 10}})  # enough for 3-epoch trials
    load_spec({**BASE, "budget": {"seconds": 5}})  # seconds depend on the machine: not checked


def test_an_unknown_field_of_an_optional_section_lists_the_allowed_ones() -> None:
    assert problems({**BASE, "budget": {"epochs": 50, "trials": 3}}) == [
        ("budget.trials", "unknown field; allowed here: epochs, seconds")]


def test_coarse_says_the_budget_ran_out_rather_than_blame_the_space() -> None:
    # a spec stored before submit checked budgets (it skips load_spec's checks): coarse's
    # allowance could not pay for one epoch, so no trial started
    spec = stored_spec({**BASE, "budget": {"epochs": 5}})
    starved = none_finished(spec, [], Allowance(0.9, None), [1, 3], total=0)
    assert starved.startswith("The budget ran out before any coarse trial reached the last "
                              "rung (3 epochs; 0 started, 0 cut short by the budget): raise "
                              f"budget.epochs (this spec's stages need at least "
                              f"{minimum_budget(spec)} epochs)")
    assert "narrow the space" not in starved
    out_of_time = none_finished(stored_spec({**BASE, "budget": {"seconds": 5}}), [],
                                Allowance(None, 0.0), [1, 3], total=2)
    assert "raise budget.seconds," in out_of_time
    # trials that ran, with budget left, and all failed: the space is what to look at
    bad_space = none_finished(spec, [], Allowance(40.0, None), [1, 3], total=6)
    assert bad_space.startswith("All 6 coarse trials were pruned, failed or diverged") and \
        "narrow the space (a smaller lr range first)" in bad_space
