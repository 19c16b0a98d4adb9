"""The training loop: one linear pass over epochs, reporting after each.

Arrays live on the device as whole tensors, so an epoch is a shuffled walk over index
slices with no DataLoader; a streamed dataset is read by DataLoader workers and
normalised on the device (workers.batches). The loop is the same for both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from stagetune.workers import checkpoint
from stagetune.workers.augment import build_augmenter
from stagetune.workers.batches import Batch, StreamBatches, TensorBatches, batches_for, slices
from stagetune.workers.checkpoint import LoopState, RunShape
from stagetune.workers.config import ModelConfig, TrainConfig
from stagetune.workers.data import AnyDataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.losses import LossFunction, check_loss_kind, resolve_loss
from stagetune.workers.metrics import Scorer
from stagetune.workers.models import set_train_mode
from stagetune.workers.objective import Scoring, loss_name, scoring_for
from stagetune.workers.optim import build_optimizer, build_scheduler
from stagetune.workers.request import Metrics
from stagetune.workers.vitals import Vitals, check_step

Report = Callable[[int, Metrics], bool]
"""Called after each epoch with its metrics; returning True stops the run (pruning)."""

Save = Callable[[int, bytes], None]
"""Called after each epoch in `checkpoint_at`, once the epoch is reported, with the epoch
and its checkpoint's bytes."""

DIVERGENCE_FACTOR = 10.0  # a training loss this many times the first one has diverged
CHECK_EVERY = 20  # steps between divergence checks (each check syncs with the device)


@dataclass
class TrainOutcome:
    """How a run ended: completed, early_stopped, stopped (by the caller), hopeless (its
    vital signs) or diverged."""

    status: str
    history: list[Metrics] = field(default_factory=list)
    message: str = ""
    epoch: int | None = None
    start_epoch: int = 0  # the epoch a resumed run continued after
    partial: float = 0.0  # the share of epoch `epoch` run before a mid-epoch stop (hopeless)


def objective_metric(data: AnyDataset, scoring: Scoring | None = None) -> tuple[str, str]:
    """The metric runs are judged by, and its direction: the scoring's (see
    workers.objective), by default the dataset's first declared metric, else by its kind."""
    scoring = scoring or scoring_for(None, data)
    return scoring.objective, scoring.direction


def loss_fn(data: AnyDataset, label_smoothing: float = 0.0,
            loss: str | None = None) -> LossFunction:
    """The loss to train with: `loss` (a registered name), else the dataset's declared
    one, else its kind's (cross_entropy, bce_with_logits, mse)."""
    name = loss_name(data, loss)
    check_loss_kind(name, data.task, data.name)
    return resolve_loss(name, label_smoothing)


@torch.no_grad()
def evaluate(model: nn.Module, data: AnyDataset,
             x: torch.Tensor | TensorBatches | StreamBatches, y: torch.Tensor | None = None,
             batch_size: int = 1024, scoring: Scoring | None = None) -> Metrics:
    """val_loss and the scoring's val_<metric>s over (x, y) in eval mode (regression
    metrics in label units); with `y` None, over the validation split of the run's
    batches `x` (workers.batches)."""
    model.eval()
    scoring = scoring or scoring_for(None, data)
    if isinstance(x, torch.Tensor):
        if y is None:
            raise TypeError("evaluate: validation tensors x need their labels y")
        batches: Iterable[Batch] = slices(x, y, batch_size)
    else:
        batches = x.validation()
    scorer = Scorer(data, loss_fn(data, loss=scoring.loss), scoring.metrics, x.device)
    for xb, yb in batches:
        scorer.update(model(xb), yb)
    return scorer.compute()


def train(
    model: nn.Module,
    data: AnyDataset,
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
    scoring: Scoring | None = None,
    watch: bool = False,
) -> TrainOutcome:
    """Train `model` on `data` up to epoch `epochs`; never raises on divergence.

    The LR schedule spans `horizon` epochs (default `epochs`). With `resume` (bytes
    that `save` was handed after epoch k) the run goes on with epoch k + 1. `scoring`
    (workers.objective.scoring_for) names the loss, the metrics and the objective that
    early stopping follows; by default the dataset's. With `watch`, a fresh run whose
    vital signs say it is hopeless stops early with status "hopeless" (workers.vitals).
    """
    # Setup: the batches (whole tensors on the device, or a stream through DataLoader
    # workers), optimizer over trainable groups, per-step schedule.
    n, bs = data.train_size, train_cfg.batch_size
    if bs > n:
        raise ConfigError(f"batch_size {bs} is larger than the {n} training samples of {data.name}")
    batches = batches_for(data, bs, device)
    steps = batches.steps  # a trailing batch of one is dropped: it would break batch norm
    model.to(device)
    optimizer = build_optimizer(model, train_cfg, model_cfg)
    horizon = epochs if horizon is None else horizon
    scheduler = build_scheduler(optimizer, train_cfg, steps, horizon)
    scoring = scoring or scoring_for(None, data)
    criterion = loss_fn(data, train_cfg.label_smoothing, scoring.loss)
    augment = build_augmenter(train_cfg.augmentations, data)
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    metric, direction = objective_metric(data, scoring)
    shape = RunShape(type(optimizer).__name__, steps, horizon, train_cfg.schedule)
    state = LoopState()
    if resume is not None:  # after the seeded setup, so the checkpoint's RNG states win
        state = checkpoint.restore(resume, model, optimizer, scheduler, generator, shape)
    outcome = TrainOutcome("completed", start_epoch=state.epoch)
    at = check_step(train_cfg, steps) if watch and resume is None else None
    vitals = Vitals(model, train_cfg, at) if at is not None and at <= steps * epochs else None

    try:  # the DataLoader's workers end with the run, whichever way it ends
        for epoch in range(state.epoch + 1, epochs + 1):
            # Train one epoch; sums stay on the device to avoid a sync per step.
            set_train_mode(model)
            started = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            norm_sum = torch.zeros((), device=device)
            seen, norms = 0, 0
            for step, (xb, yb) in enumerate(batches.epoch(generator)):
                if augment is not None:
                    xb = augment(xb)
                if vitals is not None:
                    vitals.before_forward()
                with autocast:
                    out = model(xb)
                if vitals is not None:
                    vitals.after_forward()
                loss = criterion(out.float(), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if vitals is not None:
                    vitals.after_backward(loss)
                    if vitals.due and (why := vitals.reason()) is not None:
                        return _hopeless(outcome, epoch, (step + 1) / steps, why)
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
            if epoch == 1 and state.first_loss is not None:  # studies.search.loop.learning reads it
                metrics["first_train_loss"] = state.first_loss
            if data.task == "classification":
                metrics["train_accuracy"] = float(correct) / seen
            metrics |= evaluate(model, data, batches, scoring=scoring)
            metrics |= {
                "lr": optimizer.param_groups[0]["lr"],
                "grad_norm": float(norm_sum) / max(norms, 1),
                "epoch_seconds": seconds,
                "samples_per_second": seen / seconds,
            }
            if device.type == "cuda":  # the trial's peak so far (execute resets it per trial)
                metrics["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            outcome.history.append(metrics)
            score = metrics[metric] if direction == "maximize" else -metrics[metric]
            if score > state.best:
                state.best, state.since_best = score, 0
            else:
                state.since_best += 1
            state.epoch = epoch

            # Report, then checkpoint, then obey: a run the caller stops can still be
            # resumed, and a checkpoint never runs ahead of the epochs reported (a runner
            # or worker lost between the two re-runs the epoch rather than lose its record).
            stop = report is not None and report(epoch, metrics)
            if save is not None and epoch in checkpoint_at:
                save(epoch, checkpoint.dump(model, optimizer, scheduler, generator, state, shape))
            if stop:
                outcome.status, outcome.epoch = "stopped", epoch
                outcome.message = f"stopped by the caller after epoch {epoch}"
                return outcome

            # Early stopping on the objective metric.
            if train_cfg.patience and state.since_best >= train_cfg.patience:
                outcome.status, outcome.epoch = "early_stopped", epoch
                outcome.message = f"no improvement in {metric} for {state.since_best} epochs"
                return outcome
        return outcome
    finally:
        batches.close()


def _hopeless(outcome: TrainOutcome, epoch: int, share: float, why: str) -> TrainOutcome:
    outcome.status, outcome.epoch, outcome.message = "hopeless", epoch, why
    outcome.partial = share
    return outcome


def _diverged(outcome: TrainOutcome, epoch: int, loss: float, first: float) -> TrainOutcome:
    outcome.status, outcome.epoch = "diverged", epoch
    outcome.message = (
        f"training loss reached {loss:.3g} in epoch {epoch} (first batch: {first:.3g}); "
        "lower the learning rate or enable grad_clip"
    )
    return outcome
