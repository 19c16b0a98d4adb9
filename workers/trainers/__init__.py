"""Trainers: training functions of the user's own, and programs, registered by name.

    from stagetune.workers.trainers import TrainerParts, register_command, register_trainer

    @register_trainer("my_loop", knobs=MyKnobs, parts=my_parts)
    def my_loop(ctx):
        state = ctx.load_checkpoint()  # None on a fresh run
        for epoch in range(ctx.start_epoch + 1, ctx.epochs + 1):
            ...  # train one epoch with ctx.train.lr, ctx.knobs.my_knob, on ctx.device
            if ctx.report(epoch, {"train_loss": ..., "val_accuracy": ...}):
                return  # pruned, out of budget or cancelled
            ctx.save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict()})

    register_command("my_prog", argv=["python", "train.py", "--lr", "{lr}",
                                      "--epochs", "{epochs}"])

Importing this package imports no torch; the context and the runner load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stagetune.workers.trainers._errors import CommandError, TrainerError
from stagetune.workers.trainers._parts import TrainerParts
from stagetune.workers.trainers._registry import (
    TRAINERS,
    TrainerFunction,
    register_command,
    register_trainer,
)

if TYPE_CHECKING:
    from stagetune.workers.trainers._context import TrainerContext
    from stagetune.workers.trainers._probes import probe_trainer
    from stagetune.workers.trainers._run import run_trainer

__all__ = ["TRAINERS", "CommandError", "TrainerContext", "TrainerError", "TrainerFunction",
           "TrainerParts", "probe_trainer", "register_command",
           "register_trainer", "run_trainer"]

_LAZY = {"TrainerContext": "_context", "run_trainer": "_run", "probe_trainer": "_probes"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
