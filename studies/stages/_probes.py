"""The stages before any search: a linear baseline, then the three probes."""

from __future__ import annotations

from studies.stages._base import Stage, StageContext, StageOutcome, register_stage, run_probe


@register_stage
class Baseline(Stage):
    """A linear model on the flattened inputs: the score every network must beat."""

    name = "baseline"

    def run(self, ctx: StageContext) -> StageOutcome:
        result, _ = run_probe(ctx, self.name, "baseline")
        value = result.final.get(ctx.objective, result.final.get("best"))
        return StageOutcome("passed", result.message, figures=dict(result.final),
                            hand_on={"baseline": value})


@register_stage
class InitCheck(Stage):
    """The loss before any update against the expected one; gradients through depth."""

    name, gate = "init_check", True

    def run(self, ctx: StageContext) -> StageOutcome:
        result, epochs = run_probe(ctx, self.name, "init_check",
                                   {"batches": self.config.batches})
        return StageOutcome(result.status, result.message, figures=result.probe, epochs=epochs)


@register_stage
class Overfit(Stage):
    """A tiny subset, regularisation off: a working pipeline drives its loss near zero."""

    name, gate = "overfit", True

    def run(self, ctx: StageContext) -> StageOutcome:
        options = {"samples": self.config.samples, "steps": self.config.steps}
        result, epochs = run_probe(ctx, self.name, "overfit", options)
        return StageOutcome(result.status, result.message, figures=result.probe, epochs=epochs)


@register_stage
class LrProbe(Stage):
    """LR range test; its range replaces the search's LR range unless the user fixed lr."""

    name = "lr_probe"

    def run(self, ctx: StageContext) -> StageOutcome:
        result, epochs = run_probe(ctx, self.name, "lr_probe",
                                   {"iterations": self.config.iterations})
        hand_on = {}
        message = result.message
        if result.status == "passed" and "lr" not in ctx.spec.fixed:
            hand_on = {"lr_range": result.probe["lr_range"],
                       "suggested_lr": result.probe["suggested_lr"]}
            message += " The search uses this range for lr."
        elif result.status != "passed":
            message += " The search keeps the spec's lr range."
        return StageOutcome(result.status, message, figures=result.probe, hand_on=hand_on,
                            epochs=epochs)
