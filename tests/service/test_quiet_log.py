"""The service's log carries what a person can act on, not the libraries' remarks: drawing
every figure of a finished demo-like study (examples/digits.yaml's space, with lr split per
optimizer family and a momentum for SGD only) leaves no Optuna importance warning in the
log of a real `stagetune serve`."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.importance import PedAnovaImportanceEvaluator
from optuna.trial import create_trial

from stagetune.studies.reporting.plots import PLOTS, PlotSource, create_plot
from stagetune.studies.reporting.plots._search import ties_top
from stagetune.studies.search.stages import ORDER
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store
from tests.service.server import Server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits.yaml"
STUDY = "quiet-demo"
# The lines Optuna writes for such a study when nothing stops them (checked below).
NOISE = ("have less than 2 trials", "ExperimentalWarning", "importances will be equal",
         "Target and region quantiles", "UserWarning")

DISTS = {"optimizer": CategoricalDistribution(["sgd_nesterov", "adamw"]),
         "lr[optimizer=sgd_nesterov]": FloatDistribution(0.0081, 0.24, log=True),
         "lr[optimizer=adamw]": FloatDistribution(0.0011, 0.11, log=True),
         "momentum": FloatDistribution(0.8, 0.99),
         "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
         "width": IntDistribution(16, 96, log=True)}


def trials(count: int, seed: int) -> list[optuna.trial.FrozenTrial]:
    """Finished trials as the demo's search leaves them: adamw drawn once, so its lr (and
    SGD's momentum's absence) is a regime of one trial."""
    out = []
    for n in range(count):
        optimizer = "adamw" if n == 1 else "sgd_nesterov"
        params: dict[str, Any] = {"optimizer": optimizer,
                                  f"lr[optimizer={optimizer}]": 0.01 * (n + 1) + 0.001 * seed,
                                  "weight_decay": 10 ** -(2 + n % 4), "width": 16 + 11 * n}
        if optimizer == "sgd_nesterov":
            params["momentum"] = 0.8 + 0.03 * n
        out.append(create_trial(params=params, distributions={k: DISTS[k] for k in params},
                                value=0.9 + 0.015 * n - 0.002 * seed,
                                user_attrs={"status": "completed", "epochs": 3}))
    return out


def demo_like_study(store: Store) -> None:
    spec = load_spec(EXAMPLE).model_dump(mode="json")
    spec["name"] = STUDY
    store.open_study(STUDY, spec, list(ORDER))
    for stage in ORDER:
        store.start_stage(STUDY, stage)
        hand_on: dict[str, Any] = {"baseline": 0.969} if stage == "baseline" else {}
        if stage == "lr_probe":
            hand_on = {"lr_ranges": {"sgd": [0.0081, 0.24], "adam": [0.0011, 0.11]}}
        if stage in ("coarse", "refine"):
            study = store.optuna_study(STUDY, stage, "maximize", metric="val_accuracy")
            study.add_trials(trials(6 if stage == "coarse" else 5, seed=ORDER.index(stage)))
            best = study.best_trial
            hand_on = {"best": {"params": best.params, "value": best.value, "stage": stage}}
        store.finish_stage(STUDY, stage, "passed", f"{stage} done", {}, hand_on, 1.0, 1.0)
    store.set_status(STUDY, "completed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
           ) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("quiet-log")
    url = f"sqlite:///{tmp / 'store.db'}"
    demo_like_study(Store(url))
    server = Server(url, tmp / "data", ray_address=request.getfixturevalue("ray_local")).start()
    try:
        yield server
    finally:
        server.stop()


def test_such_a_study_makes_optuna_warn_when_nothing_stops_it() -> None:
    """The premise: PED-ANOVA on these trials warns, so the log test below can fail."""
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials(5, seed=6))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optuna.importance.get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    assert any("have less than 2 trials" in str(w.message) for w in caught), caught


def test_the_importance_figures_warn_of_nothing(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    demo_like_study(store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        for kind in ("refine_importances", "contour"):
            figure = create_plot(kind, PlotSource.load(store, STUDY))
            assert figure.data, f"{kind} drew nothing: {figure.layout.annotations}"
    ranked = create_plot("refine_importances", PlotSource.load(store, STUDY))
    assert "too few trials to rank: lr[optimizer=sgd_nesterov], momentum, lr[optimizer=adamw]" \
        in [a.text for a in ranked.layout.annotations]  # said on the figure, not in the log


def test_refine_trials_tied_at_the_top_get_a_note_not_a_warning() -> None:
    def scored(value: float, x: float) -> optuna.trial.FrozenTrial:
        return create_trial(value=value, params={"x": x},
                            distributions={"x": FloatDistribution(0.0, 10.0)})

    tied = [scored(1.0, float(x)) for x in range(6)]  # every one at accuracy 1.0
    study = optuna.create_study(direction="maximize")
    study.add_trials(tied)
    with warnings.catch_warnings(record=True) as caught:  # the premise: PED-ANOVA warns
        warnings.simplefilter("always")
        optuna.importance.get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    assert any("select the same set of trials" in str(w.message) for w in caught), caught
    assert ties_top(tied, "maximize")
    assert not ties_top([*tied[:5], scored(0.9, 5.0)], "maximize")
    assert not ties_top([*tied[:5], scored(1.1, 5.0)], "minimize")


@pytest.mark.slow
def test_drawing_every_figure_leaves_no_library_warning_in_the_log(server: Server) -> None:
    kinds = [k for k, kind in PLOTS.items() if not kind.per_trial and kind.only_if is None]
    with httpx.Client(base_url=server.url, timeout=120) as http, ThreadPoolExecutor(4) as pool:
        # in parallel, as the study page asks for them
        answers = list(pool.map(lambda k: http.get(f"/api/studies/{STUDY}/plots/{k}"), kinds))
    assert [(k, a.status_code) for k, a in zip(kinds, answers, strict=True)
            if a.status_code != 200] == []
    assert answers[kinds.index("refine_importances")].json()["data"]  # computed, not a note
    log = server.log.read_text()
    noisy = [line for line in log.splitlines() if any(n in line for n in NOISE)]
    assert noisy == [], "\n".join(noisy)
