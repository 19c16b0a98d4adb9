"""Coarse's early rung: its first configurations run beside the probes, so that no trial
waits for a probe that has nothing to say about it.

The rule:
- **What.** Coarse's first configurations, drawn from the space as declared (each
  optimizer family's lr over the declared range, `declared_space`): ordinary coarse trials
  in coarse's study, under its rungs and pruner, marked `early`. The configurations drawn
  after the probes finish use what the probes found.
- **How many.** At most half of coarse's planned configurations, so that the probes'
  ranges still shape most of what coarse narrows; and at most as many 1-epoch rungs as
  the probes they run beside (overfit, the LR probe) are planned to cost. It asks for no
  more once its trials say the declared space mostly fails (`declared_space_fails`: of
  those finished, more did not learn than did, and at least two): there the probes have
  something to say, and what remains of coarse draws from their ranges.
- **When.** Once init_check has passed (a model that cannot start is caught first, in
  seconds), beside overfit and the LR probe. An executor with room for more than one
  trial runs them in a thread while the probes run, on the slots a probe leaves free (the
  probes start once the first early trial is on its way), and asks for no more once the
  probes are done; coarse itself starts when the running ones have ended. An executor
  with one slot runs them first, one at a time, then the probes: the order the same
  trials and probes take on one device.
- **A failed probe still stops the study.** The early trials are stopped at their next
  epoch, recorded `cancelled` with the probe's verdict, and their epochs are charged to
  coarse, which is recorded skipped.
- **Not at all** where coarse is off, both probes are off, the study warm-starts from an
  earlier one (its ranges are known before any trial), the budget is given only in
  seconds (no epoch count to size it by), or `coarse.early` is false.

The budget: while the probes run, coarse's allowance leaves out their planned shares
(`StageContext.allowance`); what they leave unspent goes to coarse afterwards, as before.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from optuna.trial import FrozenTrial

from stagetune.studies.search.loop import FINISHED, Tally
from stagetune.studies.search.stages._base import StageContext
from stagetune.studies.search.stages._chance import at_chance, best_value, known_bound
from stagetune.studies.search.stages._coarse import EARLY, Coarse

log = logging.getLogger(__name__)

BESIDE = ("overfit", "lr_probe")  # the probes the early rung runs beside
MIN_FAILED = 2  # one configuration that did not learn says little about a space
UNLEARNED = ("diverged", "failed", "hopeless")  # statuses of trials that learned nothing


def declared_space_fails(ctx: StageContext, trials: list[FrozenTrial]) -> bool:
    """Whether the finished early trials say the declared space mostly fails: more of them
    did not learn (diverged, failed, stopped as hopeless, or no better than chance level
    where the objective has one) than did, and at least MIN_FAILED."""
    bound = known_bound(ctx.handed, ctx.direction)

    def learned(trial: FrozenTrial) -> bool:
        value = best_value(trial, ctx.direction)
        return trial.user_attrs.get("status") not in UNLEARNED and value is not None and (
            bound is None or not at_chance(value, bound, ctx.direction))

    done = [t for t in trials if t.user_attrs.get(EARLY) and t.state in FINISHED
            and t.user_attrs.get("status") != "cancelled"]
    failed = sum(not learned(t) for t in done)
    return failed >= MIN_FAILED and failed > len(done) - failed


def early_count(ctx: StageContext) -> int:
    """How many configurations the early rung may start (0: none), by the module's rule."""
    spec, plan = ctx.spec, ctx.plan
    coarse = spec.stages.coarse
    probes = [n for n in BESIDE if getattr(spec.stages, n).enabled and n in plan]
    if not (coarse.enabled and coarse.early and probes and "coarse" in plan) \
            or spec.warm_start_from is not None:
        return 0
    paid = [plan[n].epochs for n in probes]
    if any(e is None for e in paid):  # a budget in seconds only
        return 0
    return min(int(plan["coarse"].sizes["trials"]) // 2,
               math.floor(sum(e or 0.0 for e in paid) + 1e-9))


class EarlyRung:
    """One run's early rung: `start` it before the first probe it runs beside, then
    `finish` it before coarse, or `halt` it when a probe fails its gate."""

    def __init__(self, ctx: StageContext, count: int) -> None:
        self.ctx, self.count = ctx, count
        self.seconds = 0.0  # its wall time: coarse's, as it runs in coarse's place
        self._probes_done = threading.Event()
        self._halted = ""  # why the running trials must stop
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._first_out = threading.Event()
        self._spent: Tally | None = None  # what coarse's study holds once the rung ran

    def start(self) -> None:
        ctx = self.ctx
        ctx.store.start_stage(ctx.spec.name, "coarse", ctx.plan["coarse"].to_dict())
        beside = ctx.executor.room() > 1
        log.info("coarse: %d early configurations %s", self.count,
                 "beside the probes" if beside else "before the probes (one slot)")
        if not beside:
            self._run(keep=0)
            return
        self._thread = threading.Thread(target=self._guarded, name="early-rung", daemon=True)
        self._thread.start()
        # the probes start once the first early trial is on its way (or none will be)
        while not self._first_out.wait(0.05) and self._thread.is_alive():
            pass

    def finish(self) -> None:
        """The probes are done: ask for no more; return once the running trials ended."""
        self._probes_done.set()
        self._join()

    def halt(self, why: str) -> Tally:
        """A probe failed: stop the running trials at their next epoch; what coarse spent."""
        self._halted = why
        self.finish()
        assert self._spent is not None  # the rung ran (its errors were raised above)
        return self._spent

    def close(self) -> None:
        """Leave nothing running when the study stops for another reason (cancelled, a
        database that went away): halt, and keep the error the caller is raising."""
        if self._thread is None:
            return
        self._halted = self._halted or "stopped with its study"
        self._probes_done.set()
        try:
            self._join()
        except Exception as exc:  # the caller is already raising its own
            log.debug("early rung: %s", exc)

    def _run(self, keep: int) -> None:
        started = time.perf_counter()
        coarse = Coarse(self.ctx.spec.stages.coarse)
        seen = coarse.study(self.ctx)

        def stop() -> bool:
            if self._probes_done.is_set():
                return True
            if declared_space_fails(self.ctx, seen.get_trials(deepcopy=False)):
                log.info("coarse: the early configurations mostly did not learn; the rest "
                         "wait for the probes' ranges")
                return True
            return False

        try:
            self._spent = coarse.early(
                self.ctx, self.count, stop=stop, halt=lambda: self._halted, keep=keep,
                on_job=self._first_out.set)
        finally:
            self.seconds += time.perf_counter() - started

    def _guarded(self) -> None:
        try:
            self._run(keep=1)
        except BaseException as exc:  # raised where the runner joins it
            self._error = exc

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error
