"""The built-in loop's own step and evaluation, for the step invariants: the check runs
workers.train's code (its setup, forward-backward, clipping, optimizer and schedule step,
and `evaluate`), not a copy, so a change to the loop is checked too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from stagetune.workers import train as loop
from stagetune.workers.data import AnyDataset
from stagetune.workers.models import set_train_mode
from stagetune.workers.objective import scoring_for
from stagetune.workers.probes._common import ProbeSetup
from stagetune.workers.probes._step_invariants import StepUnderTest
from stagetune.workers.request import TrialRequest


@contextmanager
def loop_step(setup: ProbeSetup, request: TrialRequest) -> Iterator[StepUnderTest]:
    """The loop's step as `_train_epoch` runs it per batch, on `setup`'s model; its
    batches (which a stream feeds through DataLoader workers) closed afterwards."""
    data: AnyDataset = setup.data
    scoring = scoring_for(request.task, data, request.objective, request.direction)
    run = loop._setup(setup.model, data, setup.train, setup.arch, 1, setup.device,
                      setup.generator, horizon=1, resume=None, scoring=scoring, watch=False)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        set_train_mode(run.model)  # what _train_epoch does before its batches
        loop._forward_backward(run, x, y)
        loop._grad_norm(run, 0)
        run.optimizer.step()
        run.scheduler.step()

    def evaluate(x: torch.Tensor, y: torch.Tensor) -> None:
        loop.evaluate(run.model, data, x, y, scoring=run.scoring)

    try:
        yield StepUnderTest(run.model, step, evaluate, run.optimizer)
    finally:
        run.batches.close()
