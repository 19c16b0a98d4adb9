"""The stage contract: what a stage gets, what it must return, and the registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stagetune.studies.planning.budget import Allowance
from stagetune.studies.planning.plan import StagePlan
from stagetune.studies.reporting.edits import edit_text
from stagetune.studies.run.executor import Executor, Job
from stagetune.studies.spec import StudySpec
from stagetune.studies.store import Store
from stagetune.workers import StagetuneError, Task, TrialRequest
from stagetune.workers.errors import ConfigError

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): called as a stage's trials finish."""

VERDICTS = ("passed", "warned", "failed", "skipped")


@dataclass
class StageContext:
    """What a stage may use. `handed` holds what earlier stages handed on
    (baseline, lr_range, space, top configurations, best...)."""

    spec: StudySpec
    store: Store
    executor: Executor
    objective: str
    direction: str
    handed: dict[str, Any] = field(default_factory=dict)
    progress: Progress | None = None
    plan: dict[str, StagePlan] = field(default_factory=dict)  # by stage, in protocol order
    spent: dict[str, tuple[float, float]] = field(default_factory=dict)  # finished stages:
    # (epochs, trial-seconds)
    # every objective with its direction, the first first, where the spec names several
    # (studies.search.pareto); empty for one
    objectives: tuple[tuple[str, str], ...] = ()

    def allowance(self, stage: str, epochs_here: float = 0.0, seconds_here: float = 0.0
                  ) -> Allowance:
        """What `stage` may still spend: the budget, less what finished stages and this one
        (`*_here`, on a resume) spent, less what later stages were planned, and earlier
        ones still running (the probes beside coarse's early rung)."""
        budget = self.spec.budget
        if budget is None:
            return Allowance(None, None)
        names = list(self.plan)
        at = names.index(stage) if stage in names else None
        later = [] if at is None else [self.plan[n] for n in names[at + 1:]] + [
            self.plan[n] for n in names[:at] if n not in self.spent]

        def left(total: float | None, index: int, here: float, planned: list[float | None]
                 ) -> float | None:
            if total is None:
                return None
            done = sum(v[index] for k, v in self.spent.items() if k != stage)
            return max(total - done - here - sum(p or 0.0 for p in planned), 0.0)

        return Allowance(left(budget.epochs, 0, epochs_here, [p.epochs for p in later]),
                         left(budget.seconds, 1, seconds_here, [p.seconds for p in later]))

    @property
    def task(self) -> Task:
        return self.spec.task.as_task()

    def request(self, mode: str, params: dict[str, Any] | None = None, epochs: int = 1,
                seed: int | None = None, options: dict[str, Any] | None = None,
                weights: bool = False, **training: Any) -> TrialRequest:
        """A request on the study's task with the fixed knobs under `params`; `weights`
        asks for the trained state_dict back; `training` sets horizon, resume and
        checkpoint_at."""
        return TrialRequest(self.task, params={**self.spec.fixed, **(params or {})},
                            epochs=epochs, mode=mode, seed=self.spec.seed if seed is None else seed,  # type: ignore[arg-type]
                            options=options or {}, return_weights=weights,
                            objective=self.objective or None,
                            direction=self.direction or None,  # type: ignore[arg-type]
                            **training)

    def tick(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)


@dataclass
class StageOutcome:
    """A verdict (passed, warned, failed, skipped), a sentence a person can act on,
    figures for the dashboards, and what the next stages need (`hand_on`)."""

    verdict: str
    message: str
    figures: dict[str, Any] = field(default_factory=dict)
    hand_on: dict[str, Any] = field(default_factory=dict)
    epochs: float = 0.0
    trial_seconds: float = 0.0  # the stage's trials' (or probe's) own run time, summed
    # Spec edits a person can apply, as data: {"set": {knob: value}, "why": ...,
    # "when": {...}}; kept in `figures["fixes"]` too, so they are stored with the stage.
    fixes: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS} (got {self.verdict!r})")
        if self.fixes:
            self.figures = {**self.figures, "fixes": self.fixes}
        else:
            self.fixes = list(self.figures.get("fixes") or [])


def spec_edits(fixes: list[dict[str, Any]]) -> str:
    """The fixes in words, for a stage's sentence: "Suggested spec edits: norm: batch (why)."."""
    if not fixes:
        return ""
    parts = [f"{edit_text(item)} ({item.get('why', '')})" for item in fixes]
    return "Suggested spec edits: " + "; ".join(parts) + "."


class Stage(ABC):
    """One step of the protocol. `run` must be safe to call again after an interruption:
    whatever it finished before is in the store and must not be redone, and a trial it
    was running goes on (`studies.search.loop.interrupted`)."""

    name: ClassVar[str]
    gate: ClassVar[bool] = False  # a failed gate stops the study unless the spec says go on

    def __init__(self, config: Any) -> None:
        self.config = config  # this stage's section of the spec (e.g. spec.stages.coarse)

    @abstractmethod
    def run(self, ctx: StageContext) -> StageOutcome: ...


STAGES: dict[str, type[Stage]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    if cls.name in STAGES:
        raise ConfigError(f"stage '{cls.name}' is already registered")
    STAGES[cls.name] = cls
    return cls


def run_probe(ctx: StageContext, stage: str, mode: str, options: dict[str, Any] | None = None,
              params: dict[str, Any] | None = None) -> tuple[Any, float]:
    """Run one probe request through the executor; an input error fails the study."""
    request = ctx.request(mode, params, options=options)
    (outcome,) = list(ctx.executor.run([Job(stage, request)]))
    ctx.tick(stage, 1, 1)
    if outcome.result is None:
        raise StagetuneError(f"{stage}: {outcome.error}")
    return outcome.result, float(outcome.result.probe.get("epochs_equivalent", 0.0))


def probe_cap(ctx: StageContext, stage: str, share: float = 1.0) -> dict[str, float]:
    """The `max_epochs` option that keeps a probe inside its planned share (what earlier
    probes left goes on to coarse, not to the next probe); none if uncapped."""
    left = ctx.allowance(stage).epochs_left
    planned = ctx.plan[stage].epochs if stage in ctx.plan else None
    caps = [c for c in (left, planned) if c is not None]
    return {"max_epochs": max(min(caps) * share, 0.05)} if caps else {}

