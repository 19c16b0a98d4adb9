"""Why a trainer's trial failed; the trial fails with the message, the study goes on."""

from __future__ import annotations

from stagetune.workers.errors import StagetuneError


class TrainerError(StagetuneError):
    """A trainer raised, never reported, or reported what stagetune cannot use."""


class CommandError(TrainerError):
    """A command trainer's program could not start, exited non-zero, or printed no metrics."""
