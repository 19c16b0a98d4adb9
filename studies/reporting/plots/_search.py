"""The search stages' figures. Those Optuna draws come from `optuna.visualization`, given
an in-memory study of at most FIGURE_TRIALS trials chosen on the server."""

from __future__ import annotations

import math
import random
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial

from stagetune.studies.reporting.numbers import sig
from stagetune.studies.reporting.plots._registry import note, register_plot
from stagetune.studies.reporting.plots._sampling import (
    as_study,
    best_first,
    completed,
    sample_trials,
)
from stagetune.studies.reporting.plots._source import PlotSource


def _sampled(source: PlotSource, stage: str, what: str) -> optuna.Study | go.Figure:
    trials = source.trials(stage)
    if len(completed(trials)) < 1:
        return note(f"No {stage} trial has completed yet: {what} comes with the first.")
    direction = source.objective[1]
    return as_study(sample_trials(trials, direction), direction)


def _titled(figure: go.Figure, title: str, total: int, shown: int) -> go.Figure:
    if shown < total:
        title += f" ({shown:,} of {total:,} trials: the best, every new best, and a sample)"
    figure.update_layout(title=title, width=None, height=420)
    return figure


@register_plot("coarse_slice", "Parameters against the objective", "coarse",
               "Each parameter's values against the objective; where the best points crowd "
               "an edge, the range was too narrow.")
def coarse_slice(source: PlotSource) -> go.Figure:
    study = _sampled(source, "coarse", "this figure")
    if isinstance(study, go.Figure):
        return study
    figure = optuna.visualization.plot_slice(study, target_name=source.objective[0])
    return _titled(figure, "coarse: parameters against the objective",
                   len(source.trials("coarse")), len(study.trials))


@register_plot("coarse_parallel", "Parallel coordinates", "coarse",
               "Every trial as a line through its parameters to its objective.")
def coarse_parallel(source: PlotSource) -> go.Figure:
    study = _sampled(source, "coarse", "this figure")
    if isinstance(study, go.Figure):
        return study
    figure = optuna.visualization.plot_parallel_coordinate(study, target_name=source.objective[0])
    return _titled(figure, "coarse: parallel coordinates",
                   len(source.trials("coarse")), len(study.trials))


@register_plot("coarse_narrowing", "Ranges narrowed for refine", "coarse",
               "Grey: the range coarse searched; green: the region refine's prior favours (a "
               "share of its trials still come from the whole space). A conditional parameter "
               "has a row per variant, e.g. lr[optimizer=sgd]. A red name sat at an edge.")
def coarse_narrowing(source: PlotSource) -> go.Figure:
    stage = source.stage("coarse")
    if stage is None or "space" not in stage.figures:
        return note("Coarse has not finished: the narrowed ranges come with it.")
    searched: dict[str, Any] = stage.figures.get("searched") or {
        name: entry for name, entry in source.record.spec.get("space", {}).items()
        if isinstance(entry, dict)}  # conditional variants are named as in Optuna
    narrowed: dict[str, dict[str, Any]] = stage.figures["space"]
    flagged = set(stage.figures.get("boundary", []))
    figure = go.Figure()
    names = [n for n in narrowed if narrowed[n].get("type") != "categorical"]
    for name in names:
        old, new = searched.get(name, narrowed[name]), narrowed[name]
        scale = _scale(old)
        figure.add_scatter(x=[0, 1], y=[name, name], mode="lines", showlegend=False,
                           line={"color": "#cfd8dc", "width": 14}, hoverinfo="text",
                           hovertext=f"searched {sig(old['low'])} to {sig(old['high'])}")
        figure.add_scatter(x=[scale(new["low"]), scale(new["high"])], y=[name, name],
                           mode="lines+markers+text", showlegend=False,
                           line={"color": "#2e7d32", "width": 6},
                           text=[sig(new['low']), sig(new['high'])],
                           textposition=["bottom left", "bottom right"], hoverinfo="text",
                           hovertext=f"refine {sig(new['low'])} to {sig(new['high'])}")
    kept = [f"{n}: {', '.join(map(str, narrowed[n]['choices']))}" for n in narrowed
            if narrowed[n].get("type") == "categorical"]
    figure.update_yaxes(categoryorder="array", categoryarray=names[::-1],
                        ticktext=[f"<span style='color:#c62828'>{n}</span>" if n in flagged
                                  else n for n in names[::-1]], tickvals=names[::-1])
    ends = [x for trace in figure.data for x in trace.x]
    figure.update_xaxes(title="position in the searched range (log scale for log parameters)",
                        range=[min(ends) - 0.15, max(ends) + 0.15], zeroline=False)
    subtitle = f"<br><sup>categorical, kept: {'; '.join(kept)}</sup>" if kept else ""
    figure.update_layout(title=f"Ranges narrowed for refine{subtitle}",
                         height=160 + 50 * max(len(names), 1))
    return figure


def _scale(param: dict[str, Any]) -> Any:
    low, high, log = param["low"], param["high"], param.get("log", False)
    if log and low > 0:
        return lambda v: (math.log(v) - math.log(low)) / ((math.log(high) - math.log(low)) or 1)
    return lambda v: (v - low) / ((high - low) or 1)


@register_plot("refine_history", "Optimization history", "refine",
               "Each refine trial's objective and the best so far.")
def refine_history(source: PlotSource) -> go.Figure:
    study = _sampled(source, "refine", "the history")
    if isinstance(study, go.Figure):
        return study
    figure = optuna.visualization.plot_optimization_history(study, target_name=source.objective[0])
    baseline = source.handed.get("baseline")
    if isinstance(baseline, (int, float)) and math.isfinite(baseline):
        figure.add_hline(y=baseline, line_dash="dot", line_color="#6d4c41",
                         annotation_text="linear baseline")
    return _titled(figure, "refine: optimization history", len(source.trials("refine")),
                   len(study.trials))


@register_plot("refine_intermediate", "Per-epoch values, pruned trials included", "refine",
               "The objective after each epoch; trials the pruner stopped end early.")
def refine_intermediate(source: PlotSource) -> go.Figure:
    trials = source.trials("refine")
    if not any(t.intermediate_values for t in trials):
        return note("No refine trial has reported an epoch yet.")
    direction = source.objective[1]
    study = as_study(sample_trials(trials, direction), direction)
    figure = optuna.visualization.plot_intermediate_values(study)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    figure.update_yaxes(title=source.objective[0])
    return _titled(figure, f"refine: per-epoch values ({pruned} pruned)", len(trials),
                   len(study.trials))


# PED-ANOVA splits a parameter's trials into regimes (those that drew it from one
# distribution, and those that did not draw it) and wants this many in each (Optuna's
# `_min_n_trials_in_regime`).
MIN_REGIME = 2


def rankable(trials: Sequence[FrozenTrial]) -> list[str]:
    """The parameters PED-ANOVA can rank: those each of whose regimes holds MIN_REGIME
    trials. Of any other (SGD's momentum in a study that drew SGD once) it warns that "some
    regimes have less than 2 trials", a line in the service's log that tells its reader
    nothing; the figure names such parameters instead. (A filter on the warning would not
    do: `warnings.catch_warnings` is not thread-safe, and figures are drawn in parallel.)"""
    names = dict.fromkeys(p for t in trials for p in t.params)
    return [name for name in names
            if min(Counter(t.distributions.get(name) for t in trials).values()) >= MIN_REGIME]


@contextmanager
def _quiet_importances() -> Iterator[None]:
    with warnings.catch_warnings():  # PED-ANOVA was once experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


TOP_QUANTILE = 0.1  # PED-ANOVA's target quantile (its default), the best trials it explains


def ties_top(trials: Sequence[FrozenTrial], direction: str) -> bool:
    """Whether the top TOP_QUANTILE of `trials` reach down to the worst: every trial from
    the quantile's cut on scores the same (often all of them: each at accuracy 1.0).
    PED-ANOVA then compares a set with itself and gives every parameter the same weight."""
    values = [t.value for t in best_first(trials, direction)]
    return bool(values) and values[math.ceil(TOP_QUANTILE * len(values)) - 1] == values[-1]


def _ped_anova() -> Any:
    """PED-ANOVA's evaluator. optuna.importance imports scikit-learn (for its fANOVA): the
    API's process loads it only once an importance is asked for."""
    from optuna.importance import PedAnovaImportanceEvaluator

    return PedAnovaImportanceEvaluator(target_quantile=TOP_QUANTILE)


@register_plot("refine_importances", "Parameter importances", "refine",
               "Which parameters set the best refine trials apart from the rest (PED-ANOVA).")
def refine_importances(source: PlotSource) -> go.Figure:
    trials = completed(source.trials("refine"))
    if len(trials) < 2:
        return note("Importances need at least two completed refine trials.")
    if ties_top(trials, source.objective[1]):
        worst = best_first(trials, source.objective[1])[-1].value or 0.0  # completed: a value
        return note(f"Importances need the best refine trials to score apart from the rest; "
                    f"the top {TOP_QUANTILE:.0%} tie with the worst completed one "
                    f"({sig(worst)}), so no parameter sets them apart.")
    study = as_study(trials, source.objective[1])
    ranked = rankable(trials)
    left_out = [n for n in dict.fromkeys(p for t in trials for p in t.params) if n not in ranked]
    if not ranked:
        return note(f"Importances need each parameter drawn, or left out, by at least "
                    f"{MIN_REGIME} completed refine trials; none is yet.")
    with _quiet_importances():
        try:
            figure = optuna.visualization.plot_param_importances(study, evaluator=_ped_anova(),
                                                                 params=ranked)
        except (ValueError, RuntimeError) as exc:  # e.g. every parameter took one value
            return note(f"Importances cannot be computed: {exc}")
    if left_out:
        figure.add_annotation(text=f"too few trials to rank: {', '.join(left_out)}",
                              xref="paper", yref="paper", x=1, y=-0.12, showarrow=False,
                              xanchor="right", font={"size": 11, "color": "#757575"})
    return _titled(figure, f"refine: parameter importances (PED-ANOVA on {len(trials):,} trials)",
                   len(trials), len(trials))


# Optuna grids a contour on every trial's value of each parameter: 150 trials keep a pair's
# figure under 400 KB (500 made it 650 KB, and three parameters' six panels 9 MB).
CONTOUR_TRIALS = 150
EDF_TRIALS = 2000  # a stage's distribution is drawn from at most this many trials


@register_plot("contour", "Contour of the objective", "study",
               "The objective over the two most important parameters, interpolated between "
               "trials: where the best region lies, and whether a range's edge cuts it off.")
def contour(source: PlotSource) -> go.Figure:
    stage = "refine" if len(completed(source.trials("refine"))) >= 2 else "coarse"
    trials = completed(source.trials(stage))
    if len(trials) < 2:
        return note("A contour needs two completed search trials.")
    direction = source.objective[1]
    study = as_study(sample_trials(trials, direction, limit=CONTOUR_TRIALS), direction)
    pair = _most_important(study, direction)
    if len(pair) < 2:
        return note("A contour needs two parameters that the trials varied.")
    figure = optuna.visualization.plot_contour(study, params=pair,
                                               target_name=source.objective[0])
    return _titled(figure, f"{stage}: the objective over {pair[0]} and {pair[1]}",
                   len(trials), len(study.trials))


def _most_important(study: optuna.Study, direction: str) -> list[str]:
    """The two parameters that matter most (PED-ANOVA), else the first two that vary
    (also where the best trials tie with the rest, and PED-ANOVA would rank none)."""
    trials = study.trials
    varied = [name for name in dict.fromkeys(p for t in trials for p in t.params)
              if len({repr(t.params.get(name)) for t in trials}) > 1]
    ranked: dict[str, float] = {}
    names = rankable(trials)
    with _quiet_importances():
        try:
            from optuna.importance import get_param_importances

            if names and not ties_top(trials, direction):
                ranked = get_param_importances(study, evaluator=_ped_anova(), params=names)
        except (ValueError, RuntimeError):  # one value each
            ranked = {}
    return ([n for n in ranked if n in varied] + [n for n in varied if n not in ranked])[:2]


@register_plot("edf", "Empirical distribution of the objective", "study",
               "For each value, the share of a stage's trials that reached at most it: "
               "refine's line should sit on the better side of coarse's.")
def edf(source: PlotSource) -> go.Figure:
    direction = source.objective[1]
    studies = []
    for stage in ("coarse", "refine"):
        trials = completed(source.trials(stage))
        if trials:  # a uniform seeded sample keeps the distribution's shape, and is quick
            if len(trials) > EDF_TRIALS:
                trials = random.Random(0).sample(trials, EDF_TRIALS)
            study = optuna.create_study(study_name=stage, direction=direction)  # type: ignore[arg-type]
            study.add_trials(trials)
            studies.append(study)
    if not studies:
        return note("No search trial has completed yet: the distribution comes with the first.")
    figure = optuna.visualization.plot_edf(studies, target_name=source.objective[0])
    figure.update_layout(title="Empirical distribution of the objective, by stage",
                         width=None, height=420)
    return figure
