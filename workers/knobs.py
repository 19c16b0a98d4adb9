"""The knobs a task's trials may set: the built-in ones (workers.config) plus those that
its model, dataset and trainer declare when they are registered.

A declared knob is validated by the entry's own pydantic model and handed to it: a
model factory gets its knobs' values as a third argument, a dataset factory as keyword
arguments (a dataset knob in `space` or `fixed` joins the dataset options of that
trial), a trainer on its context.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from stagetune.workers.config import (
    KNOWN_PARAMS,
    ModelConfig,
    TrainConfig,
    describe_validation_error,
    parse_params,
)
from stagetune.workers.errors import ConfigError
from stagetune.workers.request import Task


@dataclass(frozen=True)
class TrialKnobs:
    """A trial's knobs, parsed: the built-in configs, each entry's declared knobs by kind,
    and the dataset options with the trial's dataset knobs merged in."""

    train: TrainConfig
    model: ModelConfig
    declared: dict[str, BaseModel] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)


def declared_knobs(task: Task) -> dict[str, type[BaseModel]]:
    """kind -> the knobs model of each of `task`'s entries that declares one."""
    out: dict[str, type[BaseModel]] = {}
    for kind, name in (("model", task.model), ("dataset", task.dataset),
                       ("trainer", task.trainer)):
        if name is not None:
            knobs = _registry(kind).entry(name).knobs
            if knobs is not None:
                out[kind] = knobs
    return out


def known_params(task: Task) -> tuple[str, ...]:
    """Every parameter name a trial of `task` may set, sorted."""
    names = set(KNOWN_PARAMS)
    for knobs in declared_knobs(task).values():
        names |= set(knobs.model_fields)
    return tuple(sorted(names))


def unknown_params(task: Task, names: Mapping[str, Any] | list[str]) -> str | None:
    """The message for names `task` does not know, or None."""
    known = known_params(task)
    unknown = sorted(set(names) - set(known))
    if not unknown:
        return None
    return f"unknown parameter {', '.join(map(repr, unknown))}; known: {', '.join(known)}"


def parse_task_params(task: Task, params: Mapping[str, Any]) -> TrialKnobs:
    """`task.model_options` under `params`, split and validated: a ConfigError names the
    knob and what is allowed."""
    merged = {**task.model_options, **params}
    error = unknown_params(task, merged)
    if error:
        raise ConfigError(error)
    declared = declared_knobs(task)
    own = {n for knobs in declared.values() for n in knobs.model_fields}
    train, model = parse_params({k: v for k, v in merged.items() if k not in own})
    values: dict[str, BaseModel] = {}
    dataset_options = dict(task.dataset_options)
    for kind, knobs in declared.items():
        mine = {k: v for k, v in merged.items() if k in knobs.model_fields}
        if kind == "dataset":  # the factory validates them with the other options
            dataset_options |= mine
            continue
        values[kind] = _validate(knobs, mine)
    return TrialKnobs(train, model, values, dataset_options)


def _validate(knobs: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    try:
        return knobs.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def _registry(kind: str) -> Any:
    if kind == "model":
        from stagetune.workers.models import MODELS

        return MODELS
    if kind == "dataset":
        from stagetune.workers.data import DATASETS

        return DATASETS
    from stagetune.workers.trainers import TRAINERS

    return TRAINERS


def describe_knobs(knobs: type[BaseModel] | None, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Each knob's name, type, default, bounds, choices and description (the registry API)."""
    if knobs is None:
        return []
    out = []
    for name, info in knobs.model_fields.items():
        if name in skip:
            continue
        bounds = {key: getattr(meta, key) for meta in info.metadata
                  for key in ("ge", "gt", "le", "lt") if getattr(meta, key, None) is not None}
        kind, choices = _type_name(info.annotation)
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        out.append({"name": name, "type": kind, "default": _plain(default),
                    "required": info.is_required(), "bounds": bounds, "choices": choices,
                    "description": info.description or ""})
    return out


def _type_name(annotation: Any) -> tuple[str, list[Any] | None]:
    """'int', 'float', 'bool', 'str', 'categorical' (with its choices), or the annotation."""
    if get_origin(annotation) is Literal:
        return "categorical", list(get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__, None
    return str(annotation).replace("typing.", ""), None


def _plain(value: Any) -> Any:
    """A JSON-safe view of a declared value (a callable by its name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return getattr(value, "__name__", type(value).__name__)


def describe_entry(entry: Any, knobs: type[BaseModel] | None = None,
                   skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A registry entry for the API: its docstring's first line, knobs, what it declares."""
    doc = entry.info.get("description") or (inspect.getdoc(entry.factory) or "").split("\n")[0]
    # a command's argv stays on the server (it may name its folders); parts say only
    # whether the probes can run
    declares = {k: (v is not None if k == "parts" else v) for k, v in entry.info.items()
                if k not in ("argv", "description")}
    return {"description": doc, "knobs": describe_knobs(knobs or entry.knobs, skip),
            "declares": _plain(declares)}
