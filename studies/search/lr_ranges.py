"""Learning-rate ranges per optimizer family: which families a study's space holds, and
the space each search stage draws from once the LR probe has measured each family.

The families differ by orders of magnitude in the lr they train well at (SGD with
momentum wants roughly 10-100x AdamW's), so one range for all would cut off good regions
of some: each family gets its own conditional `lr` (`lr[optimizer=adam/adamw]`).
"""

from __future__ import annotations

from typing import Any

from stagetune.studies.spec import CategoricalParam, FloatParam, Param, StudySpec
from stagetune.workers.config import TrainConfig

FAMILIES: dict[str, tuple[str, ...]] = {
    "sgd": ("sgd", "sgd_nesterov"),
    "adam": ("adam", "adamw"),
    "rmsprop": ("rmsprop",),
}


def optimizers_in(spec: StudySpec) -> list[str]:
    """The optimizers a study's trials may use."""
    entry = spec.space.get("optimizer")
    if isinstance(entry, CategoricalParam) and entry.when is None:
        return [str(c) for c in entry.choices]
    fixed = spec.fixed.get("optimizer", spec.task.model_options.get("optimizer"))
    return [str(fixed or TrainConfig.model_fields["optimizer"].default)]


def families_in(spec: StudySpec) -> dict[str, str]:
    """Each family in the space, with the optimizer its LR probe runs with."""
    present = optimizers_in(spec)
    out = {}
    for family, members in FAMILIES.items():
        found = [o for o in present if o in members]
        if found:
            out[family] = found[0]
    return out


def lr_is_searched(spec: StudySpec) -> bool:
    """Whether the probe's ranges replace lr's: not when the user fixed lr, nor when they
    declared lr per optimizer themselves."""
    entry = spec.space.get("lr")
    return "lr" not in spec.fixed and not isinstance(entry, list) and \
        (entry is None or entry.when is None)


def probed_space(spec: StudySpec, lr_ranges: dict[str, list[float]]) -> dict[str, Any]:
    """The space coarse searches: lr per family from the probe, inside the declared lr."""
    return _with_lr(spec, lambda family, declared: _clip(lr_ranges.get(family), declared))


def declared_space(spec: StudySpec, lr_ranges: dict[str, list[float]]) -> dict[str, Any]:
    """The whole space the user declared, with lr split the same way (so coarse's
    parameters are refine's): each family's lr over the declared range, or the probe's
    where none was declared."""
    return _with_lr(spec, lambda family, declared: declared or _clip(lr_ranges.get(family), None))


def _with_lr(spec: StudySpec, pick: Any) -> dict[str, Any]:
    space: dict[str, Any] = dict(spec.space)
    if not lr_is_searched(spec):
        return space
    entry = spec.space.get("lr")
    declared = (entry.low, entry.high) if isinstance(entry, FloatParam) else None
    families = families_in(spec)
    ranges = {f: pick(f, declared) for f in families}
    ranges = {f: r for f, r in ranges.items() if r is not None}
    if not ranges:
        return space
    if len(families) == 1:  # (several families keep one variant each, even with equal
        # ranges, so that coarse's and refine's spaces name the same parameters)
        low, high = next(iter(ranges.values()))
        space["lr"] = FloatParam(type="float", low=low, high=high, log=True)
        return space
    present = optimizers_in(spec)
    variants: list[Param] = []
    for family in families:
        low, high = ranges.get(family) or declared or next(iter(ranges.values()))
        members = [o for o in present if o in FAMILIES[family]]
        variants.append(FloatParam(type="float", low=low, high=high, log=True,
                                   when={"optimizer": members}))
    space["lr"] = variants
    return space


def _clip(probed: list[float] | None, declared: tuple[float, float] | None
          ) -> tuple[float, float] | None:
    """The probe's range inside the declared one; the declared one if they do not meet."""
    if probed is None:
        return declared
    low, high = probed
    if declared is None:
        return low, high
    low, high = max(low, declared[0]), min(high, declared[1])
    return (low, high) if low < high else declared
