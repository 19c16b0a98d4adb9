"""Every plot kind, drawn from a real finished digits study (run in-process), from a study
that has not run, and from 10,000 trials: figures stay bounded on the server."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import optuna
import plotly.io
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from stagetune.service.web import render_report
from stagetune.studies.errors import StudyNotFoundError
from stagetune.studies.reporting.plots import PLOTS, PlotSource, UnknownPlotError, create_plot, kinds_for
from stagetune.studies.reporting.plots._sampling import FIGURE_TRIALS, as_study, record_setters, sample_trials
from stagetune.studies.run.runner import Runner
from stagetune.studies.search.stages import ORDER
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store

# those every study shows (a front is drawn for a study of several objectives only:
# tests/service/test_multi_objective.py)
STUDY_KINDS = [k for k, kind in PLOTS.items() if not kind.per_trial and kind.only_if is None]


def small_digits_spec(name: str) -> Any:
    return load_spec({
        "name": name, "task": {"dataset": "digits", "model": "convnet"},
        "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                  "width": {"type": "int", "low": 8, "high": 24},
                  "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]}},
        "stages": {"overfit": {"steps": 100}, "lr_probe": {"iterations": 40},
                   "coarse": {"trials": 6, "epochs": 1},
                   "refine": {"trials": 4, "epochs": 3, "warm_start": 2},
                   "confirm": {"top": 2, "seeds": 2, "epochs": 3}}})


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> PlotSource:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('plots') / 'store.db'}")
    report = Runner(small_digits_spec("plots-digits"), store).run()
    assert report.status == "completed", report.message
    return PlotSource.load(store, "plots-digits")


def _points(figure: Any) -> int:
    """The data points a figure ships: x (or y, or z cells) per trace, and one value per
    trial on each axis of parallel coordinates."""
    total = 0
    for trace in figure.data:
        if getattr(trace, "dimensions", None):
            total += sum(len(d.values) for d in trace.dimensions)
            continue
        values = next((v for v in (getattr(trace, k, None) for k in ("x", "y", "z"))
                       if v is not None), ())
        total += len(values)
    return total


@pytest.mark.slow
@pytest.mark.parametrize("kind", STUDY_KINDS)
def test_every_plot_kind_draws_a_finished_study(finished: PlotSource, kind: str) -> None:
    figure = create_plot(kind, finished)
    assert _points(figure) > 0, f"{kind} drew nothing: {figure.layout.annotations}"
    assert figure.layout.title.text, f"{kind} has no title"
    again = plotly.io.from_json(figure.to_json())  # what the API ships parses as a figure
    assert len(again.data) == len(figure.data)


@pytest.mark.slow
def test_figures_show_what_the_stages_found(finished: PlotSource) -> None:
    lr = create_plot("lr_probe", finished)
    suggested = finished.stage("lr_probe").figures["suggested_lr"]  # type: ignore[union-attr]
    assert lr.layout.xaxis.type == "log"
    assert any(s.x0 == suggested for s in lr.layout.shapes)  # the suggestion is marked
    curves = create_plot("learning_curves", finished)
    names = {t.name for t in curves.data}
    completed = [t for t in finished.trials("refine") if t.state == TrialState.COMPLETE]
    assert len(names) == len(completed)  # each top trial once in the legend
    assert any("baseline" in (a.text or "") for a in curves.layout.annotations)
    spread = create_plot("confirm_spread", finished)
    assert sum(len(t.y) for t in spread.data) == 4  # 2 configurations x 2 seeds
    cam = create_plot("gradcam", finished)
    assert len(cam.data) == 16  # 8 validation images, each image and its heatmap


@pytest.mark.slow
def test_the_trial_plot_draws_one_trials_curves(finished: PlotSource) -> None:
    coarse, refine = finished.trials("coarse"), finished.trials("refine")
    fresh = next(t for t in refine if "continues" not in t.user_attrs)  # one of its own
    figure = create_plot("trial", finished, number=len(coarse) + refine.index(fresh))
    drawn = {t.name: list(t.x) for t in figure.data}
    assert {"train_loss", "val_loss", "val_accuracy", "lr"} <= set(drawn)
    assert drawn["val_loss"] == list(range(1, fresh.user_attrs["epochs"] + 1))
    continued = next(t for t in refine if "continues" in t.user_attrs)  # from epoch 1 of coarse
    figure = create_plot("trial", finished, number=len(coarse) + refine.index(continued))
    assert [list(t.x) for t in figure.data if t.name == "val_loss"] == [[2, 3]]
    with pytest.raises(StudyNotFoundError, match="no trial 99"):
        create_plot("trial", finished, number=99)


@pytest.mark.slow
def test_an_unknown_kind_lists_the_known_ones(finished: PlotSource) -> None:
    with pytest.raises(UnknownPlotError) as error:
        create_plot("parallel", finished)
    assert "unknown plot kind 'parallel'" in str(error.value)
    assert all(kind in str(error.value) for kind in PLOTS)


@pytest.mark.parametrize("kind", STUDY_KINDS)
def test_a_study_that_has_not_run_says_so(tmp_path: Path, kind: str) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    spec = small_digits_spec("not-run")
    store.open_study(spec.name, spec.model_dump(mode="json"), list(ORDER))
    figure = create_plot(kind, PlotSource.load(store, "not-run"))
    assert _points(figure) == 0
    assert re.search(r"(?i)\bnot\b|\bno\b|needs?\b|comes", figure.layout.annotations[0].text)


def test_a_study_of_one_objective_shows_no_front() -> None:
    single = small_digits_spec("single").to_store()
    several = {**single, "task": {**single["task"], "objectives": ["val_accuracy", "params"]}}
    assert "pareto_front" not in {k.name for k in kinds_for(single)}
    assert "pareto_front" in {k.name for k in kinds_for(several)}


def test_a_front_not_drawn_yet_says_so(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    spec = small_digits_spec("not-run").model_dump(mode="json")
    spec["task"]["objectives"] = ["val_accuracy", "params"]
    store.open_study("not-run", spec, list(ORDER))
    figure = create_plot("pareto_front", PlotSource.load(store, "not-run"))
    assert _points(figure) == 0 and "comes with the first" in figure.layout.annotations[0].text


def _trials(n: int) -> list[optuna.trial.FrozenTrial]:
    """n finished trials of a noisy objective, a tenth pruned, with 5 epochs each."""
    import random

    rng, out = random.Random(1), []
    for number in range(n):
        x = rng.uniform(0, 1)
        value = 1 - (x - 0.3) ** 2 + rng.gauss(0, 0.05)
        pruned = number % 10 == 9
        trial = create_trial(params={"x": x}, distributions={"x": FloatDistribution(0, 1)},
                             value=None if pruned else value,
                             state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
                             intermediate_values={e: value * e / 5 for e in range(1, 6)})
        trial.number = number
        out.append(trial)
    return out


def test_ten_thousand_trials_are_sampled_without_changing_the_best_so_far_line() -> None:
    trials = _trials(10_000)
    kept = sample_trials(trials, "maximize")
    assert len(kept) <= FIGURE_TRIALS
    assert {t.number for t in record_setters(trials, "maximize")} <= {t.number for t in kept}
    best = max(t.value for t in trials if t.value is not None)
    assert max(t.value for t in kept if t.value is not None) == best
    assert any(t.state == TrialState.PRUNED for t in kept)  # failures keep their share
    figure = optuna.visualization.plot_optimization_history(as_study(kept, "maximize"))
    best_line = next(t for t in figure.data if t.name == "Best Value")
    assert math.isclose(max(best_line.y), best)
    history = optuna.visualization.plot_intermediate_values(as_study(kept, "maximize"))
    assert sum(len(t.x) for t in history.data) <= FIGURE_TRIALS * 5


@pytest.mark.slow
def test_the_report_is_one_self_contained_file(finished: PlotSource) -> None:
    html = render_report(finished.store, "plots-digits")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(?!data:)", html), \
        "the report loads a file from elsewhere"
    for kind in STUDY_KINDS:
        holder = re.search(rf'<script type="application/json" id="figure-{kind}">(.*?)</script>',
                           html, re.S)
        assert holder, kind
        assert json.loads(holder.group(1).replace("<\\/", "</"))["data"], kind
    assert "Plotly" in html and len(html) > 3_000_000  # plotly.js itself is inside
