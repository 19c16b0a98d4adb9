"""Five of bench/planted_bugs.py's planted bugs, the cheapest, through the same staged
study the benchmark runs: each stops at the stage it belongs to, with a sentence that
names its cause, before 0.27 of an epoch is spent. And the bench's healthy controls, each
a whole study: no alarm."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import planted_bugs  # registers bench/plugins/planted.py's datasets and models


@pytest.mark.parametrize(("bug", "stage", "words"), [
    ("leaked_val", "data_check", "validation samples are exact copies of training samples"),
    ("softmax_twice", "init_check", "The model outputs probabilities"),
    ("lr_zero", "init_check", "The learning rate is 0"),
    ("running_stats_norm", "init_check", "running statistics in a training step"),
    ("stale_tensor", "init_check", "state kept across steps"),
])
def test_a_planted_bug_stops_the_study_at_its_stage_with_its_cause(
        tmp_path: Path, bug: str, stage: str, words: str) -> None:
    report = planted_bugs.run_study(planted_bugs.BUGS[bug], 60, tmp_path)
    assert report.status == "stopped", report.message
    assert report.message.startswith(f"{stage}: ") and words in report.message
    judged = planted_bugs.judge(report, planted_bugs.BUGS[bug])
    assert judged["caught_at"] == stage and judged["right_stage"]
    assert words in judged["sentence"]
    assert judged["epochs_to_flag"] == pytest.approx(report.compute["epochs"], abs=1e-3)
    # init_check's 0.26 epoch-equivalents at most: 0.18 for the loss and gradients, 0.04
    # for one batch at a standard init, 0.03 for the training step's invariants
    assert report.compute["epochs"] < 0.27
    verdicts = [s["verdict"] for s in report.stages]
    after = verdicts[verdicts.index("failed") + 1:]
    assert after and after == [None] * len(after)  # nothing ran after the failed gate


CONTROLS = [name for name, bug in planted_bugs.BUGS.items() if not bug.stages]
# A warning a control deserves by a rule's letter, with the words that say so (the bench's
# NOTES say why): lr's good values at the top of the range the user declared.
DESERVED = {"imbalanced": ("coarse", "high edge of its declared range")}


@pytest.mark.slow
@pytest.mark.parametrize("control", CONTROLS)
def test_a_healthy_control_that_looks_suspicious_gets_no_alarm(tmp_path: Path, control: str
                                                              ) -> None:
    """Zero false alarms on the bench's healthy controls (a linear model, a tiny dataset, a
    95/5 imbalanced one, a heavily regularised net, augmentations): no stage warns or fails,
    and the study completes."""
    report = planted_bugs.run_study(planted_bugs.BUGS[control], 60, tmp_path)
    alarms = {s["name"]: s["message"] for s in report.stages
              if s["verdict"] in planted_bugs.ALARMS}
    if control in DESERVED:
        stage, words = DESERVED[control]
        if stage in alarms and words in alarms[stage]:
            del alarms[stage]
    assert report.status == "completed" and not alarms, (report.message, alarms)
