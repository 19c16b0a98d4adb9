"""Numbers and suggested spec edits as people read them (studies.reporting.numbers and
.edits): three significant figures, and no edit that the study already applies."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from stagetune.studies.reporting.edits import edit_text, useful_fixes
from stagetune.studies.reporting.numbers import readable, sig, span
from stagetune.studies.reporting.views import detail
from stagetune.studies.search.stages import ORDER
from stagetune.studies.search.stages._base import spec_edits
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store


@pytest.mark.parametrize(("value", "text"), [
    (0.2420128264794383, "0.242"), (0.008067094215981277, "0.00807"), (150.0, "150"),
    (12345.6, "12300"), (999.7, "1000"), (0.99999, "1"), (0.9944, "0.994"), (2.4800001, "2.48"),
    (1e-4, "0.0001"), (1.5e-05, "1.5e-5"), (1234567.0, "1.23e6"), (-0.5, "-0.5"), (0.0, "0"),
    (math.nan, "nan"), (math.inf, "inf"),
])
def test_sig_rounds_to_three_figures_and_drops_what_says_nothing(value: float, text: str) -> None:
    assert sig(value) == text


def test_readable_keeps_whole_numbers_and_writes_values_as_a_spec_does() -> None:
    assert readable(1797) == "1797" and readable(True) == "true" and readable(None) == "–"
    assert readable(None, missing="") == "" and readable("adamw") == "adamw"
    assert readable([0.123456, 3]) == "[0.123, 3]"
    assert readable({"low": 0.00011497569953977356, "log": False}) == "{low: 0.000115, log: false}"
    assert span(0.008067094215981277, 0.2420128264794383, log=True) == "0.00807–0.242, log"


LR_FIX = {"set": {"lr": {"low": 0.008067094215981277, "high": 0.2420128264794383, "log": True}},
          "why": "the range where the loss falls fastest for sgd_nesterov",
          "when": {"optimizer": "sgd_nesterov"}}


def test_a_fix_reads_as_a_spec_edit() -> None:
    assert edit_text(LR_FIX) == "lr: 0.00807–0.242, log for optimizer sgd_nesterov"
    assert edit_text({"set": {"norm": "batch", "grad_clip": 1.0}}) == "norm: batch, grad_clip: 1"
    assert spec_edits([LR_FIX]) == ("Suggested spec edits: lr: 0.00807–0.242, log for optimizer "
                                    "sgd_nesterov (the range where the loss falls fastest for "
                                    "sgd_nesterov).")


def _study(store: Store, name: str, space: dict[str, Any], fixed: dict[str, Any],
           lr_hand_on: dict[str, Any], fixes: list[dict[str, Any]]) -> None:
    """A study whose lr_probe handed on `lr_hand_on` and suggested `fixes`; every other
    stage skipped."""
    spec = load_spec({"name": name, "task": {"dataset": "digits", "model": "convnet"},
                      "space": space, "fixed": fixed})
    store.open_study(name, spec.model_dump(mode="json"), list(ORDER))
    for stage in ORDER:
        store.start_stage(name, stage)
        probe = stage == "lr_probe"
        store.finish_stage(name, stage, "passed" if probe else "skipped", "",
                           {"fixes": fixes} if probe else {}, lr_hand_on if probe else {},
                           0.0, 0.0)


SGD_ADAMW = {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
             "optimizer": {"type": "categorical", "choices": ["sgd_nesterov", "adamw"]}}
NORM_FIX = {"set": {"norm": "batch"}, "why": "normalisation"}


def test_an_edit_the_study_already_applies_is_not_suggested(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    adamw_fix = {**LR_FIX, "when": {"optimizer": "adamw"}}
    # the search took the probe's sgd range (stored to the last digit): nothing to suggest;
    # adamw's was not taken (the probe found none), so its range is news
    _study(store, "used", SGD_ADAMW, {"norm": "none"},
           {"lr_ranges": {"sgd": [0.008067094215981277, 0.2420128264794383]}},
           [LR_FIX, adamw_fix, NORM_FIX])
    record = store.study("used")
    assert useful_fixes(record, [LR_FIX, adamw_fix, NORM_FIX]) == [adamw_fix, NORM_FIX]
    shown = next(s for s in detail(store, record)["stages"] if s["name"] == "lr_probe")
    assert shown["fixes"] == [adamw_fix, NORM_FIX]
    assert store.study("used").stages[4].figures["fixes"] == [LR_FIX, adamw_fix, NORM_FIX]  # kept

    # lr fixed by the user: the probe's range is a suggestion; a norm the spec fixes already is not
    _study(store, "fixed", {"optimizer": SGD_ADAMW["optimizer"]}, {"lr": 0.01, "norm": "batch"},
           {}, [LR_FIX, NORM_FIX])
    assert useful_fixes(store.study("fixed"), [LR_FIX, NORM_FIX]) == [LR_FIX]

    # the spec declares that very range (to three figures) for sgd_nesterov already
    declared = {**SGD_ADAMW, "lr": [
        {"type": "float", "low": 0.00807, "high": 0.242, "log": True,
         "when": {"optimizer": ["sgd_nesterov"]}},
        {"type": "float", "low": 1e-4, "high": 0.1, "log": True, "when": {"optimizer": ["adamw"]}}]}
    _study(store, "declared", declared, {}, {}, [LR_FIX, adamw_fix])
    assert useful_fixes(store.study("declared"), [LR_FIX, adamw_fix]) == [adamw_fix]
    # the same bounds on a linear scale are a change
    linear = {**LR_FIX, "set": {"lr": {**LR_FIX["set"]["lr"], "log": False}}}
    assert useful_fixes(store.study("declared"), [linear]) == [linear]
