"""The stages before any search: a linear baseline, then the three probes.

A task with a trainer runs the probes on the parts its trainer exposes (model, loss and
batches); the worker answers `skipped`, with what to expose, when it exposes none. A task
with no dataset has no baseline: its trainer loads its own data.
"""

from __future__ import annotations

from typing import Any

from stagetune.studies.reporting.numbers import sig
from stagetune.studies.search.lr_ranges import families_in, lr_is_searched
from stagetune.studies.search.stages._base import (
    Stage,
    StageContext,
    StageOutcome,
    probe_cap,
    register_stage,
    run_probe,
    spec_edits,
)
from stagetune.studies.search.stages._chance import at_chance, chance_bound
from stagetune.studies.search.warm_start import source_lr_ranges, warm_source


@register_stage
class Baseline(Stage):
    """A linear model on the flattened inputs: the score every network must beat."""

    name = "baseline"

    def run(self, ctx: StageContext) -> StageOutcome:
        if ctx.spec.task.dataset is None:
            return StageOutcome("skipped", "No dataset: the trainer loads its own data, so "
                                "there is no linear baseline to compare with. Name the "
                                "dataset in task.dataset to have one.")
        result, _ = run_probe(ctx, self.name, "baseline")
        final = result.final
        value = final.get(ctx.objective, final.get("best"))
        hand_on = {"baseline": value}
        if "chance" in final and final.get("objective") == ctx.objective:
            # chance level of the study's own objective only: coarse compares trials with it
            hand_on |= {"chance": final["chance"], "chance_bound": final.get("chance_bound")}
            bound = chance_bound(hand_on, ctx.direction)
            if at_chance(value, bound, ctx.direction):
                return StageOutcome("warned", (
                    f"The linear baseline scores {sig(value)}, at chance level "
                    f"({sig(final['chance'])}; luck alone reaches {sig(bound)} on this "
                    "validation split): the inputs carry no linear information about the "
                    "labels. If the networks stay at chance too, coarse stops the study: "
                    f"check that labels and inputs are paired. {result.message}"),
                    figures=dict(final), hand_on=hand_on)
        return StageOutcome("passed", result.message, figures=dict(final), hand_on=hand_on)


@register_stage
class InitCheck(Stage):
    """The loss before any update against the expected one; gradients through depth; the
    training step's invariants (nothing leaks between steps, every layer learns, modes,
    a deterministic evaluation)."""

    name, gate = "init_check", True

    def run(self, ctx: StageContext) -> StageOutcome:
        result, epochs = run_probe(ctx, self.name, "init_check",
                                   {"batches": self.config.batches})
        if result.status == "skipped":
            return StageOutcome("skipped", result.message)
        outcome = _outcome(result.status, result.message, result.probe, epochs, result.seconds)
        # an affine model is judged against the linear baseline as matching it, not beating it
        outcome.hand_on = {"affine_model": bool(result.probe.get("affine"))}
        return outcome


HALVED = 0.5  # a capped overfit whose loss fell below this share of its first value learns


@register_stage
class Overfit(Stage):
    """A tiny subset, regularisation off: a working pipeline drives its loss near zero."""

    name, gate = "overfit", True

    def run(self, ctx: StageContext) -> StageOutcome:
        options = {"samples": self.config.samples, "steps": self.config.steps,
                   **probe_cap(ctx, self.name)}
        result, epochs = run_probe(ctx, self.name, "overfit", options)
        if result.status == "skipped":
            return StageOutcome("skipped", result.message)
        verdict, message = result.status, result.message
        if verdict != "passed" and result.probe.get("stopped_by") == "max_epochs":
            # the plan's share ran out first: no evidence of a broken pipeline, so no gate
            # failure; a loss that at least halved shows the pipeline learns, so no warning.
            # The worker's sentence judged a finished run: this one says what the cut run showed.
            losses = result.probe.get("losses") or []
            learned = len(losses) > 1 and min(losses) <= HALVED * losses[0]
            verdict = "passed" if learned else "warned"
            message = (f"Its share of the budget paid for {len(losses)} of {self.config.steps} "
                       f"steps on {result.probe.get('samples')} samples"
                       + (f", in which the loss went from {sig(losses[0])} to {sig(min(losses))}"
                          if losses else "")
                       + ": too few to judge, so this is not a failure; a larger budget lets it "
                       "finish." + (" The loss more than halved: the pipeline learns."
                                    if learned else ""))
        return _outcome(verdict, message, result.probe, epochs, result.seconds)


@register_stage
class LrProbe(Stage):
    """LR range test once per optimizer family in the space (SGD-like, Adam-like, RMSprop):
    each family's range becomes its own lr range in the search, unless the user fixed lr
    or declared lr per optimizer already."""

    name = "lr_probe"

    def run(self, ctx: StageContext) -> StageOutcome:
        families = families_in(ctx.spec)
        source = warm_source(ctx.spec, ctx.store)
        known = source_lr_ranges(source, list(families)) if source is not None else None
        if source is not None and known is not None and lr_is_searched(ctx.spec):
            return StageOutcome("skipped", (
                f"Not run: the LR ranges come from study {source.name}, on the same task "
                f"({', '.join(f'{f} {sig(lo)}-{sig(hi)}' for f, (lo, hi) in known.items())})."),
                hand_on={"lr_ranges": known})
        per_family: dict[str, Any] = {}
        epochs = seconds = 0.0
        for family, optimizer in families.items():
            options = {"iterations": self.config.iterations,
                       **probe_cap(ctx, self.name, 1 / len(families))}
            result, cost = run_probe(ctx, self.name, "lr_probe", options,
                                     params={"optimizer": optimizer})
            if result.status == "skipped":  # no parts, or no budget for a sweep: same for all
                return StageOutcome("skipped", result.message)
            epochs, seconds = epochs + cost, seconds + result.seconds
            per_family[family] = {"optimizer": optimizer, "status": result.status,
                                  "message": result.message, **result.probe}
        passed = {f: v for f, v in per_family.items() if v["status"] == "passed"}
        first = next(iter(per_family.values()))
        figures = {**first, "families": per_family}
        lines = [f"{f} ({v['optimizer']}): {v['message']}" for f, v in per_family.items()]
        message = " ".join(lines) if len(lines) > 1 else first["message"]
        hand_on: dict[str, Any] = {}
        if passed and lr_is_searched(ctx.spec):
            hand_on = {"lr_ranges": {f: v["lr_range"] for f, v in passed.items()},
                       "suggested_lr": {f: v["suggested_lr"] for f, v in passed.items()}}
            message += (" The search uses each family's range for its lr." if len(passed) > 1
                        else " The search uses this range for lr.")
        if len(passed) < len(per_family):
            message += " Where the probe found no range, the search keeps the spec's lr range."
        failed = [f for f, v in per_family.items() if v["status"] == "failed"]
        # a sweep its share of the budget cut short, whose loss fell too little to place a
        # range, says nothing against the pipeline (overfit judges whether it learns)
        cut = [f for f, v in per_family.items() if v["status"] == "warned" and v.get("capped")]
        if cut:
            message += (f" The sweep{'s' if len(cut) > 1 else ''} of {', '.join(cut)} ran "
                        f"{per_family[cut[0]]['iterations']} iterations, all their share of the "
                        "budget paid for: too few to place a range, not a sign of a problem.")
        verdict = ("passed" if len(passed) + len(cut) == len(per_family)
                   else "failed" if failed and not passed else "warned")
        fixes = [f for v in per_family.values() for f in v.get("fixes", [])]
        return StageOutcome(verdict, message, figures=figures, hand_on=hand_on, epochs=epochs,
                            trial_seconds=seconds, fixes=fixes)


def _outcome(verdict: str, message: str, figures: dict[str, Any], epochs: float,
             seconds: float) -> StageOutcome:
    """A probe's stage outcome: its fixes as data (`StageOutcome.fixes`) and, where the
    verdict is not passed, in words at the end of its sentence."""
    fixes = list(figures.get("fixes") or [])
    if fixes and verdict != "passed":
        message = f"{message} {spec_edits(fixes)}"
    return StageOutcome(verdict, message, figures=figures, epochs=epochs,
                        trial_seconds=seconds, fixes=fixes)
