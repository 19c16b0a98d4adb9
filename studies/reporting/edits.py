"""Suggested spec edits as people read them, and only those that would change something.

A stage's fixes are stored as data (`{"set": {knob: value}, "why": ..., "when": {...}}`,
see `studies.search.stages.StageOutcome`). A fix whose every setting is already in effect
(the spec says it, or the search already used it, such as the LR probe's range once the
search took it) is left out of what people read; the stored stage keeps it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from stagetune.studies.reporting.numbers import readable, sig, span
from stagetune.studies.search.lr_ranges import FAMILIES
from stagetune.studies.spec.space import knob_of
from stagetune.studies.store import StudyRecord

Condition = Mapping[str, list[Any]]  # e.g. {"optimizer": ["sgd", "sgd_nesterov"]}


def edit_value(value: Any) -> str:
    """A knob's suggested value: a range as "0.00807–0.242, log", anything else rounded."""
    if isinstance(value, Mapping) and {"low", "high"} <= set(value):
        return span(value["low"], value["high"], bool(value.get("log")))
    return readable(value)


def condition(when: Mapping[str, Any] | None) -> str:
    """A fix's case in words: "optimizer sgd_nesterov"."""
    return ", ".join(f"{k} {'/'.join(map(str, _listed(v)))}" for k, v in (when or {}).items())


def edit_text(fix: Mapping[str, Any]) -> str:
    """One fix in words, without its why: "lr: 0.00807–0.242, log for optimizer sgd"."""
    knobs = ", ".join(f"{k}: {edit_value(v)}" for k, v in fix.get("set", {}).items())
    when = condition(fix.get("when"))
    return f"{knobs} for {when}" if when else knobs


def useful_fixes(record: StudyRecord, fixes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fixes that would change something: not those the study already applies."""
    ranges = list(_ranges_in_effect(record))
    fixed = record.spec.get("fixed") or {}
    return [f for f in fixes
            if not all(_in_effect(k, v, f.get("when"), ranges, fixed)
                       for k, v in (f.get("set") or {}).items())]


@dataclass(frozen=True)
class _Range:
    knob: str
    low: float
    high: float
    log: bool
    when: Condition | None  # the case it holds for; None: every case

    def covers(self, when: Mapping[str, Any] | None) -> bool:
        """Whether this range holds in the fix's case."""
        given = {k: _listed(v) for k, v in (when or {}).items()}
        return all(k in given and set(given[k]) <= set(map(str, v))
                   for k, v in (self.when or {}).items())

    def same(self, value: Mapping[str, Any]) -> bool:
        """Equal to a suggested range once both are rounded as people read them."""
        return (sig(value["low"]), sig(value["high"]), bool(value.get("log"))) == \
            (sig(self.low), sig(self.high), self.log)


def _in_effect(knob: str, value: Any, when: Mapping[str, Any] | None, ranges: list[_Range],
               fixed: Mapping[str, Any]) -> bool:
    if isinstance(value, Mapping) and {"low", "high"} <= set(value):
        return any(r.knob == knob and r.covers(when) and r.same(value) for r in ranges)
    return knob in fixed and fixed[knob] == value


def _ranges_in_effect(record: StudyRecord) -> Iterator[_Range]:
    """The numeric ranges the spec declares and those the search drew from."""
    for knob, entry in (record.spec.get("space") or {}).items():
        for variant in entry if isinstance(entry, list) else [entry]:
            yield from _range(knob, variant, variant.get("when"))
    for stage in record.stages:
        for family, bounds in (stage.hand_on.get("lr_ranges") or {}).items():
            members = list(FAMILIES.get(family, (family,)))
            yield _Range("lr", bounds[0], bounds[1], True, {"optimizer": members})
        for name, param in (stage.figures.get("searched") or {}).items():
            yield from _range(knob_of(name), param, _label_condition(name))


def _range(knob: str, param: Any, when: Condition | None) -> Iterator[_Range]:
    if isinstance(param, Mapping) and param.get("type") in ("float", "int"):
        yield _Range(knob, param["low"], param["high"], bool(param.get("log")),
                     {k: _listed(v) for k, v in when.items()} if when else None)


def _label_condition(name: str) -> Condition | None:
    """The case of a conditional parameter's Optuna name: `lr[optimizer=adam/adamw]`."""
    if "[" not in name:
        return None
    label = name.split("[", 1)[1].rstrip("]")
    return {k: v.split("/") for k, v in (part.split("=", 1) for part in label.split(";"))}


def _listed(value: Any) -> list[Any]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
