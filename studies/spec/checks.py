"""Submit-time checks: a spec that is accepted can run.

The workers' own checks, run without loading data or building a model: parameter names,
every knob value at both ends of every range and for every choice (with the fixed knobs),
the dataset's options (an image folder inside the data folder), torchvision architecture
names, weights files inside the data folder, and an epoch budget the plan can share among the
stages. Each problem is (field path, what is wrong and what is allowed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from stagetune.studies.spec.model import MEASURES
from stagetune.workers.config import ModelConfig, TrainConfig
from stagetune.workers.errors import StagetuneError
from stagetune.workers.knobs import declared_knobs, parse_task_params, unknown_params
from stagetune.workers.request import Task

if TYPE_CHECKING:
    from stagetune.studies.spec.model import Param, StudySpec

Problem = tuple[str, str]


def spec_problems(spec: StudySpec) -> list[Problem]:
    """Everything that would stop `spec` once it runs; empty when it can run."""
    problems = name_problems(spec)
    if problems:  # values of unknown knobs say nothing more
        return problems
    task = spec.task.as_task()
    for where, params in (("task.model_options", {}), ("fixed", spec.fixed)):
        error = _knob_error(task, params)
        if error is not None:
            return [(where, error)]
    return [*_value_problems(task, spec.space, spec.fixed), *_dataset_problems(spec),
            *_arch_problems(spec), *_weights_problems(spec), *_transfer_problems(spec),
            *_objective_problems(spec), *_budget_problems(spec)]


def load_spec_apart(source: str | Path | dict[str, Any]) -> StudySpec:
    """`load_spec(source)` for a process that must not import torch (the API's): the workers'
    checks run in the worker-code child (workers.sidecar), then the spec is built here without
    them. Raises SpecError as load_spec does, with the same message and problems."""
    from stagetune.studies.errors import SpecError
    from stagetune.studies.spec.model import load_spec
    from stagetune.workers.sidecar import in_child

    refused = in_child(_refusal, source)
    if refused is not None:
        raise SpecError(*refused)
    return load_spec(source, worker_checks=False)


def _refusal(source: str | Path | dict[str, Any]) -> tuple[str, list[Problem]] | None:
    """In the worker-code child: load_spec's full check, its refusal as plain data."""
    from stagetune.studies.errors import SpecError
    from stagetune.studies.spec.model import load_spec

    try:
        load_spec(source)
    except SpecError as exc:
        return str(exc), exc.problems
    return None


def name_problems(spec: StudySpec) -> list[Problem]:
    """Unknown knobs, a knob both searched and fixed, and conditions that cannot hold."""
    problems = []
    task = spec.task.as_task()
    for where, names in (("space", spec.space), ("fixed", spec.fixed),
                         ("task.model_options", spec.task.model_options)):
        unknown = unknown_params(task, names)
        if unknown:
            problems.append((where, unknown))
    both = sorted(set(spec.space) & set(spec.fixed))
    if both:
        problems.append(("fixed", f"{', '.join(map(repr, both))} is both in space and fixed; "
                                  "keep it in one of them"))
    return problems + condition_problems(spec.space)


def condition_problems(space: Mapping[str, Any]) -> list[Problem]:
    """What is wrong with the space's conditions: each names an unconditional categorical
    parameter of the space and some of its choices, and variants of a name never overlap."""
    switches = {n: e.choices for n, e in space.items()
                if getattr(e, "type", None) == "categorical" and e.when is None}
    problems = []
    for name, entry in space.items():
        for where, param in _variants(name, entry):
            if param.when is None:
                if isinstance(entry, list) and len(entry) > 1:
                    problems.append((where, "each variant of a parameter needs a 'when' "
                                            "condition saying when it applies"))
                continue
            for key, values in param.when.items():
                if key not in switches or key == name:
                    problems.append((f"{where}.when", f"'{key}' is not an unconditional "
                                     "categorical parameter of the space; conditions may name: "
                                     f"{', '.join(sorted(set(switches) - {name})) or 'none'}"))
                    continue
                wrong = [v for v in values if v not in switches[key]]
                if wrong:
                    problems.append((f"{where}.when.{key}", f"{', '.join(map(repr, wrong))} is "
                                     f"not one of {key}'s choices "
                                     f"({', '.join(map(str, switches[key]))})"))
        problems += _overlaps(name, entry if isinstance(entry, list) else [entry])
    return problems


def _overlaps(name: str, options: list[Param]) -> list[Problem]:
    """Two variants overlap when some assignment of the switches satisfies both."""
    out = []
    for i in range(len(options)):
        for j in range(i + 1, len(options)):
            a, b = options[i].when or {}, options[j].when or {}
            shared = {k: [v for v in a[k] if v in b[k]] for k in set(a) & set(b)}
            if all(shared.values()):
                both = ", ".join(f"{k}={v[0]}" for k, v in sorted(shared.items())) or "always"
                out.append((f"space.{name}", f"variants {i} and {j} both apply ({both}); give "
                                             "each variant values of its own"))
    return out


def _variants(name: str, entry: Param | list[Param]) -> Iterator[tuple[str, Param]]:
    if not isinstance(entry, list):
        yield f"space.{name}", entry
        return
    for i, param in enumerate(entry):
        yield (f"space.{name}.{i}" if len(entry) > 1 else f"space.{name}"), param


def _value_problems(task: Task, space: Mapping[str, Any], base: dict[str, Any]
                    ) -> list[Problem]:
    """Each range's ends and each choice, set on top of the fixed knobs, as a trial would
    set them; a float range on a knob that takes no fractions fails in between."""
    problems = []
    seen: dict[str, str | None] = {}
    for name, entry in space.items():
        for where, param in _variants(name, entry):
            if param.type == "float" and not _takes_fractions(task, name):
                problems.append((where, f"{name} takes no fractions; use type: int or "
                                        "categorical"))
                continue
            for field, value in _values(param):
                key = json.dumps([name, value])
                if key not in seen:
                    seen[key] = _knob_error(task, {**base, name: value})
                if seen[key] is not None:
                    problems.append((f"{where}.{field}", f"{seen[key]}"))
    return problems


def _values(param: Param) -> Iterator[tuple[str, Any]]:
    if param.type == "categorical":
        yield from ((f"choices.{i}", c) for i, c in enumerate(param.choices))
    else:
        yield from (("low", param.low), ("high", param.high))


def _knob_error(task: Task, params: dict[str, Any]) -> str | None:
    """What a trial of `task` with `params` would say of them (model_options under them);
    a dataset knob is checked with the dataset's other options."""
    try:
        knobs = parse_task_params(task, params)
        if task.dataset is not None and knobs.dataset_options != task.dataset_options:
            from stagetune.workers.data import check_options

            check_options(task.dataset, knobs.dataset_options)
    except StagetuneError as exc:
        return str(exc)
    return None


def _takes_fractions(task: Task, name: str) -> bool:
    fields = {**TrainConfig.model_fields, **ModelConfig.model_fields}
    for knobs in declared_knobs(task).values():
        fields |= knobs.model_fields
    annotation = fields[name].annotation
    return annotation is float or float in get_args(annotation)


def _dataset_problems(spec: StudySpec) -> list[Problem]:
    """The options' names and types, then what the dataset's own check finds (an
    image_folder's path that is not a folder inside the data folder)."""
    from stagetune.workers.data import check_options, option_problems  # torch: never in a runner

    if spec.task.dataset is None:
        return []
    try:
        check_options(spec.task.dataset, spec.task.dataset_options)
    except StagetuneError as exc:
        return [("task.dataset_options", str(exc))]
    return [(f"task.dataset_options.{option}", message)
            for option, message in option_problems(spec.task.dataset, spec.task.dataset_options)]


def _budget_problems(spec: StudySpec) -> list[Problem]:
    """An epoch budget too small for the plan to give each search stage what it needs
    (studies.planning.plan.shortfalls): the study would stop for want of budget, not for its space."""
    from stagetune.studies.planning.plan import minimum_budget, shortfalls

    if spec.budget is None or spec.budget.epochs is None:
        return []  # trial-seconds depend on the machine: nothing to check ahead
    short = shortfalls(spec, spec.budget.epochs)
    if not short:
        return []
    return [("budget.epochs", f"{spec.budget.epochs:g} epochs cannot pay for this study's "
                              f"stages: {'; '.join(short)}; give budget.epochs at least "
                              f"{minimum_budget(spec)}, or fewer or shorter stages")]


def _knob_values(spec: StudySpec, knob: str) -> Iterator[tuple[str, Any]]:
    """Every value `knob` can take in a trial, with the field it comes from."""
    for where, source in (("task.model_options", spec.task.model_options),
                          ("fixed", spec.fixed)):
        if knob in source:
            yield f"{where}.{knob}", source[knob]
    if knob in spec.space:
        for where, param in _variants(knob, spec.space[knob]):
            yield from ((f"{where}.{field}", v) for field, v in _values(param))


def _arch_problems(spec: StudySpec) -> list[Problem]:
    from stagetune.workers.models import architectures, timm_architectures

    if spec.task.model == "torchvision":
        names = architectures()
        return [(where, f"unknown torchvision arch {value!r}; available: {', '.join(names)}")
                for where, value in _knob_values(spec, "arch") if value not in names]
    if spec.task.model == "timm":
        return [(where, f"unknown timm arch {value!r}; see timm.list_models(), e.g. "
                        "resnet18, efficientnet_b0, convnext_atto")
                for where, value in _knob_values(spec, "arch") if value not in timm_architectures()]
    return []


def _weights_problems(spec: StudySpec) -> list[Problem]:
    from stagetune.workers.data import data_file

    problems = []
    for where, value in _knob_values(spec, "weights"):
        if value is None:
            continue
        try:
            data_file(value, "weights")
        except StagetuneError as exc:
            problems.append((where, str(exc)))
    return problems


def _transfer_problems(spec: StudySpec) -> list[Problem]:
    if any(v is not None for _, v in _knob_values(spec, "weights")):
        return []
    return [(where, f"transfer '{value}' needs weights=PATH, a state_dict file in the data "
                    "folder; or use transfer 'none'")
            for where, value in _knob_values(spec, "transfer") if value != "none"]


def _objective_problems(spec: StudySpec) -> list[Problem]:
    """The loss and metrics fit some task kind, and the objective is a metric the task
    reports, with a direction that is known or given."""
    from stagetune.workers.objective import direction_of, objective_for, task_kinds, task_metrics

    task = spec.task.as_task()
    try:
        if task.trainer is None:
            task_kinds(task)
        reported = task_metrics(task)
    except StagetuneError as exc:
        return [("task", str(exc))]
    objective = spec.task.main_objective
    problems = _secondary_problems(spec, task, reported)
    if objective is None:
        if task.trainer is not None:
            try:
                objective_for(task)
            except StagetuneError as exc:
                return [("task.objective", str(exc))]
        return problems
    field = "task.objective" if spec.task.objective else "task.objectives"
    # a trainer that declares no metrics may report any: its reports are checked per trial
    if reported and objective not in reported:
        return [(field, f"'{objective}' is not a metric this task reports; it reports "
                        f"{', '.join(reported)} ({_how_to_report(task)})")]
    if spec.task.direction is None:
        try:
            direction_of(task, objective)
        except StagetuneError as exc:
            return [("task.direction", str(exc))]
    return problems


def _secondary_problems(spec: StudySpec, task: Task, reported: tuple[str, ...]
                        ) -> list[Problem]:
    """Each objective after the first is a measure, or a metric the task reports whose
    direction is known (the spec's direction is the first objective's only)."""
    from stagetune.workers.objective import direction_of

    problems: list[Problem] = []
    for name in spec.task.objectives[1:]:
        if name in MEASURES:
            continue
        if reported and name not in reported:
            problems.append(("task.objectives", (
                f"'{name}' is neither a measure ({', '.join(MEASURES)}) nor a metric this task "
                f"reports ({', '.join(reported)}; {_how_to_report(task)})")))
            continue
        try:
            direction_of(task, name)
        except StagetuneError as exc:
            problems.append(("task.objectives", str(exc)))
    return problems


def _how_to_report(task: Task) -> str:
    return (f"register_trainer('{task.trainer}', metrics=[...]) declares what it reports"
            if task.trainer else "add one with task.metrics")
