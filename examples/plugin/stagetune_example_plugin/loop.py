"""A training function of one's own: a plain-PyTorch loop over digits, with mixup.

stagetune hands it the trial's values on a context and gets the epochs back through
`ctx.report`; it checkpoints through the context, so successive halving and refine can
continue its runs, and exposes its model, loss and batches (`parts`) so that the init
check, the overfit probe and the LR range test run on them.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from stagetune.workers.data import Dataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.trainers import TrainerContext, TrainerParts, register_trainer


class LoopKnobs(BaseModel):
    """The loop's own knob, beside the built-in ones it reads (lr, weight_decay,
    batch_size, optimizer, width, dropout)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mixup: float = Field(0.0, ge=0.0, le=1.0, description="mixup's Beta(a, a); 0 turns it off")


def build_model(ctx: TrainerContext) -> nn.Module:
    """One hidden layer of `width` units over the flattened image."""
    data = _data(ctx)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data.input_shape), ctx.arch.width),
                         nn.ReLU(), nn.Dropout(ctx.arch.dropout),
                         nn.Linear(ctx.arch.width, data.num_outputs))


def batches(ctx: TrainerContext, epoch: int = 0) -> DataLoader[tuple[torch.Tensor, ...]]:
    """The training split in shuffled batches, the order seeded per epoch (so a continued
    run sees the batches an uninterrupted one would)."""
    data = _data(ctx)
    order = torch.Generator().manual_seed(ctx.seed * 1000 + epoch)
    return DataLoader(TensorDataset(data.x_train, data.y_train),
                      batch_size=ctx.train.batch_size, shuffle=True, generator=order)


def parts(ctx: TrainerContext) -> TrainerParts:
    """What the probes run on: a fresh model, the loss and the batches this loop trains on."""
    return TrainerParts(model=build_model(ctx), loss=F.cross_entropy, batches=batches(ctx))


@register_trainer("digits_loop", knobs=LoopKnobs, parts=parts, objective="val_accuracy",
                  metrics=("train_loss", "val_loss", "val_accuracy"))
def digits_loop(ctx: TrainerContext) -> None:
    """A plain-PyTorch loop on the task's dataset: an MLP trained with mixup."""
    assert isinstance(ctx.knobs, LoopKnobs)
    model = build_model(ctx).to(ctx.device)
    optimizer = _optimizer(ctx, model)
    steps = len(batches(ctx))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=ctx.horizon * steps)
    state = ctx.load_checkpoint()
    if state is not None:  # continue the run this trial picks up
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
    for epoch in range(ctx.start_epoch + 1, ctx.epochs + 1):
        train_loss = _train_epoch(ctx, model, optimizer, schedule, epoch, ctx.knobs.mixup)
        val_loss, val_accuracy = _evaluate(model, _data(ctx), ctx.device)
        # checkpoint before the report: a run stopped at a rung can still be continued
        ctx.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "schedule": schedule.state_dict()}, epoch=epoch)
        if ctx.report(epoch, {"train_loss": train_loss, "val_loss": val_loss,
                              "val_accuracy": val_accuracy}):
            return  # pruned, out of budget or cancelled


def _train_epoch(ctx: TrainerContext, model: nn.Module, optimizer: torch.optim.Optimizer,
                 schedule: torch.optim.lr_scheduler.LRScheduler, epoch: int,
                 mixup: float) -> float:
    model.train()
    mixing = torch.distributions.Beta(mixup, mixup) if mixup > 0 else None
    total, seen = 0.0, 0
    for x, y in batches(ctx, epoch):
        x, y = x.to(ctx.device), y.to(ctx.device)
        if mixing is not None:  # blend each sample with another one of the batch
            share = float(mixing.sample())
            other = torch.randperm(len(x), device=x.device)
            out = model(share * x + (1 - share) * x[other])
            loss = share * F.cross_entropy(out, y) + (1 - share) * F.cross_entropy(out, y[other])
        else:
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        total, seen = total + float(loss) * len(x), seen + len(x)
    return total / seen


@torch.no_grad()
def _evaluate(model: nn.Module, data: Dataset, device: torch.device) -> tuple[float, float]:
    model.eval()
    out = model(data.x_val.to(device))
    y = data.y_val.to(device)
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())


def _optimizer(ctx: TrainerContext, model: nn.Module) -> torch.optim.Optimizer:
    knobs = ctx.train
    if knobs.optimizer in ("adam", "adamw"):
        return torch.optim.AdamW(model.parameters(), lr=knobs.lr, weight_decay=knobs.weight_decay)
    if knobs.optimizer in ("sgd", "sgd_nesterov"):
        return torch.optim.SGD(model.parameters(), lr=knobs.lr, momentum=knobs.momentum,
                               nesterov=knobs.optimizer == "sgd_nesterov",
                               weight_decay=knobs.weight_decay)
    raise ConfigError(f"trainer 'digits_loop': optimizer must be adam, adamw, sgd or "
                      f"sgd_nesterov (got {knobs.optimizer!r})")


def _data(ctx: TrainerContext) -> Dataset:
    if not isinstance(ctx.data, Dataset):
        raise ConfigError("trainer 'digits_loop' trains on the task's dataset: set "
                          "task.dataset (e.g. digits) to an in-memory dataset")
    return ctx.data
