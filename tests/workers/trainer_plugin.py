"""Trainers registered the way a user's plugin registers them: plain PyTorch loops on
digits, with their own knobs, checkpoints and probe parts, and the ways one goes wrong."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from stagetune.workers.trainers import (
    TRAINERS,
    TrainerContext,
    TrainerParts,
    register_command,
    register_trainer,
)

COMMAND = Path(__file__).with_name("command_trainer.py")


class MlpKnobs(BaseModel):
    hidden: int = Field(32, ge=4, le=512)


def digits_loaders(batch_size: int, seed: int) -> tuple[DataLoader, torch.Tensor, torch.Tensor]:
    """Digits loaded by the trainer itself (the task names no dataset): the first 1,500
    samples train, the rest validate."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    train = TensorDataset(x[:1500], y[:1500])
    loader = DataLoader(train, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    return loader, x[1500:], y[1500:]


def hidden_of(ctx: TrainerContext) -> int:
    return ctx.knobs.hidden if isinstance(ctx.knobs, MlpKnobs) else 32


def mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def digits_parts(ctx: TrainerContext) -> TrainerParts:
    loader, _, _ = digits_loaders(ctx.train.batch_size, ctx.seed)
    return TrainerParts(mlp(hidden_of(ctx)), nn.CrossEntropyLoss(), loader)


def custom_loss_parts(expected: float | None) -> Any:
    def parts(ctx: TrainerContext) -> TrainerParts:
        loader, _, _ = digits_loaders(ctx.train.batch_size, ctx.seed)
        return TrainerParts(mlp(32), lambda out, y: nn.functional.cross_entropy(out, y) * 10,
                            loader, expected_loss=expected)
    return parts


def own_loop(ctx: TrainerContext) -> None:
    """An ordinary PyTorch loop: its own DataLoader, optimizer and evaluation."""
    loader, x_val, y_val = digits_loaders(ctx.train.batch_size, ctx.seed)
    if ctx.data is not None:  # the task named digits: train on stagetune's split of it
        loader = DataLoader(TensorDataset(ctx.data.x_train.flatten(1), ctx.data.y_train),
                            batch_size=ctx.train.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(ctx.seed))
        x_val, y_val = ctx.data.x_val.flatten(1), ctx.data.y_val
    model = mlp(hidden_of(ctx)).to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=ctx.train.lr)
    state = ctx.load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.generator.set_state(state["batches"])
    for epoch in range(ctx.start_epoch + 1, ctx.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x.to(ctx.device)), y.to(ctx.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            seen += len(y)
        model.eval()
        with torch.no_grad():
            out = model(x_val.to(ctx.device)).cpu()
            accuracy = (out.argmax(1) == y_val).float().mean().item()
            val_loss = nn.functional.cross_entropy(out, y_val).item()
        metrics = {"train_loss": total / seen, "val_loss": val_loss,
                   "val_accuracy": accuracy, "hidden": hidden_of(ctx)}
        if ctx.report(epoch, metrics):
            return
        ctx.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "batches": loader.generator.get_state()})


def raises(ctx: TrainerContext) -> None:
    ctx.report(1, {"val_accuracy": 0.1})
    raise RuntimeError("CUDA ran out of patience")


def flaky(ctx: TrainerContext) -> None:
    """The loop, except that wide models crash it."""
    if hidden_of(ctx) > 40:
        raise ValueError(f"hidden={hidden_of(ctx)} does not fit")
    own_loop(ctx)


def silent(ctx: TrainerContext) -> None:
    """Trains, but never says how it went."""


def wrong_metric(ctx: TrainerContext) -> None:
    ctx.report(1, {"train_loss": 1.0, "val_acc": 0.5})


def ignores_stop(ctx: TrainerContext) -> None:
    for epoch in range(1, ctx.epochs + 1):
        ctx.report(epoch, {"val_accuracy": epoch / 10})  # the answer is not looked at


def register() -> None:
    if "own_loop" in TRAINERS:  # process-wide registry: once
        return
    register_trainer("own_loop", knobs=MlpKnobs, parts=digits_parts,
                     objective="val_accuracy",
                     metrics=["train_loss", "val_loss", "val_accuracy", "hidden"])(own_loop)
    register_trainer("own_loop_unprobed", knobs=MlpKnobs, objective="val_accuracy")(own_loop)
    register_trainer("loss_unstated", parts=custom_loss_parts(None),
                     objective="val_accuracy")(own_loop)
    register_trainer("loss_stated", parts=custom_loss_parts(2.0),  # 10 x ln 10 is right
                     objective="val_accuracy")(own_loop)
    register_trainer("own_loop_undeclared", knobs=MlpKnobs)(own_loop)  # no objective of its own
    register_trainer("raises", objective="val_accuracy")(raises)
    register_trainer("flaky", knobs=MlpKnobs, parts=digits_parts, objective="val_accuracy")(flaky)
    register_trainer("silent", objective="val_accuracy")(silent)
    register_trainer("wrong_metric", objective="val_accuracy")(wrong_metric)
    register_trainer("ignores_stop", objective="val_accuracy")(ignores_stop)
    script = [sys.executable, str(COMMAND)]
    register_command("script", [*script, "--lr", "{lr}", "--epochs", "{epochs}",
                                "--start", "{start_epoch}", "--width", "{width}"],
                     knobs=MlpKnobs, objective="val_accuracy", env={"SCRIPT_MODE": "ok"})
    for mode in ("garbage", "fail", "silent", "slow", "stubborn", "hang"):
        register_command(f"script_{mode}", [*script, "--epochs", "{epochs}"],
                         objective="val_accuracy", env={"SCRIPT_MODE": mode},
                         pass_env=["PID_FILE"])
    # writes the environment it got to $ENV_DUMP: what a program sees of its worker's
    register_command("script_env", [*script, "--epochs", "{epochs}"], knobs=MlpKnobs,
                     objective="val_accuracy", env={"SCRIPT_MODE": "env"},
                     pass_env=["ENV_DUMP", "PASSED_*"])


register()
