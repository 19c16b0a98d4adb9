"""The training loop: one linear pass over epochs, reporting after each.

Data lives on the device as whole tensors (every registered dataset fits in
memory), so an epoch is a shuffled walk over index slices with no DataLoader.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from workers import checkpoint
from workers.augment import build_augmenter
from workers.checkpoint import LoopState, RunShape
from workers.config import ModelConfig, TrainConfig
from workers.data import Dataset
from workers.errors import ConfigError
from workers.models import set_train_mode
from workers.optim import build_optimizer, build_scheduler
from workers.request import Metrics

Report = Callable[[int, Metrics], bool]
"""Called after each epoch with its metrics; returning True stops the run (pruning)."""

Save = Callable[[int, bytes], None]
"""Called after each epoch in `checkpoint_at` with the epoch and its checkpoint's bytes."""

DIVERGENCE_FACTOR = 10.0  # a training loss this many times the first one has diverged
CHECK_EVERY = 20  # steps between divergence checks (each check syncs with the device)


@dataclass
class TrainOutcome:
    """How a run ended: completed, early_stopped, stopped (by the caller) or diverged."""

    status: str
    history: list[Metrics] = field(default_factory=list)
    message: str = ""
    epoch: int | None = None
    start_epoch: int = 0  # the epoch a resumed run continued after


def objective_metric(data: Dataset) -> tuple[str, str]:
    """The validation metric runs are judged by, and its direction."""
    return ("val_accuracy", "maximize") if data.task == "classification" else ("val_rmse", "minimize")


def loss_fn(data: Dataset, label_smoothing: float = 0.0) -> Callable[..., torch.Tensor]:
    if data.task == "classification":
        return lambda out, y: F.cross_entropy(out, y, label_smoothing=label_smoothing)
    return lambda out, y: F.mse_loss(out.squeeze(-1), y)


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1024) -> Metrics:
    """Loss and accuracy (or RMSE in label units) over (x, y) in eval mode."""
    model.eval()
    criterion = loss_fn(data)
    total, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size]).float()
        yb = y[i:i + batch_size]
        total += float(criterion(out, yb)) * len(yb)
        if data.task == "classification":
            correct += int((out.argmax(1) == yb).sum())
    loss = total / max(len(x), 1)
    if data.task == "classification":
        return {"val_loss": loss, "val_accuracy": correct / max(len(x), 1)}
    return {"val_loss": loss, "val_rmse": math.sqrt(loss) * data.target_std}


def train(
    model: nn.Module,
    data: Dataset,
    train_cfg: TrainConfig,
    model_cfg: ModelConfig,
    epochs: int,
    device: torch.device,
    generator: torch.Generator,
    report: Report | None = None,
    *,
    horizon: int | None = None,
    checkpoint_at: Collection[int] = (),
    save: Save | None = None,
    resume: bytes | None = None,
) -> TrainOutcome:
    """Train `model` on `data` up to epoch `epochs`; never raises on divergence.

    The LR schedule spans `horizon` epochs (default `epochs`). With `resume` (bytes
    that `save` was handed after epoch k) the run goes on with epoch k + 1.
    """
    # Setup: data on the device, optimizer over trainable groups, per-step schedule.
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    n, bs = len(x_train), train_cfg.batch_size
    if bs > n:
        raise ConfigError(f"batch_size {bs} is larger than the {n} training samples of {data.name}")
    steps = n // bs + (1 if n % bs > 1 else 0)  # a trailing batch of one would break batch norm
    model.to(device)
    optimizer = build_optimizer(model, train_cfg, model_cfg)
    horizon = epochs if horizon is None else horizon
    scheduler = build_scheduler(optimizer, train_cfg, steps, horizon)
    criterion = loss_fn(data, train_cfg.label_smoothing)
    augment = build_augmenter(train_cfg.augmentations, data)
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    metric, direction = objective_metric(data)
    shape = RunShape(type(optimizer).__name__, steps, horizon, train_cfg.schedule)
    state = LoopState()
    if resume is not None:  # after the seeded setup, so the checkpoint's RNG states win
        state = checkpoint.restore(resume, model, optimizer, scheduler, generator, shape)
    outcome = TrainOutcome("completed", start_epoch=state.epoch)

    for epoch in range(state.epoch + 1, epochs + 1):
        # Train one epoch; sums stay on the device to avoid a sync per step.
        set_train_mode(model)
        started = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        norm_sum = torch.zeros((), device=device)
        seen, norms = 0, 0
        for step in range(steps):
            idx = order[step * bs:(step + 1) * bs]
            xb, yb = x_train[idx], y_train[idx]
            if augment is not None:
                xb = augment(xb)
            with autocast:
                out = model(xb)
            loss = criterion(out.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # The gradient norm is measured every step when clipping, else every CHECK_EVERY
            # steps: a norm over all gradients costs ~5% of a small model's step.
            if train_cfg.grad_clip:
                norm_sum += torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip, foreach=True)
                norms += 1
            elif step % CHECK_EVERY == 0:
                grads = [p.grad for p in params if p.grad is not None]
                norm_sum += torch.nn.utils.get_total_norm(grads, foreach=True)
                norms += 1
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(yb)
            if data.task == "classification":
                correct += (out.argmax(1) == yb).sum()
            seen += len(yb)
            if step % CHECK_EVERY == 0:
                value = loss.item()
                if state.first_loss is None:
                    state.first_loss = value
                if not math.isfinite(value) or value > DIVERGENCE_FACTOR * state.first_loss:
                    return _diverged(outcome, epoch, value, state.first_loss)
        train_loss = float(loss_sum) / seen
        seconds = time.perf_counter() - started
        if state.first_loss is not None and (
            not math.isfinite(train_loss) or train_loss > DIVERGENCE_FACTOR * state.first_loss
        ):
            return _diverged(outcome, epoch, train_loss, state.first_loss)

        # Evaluate and record; the early-stopping count is updated now so a checkpoint has it.
        metrics: Metrics = {"epoch": epoch, "train_loss": train_loss}
        if data.task == "classification":
            metrics["train_accuracy"] = float(correct) / seen
        metrics |= evaluate(model, data, x_val, y_val)
        metrics |= {
            "lr": optimizer.param_groups[0]["lr"],
            "grad_norm": float(norm_sum) / max(norms, 1),
            "epoch_seconds": seconds,
            "samples_per_second": seen / seconds,
        }
        outcome.history.append(metrics)
        score = metrics[metric] if direction == "maximize" else -metrics[metric]
        if score > state.best:
            state.best, state.since_best = score, 0
        else:
            state.since_best += 1
        state.epoch = epoch

        # Checkpoint before the caller's say: a run the caller stops can still be resumed.
        if save is not None and epoch in checkpoint_at:
            save(epoch, checkpoint.dump(model, optimizer, scheduler, generator, state, shape))
        if report is not None and report(epoch, metrics):
            outcome.status, outcome.epoch = "stopped", epoch
            outcome.message = f"stopped by the caller after epoch {epoch}"
            return outcome

        # Early stopping on the objective metric.
        if train_cfg.patience and state.since_best >= train_cfg.patience:
            outcome.status, outcome.epoch = "early_stopped", epoch
            outcome.message = f"no improvement in {metric} for {state.since_best} epochs"
            return outcome
    return outcome


def _diverged(outcome: TrainOutcome, epoch: int, loss: float, first: float) -> TrainOutcome:
    outcome.status, outcome.epoch = "diverged", epoch
    outcome.message = (
        f"training loss reached {loss:.3g} in epoch {epoch} (first batch: {first:.3g}); "
        "lower the learning rate or enable grad_clip"
    )
    return outcome
