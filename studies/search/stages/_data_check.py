"""The data check, first of all: sample-based checks of the splits (workers.data_check).

It is a gate: validation samples copied into training (above `leak_share` of validation)
fail it and stop the study, since every score after it would measure memory. The spec can
go on anyway: `stages.data_check.allow_leaks: true` makes that failure a warning, and
`stages.continue_on_failure` goes on past any failed gate. Every other finding warns,
label noise among them (`workers.label_quality`). The findings' spec edits (label smoothing
as a stopgap for noisy labels, macro F1 as the objective of an imbalanced set) reach the
stage as data, `StageOutcome.fixes`, through the probe's `fixes`; each finding's sentence
says its own in words.
"""

from __future__ import annotations

from stagetune.studies.search.stages._base import Stage, StageContext, StageOutcome, register_stage, run_probe
from stagetune.studies.spec import StudySpec
from stagetune.studies.spec.model import variants

ALLOWED = (" The spec allows leaks (stages.data_check.allow_leaks), so the study goes on; "
           "its validation scores are optimistic by the leaked share.")


def augmentations_in(spec: StudySpec) -> list[str]:
    """Every augmentation the study can use: the fixed `augment`, or its choices."""
    values = [spec.fixed.get("augment", "none")]
    for param in variants(spec.space["augment"]) if "augment" in spec.space else []:
        values += list(getattr(param, "choices", []))
    names = [part for value in values if isinstance(value, str)
             for part in value.split("+") if part and part != "none"]
    return list(dict.fromkeys(names))


@register_stage
class DataCheck(Stage):
    """Duplicates across and within the splits, conflicting labels, label noise, class
    balance and imbalance, NaN/inf and constant features, the input scale, augmentations
    that break the labels (`workers.augment_check`); it costs no epochs."""

    name, gate = "data_check", True

    def run(self, ctx: StageContext) -> StageOutcome:
        options = {"samples": self.config.samples, "leak_share": self.config.leak_share,
                   "augmentations": augmentations_in(ctx.spec)}
        result, _ = run_probe(ctx, self.name, "data_check", options)
        verdict, message = result.status, result.message
        if verdict == "failed" and self.config.allow_leaks:
            verdict, message = "warned", message + ALLOWED
        return StageOutcome(verdict, message, figures=result.probe,
                            trial_seconds=result.seconds)
