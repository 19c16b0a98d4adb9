"""A command trainer: a program stagetune runs per trial, here the NumPy script shipped
in this package (scripts/digits_numpy.py). Its argv is fixed at registration, never sent
in a request; the trial's values fill in the placeholders."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from stagetune.workers.trainers import register_command

SCRIPT = Path(__file__).with_name("scripts") / "digits_numpy.py"


class NumpyKnobs(BaseModel):
    """The program's own knob, beside the built-in lr, weight_decay and batch_size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: int = Field(32, ge=4, le=256, description="hidden units of the NumPy network")


register_command(
    "digits_numpy",
    argv=[sys.executable, str(SCRIPT), "--lr", "{lr}", "--weight-decay", "{weight_decay}",
          "--hidden", "{hidden}", "--batch-size", "{batch_size}", "--epochs", "{epochs}",
          "--start-epoch", "{start_epoch}", "--horizon", "{horizon}", "--seed", "{seed}",
          "--checkpoint-dir", "{checkpoint_dir}"],
    knobs=NumpyKnobs, objective="val_accuracy",
    metrics=("train_loss", "val_loss", "val_accuracy"),
    description="A NumPy MLP on digits, run as a program that prints JSON lines.")
